"""The scanning engine: one hyperscan pass over many segments, then bounded confirmation.

Segments are concatenated into one buffer per database so a notebook costs one
native scan however many cells it has. Anchors report the start of each
candidate; each detector's Python regex then looks at no more than its window,
so the total work is linear in the input whatever it contains.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from itertools import accumulate
from operator import add
from pathlib import Path

import hyperscan

from . import compiled
from .detector import Detector, Kind
from .drawing import TEXT_OPENINGS
from .entropy import shannon
from .filters import Candidate, filtered_by
from .fingerprint import Fingerprinter, public_part

SEPARATOR = b"\n"  # one byte: _scan_joined counts one per part
_LINE_CONTEXT = 4096  # bytes either side of a match read for pragmas


class SegmentKind(Enum):
    """What a segment holds; decides which detectors run and how bare values read."""

    CODE = "code"  # program source: a bare ``token = value`` is an expression
    TEXT = "text"  # prose, outputs, config files: a bare value is a literal
    BINARY = "binary"  # base64 of an image or other binary payload: binary-safe formats only
    #: an SVG drawing: text, but megabytes of path data, where quoted strings are attribute
    #: values; detectors marked ``in_markup`` only (see Detector.in_markup)
    MARKUP = "markup"

    # Members are singletons: hashed by identity, in C (Enum's own hash is a Python call,
    # paid at every lookup of a segment's kind).
    __hash__ = object.__hash__


@dataclass(frozen=True)
class Finding:
    """A credential found in one segment. ``secret`` is never serialised or printed."""

    detector: str
    start: int
    end: int
    line: int
    fingerprint: str
    secret: bytes = field(repr=False, compare=False)
    #: The public format prefix and at most the last few characters (see ``mask``).
    masked: str = ""

    def public(self) -> dict[str, object]:
        return {
            "detector": self.detector,
            "line": self.line,
            "fingerprint": self.fingerprint,
            "masked": self.masked,
        }


#: A value at least this long may show its last ``MASK_TAIL`` characters when masked.
MASK_TAIL_FROM = 24
MASK_TAIL = 3


def mask(secret: bytes, public_prefix: int = 0, show_tail: bool = True) -> str:
    """``ghp_********x9Z``: the public format prefix (at most a third of the value), a fixed
    run of stars (the length is not told) and, for values of 24 or more characters, the
    last 3 characters, so a user can tell which of their keys it is. Shorter values
    (passwords) show nothing of their own."""
    prefix = public_part(secret, public_prefix)
    tail = secret[-MASK_TAIL:] if show_tail and len(secret) >= MASK_TAIL_FROM else b""
    return (prefix + b"********" + tail).decode("ascii", "replace")


@dataclass(frozen=True)
class AllowList:
    """Values and patterns an admin declared harmless (test fixtures, public demo keys)."""

    values: frozenset[bytes] = frozenset()
    patterns: tuple[re.Pattern[bytes], ...] = ()

    def allows(self, secret: bytes) -> bool:
        return secret in self.values or any(p.search(secret) for p in self.patterns)


class _Database:
    """A compiled hyperscan database with one scratch space per thread.

    Detectors with the same anchor share one expression: hyperscan then finds each
    candidate once, and every detector of the group confirms it.
    """

    def __init__(
        self, detectors: Sequence[Detector], binary: bool = False, extras: Sequence[bytes] = ()
    ) -> None:
        self.detectors = list(detectors)
        self._matcher: compiled.Matcher | None = None
        self.flags: list[int] = []
        groups: dict[tuple[bytes, bool, Callable[[bytes, int], int] | None], list[int]] = {}
        for i, d in enumerate(self.detectors):
            anchor = d.anchor if binary or d.text_anchor is None else d.text_anchor
            groups.setdefault((anchor, d.caseless, d.anchor_start), []).append(i)
        #: per expression id: the detectors it stands for, and how to find its start
        #: when it is compiled without start-of-match tracking
        self._groups = [tuple(members) for members in groups.values()]
        self.rank = {d.id: d.kind.value for d in self.detectors}
        #: per expression id, what the database is compiled from (compiled.py stores it
        #: under their hash): the detectors' anchors, then ``extras`` (expressions that
        #: are no detector's, whose ends ``scan`` reports apart)
        self.expressions = [key[0] for key in groups] + list(extras)
        self._starts = [key[2] for key in groups]
        self.flags = [
            (0 if start else hyperscan.HS_FLAG_SOM_LEFTMOST)
            | (hyperscan.HS_FLAG_CASELESS if caseless else 0)
            for _, caseless, start in groups
        ] + [0] * len(extras)
        if not self.expressions:
            return
        self._matcher = compiled.Matcher(compiled.database(self.expressions, self.flags))

    def hits(self, buf: bytes) -> list[tuple[int, int, int]]:
        """(detector index, anchor start, anchor end) for every anchor in ``buf``."""
        return self.scan(buf)[0]

    def scan(self, buf: bytes) -> tuple[list[tuple[int, int, int]], list[tuple[int, int]]]:
        """``hits``, and (extra expression index, end) for every match of the extras."""
        if self._matcher is None or not buf:
            return [], []
        out: list[tuple[int, int, int]] = []
        extra: list[tuple[int, int]] = []
        detectors = len(self._groups)
        for i, start, end in self._matcher.matches(buf):
            if i >= detectors:
                extra.append((i - detectors, end))
                continue
            start_of = self._starts[i]
            if start_of is not None:
                start = start_of(buf, end)
            out.extend((member, start, end) for member in self._groups[i])
        return out, extra


class Engine:
    """Scans byte segments with a fixed set of detectors; thread-safe, reusable."""

    def __init__(
        self,
        detectors: Iterable[Detector],
        allow: AllowList | None = None,
        fingerprinter: Fingerprinter | None = None,
    ) -> None:
        self.detectors = tuple(detectors)
        ids = [d.id for d in self.detectors if not d.known]  # known values share one id
        if len(ids) != len(set(ids)):
            raise ValueError(
                f"duplicate detector ids: {sorted(i for i in ids if ids.count(i) > 1)}"
            )
        #: Whether it looks for delivered values (``known.py``), which may have any form.
        self.knows_values = any(d.known for d in self.detectors)
        self.allow = allow or AllowList()
        self.fingerprint = fingerprinter or Fingerprinter()
        self._text = _Database(self.detectors)
        self._binary = _Database([d for d in self.detectors if d.in_binary], binary=True)
        # A drawing's scan also finds where its text parts open (drawing.py), in one pass.
        self._markup = _Database([d for d in self.detectors if d.in_markup],
                                 extras=TEXT_OPENINGS)
        self._database_of = {
            SegmentKind.CODE: self._text,
            SegmentKind.TEXT: self._text,
            SegmentKind.BINARY: self._binary,
            SegmentKind.MARKUP: self._markup,
        }

    def store_databases(self, directory: Path) -> list[Path]:
        """Write this engine's compiled databases where ``compiled.database`` finds them."""
        return [
            compiled.store(db.expressions, db.flags, directory)
            for db in (self._text, self._binary, self._markup)
            if db.expressions
        ]

    def scan(
        self, segments: Sequence[bytes], kinds: Sequence[SegmentKind] | None = None
    ) -> list[list[Finding]]:
        """Findings for each segment, in order (TEXT unless ``kinds`` says otherwise).

        A large segment that repeats an earlier one of the same kind is scanned once: a
        mime bundle often holds one text twice (plotly's page as ``text/html`` and as its
        own type, megabytes each)."""
        kinds = kinds or [SegmentKind.TEXT] * len(segments)
        same = repeats(segments, kinds)
        if same:
            kept = [i for i in range(len(segments)) if i not in same]
            found = self.scan([segments[i] for i in kept], [kinds[i] for i in kept])
            result: list[list[Finding]] = [[] for _ in segments]
            for i, findings in zip(kept, found, strict=True):
                result[i] = findings
            for i, first in same.items():
                result[i] = list(result[first])
            return result
        result = [[] for _ in segments]
        code = SegmentKind.CODE
        picked: dict[_Database, list[int]] = {}  # each database: its segments, in order
        database_of = self._database_of
        marks: _Marks = {}
        for i, kind in enumerate(kinds):
            db = database_of[kind]
            if len(segments[i]) >= _ALONE_FROM:
                # Scanned on its own: joining it would copy it, and each part's findings
                # are those it has alone anyway (see _hidden_hits).
                self._scan_joined(db, [segments[i]], [kind is code], [result[i]], marks)
            else:
                picked.setdefault(db, []).append(i)
        for db, indices in picked.items():
            if len(indices) == len(segments):  # the common case: all text
                self._scan_joined(db, segments, [k is code for k in kinds], result, marks)
                continue
            self._scan_joined(
                db,
                [segments[i] for i in indices],
                [kinds[i] is code for i in indices],
                [result[i] for i in indices],
                marks,
            )
        return result

    def scan_one(self, data: bytes, kind: SegmentKind = SegmentKind.TEXT) -> list[Finding]:
        return self.scan([data], [kind])[0]

    def scan_drawing(self, svg: bytes) -> tuple[list[Finding], list[tuple[int, int]]]:
        """The findings of a drawing (as ``scan`` gives those of a MARKUP segment) and
        where its text parts open (``drawing.TEXT_OPENINGS`` index, end of the opening),
        from one native pass."""
        found: list[list[Finding]] = [[]]
        openings = self._scan_joined(self._markup, [svg], [False], found)
        return found[0], openings

    def _scan_joined(
        self,
        db: _Database,
        parts: Sequence[bytes],
        code: list[bool],
        out: list[list[Finding]],
        marks: _Marks | None = None,
    ) -> list[tuple[int, int]]:
        """Scan ``parts`` in one buffer; returns the matches of ``db``'s extras in it.
        ``marks``: the fingerprints and masks the scan has worked out so far."""
        marks = {} if marks is None else marks
        # One part is its own buffer (bytes.join returns it): no copy of a large one.
        buf = SEPARATOR.join(parts)
        # Where each part starts: the lengths before it plus one separator byte each, in C.
        starts = list(map(add, accumulate(map(len, parts), initial=0), range(len(parts))))
        hits, extras = db.scan(buf)
        if not hits:
            return extras
        hits += _hidden_hits(db, parts, starts, hits)
        hits.sort(key=lambda h: (h[1], h[0]))
        consumed = [-1] * len(db.detectors)  # per detector: end of its last confirmed match
        per_segment: dict[int, list[Finding]] = {}
        lines = _LineCounter(buf)
        for idx, start, hit_end in hits:
            if start < consumed[idx]:
                continue
            seg = bisect.bisect_right(starts, start) - 1
            if start == starts[seg] + len(parts[seg]) and seg + 1 < len(parts):
                # An anchor on a line start (``\n'token'``) that begins on the separator
                # belongs to the next segment.
                seg, start = seg + 1, start + 1
            seg_start, seg_end = starts[seg], starts[seg] + len(parts[seg])
            det = db.detectors[idx]
            end = min(seg_end, start + det.window)
            if det.back:
                m = det.value.search(buf, max(seg_start, start - det.back), end)
            else:
                m = det.value.match(buf, start, end)
                if m is None and det.restart is not None:
                    for later in det.restart.finditer(buf, start + 1, hit_end):
                        m = det.value.match(buf, later.start(), end)
                        if m is not None:
                            break
            if m is None:
                continue
            span = det.secret_of(m)
            if span is None or span[0] == span[1]:
                continue
            secret = buf[span[0] : span[1]]
            if not self._passes(det, buf, span, seg_start, seg_end, code[seg]):
                continue
            consumed[idx] = m.end()
            # A value a table repeats in each of its views is fingerprinted and masked once.
            mark = marks.get((secret, det.public_prefix, det.known))
            if mark is None:
                mark = marks[(secret, det.public_prefix, det.known)] = (
                    self.fingerprint(secret, det.public_prefix),
                    mask(secret, det.public_prefix, show_tail=not det.known),
                )
            per_segment.setdefault(seg, []).append(
                Finding(
                    detector=det.id,
                    start=span[0] - seg_start,
                    end=span[1] - seg_start,
                    line=lines.line_of(span[0], seg_start),
                    fingerprint=mark[0],
                    secret=secret,
                    masked=mark[1],
                )
            )
        for seg, found in per_segment.items():
            out[seg].extend(_without_overlaps(found, db.rank))
        return extras

    def _passes(
        self, det: Detector, buf: bytes, span: tuple[int, int], lo: int, hi: int, in_code: bool
    ) -> bool:
        secret = buf[span[0] : span[1]]
        if det.known:
            return True
        if det.min_entropy is not None and shannon(secret) < det.min_entropy:
            return False
        if det.screen is not None and not det.screen(secret):
            return False
        if self.allow.allows(secret):
            return False
        nl = buf.rfind(b"\n", max(lo, span[0] - _LINE_CONTEXT), span[0])
        line_start = nl + 1 if nl >= 0 else max(lo, span[0] - _LINE_CONTEXT)
        line_end = buf.find(b"\n", span[1], min(hi, span[1] + _LINE_CONTEXT))
        line_end = min(hi, span[1] + _LINE_CONTEXT) if line_end < 0 else line_end
        previous = b""
        if nl >= 0:
            prev_nl = buf.rfind(b"\n", max(lo, nl - _LINE_CONTEXT), nl)
            previous = buf[prev_nl + 1 if prev_nl >= 0 else max(lo, nl - _LINE_CONTEXT) : nl]
        quoted = span[0] > lo and buf[span[0] - 1 : span[0]] in (b'"', b"'", b"`")
        candidate = Candidate(
            secret=secret,
            line=buf[line_start:line_end],
            previous_line=previous,
            quoted=quoted,
            in_code=in_code,
            assigned=det.kind in (Kind.VENDOR, Kind.KEYWORD),
            documented=det.kind is Kind.FORMAT,
            # the window starts inside its line (not on a line start it just missed)
            cut=nl < 0 and line_start > lo and buf[line_start - 1] != 0x0A,
        )
        if det.validate is not None and not det.validate(candidate):
            return False
        return filtered_by(candidate) is None


