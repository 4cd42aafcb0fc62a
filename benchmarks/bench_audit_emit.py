"""Emit hot path, before and after its shortcuts, measured in the same run.

    .venv/bin/python benchmarks/bench_audit_emit.py [--events 40000] [--rounds 5]

Single writer through ``AuditLog.emit`` on fresh events (unique job ids, addresses and
session ids, as in production), alternating rounds with and without the two shortcuts
(no scanner call for strings shorter than any detector's shortest match; the timestamp's
whole second formatted once), best round of each. Prints events/s and the ratio; asserts
nothing.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from bench_audit import event, make_key

from hub_ext.audit import AuditLog, clock


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--events", type=int, default=40_000)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-audit-emit-"))
    key = make_key(folder)
    audit = AuditLog(path=str(folder / "log" / "audit.jsonl"), key_file=str(key))
    shortest, system_now = audit.scrubber._shortest, clock._system_now
    best = {"with shortcuts": 0.0, "without (scan all, datetime stamp)": 0.0}
    rng = random.Random(3)
    offset = 0
    for _ in range(args.rounds):
        for label in best:
            fast = label.startswith("with ")
            audit.scrubber._shortest = shortest if fast else 0
            clock._system_now = system_now if fast else None  # type: ignore[assignment]
            events = [event(rng, offset + i) for i in range(args.events)]
            offset += args.events
            start = time.perf_counter()
            for name, data in events:
                audit.emit(name, data)
            best[label] = max(best[label], args.events / (time.perf_counter() - start))
    clock._system_now = system_now
    audit.close()
    print(f"AuditLog.emit, 1 writer, {args.events:,} fresh events per round, best of {args.rounds}")
    for label, rate in best.items():
        print(f"  {label:<36} {rate:>10,.0f} events/s")
    base = best["without (scan all, datetime stamp)"]
    print(f"  ratio                                {best['with shortcuts'] / base:>10.2f}x")


if __name__ == "__main__":
    main()
