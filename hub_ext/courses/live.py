"""The catalog as the hub reads it: re-read when a file changes, the last good one kept.

``LiveCatalog.current()`` looks at the directory at most every ``recheck_seconds`` (a
stat of each file; 500 files take milliseconds), so a spawn pays nothing. At start-up a bad
catalog is an error (``load_now``); later, a file that does not parse is logged and the
previous courses stay in force, so a typo never opens a closed course; a file that parses
but names something the hub lacks (``check``: a profile) applies, that setting ignored.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .catalog import Catalog, load_catalog
from .catalog import stamp as directory_stamp
from .model import Course, CourseError, stamp

#: The hub group suffix that makes a member one of the course's students
#: (hub_ext.identity.roles.students_group: researchers and staff who take a course never
#: join it).
STUDENTS = ":students"


class LiveCatalog:
    def __init__(
        self,
        directory: Path,
        log: logging.Logger,
        check: Callable[[Catalog], None] | None = None,
        recheck_seconds: float = 2.0,
    ) -> None:
        self.directory = directory
        self.log = log
        self.checked = check is not None
        self.check = check or (lambda catalog: None)
        self.recheck_seconds = recheck_seconds
        self._checked = 0.0
        self._lock = threading.Lock()
        self._stamp: tuple[Any, ...] | None = None
        self._catalog = Catalog()
        self.error: str | None = None

    def adopt_check(self, check: Callable[[Catalog], None]) -> None:
        with self._lock:
            self.check, self.checked = check, True
            self._stamp, self._checked = None, 0.0  # the next current() reloads and checks

    def load_now(self) -> Catalog:
        """Load (start-up): raise ``CourseError`` if the catalog is bad."""
        with self._lock:
            new_stamp = directory_stamp(self.directory)
            catalog = load_catalog(self.directory)
            self.check(catalog)
            self._catalog, self._stamp, self.error = catalog, new_stamp, None
            self._checked = time.monotonic()
            return catalog

    def current(self) -> Catalog:
        with self._lock:
            now = time.monotonic()
            if now - self._checked < self.recheck_seconds:
                return self._catalog
            self._checked = now
            new_stamp = directory_stamp(self.directory)
            if new_stamp == self._stamp:
                return self._catalog
            self._stamp = new_stamp
            try:
                catalog = load_catalog(self.directory)
            except CourseError as e:
                self.error = str(e)
                self.log.error("courses: keeping the previous courses (%s): %s",
                               self._catalog.digest, e)
                return self._catalog
            try:
                # a setting the hub cannot use (a profile it does not have) is ignored
                # where it is used; the rest of the file, a term above all, applies
                self.check(catalog)
            except CourseError as e:
                self.log.error("courses: %s (that setting is ignored until it is fixed)", e)
            if catalog.digest != self._catalog.digest:
                self.log.info("courses: loaded %d course(s) (%s)", len(catalog.courses),
                              catalog.digest)
            self._catalog, self.error = catalog, None
            return catalog


def closed_courses(catalog: Catalog, groups: Iterable[str], now: float) -> list[Course] | None:
    """For a student, the closed courses that keep them from starting a server: all the
    courses they are a student of, when every one has a file and is closed. None when
    any of them is open (or has no file, so no term), or they are no course's student."""
    courses = sorted({g[: -len(STUDENTS)] for g in groups if g.endswith(STUDENTS)})
    found = [catalog.get(c) for c in courses]
    if not courses or any(c is None or c.term.is_open(now) for c in found):
        return None
    return [c for c in found if c is not None]


def term_deadline(catalog: Catalog, groups: Iterable[str]) -> float | None:
    """When a student's server must stop: when the last of their courses closes, if every
    one has a term (a course without a file sets none, so then: None)."""
    courses = [catalog.get(g[: -len(STUDENTS)]) for g in groups if g.endswith(STUDENTS)]
    if not courses or any(c is None for c in courses):
        return None
    return max(c.term.closes for c in courses if c is not None)


def closed_message(courses: list[Course]) -> str:
    names = ", ".join(f"{c.id} ({c.title})" for c in courses)
    closed = max(c.term.closes for c in courses)
    kept = max(c.term.expires for c in courses)
    return (
        f"The term of {names} has ended: course servers cannot be started since "
        f"{words(closed)}. Your files are kept until {words(kept)}; ask your instructor if "
        "you need access."
    )


def words(t: float) -> str:
    """``2027-02-07 00:00 UTC``: a time as a person reads it."""
    return stamp(t)[:16].replace("T", " ") + " UTC"


_SHARED: dict[Path, LiveCatalog] = {}
_SHARED_LOCK = threading.Lock()


def shared(
    directory: Path, log: logging.Logger, check: Callable[[Catalog], None] | None = None
) -> LiveCatalog:
    """One ``LiveCatalog`` per directory in this process (every spawner shares it)."""
    key = directory.resolve()
    with _SHARED_LOCK:
        if key not in _SHARED:
            _SHARED[key] = LiveCatalog(key, log, check)
        elif check is not None and not _SHARED[key].checked:
            # first made by a reader without a check (the authenticator's roster lookup):
            # the spawners' check applies from now on, to the catalog re-read at once
            _SHARED[key].adopt_check(check)
        return _SHARED[key]