#: (value, public prefix, known) -> the value's fingerprint and mask (both depend on these
#: alone), for one scan
_Marks = dict[tuple[bytes, int, bool], tuple[str, str]]


def _hidden_hits(
    db: _Database, parts: Sequence[bytes], starts: list[int], hits: list[tuple[int, int, int]]
) -> list[tuple[int, int, int]]:
    """Anchors that a match across a separator hid: those of the part it ends in, scanned
    alone, that end where it ends.

    hyperscan reports the leftmost start of each match end: an anchor that may span
    whitespace (``password\n: token = '...'``) starts in the part before and hides the
    match of the same end that starts in the part itself, and the hidden one is what the
    part scanned alone yields. Each part's findings must not depend on its neighbours:
    the guard does not scan a notebook cell again while it is unchanged."""
    crossing: dict[int, set[tuple[int, int]]] = {}  # part -> (detector, end) of such matches
    for idx, start, end in hits:
        part = bisect.bisect_right(starts, start) - 1
        part_end = starts[part] + len(parts[part])
        if start == part_end and part + 1 < len(parts):
            # it starts on the separator: the next part's own (see _scan_joined)
            part += 1
            part_end = starts[part] + len(parts[part])
        if end > part_end + 1:  # it ends past the separator, in a later part
            last = bisect.bisect_right(starts, end - 1) - 1
            crossing.setdefault(last, set()).add((idx, end))
    return [
        (idx, start + starts[part], end + starts[part])
        for part, ends in sorted(crossing.items())
        for idx, start, end in db.hits(parts[part])
        if (idx, end + starts[part]) in ends
    ]


