"""Alert engine throughput: can the audit service keep up with the log?

Writes a real audit log of N records (a mix of a busy hub's types, with bursts that raise
alerts), then measures, in the same run:

- ``read``: reading the log from disk as the service does (``query``), the baseline;
- ``read+alerts``: the same read feeding every record to the engine (the service's poll);
- ``engine``: the engine alone, on records already in memory.

    python benchmarks/bench_alerts.py [-n 200000] [--runs 3]

Target (issue 17): the engine keeps up with >= 20,000 records/s.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import harness  # noqa: F401 - puts the repository root on sys.path

from hub_ext.audit import AuditLog, schema
from hub_ext.audit.alerts import AlertEngine, AlertRules
from hub_ext.audit.query import Filter, query

USERS = [f"user{i:04d}" for i in range(2000)]
# (hub-side types only: a user server's events, such as save-refused, go through
# record_user_event, and the engine treats every type the same way)
MIX = [("login", 20), ("server-started", 15), ("qpu-job-submitted", 25),
       ("qpu-job-finished", 25), ("mfa-refused", 3), ("login-refused", 5),
       ("qpu-job-rejected", 5), ("secret-delivered", 2)]


def event(kind: str, rng: random.Random) -> dict[str, object]:
    """The schema's example for ``kind``, about a random user (and address)."""
    data = dict(schema.get(kind).examples[0])
    data["user"] = rng.choice(USERS)
    if "ip" in data:
        data["ip"] = f"192.0.2.{rng.randrange(1, 255)}"
    data.pop("actor", None)
    return data


def write_log(path: Path, n: int) -> None:
    rng = random.Random(7)
    kinds = [k for k, w in MIX for _ in range(w)]
    audit = AuditLog(path=str(path / "audit.jsonl"), key_file=str(path / "k"),
                     create_key_file=True, fsync="never")
    try:
        batch: list[tuple[str, dict[str, object]]] = []
        for i in range(n):
            kind = rng.choice(kinds)
            if i % 5000 == 0:  # a password-spraying burst from one address
                batch += [("login-refused", {"user": f"spray{j}", "ip": "203.0.113.7",
                                              "reason": "idp-error"}) for j in range(6)]
            batch.append((kind, event(kind, rng)))
            if len(batch) >= 5000:
                audit.emit_many(batch)
                batch = []
        if batch:
            audit.emit_many(batch)
    finally:
        audit.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("-n", type=int, default=200_000, help="records in the log")
    p.add_argument("--runs", type=int, default=3, help="best of this many runs")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-alerts-") as d:
        path = Path(d)
        print(f"writing {args.n} records ...", flush=True)
        write_log(path, args.n)
        log = path / "audit.jsonl"
        records = [h.record for h in query(log, Filter())]
        n = len(records)
        best: dict[str, float] = {}
        alerts = 0
        for run in range(args.runs):
            t = time.perf_counter()
            for _ in query(log, Filter()):
                pass
            best["read"] = min(best.get("read", 1e9), time.perf_counter() - t)

            engine = AlertEngine(AlertRules().rules())
            t = time.perf_counter()
            raised = 0
            for hit in query(log, Filter()):
                raised += len(engine.feed(hit.record))
            best["read+alerts"] = min(best.get("read+alerts", 1e9), time.perf_counter() - t)

            engine = AlertEngine(AlertRules().rules())
            t = time.perf_counter()
            alerts = sum(len(engine.feed(r)) for r in records)
            best["engine"] = min(best.get("engine", 1e9), time.perf_counter() - t)
            print(f"  run {run + 1}: " + ", ".join(f"{k} {v:.3f}s" for k, v in best.items()),
                  flush=True)
        print(f"alert engine, {n} records ({alerts} alerts raised), best of {args.runs}:")
        for name, seconds in best.items():
            print(f"  {name:<12} {n / seconds:>12,.0f} records/s")
        print(f"  engine cost on the service's read: "
              f"{(best['read+alerts'] / best['read'] - 1) * 100:+.1f} %")
        target = n / best["engine"] >= 20_000 and n / best["read+alerts"] >= 20_000
        print(f"  target >= 20,000 records/s (engine and read+alerts): "
              f"{'met' if target else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
