"""The audit log's only source of time. Tests patch ``now``."""

from __future__ import annotations

import time
from datetime import UTC, datetime


def now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


_system_now = now
_second: tuple[int, str] = (-1, "")  # the last whole second formatted, reused within it


def stamp(when: datetime | None = None) -> str:
    """Fixed-width UTC timestamp (``2025-03-01T12:00:00.000000Z``): sorts as text sorts."""
    global _second
    if when is None and now is _system_now:  # the hot path: one per record
        seconds, micros = divmod(time.time_ns() // 1000, 1_000_000)
        cached = _second
        if cached[0] != seconds:
            cached = _second = (seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)))
        return f"{cached[1]}.{micros:06d}Z"
    moment = now() if when is None else when
    offset = moment.utcoffset()
    if offset is None:
        raise ValueError("audit timestamps need a timezone-aware datetime")
    if offset:
        moment = moment.astimezone(UTC)
    return moment.isoformat(timespec="microseconds")[:26] + "Z"


def parse(text: str) -> datetime:
    """A timestamp as the CLI accepts it: ISO 8601 date or date-time; naive means UTC."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"{text!r} is not an ISO 8601 date or time (e.g. 2025-03-01 or 2025-03-01T12:00:00Z)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment
