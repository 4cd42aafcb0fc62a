"""Scan whole documents (notebooks and files) and redact what was found.

The save guard and ``qustody scan`` both go through here, so a notebook is read
the same way whether it is being saved or checked in CI.
"""

from __future__ import annotations

import bisect
import contextlib
import gc
import html
import html.entities
import json
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import hyperscan

from . import compiled
from .drawing import drawing_text
from .engine import Engine, Finding, SegmentKind, repeats
from .html import has_credential_word, table_view
from .notebook import MIN_FINDING_LENGTH, NotebookError, Segment, Zone, walk, write_back
from .texttable import text_table_view

#: Source files whose bare assignments are expressions rather than literals.
CODE_SUFFIXES = frozenset(
    {
        ".py",
        ".ipy",
        ".pyi",
        ".r",
        ".jl",
        ".js",
        ".mjs",
        ".ts",
        ".scala",
        ".java",
        ".go",
        ".rs",
        ".c",
        ".h",
        ".cc",
        ".cpp",
        ".hpp",
        ".rb",
        ".php",
        ".cs",
        ".swift",
        ".kt",
        ".m",
        ".lua",
    }
)


# Terminal colour codes, as in coloured tracebacks: "\x1b[1;32mAKIA..." would hide the
# key's word boundary behind the "m". They are blanked (same length, so offsets hold)
# for scanning only.
_ANSI = re.compile(rb"\x1b\[[0-9;?]*[ -/]*[@-~]")


def scannable(data: bytes) -> bytes:
    if b"\x1b" not in data:
        return data
    return _ANSI.sub(lambda m: b" " * len(m.group()), data)


@dataclass(frozen=True)
class Located:
    """A finding and where it is in its document."""

    finding: Finding
    zone: Zone
    pointer: str | None = None
    cell: int | None = None
    cell_id: str | None = None
    #: Where the value is on its line of a cell's source, in characters (code points),
    #: so an editor can replace it (JupyterLab's "move to a secret"); None elsewhere.
    column: int | None = None
    length: int | None = None

    @classmethod
    def all_in(cls, segment: Segment, found: Sequence[Finding]) -> list[Located]:
        """Each finding of ``segment`` located; a cell source is encoded once for all of
        them (its findings' offsets are bytes), however many there are."""
        data = (
            segment.text.encode("utf-8", "surrogatepass")
            if found and segment.zone is Zone.SOURCE and segment.cell is not None
            else None
        )
        out = []
        for f in found:
            column = length = None
            value = data[f.start : f.end] if data is not None else b"\n"
            if data is not None and b"\n" not in value:
                line_start = data.rfind(b"\n", 0, f.start) + 1
                column = len(data[line_start : f.start].decode("utf-8", "surrogatepass"))
                length = len(value.decode("utf-8", "surrogatepass"))
            out.append(cls(f, segment.zone, segment.pointer, segment.cell, segment.cell_id,
                           column, length))
        return out

    def public(self) -> dict[str, object]:
        """What may be shown to a user or written to a log: never the value."""
        out: dict[str, object] = {"zone": self.zone.value, **self.finding.public()}
        if self.pointer is not None:
            out["pointer"] = self.pointer
        if self.cell is not None:
            out["cell"] = self.cell
            out["cell_id"] = self.cell_id
        if self.column is not None:
            out["column"] = self.column
            out["length"] = self.length
        return out

    def describe(self) -> str:
        f = self.finding
        where = f"line {f.line}"
        if self.cell is not None:
            ident = f" (id {self.cell_id!r})" if self.cell_id else ""
            part = (
                self.pointer.split("/", 3)[3]
                if self.pointer and self.pointer.count("/") >= 3
                else ""
            )
            where = f"cell {self.cell}{ident}, {part or 'cell'}, line {f.line}"
        elif self.pointer:
            where = f"{self.pointer}, line {f.line}"
        return f"{where}: {f.detector} {f.fingerprint}"


