"""Walk a notebook (as the contents API hands it over) into scannable segments.

Every string in the document is visited exactly once, with its location, so a
finding can be reported as "cell 3, outputs[0] text/plain, line 2" and an output
can be redacted in place. Consecutive stream outputs are one segment, because a
kernel may print a secret in two chunks.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from .engine import SegmentKind


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
    return mime in BINARY_MIMETYPES or mime.split("/", 1)[0] in {"audio", "video", "font"}


@dataclass
class Ref:
    """Where a segment's text came from, so a redacted text can be written back."""

    container: Any
    key: Any
    lines: bool  # stored as a list of lines (nbformat's multiline strings)
    length: int  # characters this ref contributes to the segment
    is_key: bool = False  # the string is a dict key, not a value
    joiner: str = ""


@dataclass
class Segment:
    pointer: str  # RFC 6901 JSON pointer of the (first) string
    text: str
    zone: Zone
    kind: SegmentKind
    cell: int | None = None
    cell_id: str | None = None
    refs: list[Ref] = field(default_factory=list)


_MULTILINE_LEAVES = {"source", "text"}
#: No detector can match fewer bytes than this, so shorter strings (output types,
#: stream names, short ids) are not worth a segment. Stream text is always kept:
#: a secret may arrive one character per chunk.
MIN_FINDING_LENGTH = 8


def _escape(part: object) -> str:
    return str(part).replace("~", "~0").replace("/", "~1")


def walk(nb: object, max_depth: int = 64) -> list[Segment]:
    """All strings of ``nb`` as segments; raises NotebookError for non-notebooks."""
    if not isinstance(nb, dict):
        raise NotebookError("the notebook content is not a JSON object")
    cells = nb.get("cells", [])
    if not isinstance(cells, list):
        raise NotebookError("'cells' is not a list")
    segments: list[Segment] = []
    for key, value in nb.items():
        if key != "cells":
            segments.extend(
                _strings(
                    nb, key, value, f"/{_escape(key)}", Zone.METADATA, max_depth, None, None, 1
                )
            )
    for index, cell in enumerate(cells):
        if not isinstance(cell, dict):
            raise NotebookError(f"cell {index} is not a JSON object")
        segments.extend(_cell(cell, index, max_depth))
    _widget_state_is_output(segments)
    return _merge_streams(segments)


def _widget_state_is_output(segments: list[Segment]) -> None:
    # Notebook metadata is the user's (refused); saved widget state is kernel output (redacted).
    for s in segments:
        if s.cell is None and s.pointer.startswith("/metadata/widgets"):
            s.zone = Zone.OUTPUT


def _cell(cell: dict[str, Any], index: int, max_depth: int) -> Iterator[Segment]:
    cell_id = cell.get("id") if isinstance(cell.get("id"), str) else None
    is_code = cell.get("cell_type") == "code"
    base = f"/cells/{index}"
    for key, value in cell.items():
        pointer = f"{base}/{_escape(key)}"
        if key == "source":
            zone, kind = Zone.SOURCE, SegmentKind.CODE if is_code else SegmentKind.TEXT
            yield from _strings(cell, key, value, pointer, zone, max_depth, index, cell_id, 1, kind)
        elif key == "outputs":
            yield from _strings(
                cell, key, value, pointer, Zone.OUTPUT, max_depth, index, cell_id, 1
            )
        elif key == "attachments":
            yield from _strings(
                cell, key, value, pointer, Zone.SOURCE, max_depth, index, cell_id, 1
            )
        else:
            yield from _strings(
                cell, key, value, pointer, Zone.METADATA, max_depth, index, cell_id, 1
            )


def _strings(
    container: Any,
    key: Any,
    value: Any,
    pointer: str,
    zone: Zone,
    max_depth: int,
    cell: int | None,
    cell_id: str | None,
    depth: int,
    kind: SegmentKind = SegmentKind.TEXT,
) -> Iterator[Segment]:
    """Every string below ``container[key]``, iteratively (no recursion limit to hit)."""
    stack: list[tuple[Any, Any, Any, str, int, SegmentKind]] = [
        (container, key, value, pointer, depth, kind)
    ]
    while stack:
        parent, k, v, ptr, d, knd = stack.pop()
        if d > max_depth:
            raise NotebookError(
                f"the notebook nests JSON deeper than {max_depth} levels at {ptr[:200]}"
            )
        leaf_kind = SegmentKind.BINARY if _binary_leaf(parent, k, ptr) else knd
        if isinstance(v, str):
            if len(v) >= MIN_FINDING_LENGTH or k == "text":
                yield Segment(
                    ptr, v, zone, leaf_kind, cell, cell_id, [Ref(parent, k, False, len(v))]
                )
        elif isinstance(v, list) and v and all(isinstance(x, str) for x in v) and _joinable(k, ptr):
            joiner = "\n" if k == "traceback" else ""
            text = joiner.join(v)
            yield Segment(
                ptr,
                text,
                zone,
                leaf_kind,
                cell,
                cell_id,
                [Ref(parent, k, True, len(text), joiner=joiner)],
            )
        elif isinstance(v, list):
            for i in range(len(v) - 1, -1, -1):
                stack.append((v, i, v[i], f"{ptr}/{i}", d + 1, knd))
        elif isinstance(v, dict):
            for ck in reversed(list(v)):
                cptr = f"{ptr}/{_escape(ck)}"
                if isinstance(ck, str) and len(ck) >= MIN_FINDING_LENGTH * 2:
                    # Long keys are data (e.g. a dict of tokens), so they are scanned too.
                    key_ref = Ref(v, ck, False, len(ck), is_key=True)
                    yield Segment(cptr, ck, zone, SegmentKind.TEXT, cell, cell_id, [key_ref])
                stack.append((v, ck, v[ck], cptr, d + 1, knd))


def _joinable(key: Any, pointer: str) -> bool:
    """nbformat stores these as lists of lines that read as one text (lists deeper
    inside JSON data are data, and are walked item by item)."""
    parent = pointer.rsplit("/", 1)[0]
    return (
        key in _MULTILINE_LEAVES
        or key == "traceback"
        or parent.endswith("/data")
        or "/attachments/" in parent
    )


def _binary_leaf(parent: Any, key: Any, pointer: str) -> bool:
    return (
        isinstance(key, str)
        and is_binary_mimetype(key)
        and ("/data/" in pointer or "/attachments/" in pointer)
    )


def _merge_streams(segments: list[Segment]) -> list[Segment]:
    """Join consecutive stream outputs of one cell and one stream name into one segment."""
    merged: list[Segment] = []
    last: Segment | None = None
    previous: tuple[int, str, int] | None = None  # (cell, stream name, output index) of last
    for seg in segments:
        stream = _stream_position(seg)
        if stream is not None and last is not None and previous is not None:
            cell, name, out = stream
            if (cell, name, out - 1) == previous:
                last.text += seg.text
                last.refs.extend(seg.refs)
                previous = stream
                continue
        merged.append(seg)
        if stream is not None:
            last, previous = seg, stream
    return merged


def _stream_position(seg: Segment) -> tuple[int, str, int] | None:
    if seg.cell is None or seg.zone is not Zone.OUTPUT:
        return None
    parts = seg.pointer.split("/")
    # /cells/<i>/outputs/<j>/text
    if len(parts) != 6 or parts[3] != "outputs" or parts[5] != "text":
        return None
    output = seg.refs[0].container
    if not isinstance(output, dict) or output.get("output_type") != "stream":
        return None
    return seg.cell, str(output.get("name")), int(parts[4])


def write_back(seg: Segment, new_text: str, spans: list[tuple[int, int, str]]) -> None:
    """Store a redacted segment text through its refs.

    ``spans`` are the (start, end, marker) replacements, in the original text's
    character offsets; a span that crosses a stream chunk boundary puts the
    marker in the chunk where the secret starts and removes the rest.
    """
    if len(seg.refs) == 1:
        _store(seg.refs[0], new_text)
        return
    offset = 0
    for ref in seg.refs:
        lo, hi = offset, offset + ref.length
        original = seg.text[lo:hi]
        pieces: list[str] = []
        cursor = lo
        for start, end, marker in spans:
            if end <= lo or start >= hi:
                continue
            pieces.append(seg.text[cursor : max(start, lo)])
            if start >= lo:
                pieces.append(marker)
            cursor = min(end, hi)
        pieces.append(seg.text[cursor:hi])
        text = "".join(pieces) if pieces else original
        _store(ref, text)
        offset = hi


def _store(ref: Ref, text: str) -> None:
    if ref.is_key:
        container = ref.container
        items = [(text if k == ref.key else k, v) for k, v in container.items()]
        container.clear()
        container.update(items)
    elif ref.lines:
        ref.container[ref.key] = (
            text.split(ref.joiner) if ref.joiner else text.splitlines(keepends=True)
        )
    else:
        ref.container[ref.key] = text
