"""Walk a notebook (as the contents API hands it over) into scannable segments.

Every string in the document is visited exactly once, with its location, so a
finding can be reported as "cell 3, outputs[0] text/plain, line 2" and an output
can be redacted in place. A cell's stream outputs of one name are one segment, because a
kernel may print a secret in two chunks with other outputs between them.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from .engine import SegmentKind
from .rules.generic import NOT_A_PASS, NOT_A_PASS_BEFORE


class Zone(Enum):
    """Where a string lives; the save policy treats zones differently."""

    SOURCE = "source"  # cell sources and attachments: the user's own input
    METADATA = "metadata"  # notebook and cell metadata
    OUTPUT = "output"  # outputs and widget state: what the kernel produced


class NotebookError(ValueError):
    """The document is not a notebook we can check; the save must be refused."""


#: Binary payloads of outputs and attachments (base64 text that is not prose).
BINARY_MIMETYPES = frozenset(
    {
        "image/png",
        "image/jpeg",
        "image/gif",
        "image/webp",
        "image/bmp",
        "image/tiff",
        "application/pdf",
        "application/octet-stream",
        "application/zip",
    }
)


def is_binary_mimetype(mime: str) -> bool:
    return mime in BINARY_MIMETYPES or mime.startswith(("audio/", "video/", "font/"))


@dataclass
class Ref:
    """Where a segment's text came from, so a redacted text can be written back."""

    container: Any
    key: Any
    lines: bool  # stored as a list of lines (nbformat's multiline strings)
    length: int  # characters this ref contributes to the segment
    is_key: bool = False  # the string is a dict key, not a value
    joiner: str = ""


#: Where a value sits: ``(parent path, key)``, None at the root. Pointers are spelled out
#: only for the few segments that are reported, not for the thousands that are scanned.
Path = tuple[Any, Any] | None


def pointer_of(path: Path) -> str:
    """The RFC 6901 JSON pointer of ``path``."""
    parts: list[str] = []
    while path is not None:
        path, key = path
        parts.append(_escape(key))
    return "/" + "/".join(reversed(parts))


class Segment:
    """One string (or the joined lines of one) with where it came from."""

    __slots__ = ("_one", "_refs", "cell", "cell_id", "kind", "label", "path", "text", "zone")

    def __init__(
        self,
        path: Path,
        text: str,
        zone: Zone,
        kind: SegmentKind,
        container: Any = None,
        lines: bool = False,
        joiner: str = "",
        is_key: bool = False,
    ) -> None:
        self.path = path
        self.text = text
        self.zone = zone
        self.kind = kind
        self.cell: int | None = None
        self.cell_id: str | None = None
        #: The key that names this value in JSON data, when it names a credential
        #: (``{"access_token": "..."}`` in metadata, a JSON output, widget state).
        self.label: str | None = None
        self._refs: list[Ref] | None = None
        # The one ref of a plain string, built only if the segment is redacted.
        self._one = (container, lines, joiner, is_key)

    @property
    def key(self) -> Any:
        """The key (or list index) of the (first) string: ``text/html``, ``source``."""
        return self.path[1] if self.path is not None else None

    @property
    def pointer(self) -> str:
        """RFC 6901 JSON pointer of the (first) string."""
        return pointer_of(self.path)

    @property
    def refs(self) -> list[Ref]:
        if self._refs is None:
            container, lines, joiner, is_key = self._one
            self._refs = [Ref(container, self.key, lines, len(self.text), is_key, joiner)]
        return self._refs

    def __repr__(self) -> str:
        where = f"{self.pointer!r}, {self.zone.value}, {self.kind.value}"
        return f"Segment({where}, {len(self.text)} chars)"


