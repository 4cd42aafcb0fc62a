"""Verification: the whole chain and every MAC, or quickly from the checkpoints.

A full verification reads every record and checks, in log order, that each one is
framed as the writer frames it, that its MAC is valid under a verifying key, that its
``seq`` follows the previous record's and that its ``prev`` is the previous record's
hash; then that the log ends where its sealed head says and that every checkpoint
matches the record it names. It stops at the first bad record and says why.

Files are cut into chunks verified in parallel (``jobs``); the chunks are stitched by
their first ``prev`` and ``seq``, so the result is the same as a sequential walk.

A quick verification checks the checkpoint file, the record each checkpoint names and
each rotated file's length, then walks only the records after the last checkpoint.
It catches truncation, deleted or replaced files and edits after the last checkpoint,
but not an edit of a record between two older checkpoints: run a full verification
for that.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import chain
from .chain import GENESIS, Sealer
from .keys import key_id
from .layout import Layout
from .store import Head, parse_head

CHUNK_BYTES = 32 * 1024 * 1024
Anchor = tuple[int, str]  # (seq, record hash) of a record an earlier run saw
_SEQ = b'{"seq":'
_MAC = b',"mac":"'


@dataclass
class Problem:
    """The first thing wrong with the log."""

    reason: str
    file: str | None = None
    offset: int | None = None
    seq: int | None = None
    line: int | None = None

    def describe(self) -> str:
        where = []
        if self.seq is not None:
            where.append(f"record seq {self.seq}")
        if self.file is not None:
            spot = Path(self.file).name
            if self.line is not None:
                spot += f" line {self.line}"
            if self.offset is not None:
                spot += f" (byte {self.offset})"
            where.append(spot)
        return (", ".join(where) + ": " if where else "") + self.reason


@dataclass
class VerifyReport:
    ok: bool
    mode: str
    records: int = 0
    bytes: int = 0
    files: int = 0
    checkpoints: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    last_hash: str | None = None  # of record last_seq: the anchor a later run can check
    problem: Problem | None = None
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    # no record, and nothing (head, checkpoint, data) says there ever was one: a log not
    # written yet. Still a failure here (a mistyped path looks the same); callers that
    # know the log is new, like the auditor page, show it as such.
    empty: bool = False

    def summary(self) -> str:
        span = (
            f"seq {self.first_seq}..{self.last_seq}" if self.last_seq is not None else "no records"
        )
        rate = self.bytes / self.seconds / 1e6 if self.seconds > 0 else 0.0
        head = (
            f"{self.mode} verification: {self.records:,} records ({span}) in {self.files} file(s), "
            f"{self.checkpoints} checkpoint(s), {self.bytes:,} bytes in {self.seconds:.2f}s "
            f"({rate:.0f} MB/s)"
        )
        if self.problem is None:
            return f"OK: {head}"
        return f"FAILED: {self.problem.describe()}\n({head} before the failure)"

    def public(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "mode": self.mode,
            "records": self.records,
            "bytes": self.bytes,
            "files": self.files,
            "checkpoints": self.checkpoints,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "problem": None
            if self.problem is None
            else {
                "reason": self.problem.reason,
                "file": self.problem.file,
                "line": self.problem.line,
                "offset": self.problem.offset,
                "seq": self.problem.seq,
            },
            "warnings": self.warnings,
            "seconds": round(self.seconds, 3),
        }

    def event(self, actor: str) -> dict[str, Any]:
        """The ``audit-verified`` event for this report."""
        data: dict[str, Any] = {
            "actor": actor,
            "result": "ok" if self.ok else "failed",
            "mode": self.mode,
            "records": self.records,
            "duration_seconds": round(self.seconds, 3),
        }
        if self.first_seq is not None and self.last_seq is not None:
            data["first_seq"], data["last_seq"] = self.first_seq, self.last_seq
        if self.problem is not None:
            data["reason"] = self.problem.reason[:512]
            if self.problem.seq is not None:
                data["bad_seq"] = self.problem.seq
        return data


class _Failed(Exception):
    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.reason)
        self.problem = problem


# -- chunks ------------------------------------------------------------------------------


@dataclass
class _Chunk:
    path: str
    start: int
    end: int
    count: int = 0
    first_seq: int | None = None
    first_prev: bytes = b""
    last_seq: int | None = None
    last_hash: bytes = b""
    tail: bytes = b""  # bytes after the last newline
    problem: Problem | None = None
    hashes: dict[int, bytes] = field(default_factory=dict)


def _check_chunk(
    path: str, start: int, end: int, keys: dict[bytes, bytes], wanted: frozenset[int], deep: bool
) -> _Chunk:
    """Check the records in [start, end) of one file, which begins at a line start."""
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read(end - start)
    result = _Chunk(path, start, end)
    lines = data.split(b"\n")
    result.tail = lines.pop()
    _check_lines(result, lines, keys, wanted, deep, start)
    return result


def _check_lines(
    result: _Chunk,
    lines: list[bytes],
    keys: dict[bytes, bytes],
    wanted: frozenset[int],
    deep: bool,
    start: int,
) -> None:
    """Check consecutive record lines, filling in ``result``; stops at the first problem."""
    path = result.path
    macs = {kid: chain.keyed_states(key) for kid, key in keys.items()}
    sha256 = hashlib.sha256
    offset = start
    expect = -1
    prev = b""
    count = 0
    hashes = result.hashes
    validators = _Validators() if deep else None
    for line in lines:
        # The fast path: a line whose MAC is valid was framed by the writer, so its seq and
        # prev can be read by position. Anything unusual goes to _diagnose for the reason.
        states = macs.get(line[-91:-75]) if line[-74:-66] == _MAC else None
        if states is None or not line.startswith(_SEQ):
            result.problem = _diagnose(line, macs, expect, prev, path, offset)
            break
        inner = states[0].copy()
        inner.update(line[:-74])
        inner.update(b"}")
        outer = states[1].copy()
        outer.update(inner.digest())
        if outer.hexdigest().encode() != line[-66:-2]:
            result.problem = _diagnose(line, macs, expect, prev, path, offset)
            break
        comma = line.find(b",", 7)
        seq = int(line[7:comma])
        if seq != expect or line[comma + 9 : comma + 73] != prev:
            if expect >= 0:
                result.problem = _diagnose(line, macs, expect, prev, path, offset)
                break
            result.first_seq = seq
            result.first_prev = line[comma + 9 : comma + 73]
        if validators is not None:
            reason = validators.check(line)
            if reason is not None:
                result.problem = Problem(reason, path, offset, seq)
                break
        prev = sha256(line).hexdigest().encode()
        if seq in wanted:
            hashes[seq] = prev
        expect = seq + 1
        offset += len(line) + 1
        count += 1
    result.count = count
    if count:
        result.last_seq, result.last_hash = expect - 1, prev


def _diagnose(
    line: bytes,
    macs: dict[bytes, tuple[Any, Any]],
    expect: int,
    prev: bytes,
    path: str,
    offset: int,
) -> Problem:
    """Why a line failed the fast path, checked in the order a reader needs to hear it."""
    try:
        parsed = chain.parse(line)
    except chain.Malformed as e:
        return Problem(f"not a sealed record: {e}", path, offset)
    states = macs.get(parsed.kid.encode())
    if states is None:
        return Problem(
            f"sealed with key id {parsed.kid}, which is not a verifying key (ids: "
            f"{', '.join(k.decode() for k in macs)}): wrong key file, or the record was forged",
            path,
            offset,
            parsed.seq,
        )
    inner = states[0].copy()
    inner.update(parsed.body)
    outer = states[1].copy()
    outer.update(inner.digest())
    if outer.hexdigest().encode() != parsed.mac:
        reason = "its MAC does not match: the record was edited (or damaged)"
    elif expect >= 0 and parsed.seq != expect:
        reason = _seq_gap(expect, parsed.seq)
    elif expect >= 0 and parsed.prev != prev:
        reason = (
            "its prev hash is not the hash of the record before it: records were removed "
            "or reordered"
        )
    else:
        reason = "the record could not be checked"
    return Problem(reason, path, offset, parsed.seq)


def _seq_gap(expected: int, found: int) -> str:
    if found > expected:
        missing = (
            f"record {expected}" if found == expected + 1 else f"records {expected}..{found - 1}"
        )
        return f"expected seq {expected} but found {found}: {missing} deleted or moved"
    return f"expected seq {expected} but found {found}: records reordered or duplicated"


class _Validators:
    """--deep: each record's envelope and event against its schema."""

    def __init__(self) -> None:
        from . import schema  # only deep verification needs the schemas

        self.schema = schema

    def check(self, line: bytes) -> str | None:
        try:
            record = json.loads(line)
            event_type = self.schema.get(record["type"])
            if record["v"] != event_type.version or record["origin"] not in self.schema.ORIGINS:
                return "its envelope (version or origin) is not valid"
            event_type.validate(record["data"])
        except Exception as e:
            return f"it does not match its schema: {getattr(e, 'message', type(e).__name__)}"
        return None