@dataclass
class NotebookScan:
    segments: list[Segment]
    findings: list[list[Finding]]

    def located(self) -> list[Located]:
        return [
            located
            for s, found in zip(self.segments, self.findings, strict=True)
            for located in Located.all_in(s, found)
        ]

    def size(self) -> int:
        return sum(len(s.text) for s in self.segments)


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off while a notebook is scanned.

    A scan allocates tens of thousands of short-lived, acyclic objects (segments, paths,
    byte strings) that reference counting frees; each allocation burst would otherwise
    start collections that traverse the young notebook objects again and again (a third of
    the walk's time). The previous state is restored; another thread's scan at the same
    time at worst re-enables the collector early."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def scan_notebook(
    engine: Engine,
    nb: object,
    max_depth: int = 64,
    skip: Callable[[int, dict[str, Any]], bool] | None = None,
) -> NotebookScan:
    """Findings in every cell of ``nb`` but those ``skip(index, cell)`` leaves out. Cells
    are independent: a cell's findings depend on that cell alone (see ``_across_outputs``)."""
    with collector_paused():
        return _scan_notebook(engine, nb, max_depth, skip)


def _scan_notebook(
    engine: Engine,
    nb: object,
    max_depth: int,
    skip: Callable[[int, dict[str, Any]], bool] | None,
) -> NotebookScan:
    segments = walk(nb, max_depth=max_depth, skip=skip, generated_ids=not engine.knows_values)
    data = [s.text.encode("utf-8", "surrogatepass") for s in segments]
    # Terminal colours are not looked for in megabytes of base64 (it has no escape byte).
    binary = SegmentKind.BINARY
    data = [
        d if s.kind is binary or b"\x1b" not in d else scannable(d)
        for s, d in zip(segments, data, strict=True)
    ]
    kinds = [s.kind for s in segments]
    # HTML tables are also read as "column: value" lines (see html.py), and HTML with
    # character references as the text it shows ("Kx9&amp;m" is "Kx9&m"), in the same pass.
    # Plain-text tables (``print(df)``, Markdown pipes) get the same "column: value" view.
    # An SVG drawing's text (titles, labels, comments) is read as text (see drawing.py).
    # A drawing is scanned here, in the pass that finds where its text is; one a cell
    # shows again is scanned once, as the engine does with any large repeated segment.
    views: list[int] = []
    drawn: dict[int, list[Finding]] = {}
    output, text, markup = Zone.OUTPUT, SegmentKind.TEXT, SegmentKind.MARKUP
    # A plain-text table is read only where a credential word is (texttable.py): one
    # probe over all the text outputs together says whether any has one (most have
    # none), instead of one native call per output.
    texts = [
        i for i, s in enumerate(segments)
        if s.zone is output and s.kind is text and s.key in _TEXT_KEYS
    ]
    worded = bool(texts) and has_credential_word(b"\n".join(data[i] for i in texts))
    drawings = [i for i, s in enumerate(segments) if s.kind is markup]
    again = {  # a drawing -> the same one, earlier
        drawings[k]: drawings[first]
        for k, first in repeats([data[i] for i in drawings], [markup] * len(drawings)).items()
    }
    more: tuple[bytes, ...]
    for i, s in enumerate(segments):
        if s.label is not None:
            # A value in JSON data (metadata, a JSON output, widget state) is a string of
            # its own: the key that names it a credential is read with it, as in the file.
            more = (b'"%s": "%s"' % (s.label.encode("utf-8", "surrogatepass"), data[i]),)
        elif s.kind is markup:
            if i in again:  # its findings are the first one's, its text's included
                continue
            drawn[i], openings = engine.scan_drawing(data[i])
            shown = drawing_text(data[i], openings)
            more = (shown, _entity_decoded(shown)) if shown else ()
        elif s.zone is not output or s.kind is not text:
            continue
        elif s.key == "text/html":
            more = (table_view(data[i]), _entity_decoded(data[i]))
        elif worded and s.key in _TEXT_KEYS:
            more = (text_table_view(data[i]),)
        else:
            continue
        for view in more:
            if view:
                views.append(i)
                data.append(view)
                kinds.append(SegmentKind.TEXT)
    if drawn:  # the rest: the drawings are left out as empty segments (no finding)
        done = drawn.keys() | again.keys()
        found = engine.scan([b"" if i in done else d for i, d in enumerate(data)], kinds)
        for i, in_drawing in drawn.items():
            found[i] = in_drawing
    else:
        found = engine.scan(data, kinds)
    places = _Places()
    for extra, i in enumerate(views, start=len(segments)):
        wanted: dict[bytes, Finding] = {}
        for f in found[extra]:
            for form in places.forms(f.secret):
                wanted.setdefault(form, f)
        placed = _occurrences(data[i], wanted, places)
        seen = {p.fingerprint for p in placed}
        for f in found[extra]:
            if f.fingerprint not in seen:  # written with character references
                seen.add(f.fingerprint)  # each value once, however often the view has it
                placed += _referenced_occurrences(data[i], f)
        found[i] = _merge(found[i], placed)
    for i, first in again.items():
        found[i] = list(found[first])
    found = found[: len(segments)]
    _across_outputs(segments, data, found, places)
    return NotebookScan(segments, found)