#: A segment this long is scanned in a buffer of its own (see ``Engine.scan``): copying it
#: into the joined buffer would cost more than a scan call (about a microsecond).
_ALONE_FROM = 64 * 1024
#: Segments shorter than this are not compared with earlier ones (see ``Engine.scan``).
_REPEAT_FROM = 4096


def repeats(segments: Sequence[bytes], kinds: Sequence[SegmentKind]) -> dict[int, int]:
    """Segment index -> index of an earlier segment with the same bytes and kind: each is
    compared with the first segment of its length and kind only (one memcmp), so the cost
    is nil when none repeats, and a repeat of a later one of that length is scanned again."""
    first: dict[tuple[int, SegmentKind], int] = {}
    same: dict[int, int] = {}
    for i, (data, kind) in enumerate(zip(segments, kinds, strict=True)):
        if len(data) < _REPEAT_FROM:
            continue
        earlier = first.setdefault((len(data), kind), i)
        if earlier != i and segments[earlier] == data:
            same[i] = earlier
    return same


def _without_overlaps(found: list[Finding], rank: dict[str, int]) -> list[Finding]:
    """Where detectors overlap on one value, keep the most specific (then the longest)."""
    found.sort(key=lambda f: (rank[f.detector], -(f.end - f.start), f.start))
    # Kept spans are disjoint and sorted by start, so only the neighbours of a new span can
    # overlap it: a bisection instead of a pass over all kept findings (thousands of
    # findings in one segment would otherwise cost quadratic time).
    kept: list[Finding] = []
    starts: list[int] = []
    for f in found:
        i = bisect.bisect_right(starts, f.start)
        if (i and kept[i - 1].end > f.start) or (i < len(kept) and kept[i].start < f.end):
            continue
        kept.insert(i, f)
        starts.insert(i, f.start)
    return kept


class _LineCounter:
    """Line numbers for increasing offsets without recounting from the segment start."""

    def __init__(self, buf: bytes) -> None:
        self._buf = buf
        self._pos = 0
        self._line = 1
        self._seg_start = 0

    def line_of(self, offset: int, seg_start: int) -> int:
        if seg_start != self._seg_start or offset < self._pos:
            self._seg_start, self._pos, self._line = seg_start, seg_start, 1
        self._line += self._buf.count(b"\n", self._pos, offset)
        self._pos = offset
        return self._line
