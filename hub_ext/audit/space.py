"""Refuse, clearly and on the record, when the audit log's disk is nearly full.

Without this, a full disk makes every write fail: each login, spawn and delivery dies with
an opaque 500, and the last records may be torn. Instead, below
``AuditLog.min_free_bytes`` of free space the log refuses every event type that is not
in ``AuditLog.low_space_types``, before writing anything, with a message that tells the
admin what to do; the action that wanted the record is refused with it (fail closed).

Which actions still work, and why (the default ``low_space_types``):

* ending things: ``server-stopped``, ``server-culled``, ``session-ended``,
  ``token-revoked``, ``qpu-job-cancelled`` — refusing them would keep access alive;
* outcomes of work already recorded as started: ``server-spawn-failed``,
  ``qpu-job-finished`` — each follows a record written while there was room;
* refusals: ``login-refused``, ``mfa-refused``, ``ticket-refused``, ``qpu-job-rejected``,
  ``secret-withheld``, ``secret-store-tampered`` — the security team needs to see
  attacks most when the hub is degraded (and a withheld delivery stops a server);
* ``break-glass`` (an admin's emergency action must not be blocked by the disk, and is
  recorded) and ``audit-verified``;
* ``audit-space-low`` itself: the audited refusal (see its schema), at most once a minute.

Everything else — logins, session refreshes, spawns, secret deliveries, tokens issued,
QPU submissions, role and policy changes, reports from user servers — grants access or
starts work that must be audited, so it is refused until there is room again. These
records are small and their number is bounded by the things they end, so the reserve
below the threshold holds them.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

LOW_SPACE_TYPES = (
    "server-stopped",
    "server-culled",
    "session-ended",
    "token-revoked",
    "qpu-job-cancelled",
    "server-spawn-failed",
    "qpu-job-finished",
    "login-refused",
    "mfa-refused",
    "ticket-refused",
    "qpu-job-rejected",
    "secret-withheld",
    "secret-store-tampered",
    "break-glass",
    "audit-verified",
    "alert-raised",  # an attacker who fills the disk must not silence the alerts
)
RECORD_TYPE = "audit-space-low"
SUMMARY_EVERY = 60.0  # seconds between audit-space-low records while refusals go on
MiB = 1024 * 1024


def free_bytes(directory: Path) -> int:
    """Bytes an unprivileged writer may still use on the filesystem of ``directory`` (or
    of its nearest existing parent: the log's directory is created at the first write)."""
    path = directory
    while not path.exists() and path != path.parent:
        path = path.parent
    st = os.statvfs(path)
    return int(st.f_bavail * st.f_frsize)


def message(free: int, threshold: int, refused: str) -> str:
    """The refusal: what happened, for the user; what to do, for the admin. No paths."""
    return (
        f"The hub's audit log disk is nearly full ({free / MiB:.1f} MiB free, below "
        f"AuditLog.min_free_bytes = {threshold / MiB:.1f} MiB), so the hub refuses actions "
        f"it must record (here: {refused}) until there is room. Admin: free space on the "
        "filesystem holding AuditLog.path (grow it, or export the log with `qustody audit "
        "export` and archive old rotated audit files), then retry; nothing else is needed. "
        "Stopping servers and logging out still work."
    )


class SpaceGuard:
    """Free-space check and the bookkeeping of refusals for one log."""

    def __init__(
        self,
        directory: Path,
        threshold: int,
        kept: Iterable[str],
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.directory = directory
        self.threshold = threshold
        self.kept = frozenset([*kept, RECORD_TYPE])
        self.now = now
        self._lock = threading.Lock()
        self._refused: Counter[str] = Counter()
        self._users: list[str] = []
        self._last: float | None = None  # when the last audit-space-low was recorded
        self._active = False  # refusals since space went low and not yet resolved

    def low(self) -> int | None:
        """Free bytes when below the threshold, else None."""
        free = free_bytes(self.directory)
        return free if free < self.threshold else None

    def refuse(self, types: Iterable[str], users: Iterable[str]) -> None:
        with self._lock:
            self._refused.update(types)
            self._active = True
            for user in users:
                if user not in self._users and len(self._users) < 32:
                    self._users.append(user)

    def summary(self, free: int, resolved: bool = False) -> dict[str, Any] | None:
        """The audit-space-low event to record now, if one is due (and forget its counts)."""
        with self._lock:
            now = self.now()
            if resolved:
                if not self._active:
                    return None
            elif not self._refused or (self._last is not None and now - self._last < SUMMARY_EVERY):
                return None
            data: dict[str, Any] = {
                "free_bytes": max(0, free),
                "min_free_bytes": self.threshold,
                "refused": [{"type": t, "count": n} for t, n in sorted(self._refused.items())][:64],
            }
            if self._users:
                data["users"] = list(self._users)
            if resolved:
                data["resolved"] = True
                self._active = False
            self._refused.clear()
            self._users.clear()
            self._last = now
            return data

    def resolved_due(self) -> bool:
        return self._active