_TEXT_KEYS = frozenset({"text", "text/plain", "text/markdown"})


#: The references HTML renderers write (pandas, IPython.display), and what they stand for;
#: ``&amp;`` last, so that ``&amp;lt;`` reads ``&lt;`` as it does in one pass.
_COMMON_REFERENCES = (
    (b"&lt;", b"<"),
    (b"&gt;", b">"),
    (b"&quot;", b'"'),
    (b"&#39;", b"'"),
    (b"&#x27;", b"'"),
    (b"&amp;", b"&"),
)


# Where html.unescape could change anything: a numeric reference, a name it knows without
# ";" (``&not`` in ``&notin``), or a name with ";". Anything else it leaves as it is.
_MAYBE_REFERENCE = re.compile(
    rb"&(?:#|"
    + b"|".join(
        re.escape(name.encode())
        for name in sorted(html.entities.html5, key=len, reverse=True)
        if not name.endswith(";")
    )
    + rb"|[A-Za-z][A-Za-z0-9]{0,31};)"
)


#: Markup longer than this is read in windows around the references that decode to
#: something else (``_entity_windows``); shorter markup is decoded whole.
_WHOLE_VIEW = 64 * 1024
#: Bytes either side of such a reference: the longest detector window and the line
#: context the filters read (engine._LINE_CONTEXT), with room to spare.
_VIEW_REACH = 16 * 1024 + 2 * 4096
#: A window edge moves out to the nearest of these (kept in the window), at most this far,
#: so that no token is cut in two and no new line or word starts at the edge.
_EDGE = re.compile(rb"[;,(){}\[\]<>]")
_EDGE_SLACK = 1024
#: The longest reference looked at when deciding where windows go (``&#`` and 4,000
#: leading zeros is not how a renderer writes a character).
_REFERENCE_MAX = 4096


def _entity_decoded(markup: bytes) -> bytes:
    """``markup`` with its character references decoded; empty when it has none.

    Large markup (a page's inlined scripts, megabytes on one line, where ``a&&b`` and a
    stray ``&gt`` abound) gives only the windows around the references that decode to
    something else, each decoded: a value written with references is found there with
    all the context a detector reads, and the rest of the markup, unchanged, is scanned
    as it is anyway. (The view only finds values; they are redacted where they occur.)"""
    ampersands = markup.count(b"&")
    if not ampersands:
        return b""
    if len(markup) > _WHOLE_VIEW and not _all_common(markup, ampersands):
        return _entity_windows(markup)
    return _decoded_whole(markup, ampersands)


def _all_common(markup: bytes, ampersands: int) -> bool:
    """Every "&" opens one of the references renderers write (a DataFrame's ``&lt;``).
    A script's "&&" says no at once, without counting each reference."""
    if b"&&" in markup:
        return False
    return ampersands == sum(markup.count(ref) for ref, _ in _COMMON_REFERENCES)