#: The words of a JSON key (``access_token``, ``apiKey``, ``IBMQ-TOKEN``, ``x.auth``).
_KEY_WORDS = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z0-9]+(?![a-z])")
#: Key words that name a credential: then the value is also read as ``"key": "value"``.
#: Whole words only: ``authorship_tag`` (Colab's random tag), ``keywords``, ``tokenizer``;
#: a word run together ends with one (``PGPASSWORD``, ``accesstoken``, ``clientsecret``).
_CREDENTIAL_KEY_WORDS = frozenset({
    "credential", "credentials", "token", "tokens", "secret", "secrets", "password",
    "passwords", "passwd", "passphrase", "pass", "pwd", "bearer", "apikey", "auth",
    "authorization", "key", "keys",
})
_CREDENTIAL_ENDINGS = ("password", "passwd", "passphrase", "token", "secret", "apikey",
                       "credential", "credentials", "pass")
#: ``key`` names a data key after these (``cache_key``, ``primaryKey``, ``public_key``).
_DATA_KEY_WORDS = frozenset({
    "cache", "primary", "foreign", "partition", "row", "sort", "s3", "object", "idempotency",
    "unique", "composite", "index", "column", "table", "range", "hash", "lookup", "group",
    "shard", "public", "host", "dict", "map", "natural", "surrogate", "routing", "message",
    "event", "entity", "item", "record", "node", "file", "blob", "dedup", "dedupe", "join",
    "cluster", "order", "react", "list", "page", "cursor", "lock", "redis",
})


@functools.lru_cache(maxsize=4096)  # the same few keys in every notebook's metadata
def names_a_credential(key: str) -> bool:
    """Whether a JSON key names its value a credential (``"password"``, ``"api_key"``,
    ``"PGPASSWORD"``, ``"OPENAI_KEY"``), not a data key (``"cache_key"``)."""
    words = [w.lower() for w in _KEY_WORDS.findall(key)]
    for i, w in enumerate(words):
        if w in ("key", "keys"):
            if not (i and words[i - 1] in _DATA_KEY_WORDS):
                return True
        elif w in _CREDENTIAL_KEY_WORDS or (
            w.endswith(_CREDENTIAL_ENDINGS) and w not in NOT_A_PASS
        ):
            if w == "pass" and i and words[i - 1] in NOT_A_PASS_BEFORE:
                continue  # forward_pass, low-pass
            return True
    return False


#: A tuple, not ``dict | list``: the union would be built anew at every isinstance call.
_CONTAINERS = (dict, list)
_MULTILINE_LEAVES = frozenset({"source", "text", "traceback"})
#: No detector can match fewer bytes than this, so shorter strings (output types,
#: stream names, short ids) are not worth a segment. Stream text is always kept:
#: a secret may arrive one character per chunk.
MIN_FINDING_LENGTH = 8
#: Strings nbformat and Jupyter write that cannot hold a credential: enumerated values
#: (``cell_type``, ``output_type``), common mime types (``raw_mimetype``, mime-bundle
#: keys) and long metadata keys. They are most of a notebook's strings but never worth a
#: segment: each costs the walk and the engine as much as a source line.
KNOWN_STRINGS = frozenset(
    {
        "markdown", "display_data", "execute_result", "needs_background",
        "text/plain", "text/html", "text/markdown", "text/latex", "text/x-python",
        "text/restructuredtext", "text/x-rst", "text/javascript", "text/vnd.plotly.v1+html",
        "image/svg+xml", "application/json", "application/javascript",
        "application/pdf", "application/x-latex",
        "application/vnd.jupyter.widget-view+json",
        "application/vnd.jupyter.widget-state+json",
        "application/vnd.plotly.v1+json", "application/vnd.bokehjs_load.v0+json",
        "application/vnd.bokehjs_exec.v0+json", "application/vnd.holoviews_load.v0+json",
        "application/vnd.holoviews_exec.v0+json",
    }
)
#: What a generated cell id is made of (nbformat's and JupyterLab's: hex, or a UUID).
_GENERATED_ID = "0123456789abcdef-"


def _escape(part: object) -> str:
    text = str(part)
    return text.replace("~", "~0").replace("/", "~1") if "/" in text or "~" in text else text


