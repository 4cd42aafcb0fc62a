"""The record timestamp: the fast path (system clock) and the datetime path agree."""

from __future__ import annotations

from hub_ext.audit import clock


def test_fast_stamps_are_ordered_with_datetime_stamps():
    for _ in range(2000):
        before = clock.stamp(clock.now())
        fast = clock.stamp()
        after = clock.stamp(clock.now())
        assert len(fast) == len(before) == 27 and fast.endswith("Z")
        assert before <= fast <= after
        assert clock.stamp(clock.parse(fast)) == fast


def test_a_patched_clock_is_honoured(fake_clock):
    assert clock.stamp() == "2025-03-01T12:00:00.000000Z"