def _entity_windows(markup: bytes) -> bytes:
    spans: list[list[int]] = []
    for m in _MAYBE_REFERENCE.finditer(markup):
        at = m.start()
        end = markup.find(b"&", at + 1)
        end = min(len(markup) if end < 0 else end, at + _REFERENCE_MAX)
        part = markup[at:end].decode("utf-8", "surrogatepass")
        if html.unescape(part) == part:
            continue
        lo, hi = max(0, at - _VIEW_REACH), min(len(markup), at + _VIEW_REACH)
        if spans and lo <= spans[-1][1]:
            spans[-1][1] = hi
        else:
            spans.append([lo, hi])
    views = []
    for lo, hi in spans:
        if lo > 0:
            cut = _last_edge(markup, lo)
            lo = cut if cut >= 0 else lo
        if hi < len(markup):
            edge = _EDGE.search(markup, hi, hi + _EDGE_SLACK)
            hi = edge.end() if edge else hi
        window = markup[lo:hi]
        decoded = _decoded_whole(window, window.count(b"&"))
        if decoded:
            views.append(decoded)
    return b"\n".join(views)


def _last_edge(markup: bytes, before: int) -> int:
    """Where the last edge character before ``before`` (within the slack) is, or -1."""
    found = -1
    for m in _EDGE.finditer(markup, max(0, before - _EDGE_SLACK), before):
        found = m.start()
    return found


def _decoded_whole(markup: bytes, ampersands: int) -> bytes:
    if not ampersands:
        return b""
    if _all_common(markup, ampersands):
        # Every "&" opens one of these: the same text as html.unescape, without a
        # Python call per reference.
        for ref, char in _COMMON_REFERENCES:
            markup = markup.replace(ref, char)
        return markup
    # Minified scripts are full of "&&": html.unescape would look at each of them in Python.
    # A reference never spans an "&", so only the stretches from an "&" that may open one
    # to the next "&" are handed to it; the rest stays as it is.
    pieces: list[bytes] = []
    done = 0
    for m in _MAYBE_REFERENCE.finditer(markup):
        at = m.start()
        end = markup.find(b"&", at + 1)
        end = len(markup) if end < 0 else end
        pieces.append(markup[done:at])
        part = markup[at:end].decode("utf-8", "surrogatepass")
        pieces.append(html.unescape(part).encode("utf-8", "surrogatepass"))
        done = end
    if not pieces:
        return b""
    pieces.append(markup[done:])
    decoded = b"".join(pieces)
    return decoded if decoded != markup else b""


def _across_outputs(
    segments: list[Segment], data: list[bytes], found: list[list[Finding]], places: _Places
) -> None:
    """A value found in one output of a cell is redacted in all of them.

    An execute_result carries the same value as text/plain, text/html and JSON, and a
    form may show it with no context (``<pre>T</pre>``, ``{"v": T}``): the context found
    in one form is enough for every form, as written there (HTML-escaped, JSON-escaped).
    """
    output = Zone.OUTPUT
    # Only cells with a finding in an output can change: most have none.
    hit = {segments[i].cell for i, f in enumerate(found) if f and segments[i].zone is output}
    hit.discard(None)
    if not hit:
        return
    by_cell: dict[int, list[int]] = {}
    for i, s in enumerate(segments):
        cell = s.cell
        if cell is not None and s.zone is output and cell in hit:
            by_cell.setdefault(cell, []).append(i)
    for outputs in by_cell.values():
        wanted: dict[bytes, Finding] = {}
        for i in outputs:
            for f in found[i]:
                for form in places.forms(f.secret):
                    wanted.setdefault(form, f)
        if wanted:
            for i in outputs:
                found[i] = _merge(found[i], _occurrences(data[i], wanted, places))


