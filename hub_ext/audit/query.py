"""Fast filtering over large logs, for auditors (read-only; does not verify — run verify).

Three things keep a query on a million records well under a second:

* records are in time order (the writer never lets ``ts`` go back), so files outside
  ``since``/``until`` are skipped and the window inside a file is found by bisection;
* the file is memory-mapped and searched for the most selective filter as raw bytes
  (``"job_id":"j-1"``, ``"alice"``, ``"type":"login"``), so only lines that can match
  are parsed;
* every candidate is then parsed and checked exactly.
"""

from __future__ import annotations

import json
import mmap
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from .layout import Layout

#: The reference a user's server shows with a refused save (``save-refused`` ``data.ref``).
REF = re.compile(r"[0-9a-f]{12}")

_TS = b'"ts":"'
_TS_LEN = len("2025-01-01T00:00:00.000000Z")


@dataclass(frozen=True)
class Filter:
    """What to select. Empty sets select everything; filters combine with AND."""

    users: frozenset[str] = frozenset()  # the event's user or actor
    types: frozenset[str] = frozenset()
    since: str | None = None  # ts >= since (a clock.stamp string)
    until: str | None = None  # ts < until
    projects: frozenset[str] = frozenset()
    jobs: frozenset[str] = frozenset()
    after_seq: int | None = None  # seq > after_seq
    refs: frozenset[str] = frozenset()  # data.ref: the reference a user was shown
    seqs: frozenset[int] = frozenset()  # these records only (an alert's evidence)

    def needle(self) -> bytes | None:
        """Bytes every matching line contains, as selective as the filter allows."""
        if len(self.refs) == 1:
            return b'"ref":' + _json(next(iter(self.refs)))
        if len(self.jobs) == 1:
            return b'"job_id":' + _json(next(iter(self.jobs)))
        if len(self.users) == 1:
            return _json(next(iter(self.users)))
        if len(self.projects) == 1:
            return b'"project":' + _json(next(iter(self.projects)))
        if len(self.types) == 1:
            return b'"type":' + _json(next(iter(self.types)))
        return None

    def matches(self, record: dict[str, Any]) -> bool:
        data = record.get("data")
        if not isinstance(data, dict):
            return False
        if self.types and record.get("type") not in self.types:
            return False
        if (
            self.users
            and data.get("user") not in self.users
            and data.get("actor") not in self.users
        ):
            return False
        if self.projects and data.get("project") not in self.projects:
            return False
        if self.jobs and data.get("job_id") not in self.jobs:
            return False
        if self.refs and data.get("ref") not in self.refs:
            return False
        ts = record.get("ts")
        if not isinstance(ts, str):
            return False
        if self.since is not None and ts < self.since:
            return False
        if self.until is not None and ts >= self.until:
            return False
        seq = record.get("seq")
        if self.seqs and seq not in self.seqs:
            return False
        return self.after_seq is None or (isinstance(seq, int) and seq > self.after_seq)


def _json(value: str) -> bytes:
    return json.dumps(value).encode("ascii")


class Hit(NamedTuple):
    record: dict[str, Any]
    line: bytes  # the record exactly as stored


@dataclass
class Stats:
    files: int = 0
    files_skipped: int = 0
    candidates: int = 0
    damaged: int = 0  # lines that were not JSON records (run verify)
    hits: int = 0
    notes: list[str] = field(default_factory=list)