def walk(
    nb: object,
    max_depth: int = 64,
    skip: Callable[[int, dict[str, Any]], bool] | None = None,
    generated_ids: bool = True,
) -> list[Segment]:
    """All strings of ``nb`` as segments; raises NotebookError for non-notebooks.

    ``skip(index, cell)`` true leaves that cell out (one the caller knows to be clean).
    With ``generated_ids`` false, cell ids of the generated form are walked too: a caller
    looking for delivered values (any hexadecimal string or UUID may be one) needs them."""
    if not isinstance(nb, dict):
        raise NotebookError("the notebook content is not a JSON object")
    cells = nb.get("cells", [])
    if not isinstance(cells, list):
        raise NotebookError("'cells' is not a list")
    out: list[Segment] = []
    for key, value in nb.items():
        if key != "cells":
            # Saved widget state is kernel output (redacted); other metadata is the user's.
            zone = Zone.METADATA
            if key == "metadata" and isinstance(value, dict) and "widgets" in value:
                rest = {k: v for k, v in value.items() if k != "widgets"}
                path = (None, "metadata")
                _strings(
                    out, value, "widgets", value["widgets"], (path, "widgets"), Zone.OUTPUT,
                    max_depth, 2,
                )  # fmt: skip
                _strings(out, nb, key, rest, path, zone, max_depth, 1, refs_to=value)
                continue
            _strings(out, nb, key, value, (None, key), zone, max_depth, 1)
    cells_path = (None, "cells")
    for index, cell in enumerate(cells):
        if not isinstance(cell, dict):
            raise NotebookError(f"cell {index} is not a JSON object")
        if skip is not None and skip(index, cell):
            continue
        _cell(out, cell, index, (cells_path, index), max_depth, generated_ids)
    return out


#: Cell magics whose body is not Python (a shell script, a file being written that is
#: not a Python module, markup): there ``DB_PASSWORD=word`` is a literal, as in a .env
#: file, not a name. ``%%time``, ``%%capture`` and ``%%writefile x.py`` hold Python.
_NOT_PYTHON = re.compile(
    r"\s*%%(?:bash|sh|script|html|javascript|js|latex|markdown|svg|perl|ruby|"
    r"writefile(?![^\n]*\.pyw?[ \t]*(?:\n|$)))\b"
)


def _kind_of(cell: dict[str, Any]) -> SegmentKind:
    if cell.get("cell_type") != "code":
        return SegmentKind.TEXT
    source = cell.get("source")
    first = source[0] if isinstance(source, list) and source else source
    if isinstance(first, str) and _NOT_PYTHON.match(first):
        return SegmentKind.TEXT
    return SegmentKind.CODE


def _cell(
    out: list[Segment],
    cell: dict[str, Any],
    index: int,
    base: Path,
    max_depth: int,
    generated_ids: bool = True,
) -> None:
    cell_id = cell.get("id")
    cell_id = cell_id if isinstance(cell_id, str) else None
    kind = _kind_of(cell)
    first = len(out)
    for key, value in cell.items():
        # Nothing below an empty value, a short or known string (a generated id) or a
        # scalar can hold a finding.
        if isinstance(value, str):
            if (
                len(value) < MIN_FINDING_LENGTH
                or value in KNOWN_STRINGS
                or (key == "id" and generated_ids and not value.strip(_GENERATED_ID))
            ):
                continue
        elif not value or not isinstance(value, _CONTAINERS):
            continue
        path = (base, key)
        if key == "source":
            if max_depth >= 2:  # the common shapes, without the generic walk's set-up
                if isinstance(value, str):
                    out.append(Segment(path, value, Zone.SOURCE, kind, cell))
                    continue
                if isinstance(value, list):
                    try:
                        text = "".join(value)
                    except TypeError:
                        pass  # not all lines are strings: walked as JSON
                    else:
                        out.append(Segment(path, text, Zone.SOURCE, kind, cell, True))
                        continue
            _strings(out, cell, key, value, path, Zone.SOURCE, max_depth, 2, kind)
        elif key == "outputs" and isinstance(value, list):
            _outputs(out, value, path, max_depth)
        elif key == "attachments":
            _strings(out, cell, key, value, path, Zone.SOURCE, max_depth, 2)
        else:
            _strings(out, cell, key, value, path, Zone.METADATA, max_depth, 2)
    for segment in out[first:]:
        segment.cell, segment.cell_id = index, cell_id


