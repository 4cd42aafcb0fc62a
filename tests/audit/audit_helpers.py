"""Helpers for the audit tests (importable: tests/audit is on sys.path for its tests)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hub_ext.audit import schema


class Clock:
    """A clock tests move by hand."""

    def __init__(self) -> None:
        self.now = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def example(type_name: str) -> dict:
    """A valid event of this type, from the examples in its schema."""
    return schema.get(type_name).examples[0]