def _written_forms(secret: bytes) -> set[bytes]:
    """``secret`` as an output may hold it: itself, HTML-escaped or -unescaped, and
    JSON-escaped; forms shorter than any detector's match are left out."""
    value = secret.decode("utf-8", "surrogatepass")
    forms = {
        value,
        html.escape(value),
        html.escape(value, quote=False),
        html.unescape(value),
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
    }
    encoded = {f.encode("utf-8", "surrogatepass") for f in forms}
    return {f for f in encoded if len(f) >= MIN_FINDING_LENGTH}


def _occurrences(text: bytes, wanted: dict[bytes, Finding], places: _Places) -> list[Finding]:
    """Every place each byte string of ``wanted`` occurs in ``text``, as a finding like the
    one it maps to, by start.

    Each value is searched for once (a value repeated in many rows is one key), and line
    numbers come from one running count: work grows with the text, not with its square.
    """
    spans = [(start, end, wanted[form]) for start, end, form in places.of(text, list(wanted))]
    spans.sort(key=lambda s: s[0])
    out: list[Finding] = []
    line, counted = 1, 0
    for start, end, f in spans:
        line += text.count(b"\n", counted, start)
        counted = start
        out.append(Finding(f.detector, start, end, line, f.fingerprint, text[start:end], f.masked))
    return out


#: Byte strings are looked for with one ``bytes.find`` pass each while that reads at most
#: this much in all; beyond (a table with a credential in every row: the passes grow with
#: the rows times the text), in one hyperscan literal pass over the text.
_FIND_WORK = 32 * 1024 * 1024


class _Places:
    """Finds where byte strings occur; one per notebook scan, so that the same set of
    values (a cell's findings, looked for in each of its outputs) is compiled once, and
    each value's written forms are worked out once (a table repeats it in each view)."""

    def __init__(self) -> None:
        self._compiled: dict[frozenset[bytes], tuple[compiled.Matcher, list[bytes]]] = {}
        self._forms: dict[bytes, set[bytes]] = {}

    def forms(self, secret: bytes) -> set[bytes]:
        """``_written_forms(secret)``, worked out once per scan."""
        forms = self._forms.get(secret)
        if forms is None:
            forms = self._forms[secret] = _written_forms(secret)
        return forms

    def of(self, text: bytes, forms: list[bytes]) -> list[tuple[int, int, bytes]]:
        """(start, end, form) of every occurrence of each form in ``text``, by start (ties
        in the order of ``forms``); the occurrences of one form do not overlap (leftmost
        first, as ``bytes.find`` gives them)."""
        each, many = forms, []
        if len(forms) * len(text) > _FIND_WORK:
            # hyperscan's literal API reads a form up to its first NUL: those are found here
            each = [f for f in forms if b"\x00" in f]
            many = [f for f in forms if b"\x00" not in f]
        found: list[tuple[int, int, bytes]] = []
        for form in each:
            start = text.find(form)
            while start >= 0:
                found.append((start, start + len(form), form))
                start = text.find(form, start + len(form))
        if many:
            found += self._scanned(text, many)
        rank = {form: k for k, form in enumerate(forms)}
        found.sort(key=lambda place: (place[0], rank[place[2]]))
        return found

    def _scanned(self, text: bytes, forms: list[bytes]) -> list[tuple[int, int, bytes]]:
        matcher, ordered = self._database(forms)
        found = [(end - len(ordered[i]), end, ordered[i]) for i, _s, end in matcher.matches(text)]
        found.sort()
        reached: dict[bytes, int] = {}
        kept = []
        for start, end, form in found:
            if start >= reached.get(form, 0):
                kept.append((start, end, form))
                reached[form] = end
        return kept

    def _database(self, forms: list[bytes]) -> tuple[compiled.Matcher, list[bytes]]:
        key = frozenset(forms)
        if key not in self._compiled:
            ordered = sorted(key)
            db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
            db.compile(expressions=ordered, ids=list(range(len(ordered))),
                       elements=len(ordered), flags=0, literal=True)
            self._compiled[key] = (compiled.Matcher(db), ordered)
        return self._compiled[key]


