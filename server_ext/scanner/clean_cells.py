"""Cells a save found clean, so that the next save of the same notebook skips them.

JupyterLab autosaves the whole notebook every two minutes, and most of its cells have not
changed since the save before. For the scanner, cells are independent: each cell's
strings are scanned on their own, and a value found in one output is looked for in the
other outputs of the same cell only. So a cell equal to one that the same engine found
clean is clean, and it is not walked or scanned again.

- **Equality** is Python's own ``==`` on the JSON values: it runs in C (a length check
  and a memcmp per string) and stops at the first difference, far cheaper than walking
  the cell. Nothing is hashed, so no collision can pass a changed cell.
- **Only clean cells** are kept: a cell with any finding (even in ``warn`` mode) is
  scanned at every save.
- **Per engine.** New known values (a secret delivered to the server) build a new
  engine, and the cells found clean by the old one are forgotten.
- **Bounded.** At most ``max_chars`` characters are kept, over at most 256 paths, the
  least recently saved path dropped first. A kept cell counts its text, 1,024 for its
  objects and 256 per output; a cell that may hold much that is not text (a JSON output
  such as a plotly figure's data, metadata over 4 KiB, a key nbformat does not define)
  is not kept.
- **Only what the caller alone holds.** The kept cells are the caller's objects, not
  copies: ``SaveGuard.check`` remembers only when asked to, for a freshly parsed request
  that nothing else changes; the contents manager keeps them once the save is written and
  answered (a save's answer does not wait for this bookkeeping; a failed save keeps none).
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from typing import Any

from .documents import NotebookScan


def _key(index: int, cell: dict[str, Any]) -> object:
    """Where to look a cell up: by its id, which moves with it, else by position."""
    cell_id = cell.get("id")
    return cell_id if isinstance(cell_id, str) else index


#: What a kept cell counts besides its text: its dicts, lists and short strings, and as
#: much again for each of its outputs.
CELL_OVERHEAD = 1024
OUTPUT_OVERHEAD = 256
MAX_PATHS = 256
_SMALL_JSON = 4096
_CELL_KEYS = frozenset(
    {"cell_type", "id", "metadata", "source", "outputs", "execution_count", "attachments"}
)
_OUTPUT_KEYS = frozenset(
    {"output_type", "name", "text", "data", "metadata", "execution_count", "ename", "evalue",
     "traceback"}
)


def _small(value: Any) -> bool:
    if not value:  # the common case: {} or absent
        return True
    try:
        return len(json.dumps(value)) <= _SMALL_JSON
    except (TypeError, ValueError, RecursionError):
        return False


def _mostly_text(cell: dict[str, Any]) -> bool:
    """Whether what the cell holds besides the text the walk counts is small: JSON outputs
    (numbers), large metadata and keys nbformat does not define are not counted."""
    if not _CELL_KEYS.issuperset(cell) or not _small(cell.get("metadata")):
        return False
    outputs = cell.get("outputs")
    if not isinstance(outputs, list):
        return outputs is None
    for output in outputs:
        if not (
            isinstance(output, dict)
            and _OUTPUT_KEYS.issuperset(output)
            and _small(output.get("metadata"))
        ):
            return False
        data = output.get("data")
        if isinstance(data, dict):
            for value in data.values():
                if isinstance(value, dict) or (
                    isinstance(value, list) and not all(isinstance(v, str) for v in value)
                ):
                    return False
    return True


def _cost(cell: dict[str, Any], chars: int) -> int:
    outputs = cell.get("outputs")
    return CELL_OVERHEAD + chars + OUTPUT_OVERHEAD * (len(outputs) if outputs else 0)


class Recheck:
    """One save's view of what the last save of its path found clean; the skip
    callable ``scan_notebook`` takes."""

    def __init__(self, clean: dict[object, tuple[dict[str, Any], int]]) -> None:
        self._clean = clean
        #: cells skipped in this save, as the cache keeps them
        self.skipped: dict[object, tuple[dict[str, Any], int]] = {}
        #: characters of text in the skipped cells (the guard's size limit counts them)
        self.skipped_chars = 0

    def __call__(self, index: int, cell: dict[str, Any]) -> bool:
        key = _key(index, cell)
        known = self._clean.get(key)
        if known is None or known[0] != cell:  # a cell equal to a clean cell is clean
            return False
        self.skipped[key] = known
        self.skipped_chars += known[1]
        return True


class _Entry:
    __slots__ = ("cells", "chars", "engine")

    def __init__(self, engine: object, cells: dict[object, tuple[dict[str, Any], int]]) -> None:
        self.engine = engine
        self.cells = cells
        self.chars = sum(_cost(cell, chars) for cell, chars in cells.values())


class CleanCells:
    """Thread-safe: saves are checked on worker threads."""

    def __init__(self, max_chars: int) -> None:
        self.max_chars = max_chars
        self._paths: OrderedDict[str, _Entry] = OrderedDict()
        self._chars = 0
        self._lock = threading.Lock()

    def recheck(self, engine: object, path: str) -> Recheck:
        with self._lock:
            entry = self._paths.get(path)
            if entry is None or entry.engine is not engine:
                return Recheck({})
            self._paths.move_to_end(path)
            return Recheck(entry.cells)

    def remember(
        self, engine: object, path: str, nb: dict[str, Any], scan: NotebookScan, recheck: Recheck
    ) -> None:
        """Keep the cells of ``nb`` that ``scan`` (with ``recheck``'s skips) found clean."""
        chars: dict[int, int] = {}
        dirty: set[int] = set()
        for segment, found in zip(scan.segments, scan.findings, strict=True):
            if segment.cell is None:
                continue
            chars[segment.cell] = chars.get(segment.cell, 0) + len(segment.text)
            if found:
                dirty.add(segment.cell)
        cells: dict[object, tuple[dict[str, Any], int]] = {}
        for index, cell in enumerate(nb["cells"]):
            key = _key(index, cell)
            if key in recheck.skipped:
                cells[key] = recheck.skipped[key]
            elif index not in dirty and key not in cells and _mostly_text(cell):
                cells[key] = (cell, chars.get(index, 0))
        entry = _Entry(engine, cells)
        with self._lock:
            old = self._paths.pop(path, None)
            if old is not None:
                self._chars -= old.chars
            if entry.chars > self.max_chars:
                return
            self._paths[path] = entry
            self._chars += entry.chars
            while self._chars > self.max_chars or len(self._paths) > MAX_PATHS:
                _path, dropped = self._paths.popitem(last=False)
                self._chars -= dropped.chars

    def cells_kept(self, path: str) -> int:
        with self._lock:
            entry = self._paths.get(path)
            return 0 if entry is None else len(entry.cells)

    def forget(self) -> None:
        with self._lock:
            self._paths.clear()
            self._chars = 0
