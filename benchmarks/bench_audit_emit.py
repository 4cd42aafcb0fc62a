"""Emit hot path: its shortcuts, and batched writes, each against a baseline of the same run.

    .venv/bin/python benchmarks/bench_audit_emit.py [--events 40000] [--rounds 5]
                                                    [--part all|shortcuts|batched]

Single writer through ``AuditLog`` on fresh events (unique job ids, addresses and
session ids, as in production), best round of each variant, rounds alternating:

* shortcuts: ``emit`` with and without the two shortcuts (no scanner call for strings
  shorter than any detector's shortest match; the timestamp's whole second formatted once);
* batched: ``emit`` one event at a time against ``emit_many`` with batches of 1, 16 and
  128 events (one lock, head read and write per batch), as the QPU gateway's audit thread
  writes what it has queued.

Prints events/s and ratios; asserts nothing.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from bench_audit import event, make_key

from hub_ext.audit import AuditLog, clock

Event = tuple[str, dict]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--events", type=int, default=40_000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--part", choices=("all", "shortcuts", "batched"), default="all")
    args = p.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-audit-emit-"))
    key = make_key(folder)
    audit = AuditLog(path=str(folder / "log" / "audit.jsonl"), key_file=str(key))
    if args.part in ("all", "shortcuts"):
        shortcuts(audit, args.events, args.rounds)
    if args.part in ("all", "batched"):
        batched(audit, args.events, args.rounds)
    audit.close()


def run_rounds(
    audit: AuditLog, n: int, rounds: int, variants: dict[str, Callable[[list[Event]], None]]
) -> dict[str, float]:
    """Best events/s of each variant over ``rounds`` alternating rounds of fresh events."""
    best = dict.fromkeys(variants, 0.0)
    rng = random.Random(3)
    for r in range(rounds):
        for v, (label, write) in enumerate(variants.items()):
            offset = (r * len(variants) + v) * n
            events = [event(rng, offset + i) for i in range(n)]
            start = time.perf_counter()
            write(events)
            best[label] = max(best[label], n / (time.perf_counter() - start))
    return best


def shortcuts(audit: AuditLog, n: int, rounds: int) -> None:
    shortest, system_now = audit.scrubber._shortest, clock._system_now

    def emit(fast: bool) -> Callable[[list[Event]], None]:
        def write(events: list[Event]) -> None:
            audit.scrubber._shortest = shortest if fast else 0
            clock._system_now = system_now if fast else None  # type: ignore[assignment]
            for name, data in events:
                audit.emit(name, data)

        return write

    with_, without = "with shortcuts", "without (scan all, datetime stamp)"
    best = run_rounds(audit, n, rounds, {with_: emit(True), without: emit(False)})
    audit.scrubber._shortest, clock._system_now = shortest, system_now
    print(f"AuditLog.emit, 1 writer, {n:,} fresh events per round, best of {rounds}")
    for label, rate in best.items():
        print(f"  {label:<36} {rate:>10,.0f} events/s")
    print(f"  ratio                                {best[with_] / best[without]:>10.2f}x")


def batched(audit: AuditLog, n: int, rounds: int) -> None:
    def one_by_one(events: list[Event]) -> None:
        for name, data in events:
            audit.emit(name, data)

    def in_batches(size: int) -> Callable[[list[Event]], None]:
        def write(events: list[Event]) -> None:
            for i in range(0, len(events), size):
                audit.emit_many(events[i : i + size])

        return write

    base = "emit, one event per call"
    variants = {base: one_by_one}
    variants.update({f"emit_many, batches of {size}": in_batches(size) for size in (1, 16, 128)})
    best = run_rounds(audit, n, rounds, variants)
    print(f"AuditLog.emit vs emit_many, 1 writer, {n:,} fresh events per round, best of {rounds}")
    for label, rate in best.items():
        print(f"  {label:<36} {rate:>10,.0f} events/s  {rate / best[base]:>6.2f}x")


if __name__ == "__main__":
    main()
