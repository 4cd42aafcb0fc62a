"""The append-only JSON-lines store: locking, the sealed head, rotation and checkpoints.

Writers in any number of threads and processes append under one exclusive ``flock``
on the head file (plus a thread lock, because ``flock`` does not exclude threads
sharing a descriptor). Under the lock a writer reads the head — the sealed pointer
to the last record — so it always chains onto the true last record, whoever wrote
it. A batch of records costs one ``write`` to the live file and one ``pwrite`` of the
head, however many records it holds (it is split only where the live file rotates).

The head also makes truncation detectable: a log that ends before the record the
head names has lost records. Anything unexpected (a missing or damaged head, a live
file shorter or longer than the head says) stops writing with an error instead of
guessing: the log fails closed.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import json
import logging
import os
import threading
import weakref
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import NamedTuple, Protocol

from . import chain, clock
from .chain import GENESIS, Sealer
from .errors import AuditWriteError
from .layout import Layout

HEAD_SIZE = 512
FSYNC_MODES = ("never", "checkpoint", "always")

log = logging.getLogger(__name__)


class Head(NamedTuple):
    """State of the log after its last record."""

    seq: int  # the last record's seq; -1 while the log is empty
    hash: str  # its line hash (GENESIS while empty)
    at: int  # offset of its line in the live file
    first: int  # seq of the live file's first record
    offset: int  # size of the live file
    opened: str  # ts of the live file's first record ("" while the live file is empty)
    ts: str  # ts of the last record
    ck: str  # line hash of the last checkpoint (GENESIS if none)
    ck_seq: int  # seq the last checkpoint covers (-1 if none)

    def members(self) -> str:
        return (
            f'"seq":{self.seq},"hash":"{self.hash}","at":{self.at},"first":{self.first},'
            f'"offset":{self.offset},"opened":"{self.opened}","ts":"{self.ts}",'
            f'"ck":"{self.ck}","ck_seq":{self.ck_seq}'
        )


EMPTY = Head(-1, GENESIS, 0, 0, 0, "", "", GENESIS, -1)


def parse_head(raw: bytes, sealers: dict[str, Sealer]) -> Head:
    """A head file's content, checked against its MAC; raises chain.Malformed."""
    body = chain.open_document(raw.rstrip(b" \n"), sealers)
    try:
        doc = json.loads(body)
        return Head(
            seq=_int(doc["seq"], -1),
            hash=_hex(doc["hash"]),
            at=_int(doc["at"]),
            first=_int(doc["first"]),
            offset=_int(doc["offset"]),
            opened=str(doc["opened"]),
            ts=str(doc["ts"]),
            ck=_hex(doc["ck"]),
            ck_seq=_int(doc["ck_seq"], -1),
        )
    except (ValueError, KeyError, TypeError):
        raise chain.Malformed("its fields are not a head") from None


def _int(value: object, lowest: int = 0) -> int:
    if type(value) is not int or value < lowest:
        raise ValueError(value)
    return value


def _hex(value: object) -> str:
    if not isinstance(value, str) or len(value) != 64:
        raise ValueError(value)
    return value


class Pending(NamedTuple):
    """A record to append: ``data_json`` is compact ASCII JSON of the event, ``extra_json``
    envelope members (``,"name":value``) or empty (see chain.Sealer.seal_record)."""

    type: str
    version: int
    origin: str
    data_json: str
    extra_json: str = ""


class Appended(NamedTuple):
    """Where a record went."""

    seq: int
    ts: str
    hash: str


class Store(Protocol):
    """What AuditLog needs from a store (another backend implements the same)."""

    def append_many(self, records: Sequence[Pending]) -> list[Appended]: ...

    def close(self) -> None: ...


def not_recorded(count: int, written: int) -> str:
    """The end of a write error's message: what was lost."""
    if count == 1:
        return "The event was not recorded."
    return f"{count - written} of {count} events were not recorded."