def _outputs(out: list[Segment], outputs: list[Any], base: Path, max_depth: int) -> None:
    """Outputs, with every stream output of one name joined into one segment.

    A cell's stdout is one byte stream whatever lands between its chunks: a kernel
    flushes stdout and stderr separately (a warning splits a printed line in two outputs)
    and a display between two ``print(..., end="")`` calls splits it too. The segment
    reads the chunks of one name in order, as the process wrote them.
    """
    streams: dict[object, Segment] = {}
    for j, output in enumerate(outputs):
        path = (base, j)
        if not (isinstance(output, dict) and output.get("output_type") == "stream"):
            if type(output) is dict and max_depth >= _BUNDLE_DEPTH:
                _bundle(out, output, path, max_depth)
            else:
                _strings(out, outputs, j, output, path, Zone.OUTPUT, max_depth, 3)
            continue
        for key, value in output.items():
            if key != "text" and (
                len(value) >= MIN_FINDING_LENGTH
                if isinstance(value, str)
                else value and isinstance(value, _CONTAINERS)
            ):
                _strings(out, output, key, value, (path, key), Zone.OUTPUT, max_depth, 4)
        text = output.get("text")
        lines = isinstance(text, list)
        if isinstance(text, list):
            try:
                joined = "".join(text)
            except TypeError:  # not all lines are strings: walked as JSON
                _strings(out, output, "text", text, (path, "text"), Zone.OUTPUT, max_depth, 4)
                continue
        elif isinstance(text, str):
            joined = text
        else:
            _strings(out, output, "text", text, (path, "text"), Zone.OUTPUT, max_depth, 4)
            continue
        ref = Ref(output, "text", lines, len(joined))
        name = output.get("name")
        name = name if isinstance(name, str) else None
        stream = streams.get(name)
        if stream is not None:
            stream.text += joined
            stream.refs.append(ref)
        else:
            stream = Segment((path, "text"), joined, Zone.OUTPUT, SegmentKind.TEXT)
            stream._refs = [ref]
            streams[name] = stream
            out.append(stream)


#: The depth limit from which ``_bundle`` may walk an output (its mime bundle's values
#: are at depth 5: a lower limit is for ``_strings`` to enforce).
_BUNDLE_DEPTH = 6


def _bundle(out: list[Segment], output: dict[Any, Any], path: Path, max_depth: int) -> None:
    """A display or result output, as ``_strings`` walks it (the same segments in the same
    order), without its stack for the common shape: a ``data`` bundle of strings and lists
    of lines. Anything else below the output is handed to ``_strings``."""
    for key, value in _children(out, output, path):
        where = (path, key)
        if isinstance(value, str):
            _leaf(out, output, key, value, where)
        elif key == "data" and type(value) is dict:
            _mime_bundle(out, value, where, max_depth)
        else:
            _strings(out, output, key, value, where, Zone.OUTPUT, max_depth, 4)


def _mime_bundle(out: list[Segment], data: dict[Any, Any], path: Path, max_depth: int) -> None:
    """An output's ``data`` (depth 4), as ``_strings`` walks it: each string, each list of
    lines joined, and anything else handed to ``_strings``."""
    for key, value in _children(out, data, path):
        where = (path, key)
        if isinstance(value, str):
            _leaf(out, data, key, value, where)
            continue
        if isinstance(value, list):  # lines of one text (_lines_of_data: under "data")
            lines = _joined(key, value)
            if lines is not None:
                _leaf(out, data, key, lines[0], where, lines[1])
                continue
        _strings(out, data, key, value, where, Zone.OUTPUT, max_depth, 5)


def _leaf(out: list[Segment], holder: Any, key: Any, text: str, where: Path,
          joiner: str | None = None) -> None:
    """An output-zone string (``joiner``: a list of lines joined with it), as ``_strings``
    adds it."""
    kind = _leaf_kind(key, where, SegmentKind.TEXT, Zone.OUTPUT)
    if joiner is not None:
        out.append(Segment(where, text, Zone.OUTPUT, kind, holder, True, joiner))
    elif text not in KNOWN_STRINGS:
        out.append(Segment(where, text, Zone.OUTPUT, kind, holder))