# -- the walk ------------------------------------------------------------------------------


def _files(layout: Layout, head: Head | None) -> list[tuple[int | None, Path]]:
    files: list[tuple[int | None, Path]] = [(seq, p) for seq, p in layout.rotated_files()]
    if layout.live.exists():
        files.append((head.first if head else None, layout.live))
    return files


def _chunks(path: Path, start: int, size: int, chunk_bytes: int) -> list[tuple[int, int]]:
    """[start, end) ranges cut just after a newline."""
    ranges = []
    with open(path, "rb") as f:
        pos = start
        while pos < size:
            cut = min(size, pos + chunk_bytes)
            if cut < size:
                f.seek(cut)
                rest = f.read(1024 * 1024)
                nl = rest.find(b"\n")
                cut = size if nl < 0 else cut + nl + 1
            ranges.append((pos, cut))
            pos = cut
    return ranges


def _run(
    tasks: list[tuple[str, int, int]],
    keys: dict[bytes, bytes],
    wanted: frozenset[int],
    deep: bool,
    jobs: int,
) -> Iterable[_Chunk]:
    if jobs <= 1 or len(tasks) <= 1:
        for path, start, end in tasks:
            yield _check_chunk(path, start, end, keys, wanted, deep)
        return
    # fork is fast and safe only while this process has no other threads
    method = "fork" if threading.active_count() == 1 and os.name == "posix" else "spawn"
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context(method)) as pool:
        futures = [
            pool.submit(_check_chunk, path, start, end, keys, wanted, deep)
            for path, start, end in tasks
        ]
        for future in futures:
            yield future.result()