#: Longer values (a key file) are not looked for in referenced form: the pattern grows
#: with the value.
_MAX_REFERENCED = 8192

#: Each character's HTML5 names (``_`` -> ``lowbar;``), for values written as references.
_NAMES: dict[str, list[str]] = {}
for _name, _char in html.entities.html5.items():
    if len(_char) == 1:
        _NAMES.setdefault(_char, []).append(_name)


def _referenced_occurrences(text: bytes, f: Finding) -> list[Finding]:
    """Where ``f``'s value is written with any of its characters as an HTML character
    reference (``&#x67;hp_…``, ``ghp&#95;…``, ``ghp&lowbar;…``): the view that decoded
    them found it, and redaction needs the span as written."""
    value = f.secret.decode("utf-8", "surrogatepass")
    if len(value) > _MAX_REFERENCED:
        return []
    parts = []
    for ch in value:
        o = ord(ch)
        alternatives = [re.escape(ch).encode("utf-8", "surrogatepass"),
                        b"&#0*%d;?" % o, b"(?i:&#x0*%x;?)" % o]
        alternatives += [b"&" + re.escape(n).encode() for n in _NAMES.get(ch, ())]
        parts.append(b"(?:" + b"|".join(alternatives) + b")")
    pattern = re.compile(b"".join(parts))
    out = []
    line, counted = 1, 0  # lines counted on from the last match, not from the start
    for m in pattern.finditer(text):
        line += text.count(b"\n", counted, m.start())
        counted = m.start()
        out.append(Finding(f.detector, m.start(), m.end(), line, f.fingerprint, m.group(),
                           f.masked))
    return out


def _merge(own: list[Finding], more: list[Finding]) -> list[Finding]:
    """``own`` plus the findings of ``more`` that overlap none of them (or each other)."""
    merged = sorted(own, key=lambda f: f.start)
    starts = [f.start for f in merged]
    # Kept spans are disjoint and sorted, so only a new span's neighbours can overlap it.
    for f in sorted(more, key=lambda f: f.start):
        i = bisect.bisect_right(starts, f.start)
        if (i and merged[i - 1].end > f.start) or (i < len(merged) and merged[i].start < f.end):
            continue
        merged.insert(i, f)
        starts.insert(i, f.start)
    return merged


class RepeatedKey(ValueError):
    """A JSON object gives one key twice: a parser keeps one value, the file holds both."""


def notebook_json(data: bytes | str) -> Any:
    """A notebook file's JSON, parsed for scanning; RepeatedKey (a ValueError) when an
    object repeats a key: its text is then what must be scanned, since a parsed view
    would hide every value but the last (``"source": "<token>", "source": "x = 1"``)."""
    return json.loads(data, object_pairs_hook=_no_repeated_keys)


def _no_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) != len(pairs):
        raise RepeatedKey("a key is repeated in a JSON object")
    return found


def scan_repeated(engine: Engine, path: str, data: bytes, max_depth: int) -> list[Located]:
    """Findings in a notebook file whose JSON repeats a key (``RepeatedKey``): its text, as
    written (every value of the key), and its parsed form (the last value of each, with
    the notebook's views: HTML and printed tables, named JSON values) when it is one."""
    found = scan_file(engine, path, data)
    try:
        nb = json.loads(data)
        parsed = scan_notebook(engine, nb, max_depth=max_depth).located()
    except (ValueError, RecursionError, NotebookError):
        return found
    seen = {loc.finding.fingerprint for loc in found}
    return found + [loc for loc in parsed if loc.finding.fingerprint not in seen]


def scan_notebook_file(engine: Engine, path: str, data: bytes, max_depth: int) -> list[Located]:
    """Findings in a notebook file's bytes (``qustody scan``, assignment collection): its
    parsed JSON, or ``scan_repeated`` when that repeats a key. ValueError (NotebookError)
    or RecursionError when it is no notebook."""
    try:
        nb = notebook_json(data)
    except RepeatedKey:
        return scan_repeated(engine, path, data, max_depth)
    return scan_notebook(engine, nb, max_depth=max_depth).located()