def query(
    path: str | os.PathLike[str],
    flt: Filter,
    *,
    limit: int | None = None,
    stats: Stats | None = None,
) -> Iterator[Hit]:
    """Matching records, oldest first."""
    stats = stats if stats is not None else Stats()
    needle = flt.needle()
    files = Layout(Path(path)).data_files()
    for index, p in enumerate(files):
        with open(p, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                continue
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                if _skip(mm, size, flt, files, index):
                    stats.files_skipped += 1
                    continue
                stats.files += 1
                lo = _bisect(mm, size, _ts_key, flt.since.encode()) if flt.since else 0
                hi = _bisect(mm, size, _ts_key, flt.until.encode()) if flt.until else size
                if flt.after_seq is not None:
                    lo = max(lo, _bisect(mm, size, _seq_key, flt.after_seq + 1))
                for hit in _scan(mm, lo, hi, needle, flt, stats):
                    yield hit
                    stats.hits += 1
                    if limit is not None and stats.hits >= limit:
                        return


def _skip(mm: mmap.mmap, size: int, flt: Filter, files: list[Path], index: int) -> bool:
    """Whether a whole file is outside the time window (or before ``after_seq``)."""
    if flt.since:
        last_start = mm.rfind(b"\n", 0, size - 1) + 1
        last = _ts_key(mm, last_start)
        if last is not None and last < flt.since.encode():
            return True
    if flt.until:
        first = _ts_key(mm, 0)
        if first is not None and first >= flt.until.encode():
            return True
    if flt.after_seq is not None and index + 1 < len(files):
        next_first = _first_seq_of(files[index + 1])
        if next_first is not None and next_first <= flt.after_seq + 1:
            return True
    return False


def _first_seq_of(p: Path) -> int | None:
    with open(p, "rb") as f:
        head = f.read(32)
    return _seq_at(head, 0)


def _ts_key(mm: mmap.mmap | bytes, pos: int) -> bytes | None:
    i = mm.find(_TS, pos, pos + 160)
    if i < 0:
        return None
    return mm[i + len(_TS) : i + len(_TS) + _TS_LEN]


def _seq_at(buf: mmap.mmap | bytes, pos: int) -> int | None:
    if buf[pos : pos + 7] != b'{"seq":':
        return None
    end = buf.find(b",", pos + 7, pos + 40)
    digits = buf[pos + 7 : end] if end > 0 else b""
    return int(digits) if digits.isdigit() else None


def _seq_key(mm: mmap.mmap, pos: int) -> int | None:
    return _seq_at(mm, pos)


def _bisect(mm: mmap.mmap, size: int, key: Callable[[mmap.mmap, int], Any], target: Any) -> int:
    """Offset of the first line whose key is >= target (size if none)."""
    lo, hi = 0, size  # lo is a line start; every line before lo is < target
    while hi - lo > 8192:
        mid = (lo + hi) // 2
        nl = mm.find(b"\n", mid, hi)
        if nl < 0 or nl + 1 >= hi:
            break
        k = key(mm, nl + 1)
        if k is None:
            break
        if k < target:
            lo = nl + 1
        else:
            hi = nl + 1
    pos = lo
    while pos < size:
        k = key(mm, pos)
        if k is not None and k >= target:
            return pos
        nl = mm.find(b"\n", pos, size)
        if nl < 0:
            return size
        pos = nl + 1
    return size


def _scan(
    mm: mmap.mmap, lo: int, hi: int, needle: bytes | None, flt: Filter, stats: Stats
) -> Iterator[Hit]:
    loads = json.loads
    matches = flt.matches
    if needle is None:
        for line in mm[lo:hi].split(b"\n"):
            if not line:
                continue
            stats.candidates += 1
            record = _parse(line, stats, loads)
            if record is not None and matches(record):
                yield Hit(record, line)
        return
    find, rfind = mm.find, mm.rfind
    pos = lo
    while pos < hi:
        i = find(needle, pos, hi)
        if i < 0:
            return
        nl = rfind(b"\n", lo, i)
        start = lo if nl < 0 else nl + 1
        end = find(b"\n", i, hi)
        if end < 0:
            end = hi
        line = mm[start:end]
        stats.candidates += 1
        record = _parse(line, stats, loads)
        if record is not None and matches(record):
            yield Hit(record, line)
        pos = end + 1


def _parse(line: bytes, stats: Stats, loads: Callable[[bytes], Any]) -> dict[str, Any] | None:
    try:
        record = loads(line)
    except ValueError:
        stats.damaged += 1
        return None
    if not isinstance(record, dict):
        stats.damaged += 1
        return None
    return record
