"""Group audit records into per-user sessions for the auditor page.

A session starts at a ``login`` and holds that user's events until their next login
(events before a user's first login in the selection form a session of their own). The
events of a session are in log order: login, spawn, refused saves, jobs, cull.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

SESSION_START = "login"
_SUMMARY_MAX = 200
_HIDDEN = frozenset({"user", "server"})


@dataclass
class Event:
    seq: int
    ts: str
    type: str
    origin: str
    server: str
    summary: str

    def public(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "ts": self.ts,
            "type": self.type,
            "origin": self.origin,
            "server": self.server,
            "summary": self.summary,
        }


@dataclass
class Session:
    user: str
    events: list[Event] = field(default_factory=list)

    @property
    def start(self) -> str:
        return self.events[0].ts

    @property
    def end(self) -> str:
        return self.events[-1].ts

    def public(self) -> dict[str, Any]:
        return {
            "user": self.user,
            "start": self.start,
            "end": self.end,
            "events": [e.public() for e in self.events],
        }


def summary(data: dict[str, Any]) -> str:
    """A one-line description of an event's fields (never more than the record holds)."""
    parts = []
    for key, value in data.items():
        if key in _HIDDEN:
            continue
        if isinstance(value, list):
            text = ",".join(str(v) for v in value)
        elif isinstance(value, dict):
            text = ",".join(f"{k}={v}" for k, v in value.items())
        else:
            text = str(value)
        parts.append(f"{key}={text}")
    line = " ".join(parts)
    return line if len(line) <= _SUMMARY_MAX else line[: _SUMMARY_MAX - 1] + "…"


def sessions(records: Iterable[dict[str, Any]]) -> list[Session]:
    """Sessions per user, users in name order, each user's sessions oldest first; events
    about no user (alerts, a tampered store) under the user ``""``, first."""
    by_user: dict[str, list[Session]] = {}
    for record in records:
        data = record.get("data")
        if not isinstance(data, dict):
            continue
        user = data.get("user") or data.get("actor") or ""
        if not isinstance(user, str):
            continue  # "" holds the hub's own events (alerts, a tampered store, ...)
        event = Event(
            seq=int(record.get("seq", -1)),
            ts=str(record.get("ts", "")),
            type=str(record.get("type", "")),
            origin=str(record.get("origin", "")),
            server=str(data.get("server", "")),
            summary=summary(data),
        )
        runs = by_user.setdefault(user, [])
        if not runs or event.type == SESSION_START:
            runs.append(Session(user))
        runs[-1].events.append(event)
    return [s for user in sorted(by_user) for s in by_user[user]]
