"""The policy in force, and its reload without restart.

``PolicyHolder`` keeps the last valid policy. ``maybe_reload`` re-reads the file (and
the courses directory, hub_ext.courses) when a modification time or size changed and the
next poll finds it unchanged (never half-written); an invalid or emptied new file is
reported and ignored, so a typo never leaves the gateway without a policy (nor with a
half-applied one).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..courses.catalog import load_catalog
from ..courses.catalog import stamp as catalog_stamp
from ..courses.model import Course, CourseError
from .policyfile import Policy, PolicyError, parse, read_policy


@dataclass(frozen=True)
class ReloadStatus:
    digest: str
    error: str | None


class PolicyHolder:
    def __init__(
        self,
        path: Path,
        backends: Mapping[str, str],
        log: logging.Logger,
        courses_dir: Path | None = None,
    ) -> None:
        self.path = path
        self.backends = dict(backends)
        self.log = log
        self.courses_dir = courses_dir
        self._stamp = self._stat()
        #: a changed stamp seen once, read when the next poll sees it again (see maybe_reload)
        self._settling: tuple[Any, ...] | None = None
        # start-up: errors propagate
        self._courses = self._load_courses()
        self.policy: Policy = parse(read_policy(path), self.backends, str(path), self._courses)
        self.error: str | None = None
        #: whether the last ``maybe_reload`` tried and failed (report once, not every poll)
        self.failed_now = False

    def _stat(self) -> tuple[Any, ...] | None:
        """The policy file's and every course file's stat: any change means a reload."""
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        courses = catalog_stamp(self.courses_dir) if self.courses_dir else ()
        return (st.st_mtime_ns, st.st_size, courses)

    def _load_courses(self) -> Mapping[str, Course]:
        if self.courses_dir is None:
            return {}
        try:
            return load_catalog(self.courses_dir).courses
        except CourseError as e:
            raise PolicyError(str(e)) from None

    def _reload(self) -> tuple[Policy, str | None]:
        """The new policy, and what of the new course files it leaves out (None: nothing).

        The policy file and the course files fail apart: a course file the gateway cannot
        take (unknown backend, bad syntax) keeps the last good courses but lets policy-file
        edits (a revocation, a lower quota) apply; a bad policy file keeps everything.
        """
        text = read_policy(self.path)
        if not text.strip():
            # what a file caught between its truncation and its write looks like, or a
            # mistaken `> policy.toml`: as a policy it would lift every quota and reservation
            raise PolicyError(
                f"{self.path} is empty; a running gateway keeps its policy rather than lift "
                "every quota and reservation (write the whole file, then reload)"
            )
        try:
            courses = self._load_courses()
        except PolicyError as e:
            return parse(text, self.backends, str(self.path), self._courses), str(e)
        try:
            policy = parse(text, self.backends, str(self.path), courses)
        except PolicyError as e:
            if courses == self._courses:
                raise
            kept = parse(text, self.backends, str(self.path), self._courses)
            return kept, f"{e} (the previous course files stay in force)"
        self._courses = courses
        return policy, None

    def maybe_reload(self, force: bool = False) -> bool:
        """Reload if a file changed; returns True when a new policy took effect."""
        self.failed_now = False
        stamp = self._stat()
        if not force and stamp == self._stamp:
            return False
        if not force and stamp != self._settling:
            # A file being written (an editor's or a script's truncate-then-write) could be
            # read half-written: a change is read once one more poll finds it unchanged.
            self._settling = stamp
            return False
        self._settling = None
        self._stamp = stamp
        try:
            policy, error = self._reload()
        except PolicyError as e:
            self.error, self.failed_now = str(e), True
            self.log.error("QPU policy reload failed, keeping policy %s: %s",
                           self.policy.digest, e)
            return False
        except Exception as e:  # an unexpected failure must not end the reload loop
            self.error, self.failed_now = f"{type(e).__name__}: {e}", True
            self.log.exception("QPU policy reload failed, keeping policy %s",
                               self.policy.digest)
            return False
        if error is not None:
            self.failed_now = True
            self.log.error("QPU course files refused: %s", error)
        changed = policy.digest != self.policy.digest
        self.policy = policy
        self.error = error
        if changed:
            self.log.info("QPU policy reloaded: %s", policy.digest)
        return changed

    def status(self) -> ReloadStatus:
        return ReloadStatus(self.policy.digest, self.error)
