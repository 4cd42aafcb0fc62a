"""Queue SQLite writers of several processes on a file lock instead of SQLite's sleeps.

SQLite lets one writer in at a time (``BEGIN IMMEDIATE``); a process that finds the
database locked sleeps in SQLite's busy handler for 1, 2, 5, 10... ms before trying
again, however soon the lock is free. With several gateway workers on one SQLite file
that sleeping, not the work, sets admission latency. Taking an exclusive ``flock`` on
``<database>-writers.lock`` around each write transaction makes the next writer wake the
moment the previous one commits.

The lock only orders writers; SQLite's own locking still guarantees correctness, so a
writer that does not take it (the export tool, an older gateway) is merely slower.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class WriterQueue:
    def __init__(self, database: Path) -> None:
        self.path = database.with_name(database.name + "-writers.lock")
        # flock excludes open files, not threads: the thread lock orders this process's
        # writers, the flock orders processes.
        self._threads = threading.Lock()
        self._fd: int | None = None

    @contextmanager
    def turn(self) -> Iterator[None]:
        """Hold the writers' lock for the duration of one write transaction."""
        with self._threads:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        with self._threads:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