def _children(out: list[Segment], mapping: dict[Any, Any], path: Path) -> list[tuple[Any, Any]]:
    """What ``_strings`` does with an output-zone object it pops: each long key is a
    segment of its own, now; the values it would push (strings long enough to hold a
    finding, non-empty containers) are returned in the order its stack pops them."""
    children: list[tuple[Any, Any]] = []
    for key, value in mapping.items():
        if isinstance(key, str) and len(key) >= MIN_FINDING_LENGTH * 2 and key not in KNOWN_STRINGS:
            out.append(Segment((path, key), key, Zone.OUTPUT, SegmentKind.TEXT, mapping,
                               is_key=True))
        if isinstance(value, str):
            if len(value) >= MIN_FINDING_LENGTH:
                children.append((key, value))
        elif isinstance(value, _CONTAINERS) and value:
            children.append((key, value))
    children.reverse()  # a stack pops the last key first
    return children


def _strings(
    out: list[Segment],
    container: Any,
    key: Any,
    value: Any,
    path: Path,
    zone: Zone,
    max_depth: int,
    depth: int,
    kind: SegmentKind = SegmentKind.TEXT,
    refs_to: Any = None,
) -> None:
    """Every string below ``container[key]``, iteratively (no recursion limit to hit).

    Values are visited depth first from the last key of each object (a stack), and a
    container at the depth limit refuses the notebook as its first child would."""
    if depth > max_depth:
        raise _too_deep(path, max_depth)
    stack: list[tuple[Any, Any, Any, Path, int]] = [(container, key, value, path, depth)]
    push, pop = stack.append, stack.pop
    add = out.append
    while stack:
        parent, k, v, p, d = pop()
        if isinstance(v, str):
            if len(v) >= MIN_FINDING_LENGTH and v not in KNOWN_STRINGS:
                segment = Segment(p, v, zone, _leaf_kind(k, p, kind, zone), parent)
                if type(k) is str:
                    if names_a_credential(k):
                        segment.label = k
                    elif k == "value" and type(parent) is dict and parent.get(
                            "_model_name") == "PasswordModel":  # an ipywidgets Password
                        segment.label = "password"
                add(segment)
        elif isinstance(v, dict):
            if not v:
                continue
            if d >= max_depth:
                raise _too_deep((p, list(v)[-1]), max_depth)
            # The root may be a filtered view of a dict: write back to the real one.
            holder = refs_to if v is value and refs_to is not None else v
            d += 1
            for ck, cv in v.items():
                if (
                    isinstance(ck, str)
                    and len(ck) >= MIN_FINDING_LENGTH * 2
                    and ck not in KNOWN_STRINGS
                ):
                    # Long keys are data (e.g. a dict of tokens), so they are scanned too.
                    add(Segment((p, ck), ck, zone, SegmentKind.TEXT, holder, is_key=True))
                if isinstance(cv, str):
                    if len(cv) >= MIN_FINDING_LENGTH:
                        push((holder, ck, cv, (p, ck), d))
                elif isinstance(cv, _CONTAINERS):
                    push((holder, ck, cv, (p, ck), d))
        elif isinstance(v, list):
            if not v:
                continue
            if k in _MULTILINE_LEAVES or _lines_of_data(p):
                # nbformat stores these as lists of lines that read as one text
                lines = _joined(k, v)
                if lines is not None:
                    text, joiner = lines
                    add(Segment(p, text, zone, _leaf_kind(k, p, kind, zone), parent, True, joiner))
                    continue
            if d >= max_depth:
                raise _too_deep((p, len(v) - 1), max_depth)
            d += 1
            for i, item in enumerate(v):
                if isinstance(item, str):
                    if len(item) >= MIN_FINDING_LENGTH:
                        push((v, i, item, (p, i), d))
                elif isinstance(item, _CONTAINERS):
                    push((v, i, item, (p, i), d))


