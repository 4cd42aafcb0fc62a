"""The policy in force, and its reload without restart.

``PolicyHolder`` keeps the last valid policy. ``maybe_reload`` re-reads the file (and
the courses directory, hub_ext.courses) when a modification time or size changed; an
invalid new file is reported and ignored, so a typo never leaves the gateway without a
policy (nor with a half-applied one).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..courses.catalog import stamp as catalog_stamp
from .policyfile import Policy, PolicyError, load


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
        # start-up: errors propagate
        self.policy: Policy = load(path, self.backends, courses_dir)
        self.error: str | None = None

    def _stat(self) -> tuple[Any, ...] | None:
        """The policy file's and every course file's stat: any change means a reload."""
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        courses = catalog_stamp(self.courses_dir) if self.courses_dir else ()
        return (st.st_mtime_ns, st.st_size, courses)

    def maybe_reload(self, force: bool = False) -> bool:
        """Reload if the file changed; returns True when a new policy took effect."""
        stamp = self._stat()
        if not force and stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            policy = load(self.path, self.backends, self.courses_dir)
        except PolicyError as e:
            self.error = str(e)
            self.log.error("QPU policy reload failed, keeping policy %s: %s",
                           self.policy.digest, e)
            return False
        changed = policy.digest != self.policy.digest
        self.policy = policy
        self.error = None
        if changed:
            self.log.info("QPU policy reloaded: %s", policy.digest)
        return changed

    def status(self) -> ReloadStatus:
        return ReloadStatus(self.policy.digest, self.error)
