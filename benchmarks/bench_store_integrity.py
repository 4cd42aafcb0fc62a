"""Cost of the embedded store's integrity check (row, grant and head MACs) on reads.

    .venv/bin/python benchmarks/bench_store_integrity.py [--runs 50]

For stores holding N = 10, 100, 1000 secrets (spread over 10 users, plus one granted
project), times ``secrets_for(user)`` (what a spawn or refresh does: verify the whole
store, then read and decrypt the user's secrets) and, as the baseline from the same run
and the same snapshot, the verification alone, interleaved. Prints medians and p95.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from harness import pct

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hub_ext.secrets.embedded import EmbeddedStore


def bench(n: int, runs: int, workdir: Path) -> tuple[list[float], list[float], int]:
    store = EmbeddedStore(str(workdir / f"s{n}.sqlite"), os.urandom(32))
    for i in range(n):
        store.put(f"user:u{i % 10}", f"SECRET_{i:04d}", "dev", os.urandom(24).hex().encode())
    store.put("project:p", "SHARED_TOKEN", "dev", b"shared-token-value-001")
    store.grant("project:p", [f"u{i}" for i in range(10)])
    read, verify = [], []
    got = 0
    for _ in range(runs):
        t0 = time.perf_counter()
        got = len(store.secrets_for("u0"))
        t1 = time.perf_counter()
        with store._lock:
            store._db.execute("BEGIN")
            try:
                t2 = time.perf_counter()
                store._verify(store._db)
                t3 = time.perf_counter()
            finally:
                store._db.execute("ROLLBACK")
        read.append(t1 - t0)
        verify.append(t3 - t2)
    store.close()
    return read, verify, got


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=50)
    args = ap.parse_args()
    print(f"embedded store reads, {args.runs} runs each (ms: median / p95)")
    print(f"{'secrets':>8} {'user gets':>9} {'secrets_for':>16} {'verify alone':>16} {'share':>6}")
    with tempfile.TemporaryDirectory() as tmp:
        for n in (10, 100, 1000):
            read, verify, got = bench(n, args.runs, Path(tmp))
            r, v = statistics.median(read) * 1e3, statistics.median(verify) * 1e3
            print(
                f"{n:>8} {got:>9} {r:>7.2f} / {pct(read, 95) * 1e3:>6.2f} "
                f"{v:>7.2f} / {pct(verify, 95) * 1e3:>6.2f} {v / r:>6.0%}"
            )


if __name__ == "__main__":
    main()