class JsonlStore:
    """Append-only, hash-chained JSON lines on a local filesystem."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        sealer: Sealer,
        *,
        rotate_bytes: int = 0,
        rotate_seconds: float = 0,
        checkpoint_every: int = 0,
        fsync: str = "checkpoint",
    ) -> None:
        if fsync not in FSYNC_MODES:
            raise ValueError(f"fsync must be one of {', '.join(FSYNC_MODES)}")
        self.layout = Layout(Path(path))
        self.sealer = sealer
        self._sealers = {sealer.kid: sealer}
        self.rotate_bytes = rotate_bytes
        self.rotate_seconds = rotate_seconds
        self.checkpoint_every = checkpoint_every
        self.fsync = fsync
        self._lock = threading.Lock()
        self._head_fd: int | None = None
        self._live_fd: int | None = None
        self._live_first = -1
        self._head_raw = b""
        self._head = EMPTY
        self._deadline = ("", "")  # (opened, when the live file is due for rotation)
        os.register_at_fork(after_in_child=functools.partial(_after_fork, weakref.ref(self)))

    # -- public ---------------------------------------------------------------------

    def append(
        self, type_: str, version: int, origin: str, data_json: str, extra_json: str = ""
    ) -> Appended:
        """Seal and append one record; raises AuditWriteError (nothing was recorded)."""
        return self.append_many([Pending(type_, version, origin, data_json, extra_json)])[0]

    def append_many(self, records: Sequence[Pending]) -> list[Appended]:
        """Seal and append records in order, consecutive in the chain, in one write.

        Raises AuditWriteError, and then nothing of the batch is in the log, unless the
        batch crossed a rotation: it is written as one part per live file, and
        ``error.appended`` holds the leading records that were recorded.
        """
        if not records:
            return []
        done: list[Appended] = []
        with self._lock:
            try:
                if self._head_fd is None:
                    self._head_fd = self._open_head()
                fcntl.flock(self._head_fd, fcntl.LOCK_EX)
            except OSError as e:
                raise self._error("cannot open or lock the log", e, len(records), []) from None
            try:
                self._append_locked(records, done)
            except OSError as e:
                raise self._error("cannot write the log", e, len(records), done) from None
            finally:
                fcntl.flock(self._head_fd, fcntl.LOCK_UN)
        return done

    def close(self) -> None:
        with self._lock:
            for fd in (self._live_fd, self._head_fd):
                if fd is not None:
                    os.close(fd)
            self._live_fd = self._head_fd = None
            self._live_first = -1
            self._head_raw = b""

    # -- under the lock ---------------------------------------------------------------

    def _append_locked(self, records: Sequence[Pending], done: list[Appended]) -> None:
        """Seal and write ``records`` as one part per live file (more than one part only
        when the live file rotates inside the batch): one write and one head update each."""
        start = self._live_for(self._current_head())  # the head the part follows
        ts = clock.stamp()  # one time for the batch: its records are written together
        if ts < start.ts:  # the clock went back: keep the log's time order
            ts = start.ts
        seal, digest, due = self.sealer.seal_record, chain.line_hash, self._rotation_due
        seq, prev, count, i = start.seq, start.hash, len(records), 0
        while True:
            offset, opened = start.offset, start.opened
            lines: list[bytes] = []
            run: list[Appended] = []  # where each line goes
            while i < count:
                line = seal(seq + 1, prev, ts, *records[i])
                size = len(line) + 1
                if due(offset, opened, ts, size):
                    break
                seq += 1
                prev = digest(line)
                lines.append(line)
                run.append(Appended(seq, ts, prev))
                offset += size
                opened = opened or ts
                i += 1
            if run:
                start = self._write_part(start, lines, run, done)
            if i == count:
                return
            start = self._rotate(start)  # and the rest goes in the next live file

    def _write_part(
        self, start: Head, lines: list[bytes], run: list[Appended], out: list[Appended]
    ) -> Head:
        """Write ``lines`` after ``start`` and then the head after them, then the
        checkpoints they reach; returns the head. On an error nothing of them stays."""
        fd = self._live_fd
        assert fd is not None
        data = b"\n".join(lines) + b"\n"
        last = run[-1]
        end = start.offset + len(data)
        head = Head(
            last.seq,
            last.hash,
            end - len(lines[-1]) - 1,
            start.first,
            end,
            start.opened or last.ts,
            last.ts,
            start.ck,
            start.ck_seq,
        )
        try:
            written = os.write(fd, data)
            if written != len(data):
                raise OSError(errno.ENOSPC, f"only {written} of {len(data)} bytes written")
            if self.fsync == "always":
                os.fdatasync(fd)
            self._write_head(head)
        except OSError:
            self._undo(fd, start.offset)
            raise
        out += run
        every = self.checkpoint_every
        if every and (head.seq + 1) // every > (start.seq + 1) // every:
            due, at = [], start.offset
            for line, where in zip(lines, run, strict=True):
                if (where.seq + 1) % every == 0:
                    due.append(head._replace(seq=where.seq, hash=where.hash, at=at))
                at += len(line) + 1
            head = self._checkpoints(head, due)
        return head

    def _checkpoints(self, head: Head, due: list[Head]) -> Head:
        """Checkpoint each record in ``due`` (written, and covered by the head already)."""
        last = head
        for record in due:
            try:
                last = self._checkpoint(record._replace(ck=last.ck, ck_seq=last.ck_seq))
            except OSError as e:  # the records are safe; only the shortcut for verifiers is lost
                log.warning(
                    "audit log %s: checkpoint at seq %d not written: %s",
                    self.layout.live,
                    record.seq,
                    e.strerror,
                )
        if last is head:
            return head
        try:
            self._write_head(head._replace(ck=last.ck, ck_seq=last.ck_seq))
        except OSError as e:
            log.warning("audit log %s: head not updated: %s", self.layout.live, e.strerror)
        return self._head  # the head as written

    def _current_head(self) -> Head:
        assert self._head_fd is not None
        raw = os.pread(self._head_fd, HEAD_SIZE, 0)
        if raw == self._head_raw and raw:
            return self._head
        if not raw.strip():
            if any(p.stat().st_size for p in self.layout.data_files()):
                raise AuditWriteError(
                    f"audit log {self.layout.live}: the head file {self.layout.head} is missing "
                    "or empty but the log has records, so the end of the log cannot be trusted "
                    "(truncation or tampering?). Nothing was written. Run `qustody audit verify` "
                    "and keep the files as evidence; start a new log at a new path to continue."
                )
            head = EMPTY
        else:
            try:
                head = parse_head(raw, self._sealers)
            except chain.Malformed as e:
                raise AuditWriteError(
                    f"audit log {self.layout.live}: the head file {self.layout.head} is not "
                    f"valid ({e}); a different key, or tampering. Nothing was written. Run "
                    "`qustody audit verify` with the log's key."
                ) from None
        self._head_raw, self._head = raw, head
        return head

    def _live_for(self, head: Head) -> Head:
        """Open (or keep) the live file matching ``head`` and check it agrees with it."""
        live = self.layout.live
        if self._live_fd is None or self._live_first != head.first:
            if self._live_fd is not None:
                os.close(self._live_fd)
                self._live_fd = None
            if not live.exists() and head.offset:
                head = self._finish_rotation(head)
            self._live_fd = os.open(
                live, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600
            )
            self._live_first = head.first
        size = os.fstat(self._live_fd).st_size
        if size == head.offset:
            return head
        if size > head.offset:
            return self._adopt(head, size)
        raise AuditWriteError(
            f"audit log {live} is {size} bytes but its head says {head.offset}: records were "
            "removed (truncation or tampering). Nothing was written. Run `qustody audit verify` "
            "and keep the files as evidence."
        )

    def _finish_rotation(self, head: Head) -> Head:
        """A writer died between renaming the live file and starting the next one."""
        rotated = self.layout.rotated(head.first)
        if rotated.exists() and rotated.stat().st_size == head.offset:
            head = head._replace(first=head.seq + 1, at=0, offset=0, opened="")
            self._write_head(head)
            return head
        raise AuditWriteError(
            f"audit log {self.layout.live} is missing but its head says it holds "
            f"{head.offset} bytes (was it moved or deleted?). Nothing was written. "
            "Do not rotate the log with external tools; use AuditLog.rotate_bytes/rotate_seconds."
        )

    def _adopt(self, head: Head, size: int) -> Head:
        """Take over whole records a writer appended before dying ahead of its head update."""
        live = self.layout.live
        with open(live, "rb") as f:
            f.seek(head.offset)
            extra = f.read(size - head.offset)
        lines = extra.split(b"\n")
        adopted = head
        ok = lines[-1] == b""
        for line in lines[:-1] if ok else []:
            try:
                parsed = chain.parse(line)
            except chain.Malformed:
                ok = False
                break
            if (
                parsed.seq != adopted.seq + 1
                or parsed.prev.decode("ascii", "replace") != adopted.hash
                or parsed.kid != self.sealer.kid
                or not self.sealer.check(parsed.body, parsed.mac)
            ):
                ok = False
                break
            ts = str(json.loads(line)["ts"])
            adopted = adopted._replace(
                seq=parsed.seq,
                hash=chain.line_hash(line),
                at=adopted.offset,
                offset=adopted.offset + len(line) + 1,
                opened=adopted.opened or ts,
                ts=ts,
            )
        if not ok:
            raise AuditWriteError(
                f"audit log {live} has {size - head.offset} bytes after the last sealed record "
                f"(seq {head.seq}) that are not valid records: a torn write or tampering. "
                "Nothing was written. Run `qustody audit verify` and keep the file as evidence."
            )
        log.warning(
            "audit log %s: took over %d record(s) a writer appended before it stopped",
            live,
            adopted.seq - head.seq,
        )
        self._write_head(adopted)
        return adopted

    def _rotation_due(self, offset: int, opened: str, ts: str, size: int) -> bool:
        """Whether a line of ``size`` bytes at ``ts`` goes in a new live file."""
        if offset == 0:
            return False
        if self.rotate_bytes and offset + size > self.rotate_bytes:
            return True
        if self.rotate_seconds and opened:
            if self._deadline[0] != opened:
                due = clock.parse(opened) + timedelta(seconds=self.rotate_seconds)
                self._deadline = (opened, clock.stamp(due))
            return ts >= self._deadline[1]
        return False

    def _rotate(self, head: Head) -> Head:
        assert self._live_fd is not None
        if head.ck_seq != head.seq:
            head = self._checkpoint(head)
            self._write_head(head)
        if self.fsync != "never":
            os.fsync(self._live_fd)
        os.rename(self.layout.live, self.layout.rotated(head.first))
        os.close(self._live_fd)
        self._live_fd = None
        self._live_fd = os.open(
            self.layout.live,
            os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
            0o600,
        )
        head = head._replace(first=head.seq + 1, at=0, offset=0, opened="")
        self._live_first = head.first
        if self.fsync != "never":
            _fsync_dir(self.layout.live.parent)
        self._write_head(head)
        return head

    def _checkpoint(self, head: Head) -> Head:
        """Append a sealed checkpoint for the last record; returns the head pointing at it."""
        text = self.sealer.seal_document(
            f'"seq":{head.seq},"hash":"{head.hash}","file":{head.first},"offset":{head.at},'
            f'"ts":"{head.ts}","prev":"{head.ck}"'
        )
        data = text.encode("ascii") + b"\n"
        fd = os.open(
            self.layout.checkpoints, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600
        )
        try:
            size = os.fstat(fd).st_size
            try:
                if os.write(fd, data) != len(data):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            except OSError:
                self._undo(fd, size)
                raise
            if self.fsync != "never" and self._live_fd is not None:
                os.fsync(self._live_fd)
                os.fsync(fd)
        finally:
            os.close(fd)
        return head._replace(ck=chain.line_hash(text.encode("ascii")), ck_seq=head.seq)

    def _write_head(self, head: Head) -> None:
        assert self._head_fd is not None
        text = self.sealer.seal_document(head.members()).encode("ascii")
        if len(text) >= HEAD_SIZE:
            raise AssertionError("audit head document outgrew its slot")
        raw = text + b" " * (HEAD_SIZE - 1 - len(text)) + b"\n"
        if os.pwrite(self._head_fd, raw, 0) != len(raw):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._head_raw, self._head = raw, head

    # -- helpers --------------------------------------------------------------------

    def _open_head(self) -> int:
        self.layout.live.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        return os.open(self.layout.head, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

    @staticmethod
    def _undo(fd: int, size: int) -> None:
        """Remove a partial write of our own (we hold the lock, so nobody wrote after it)."""
        try:
            os.ftruncate(fd, size)
        except OSError:
            log.error("audit log: could not remove a partial write; verify will report it")

    def _error(self, what: str, e: OSError, count: int, done: list[Appended]) -> AuditWriteError:
        name = errno.errorcode.get(e.errno or 0, "error")
        return AuditWriteError(
            f"audit log {self.layout.live}: {what} ({name}: {e.strerror or e}). "
            + not_recorded(count, len(done)),
            written=len(done),
            appended=done,
        )

    def _reset_in_child(self) -> None:
        """After fork: the child must take its own lock and descriptors."""
        self._lock = threading.Lock()
        for fd in (self._live_fd, self._head_fd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._live_fd = self._head_fd = None
        self._live_first = -1
        self._head_raw = b""


def _after_fork(ref: weakref.ref[JsonlStore]) -> None:
    store = ref()
    if store is not None:
        store._reset_in_child()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