def verify(
    path: str | os.PathLike[str],
    keys: Iterable[bytes],
    *,
    quick: bool = False,
    jobs: int = 1,
    allow_pruned: bool = False,
    deep: bool = False,
    chunk_bytes: int = CHUNK_BYTES,
    anchor: Anchor | None = None,
) -> VerifyReport:
    """Verify the log at ``path`` with the given MAC key(s) (several after key rotation).

    ``allow_pruned`` accepts a log whose oldest files were deleted by a retention
    policy (the first remaining record then starts the chain); ``deep`` also checks
    every record against its schema. ``anchor`` is ``(seq, hash)`` of a record an
    earlier run saw (its ``last_seq``, ``last_hash``): a full run fails unless the log
    still holds that very record, which catches a log deleted and started again.
    """
    started = time.perf_counter()
    key_map = {key_id(k).encode(): k for k in keys}
    if not key_map:
        raise ValueError("verification needs the log's MAC key")
    sealers = {kid.decode(): Sealer(k) for kid, k in key_map.items()}
    layout = Layout(Path(path))
    report = VerifyReport(ok=False, mode="quick" if quick else "full")
    try:
        head = _read_head(layout, sealers)
        checkpoints = _read_checkpoints(layout, sealers)
        report.checkpoints = len(checkpoints)
        files = _files(layout, head)
        if not files:
            if head is not None and head.seq >= 0:
                raise _Failed(
                    Problem(
                        "no log files, but the head says the log held records up to seq "
                        f"{head.seq}: they were deleted"
                    )
                )
            report.empty = not checkpoints
            raise _Failed(Problem(f"there is no audit log at {layout.live}"))
        if head is None and not checkpoints and all(p.stat().st_size == 0 for _, p in files):
            report.empty = True  # created, but its first write never finished
            raise _Failed(Problem("the audit log holds no records"))
        if quick:
            _walk_quick(layout, files, head, checkpoints, key_map, report, deep, allow_pruned)
        else:
            _walk(
                files, head, checkpoints, key_map, report, jobs, allow_pruned, deep, chunk_bytes,
                anchor,
            )
        report.ok = True
    except _Failed as e:
        report.problem = e.problem
        if e.problem.file and e.problem.offset is not None and e.problem.line is None:
            e.problem.line = _line_number(Path(e.problem.file), e.problem.offset)
    report.files = len(_files(layout, None))
    report.seconds = time.perf_counter() - started
    return report


