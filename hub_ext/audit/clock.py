"""The audit log's only source of time. Tests patch ``now``."""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def stamp(when: datetime | None = None) -> str:
    """Fixed-width UTC timestamp (``2025-03-01T12:00:00.000000Z``): sorts as text sorts."""
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
