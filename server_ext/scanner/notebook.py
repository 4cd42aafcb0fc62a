"""Walk a notebook (as the contents API hands it over) into scannable segments.

Every string in the document is visited exactly once, with its location, so a
finding can be reported as "cell 3, outputs[0] text/plain, line 2" and an output
can be redacted in place. A cell's stream outputs of one name are one segment, because a
kernel may print a secret in two chunks with other outputs between them.
"""

from __future__ import annotations

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
    text = str(part)
    return text.replace("~", "~0").replace("/", "~1") if "/" in text or "~" in text else text


def walk(nb: object, max_depth: int = 64) -> list[Segment]:
    """All strings of ``nb`` as segments; raises NotebookError for non-notebooks."""
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
                _strings(
                    out,
                    value,
                    "widgets",
                    value["widgets"],
                    "/metadata/widgets",
                    Zone.OUTPUT,
                    max_depth,
                    2,
                )
                _strings(out, nb, key, rest, "/metadata", zone, max_depth, 1, refs_to=value)
                continue
            _strings(out, nb, key, value, "/" + _escape(key), zone, max_depth, 1)
    for index, cell in enumerate(cells):
        if not isinstance(cell, dict):
            raise NotebookError(f"cell {index} is not a JSON object")
        _cell(out, cell, index, max_depth)
    return out


def _empty(value: Any) -> bool:
    """Nothing below ``value`` can hold a finding: skip it before building its pointer."""
    if isinstance(value, str):
        return len(value) < MIN_FINDING_LENGTH
    return not value or not isinstance(value, dict | list)


def _cell(out: list[Segment], cell: dict[str, Any], index: int, max_depth: int) -> None:
    cell_id = cell.get("id") if isinstance(cell.get("id"), str) else None
    kind = SegmentKind.CODE if cell.get("cell_type") == "code" else SegmentKind.TEXT
    base = f"/cells/{index}"
    first = len(out)
    for key, value in cell.items():
        if _empty(value):
            continue
        pointer = f"{base}/{_escape(key)}"
        if key == "source":
            _strings(out, cell, key, value, pointer, Zone.SOURCE, max_depth, 2, kind)
        elif key == "outputs" and isinstance(value, list):
            _outputs(out, value, pointer, max_depth)
        elif key == "attachments":
            _strings(out, cell, key, value, pointer, Zone.SOURCE, max_depth, 2)
        else:
            _strings(out, cell, key, value, pointer, Zone.METADATA, max_depth, 2)
    for segment in out[first:]:
        segment.cell, segment.cell_id = index, cell_id


def _outputs(out: list[Segment], outputs: list[Any], base: str, max_depth: int) -> None:
    """Outputs, with every stream output of one name joined into one segment.

    A cell's stdout is one byte stream whatever lands between its chunks: a kernel
    flushes stdout and stderr separately (a warning splits a printed line in two outputs)
    and a display between two ``print(..., end="")`` calls splits it too. The segment
    reads the chunks of one name in order, as the process wrote them.
    """
    streams: dict[object, Segment] = {}
    for j, output in enumerate(outputs):
        pointer = f"{base}/{j}"
        is_stream = isinstance(output, dict) and output.get("output_type") == "stream"
        if not is_stream:
            _strings(out, outputs, j, output, pointer, Zone.OUTPUT, max_depth, 3)
            continue
        for key, value in output.items():
            if key != "text" and not _empty(value):
                _strings(
                    out, output, key, value, f"{pointer}/{_escape(key)}", Zone.OUTPUT, max_depth, 4
                )
        text = output.get("text")
        if isinstance(text, list) and all(isinstance(x, str) for x in text):
            ref, joined = Ref(output, "text", True, 0), "".join(text)
        elif isinstance(text, str):
            ref, joined = Ref(output, "text", False, 0), text
        else:
            _strings(out, output, "text", text, f"{pointer}/text", Zone.OUTPUT, max_depth, 4)
            continue
        ref.length = len(joined)
        name = output.get("name")
        name = name if isinstance(name, str) else None
        stream = streams.get(name)
        if stream is not None:
            stream.text += joined
            stream.refs.append(ref)
        else:
            stream = Segment(f"{pointer}/text", joined, Zone.OUTPUT, SegmentKind.TEXT, refs=[ref])
            streams[name] = stream
            out.append(stream)


def _strings(
    out: list[Segment],
    container: Any,
    key: Any,
    value: Any,
    pointer: str,
    zone: Zone,
    max_depth: int,
    depth: int,
    kind: SegmentKind = SegmentKind.TEXT,
    refs_to: Any = None,
) -> None:
    """Every string below ``container[key]``, iteratively (no recursion limit to hit)."""
    stack: list[tuple[Any, Any, Any, str, int]] = [(container, key, value, pointer, depth)]
    push, pop = stack.append, stack.pop
    while stack:
        parent, k, v, ptr, d = pop()
        if d > max_depth:
            raise NotebookError(
                f"the notebook nests JSON deeper than {max_depth} levels at {ptr[:200]}"
            )
        if isinstance(v, str):
            if len(v) >= MIN_FINDING_LENGTH:
                knd = SegmentKind.BINARY if _binary_leaf(k, ptr) else kind
                out.append(Segment(ptr, v, zone, knd, refs=[Ref(parent, k, False, len(v))]))
        elif isinstance(v, dict):
            # The root may be a filtered view of a dict: write back to the real one.
            parent_of_children = refs_to if v is value and refs_to is not None else v
            for ck, cv in v.items():
                cptr = f"{ptr}/{_escape(ck)}"
                if isinstance(ck, str) and len(ck) >= MIN_FINDING_LENGTH * 2:
                    # Long keys are data (e.g. a dict of tokens), so they are scanned too.
                    key_ref = Ref(parent_of_children, ck, False, len(ck), is_key=True)
                    out.append(Segment(cptr, ck, zone, SegmentKind.TEXT, refs=[key_ref]))
                push((parent_of_children, ck, cv, cptr, d + 1))
        elif isinstance(v, list):
            if v and _joinable(k, ptr) and all(isinstance(x, str) for x in v):
                joiner = "\n" if k == "traceback" else ""
                text = joiner.join(v)
                knd = SegmentKind.BINARY if _binary_leaf(k, ptr) else kind
                out.append(
                    Segment(
                        ptr, text, zone, knd, refs=[Ref(parent, k, True, len(text), joiner=joiner)]
                    )
                )
            else:
                for i, item in enumerate(v):
                    push((v, i, item, f"{ptr}/{i}", d + 1))


def _joinable(key: Any, pointer: str) -> bool:
    """nbformat stores these as lists of lines that read as one text (lists deeper
    inside JSON data are data, and are walked item by item)."""
    if key in _MULTILINE_LEAVES or key == "traceback":
        return True
    parent = pointer[: pointer.rfind("/")]
    return parent.endswith("/data") or "/attachments/" in parent


def _binary_leaf(key: Any, pointer: str) -> bool:
    if not (isinstance(key, str) and is_binary_mimetype(key)):
        return False
    parent = pointer[: pointer.rfind("/")]
    return parent.endswith("/data") or "/attachments/" in parent


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