def kind_for(path: str, data: bytes) -> SegmentKind:
    """CODE for program sources, TEXT for other text, BINARY for anything that is not text.

    Text in a legacy single-byte encoding (a Latin-1 ``.env`` with "Configuración" in a
    comment) is text: its credentials are ASCII like any other's. Binary data holds a NUL
    byte within its first 8 KiB (random bytes do every 256 on average)."""
    if b"\x00" in data[:8192]:
        return SegmentKind.BINARY
    return (
        SegmentKind.CODE
        if PurePosixPath(path).suffix.lower() in CODE_SUFFIXES
        else SegmentKind.TEXT
    )


#: Byte order marks of UTF-16 text (Windows Notepad, PowerShell 5's ``>``): NUL bytes
#: between the letters, so it reads as binary until it is decoded.
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def scan_file(engine: Engine, path: str, data: bytes) -> list[Located]:
    """Findings in a file's bytes. A file that starts with a UTF-16 byte order mark is
    also read decoded (binary data may start with those two bytes too): its findings
    there have the offsets of the decoded text (UTF-8)."""
    found = engine.scan_one(scannable(data), kind_for(path, data))
    if data.startswith(_UTF16_BOMS):
        try:
            text = data.decode("utf-16").encode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            text = b""
        seen = {f.fingerprint for f in found}
        found += [f for f in engine.scan_one(scannable(text), kind_for(path, text))
                  if f.fingerprint not in seen]
    return [Located(f, Zone.SOURCE) for f in found]


def is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def marker(detector: str) -> str:
    return f"[REDACTED:{detector}]"


def redact_text(text: str, findings: Sequence[Finding]) -> tuple[str, list[tuple[int, int, str]]]:
    """``text`` with each finding replaced by its marker, and the replaced character spans."""
    encoded = text.encode("utf-8", "surrogatepass")
    ascii_only = len(encoded) == len(text)
    spans: list[tuple[int, int, str]] = []
    byte_at = char_at = 0  # characters before byte byte_at: counted on, not from 0 each time
    for f in sorted(findings, key=lambda f: f.start):
        start, end = f.start, f.end
        if not ascii_only:
            # Byte offsets to character offsets, widened to whole characters.
            while start > 0 and encoded[start] & 0xC0 == 0x80:
                start -= 1
            while end < len(encoded) and encoded[end] & 0xC0 == 0x80:
                end += 1
            chars = len(encoded[start:end].decode("utf-8", "surrogatepass"))
            char_at += len(encoded[byte_at:start].decode("utf-8", "surrogatepass"))
            byte_at = start
            start = char_at
            end = start + chars
        if spans and start < spans[-1][1]:
            continue
        spans.append((start, end, marker(f.detector)))
    pieces: list[str] = []
    cursor = 0
    for start, end, mark in spans:
        pieces.append(text[cursor:start])
        pieces.append(mark)
        cursor = end
    pieces.append(text[cursor:])
    return "".join(pieces), spans


def redact_segment(segment: Segment, findings: Sequence[Finding]) -> int:
    """Redact in place through the segment's refs; returns how many values were replaced.
    A dict key is renamed: redact its values first (``redact_segments``)."""
    if not findings:
        return 0
    new_text, spans = redact_text(segment.text, findings)
    write_back(segment, new_text, spans)
    return len(spans)


def redact_segments(found: Sequence[tuple[Segment, Sequence[Finding]]]) -> int:
    """``redact_segment`` for each, dict keys last: a value's ref names its dict and key,
    so a key renamed first would leave the value's redaction writing under the old key
    (both the key and the value back on disk)."""
    keys = [(s, f) for s, f in found if s.refs[0].is_key]
    values = [(s, f) for s, f in found if not s.refs[0].is_key]
    return sum(redact_segment(s, f) for s, f in (*values, *keys))