def _walk(
    files: list[tuple[int | None, Path]],
    head: Head | None,
    checkpoints: list[dict[str, Any]],
    keys: dict[bytes, bytes],
    report: VerifyReport,
    jobs: int,
    allow_pruned: bool,
    deep: bool,
    chunk_bytes: int,
    anchor: Anchor | None,
) -> None:
    wanted = frozenset(
        [c["seq"] for c in checkpoints]
        + ([head.seq] if head else [])
        + ([anchor[0]] if anchor else [])
    )
    tasks: list[tuple[str, int, int]] = []
    file_of_task: list[int] = []
    sizes = [p.stat().st_size for _, p in files]
    if jobs > 1:  # enough chunks to keep every process busy to the end
        chunk_bytes = min(chunk_bytes, max(1 << 16, sum(sizes) // (jobs * 4) + 1))
    for index, ((_, p), size) in enumerate(zip(files, sizes, strict=True)):
        report.bytes += size
        if size == 0 and p != files[-1][1]:
            raise _Failed(Problem("a rotated file is empty: its records were removed", str(p), 0))
        for start, end in _chunks(p, 0, size, chunk_bytes):
            tasks.append((str(p), start, end))
            file_of_task.append(index)
    expect, prev = 0, GENESIS.encode()
    hashes: dict[int, bytes] = {}
    started = False
    for index, chunk in zip(file_of_task, _run(tasks, keys, wanted, deep, jobs), strict=True):
        if chunk.count or chunk.problem:
            first = chunk.first_seq
            if chunk.count and not started and allow_pruned and first != 0:
                report.warnings.append(
                    f"the log starts at seq {first}: older records were pruned; the first "
                    "remaining record is trusted as the start of the chain"
                )
                expect, prev = first or 0, chunk.first_prev
            if chunk.count:
                if first != expect:
                    raise _Failed(
                        Problem(
                            _seq_gap(expect, first or 0)
                            if started
                            else f"the log should start at seq 0 but starts at {first}: the oldest "
                            "records are missing (use --allow-pruned after a retention deletion)",
                            chunk.path,
                            chunk.start,
                            first,
                        )
                    )
                if chunk.first_prev != prev:
                    raise _Failed(
                        Problem(
                            "its prev hash is not the hash of the record before it: records were "
                            "removed or reordered"
                            if started
                            else "the first record's prev is not the start of a chain",
                            chunk.path,
                            chunk.start,
                            first,
                        )
                    )
                named = files[index][0]
                if (
                    chunk.start == 0
                    and chunk.count
                    and named is not None
                    and chunk.first_seq != named
                ):
                    raise _Failed(
                        Problem(
                            f"the file's name (or the head) says it starts at seq {named} but its "
                            f"first record is seq {chunk.first_seq}: files were renamed or "
                            "replaced",
                            chunk.path,
                            0,
                            chunk.first_seq,
                        )
                    )
                if not started:
                    report.first_seq = first
                started = True
                report.records += chunk.count
                report.last_seq = chunk.last_seq
                hashes.update(chunk.hashes)
                expect, prev = (chunk.last_seq or 0) + 1, chunk.last_hash
            if chunk.problem is not None:
                raise _Failed(chunk.problem)
        if chunk.tail and chunk.end == Path(chunk.path).stat().st_size:
            raise _Failed(
                Problem(
                    "the file ends inside a record (truncated, or a write was torn)",
                    chunk.path,
                    chunk.end - len(chunk.tail),
                    expect,
                )
            )
    _check_head(head, report, hashes.get(head.seq) if head else None)
    _check_checkpoints(checkpoints, hashes, report)
    _check_anchor(anchor, hashes, report)
    report.last_hash = prev.decode("ascii", "replace") if report.last_seq is not None else None


def _check_head(head: Head | None, report: VerifyReport, hash_at_head: bytes | None) -> None:
    if head is None:
        raise _Failed(
            Problem(
                "the head file is missing: nothing proves where the log ended, so removed records "
                "at the end would go unnoticed"
            )
        )
    last = report.last_seq if report.last_seq is not None else -1
    if last < head.seq:
        removed = (
            f"record {head.seq}" if head.seq == last + 1 else f"records {last + 1}..{head.seq}"
        )
        raise _Failed(
            Problem(
                f"the log ends at seq {last} but its sealed head says it reached seq {head.seq}: "
                f"{removed} were removed (truncated)"
            )
        )
    if hash_at_head != head.hash.encode():
        raise _Failed(
            Problem(
                f"record {head.seq} is not the record the head sealed: the end of the log "
                "was replaced",
                seq=head.seq,
            )
        )
    if last > head.seq:
        report.warnings.append(
            f"{last - head.seq} valid record(s) after the head (a writer stopped before updating "
            "the head; the next write takes them over)"
        )


def _check_anchor(anchor: Anchor | None, hashes: dict[int, bytes], report: VerifyReport) -> None:
    """The record an earlier run saw must still be there, unchanged."""
    if anchor is None:
        return
    seq, hash_ = anchor
    if report.first_seq is not None and seq < report.first_seq:
        return  # pruned by retention, which the walk has already accepted (allow_pruned)
    if report.last_seq is None or report.last_seq < seq:
        raise _Failed(
            Problem(
                f"an earlier verification saw records up to seq {seq}; the log now ends at "
                f"seq {report.last_seq}: records were deleted or the log replaced",
                seq=seq,
            )
        )
    if hashes.get(seq) != hash_.encode():
        raise _Failed(
            Problem(
                f"record {seq} is not the record an earlier verification saw there: the log "
                "was deleted and started again, or replaced",
                seq=seq,
            )
        )


def _check_checkpoints(
    checkpoints: list[dict[str, Any]], hashes: dict[int, bytes], report: VerifyReport
) -> None:
    first = report.first_seq if report.first_seq is not None else 0
    for ck in checkpoints:
        if ck["seq"] < first:
            continue
        if hashes.get(ck["seq"]) != ck["hash"].encode():
            raise _Failed(
                Problem(
                    f"checkpoint for seq {ck['seq']} does not match that record: it was replaced "
                    "(or the log was cut before it)",
                    seq=ck["seq"],
                )
            )


def _walk_quick(
    layout: Layout,
    files: list[tuple[int | None, Path]],
    head: Head | None,
    checkpoints: list[dict[str, Any]],
    keys: dict[bytes, bytes],
    report: VerifyReport,
    deep: bool,
    allow_pruned: bool,
) -> None:
    if head is None:
        _check_head(head, report, None)
    assert head is not None
    by_first = {named: p for named, p in files if named is not None}
    ends: dict[int, int] = {}
    for ck in checkpoints:
        p = by_first.get(ck["file"])
        if p is None:
            if by_first and ck["file"] < min(by_first):
                if allow_pruned:
                    continue  # an older file deleted by retention
                raise _Failed(
                    Problem(
                        f"the oldest records are missing (the file holding checkpointed record "
                        f"{ck['seq']}): use --allow-pruned after a retention deletion",
                        str(layout.rotated(ck["file"])),
                        seq=ck["seq"],
                    )
                )
            raise _Failed(
                Problem(
                    f"the file holding checkpointed record {ck['seq']} is missing",
                    str(layout.rotated(ck["file"])),
                    seq=ck["seq"],
                )
            )
        with open(p, "rb") as f:
            f.seek(ck["offset"])
            line = f.readline()
        if not line:
            raise _Failed(
                Problem(
                    f"the file ends before checkpointed record {ck['seq']}: records at its end "
                    "were removed (truncated)",
                    str(p),
                    ck["offset"],
                    ck["seq"],
                )
            )
        if not line.endswith(b"\n"):
            raise _Failed(
                Problem(
                    "the file ends inside a record (truncated, or a write was torn)",
                    str(p),
                    ck["offset"],
                    ck["seq"],
                )
            )
        if chain.line_hash(line[:-1]) != ck["hash"]:
            raise _Failed(
                Problem(
                    f"checkpoint for seq {ck['seq']} does not match the record at its place: the "
                    "record was edited, or records before it were removed",
                    str(p),
                    ck["offset"],
                    ck["seq"],
                )
            )
        ends[ck["file"]] = ck["offset"] + len(line)
        report.records += 1
    for named, p in files:
        if p == layout.live or named is None:
            continue
        size = p.stat().st_size
        if ends.get(named) != size:
            raise _Failed(
                Problem(
                    f"rotated file is {size} bytes but its last checkpoint says it ends at byte "
                    f"{ends.get(named)}: it was truncated or extended",
                    str(p),
                    size,
                )
            )
    # walk from the last checkpoint to the end
    start_file, start_offset, expect, prev = 0, 0, 0, GENESIS.encode()
    if checkpoints:
        last = checkpoints[-1]
        names = [named for named, _ in files]
        if last["file"] in names:
            start_file = names.index(last["file"])
            start_offset = last["offset"]
            expect, prev = last["seq"], b""
    report.first_seq = expect
    wanted = frozenset([head.seq])
    hashes: dict[int, bytes] = {}
    for _, p in files[start_file:]:
        size = p.stat().st_size
        chunk = _check_chunk(str(p), start_offset, size, keys, wanted, deep)
        report.bytes += size - start_offset
        start_offset = 0
        if chunk.count:
            if chunk.first_seq != expect:
                raise _Failed(Problem(_seq_gap(expect, chunk.first_seq or 0), str(p), chunk.start))
            if prev and chunk.first_prev != prev:
                raise _Failed(
                    Problem(
                        "its prev hash is not the hash of the record before it",
                        str(p),
                        chunk.start,
                        chunk.first_seq,
                    )
                )
            report.records += chunk.count
            report.last_seq = chunk.last_seq
            expect, prev = (chunk.last_seq or 0) + 1, chunk.last_hash
            hashes.update(chunk.hashes)
        if chunk.problem is not None:
            raise _Failed(chunk.problem)
        if chunk.tail:
            raise _Failed(
                Problem(
                    "the file ends inside a record (truncated, or a write was torn)",
                    str(p),
                    size - len(chunk.tail),
                    expect,
                )
            )
    _check_head(head, report, hashes.get(head.seq))


# -- head and checkpoints ------------------------------------------------------------------


def _read_head(layout: Layout, sealers: dict[str, Sealer]) -> Head | None:
    try:
        raw = layout.head.read_bytes()
    except FileNotFoundError:
        return None
    if not raw.strip():
        return None
    try:
        return parse_head(raw, sealers)
    except chain.Malformed as e:
        raise _Failed(Problem(f"the head file is not valid: {e}", str(layout.head), 0)) from None


def _read_checkpoints(layout: Layout, sealers: dict[str, Sealer]) -> list[dict[str, Any]]:
    try:
        data = layout.checkpoints.read_bytes()
    except FileNotFoundError:
        return []
    found: list[dict[str, Any]] = []
    prev, offset = GENESIS, 0
    where = str(layout.checkpoints)
    lines = data.split(b"\n")
    if lines.pop():
        raise _Failed(
            Problem("the checkpoint file ends inside a checkpoint (truncated)", where, len(data))
        )
    for line in lines:
        try:
            body = chain.open_document(line, sealers)
            ck = json.loads(body)
            if not isinstance(ck, dict) or ck.get("prev") != prev:
                raise chain.Malformed(
                    "it does not follow the checkpoint before it (removed or reordered)"
                )
            if found and ck["seq"] <= found[-1]["seq"]:
                raise chain.Malformed("its seq does not increase")
        except (chain.Malformed, ValueError, KeyError, TypeError) as e:
            raise _Failed(Problem(f"checkpoint is not valid: {e}", where, offset)) from None
        found.append(ck)
        prev = chain.line_hash(line)
        offset += len(line) + 1
    return found


def _line_number(path: Path, offset: int) -> int | None:
    try:
        with open(path, "rb") as f:
            count = 1
            remaining = offset
            while remaining > 0:
                block = f.read(min(remaining, 1 << 20))
                if not block:
                    break
                count += block.count(b"\n")
                remaining -= len(block)
            return count
    except OSError:
        return None


# -- the PostgreSQL store -----------------------------------------------------------------


def verify_db(
    url: str, keys: Iterable[bytes], *, deep: bool = False, anchor: Anchor | None = None
) -> VerifyReport:
    """Verify the records in a PostgreSQL audit database (see pg_store) like a file log:
    every MAC and link in seq order, then the sealed head (``anchor`` as for ``verify``)."""
    from . import pg_store

    started = time.perf_counter()
    key_map = {key_id(k).encode(): k for k in keys}
    if not key_map:
        raise ValueError("verification needs the log's MAC key")
    sealers = {kid.decode(): Sealer(k) for kid, k in key_map.items()}
    report = VerifyReport(ok=False, mode="full")
    engine = pg_store.connect(url)
    where = "the audit database"
    try:
        doc = pg_store.read_head(engine)
        head = None
        if doc is not None:
            try:
                head = parse_head(doc.encode("ascii", "replace"), sealers)
            except chain.Malformed as e:
                raise _Failed(Problem(f"the head row is not valid: {e}")) from None
        wanted = frozenset(([head.seq] if head else []) + ([anchor[0]] if anchor else []))
        expect, prev = 0, GENESIS.encode()
        hashes: dict[int, bytes] = {}
        for batch in pg_store.lines(engine):
            for column_seq, line in batch:
                if not line.startswith(b'{"seq":%d,' % column_seq):
                    raise _Failed(
                        Problem(
                            f"the row's seq column ({column_seq}) is not the seq sealed in its "
                            "record: rows were renumbered",
                            seq=column_seq,
                        )
                    )
            chunk = _Chunk(where, 0, 0)
            _check_lines(chunk, [line for _, line in batch], key_map, wanted, deep, 0)
            report.bytes += sum(len(line) + 1 for _, line in batch)
            if chunk.count:
                if chunk.first_seq != expect:
                    raise _Failed(
                        Problem(
                            _seq_gap(expect, chunk.first_seq or 0)
                            if expect
                            else f"the log should start at seq 0 but starts at {chunk.first_seq}",
                            seq=chunk.first_seq,
                        )
                    )
                if chunk.first_prev != prev:
                    raise _Failed(
                        Problem(
                            "its prev hash is not the hash of the record before it",
                            seq=chunk.first_seq,
                        )
                    )
                if report.first_seq is None:
                    report.first_seq = chunk.first_seq
                report.records += chunk.count
                report.last_seq = chunk.last_seq
                hashes.update(chunk.hashes)
                expect, prev = (chunk.last_seq or 0) + 1, chunk.last_hash
            if chunk.problem is not None:
                chunk.problem.file = chunk.problem.offset = None
                raise _Failed(chunk.problem)
        if head is None and report.records == 0:
            report.empty = True
            raise _Failed(Problem("the audit database holds no records"))
        _check_head(head, report, hashes.get(head.seq) if head else None)
        _check_anchor(anchor, hashes, report)
        report.last_hash = prev.decode("ascii", "replace") if report.last_seq is not None else None
        report.ok = True
    except _Failed as e:
        report.problem = e.problem
    finally:
        engine.dispose()
    report.seconds = time.perf_counter() - started
    return report