def _joined(key: Any, lines: list[Any]) -> tuple[str, str] | None:
    """A list of lines as the one text it reads as, and what joined them (a traceback's
    frames are lines of their own); None when not all are strings (walked item by item)."""
    joiner = "\n" if key == "traceback" else ""
    try:
        return joiner.join(lines), joiner
    except TypeError:
        return None


def _too_deep(path: Path, max_depth: int) -> NotebookError:
    return NotebookError(
        f"the notebook nests JSON deeper than {max_depth} levels at {pointer_of(path)[:200]}"
    )


def _lines_of_data(path: Path) -> bool:
    """Lists of strings in a mime bundle (``data``) or an attachment are lists of lines
    (lists deeper inside JSON data are data, and are walked item by item)."""
    assert path is not None
    parent = path[0]
    return parent is not None and (parent[1] == "data" or _under_attachments(parent[0]))


def _under_attachments(path: Path) -> bool:
    while path is not None:
        path, key = path
        if key == "attachments":
            return True
    return False


#: Mime types of drawings: scanned as ``SegmentKind.MARKUP``.
MARKUP_MIMETYPES = frozenset({"image/svg+xml"})


def _leaf_kind(key: Any, path: Path, kind: SegmentKind, zone: Zone) -> SegmentKind:
    """A mime bundle's binary payload is BINARY, and an output's SVG drawing MARKUP (not
    one in metadata, an attachment or JSON data: there it is read as text, whole);
    anything else is of the walked part's ``kind``."""
    if not isinstance(key, str):
        return kind
    if is_binary_mimetype(key):
        return SegmentKind.BINARY if _lines_of_data(path) else kind
    if key in MARKUP_MIMETYPES and zone is Zone.OUTPUT and _in_output_bundle(path):
        return SegmentKind.MARKUP
    return kind


def _in_output_bundle(path: Path) -> bool:
    """Whether ``path`` is ``.../outputs/<j>/data/<key>``: a cell output's own mime bundle."""
    assert path is not None
    bundle = path[0]
    if bundle is None or bundle[1] != "data":
        return False
    output = bundle[0]
    if output is None or not isinstance(output[1], int):
        return False
    outputs = output[0]
    return outputs is not None and outputs[1] == "outputs"


def write_back(seg: Segment, new_text: str, spans: list[tuple[int, int, str]]) -> None:
    """Store a redacted segment text through its refs.

    ``spans`` are the (start, end, marker) replacements, in the original text's
    character offsets; a span that crosses a stream chunk boundary puts the
    marker in the chunk where the secret starts and removes the rest.
    """
    if len(seg.refs) == 1:
        _store(seg.refs[0], new_text)
        return
    # Spans are sorted and do not overlap, so those a ref holds are the next few: one
    # pass over both (a stream of 16,000 chunks with a token each took 9 s span by span).
    offset = first = 0
    for ref in seg.refs:
        lo, hi = offset, offset + ref.length
        while first < len(spans) and spans[first][1] <= lo:
            first += 1
        pieces: list[str] = []
        cursor = lo
        k = first
        while k < len(spans) and spans[k][0] < hi:
            start, end, marker = spans[k]
            pieces.append(seg.text[cursor : max(start, lo)])
            if start >= lo:
                pieces.append(marker)
            cursor = min(end, hi)
            k += 1
        pieces.append(seg.text[cursor:hi])
        _store(ref, "".join(pieces))
        offset = hi


def _store(ref: Ref, text: str) -> None:
    if ref.is_key:
        container = ref.container
        # Two keys redacted alike must stay two entries: one would silently drop the other.
        new_key, n = text, 1
        while new_key in container and new_key != ref.key:
            n += 1
            new_key = f"{text} #{n}"
        items = [(new_key if k == ref.key else k, v) for k, v in container.items()]
        container.clear()
        container.update(items)
    elif ref.lines:
        ref.container[ref.key] = (
            text.split(ref.joiner) if ref.joiner else text.splitlines(keepends=True)
        )
    else:
        ref.container[ref.key] = text
