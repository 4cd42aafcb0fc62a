"""Audit log: append throughput, verification speed and query latency on a large log.

    .venv/bin/python benchmarks/bench_audit.py [--events 1000000] [--append 40000] [--workers 8]
                                               [--pg N] [--dir DIR [--reuse]]

Prints:
* append throughput in events/s: one writer through ``AuditLog.emit`` (scrub, schema
  check, serialise, seal, write) and through the store alone (seal, write, head), then
  ``--workers`` concurrent writers as threads sharing one AuditLog and as processes
  each with its own;
* verification speed in MB/s over a log of ``--events`` records (full, one process and
  all CPUs; quick, from the checkpoints);
* query latency on that log for typical auditor questions (best of 3, with hit counts);
* with ``--pg N``: append throughput and verification speed of the PostgreSQL store.

Default settings (fsync at checkpoints every 10,000 records, 256 MiB rotation). Nothing
here asserts a figure; it prints them.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import secrets
import shutil
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hub_ext.audit import AuditLog, clock
from hub_ext.audit.query import Filter, query
from hub_ext.audit.verify import verify

USERS = [f"user{i:04d}" for i in range(1000)]
PROJECTS = [f"proj{i:02d}" for i in range(50)]
BACKENDS = ["aer-simulator", "fake-brisbane", "fake-kyiv", "fake-sherbrooke"]
DIGEST = "sha256:" + "ab" * 32


def event(rng: random.Random, i: int) -> tuple[str, dict]:
    user = USERS[rng.randrange(len(USERS))]
    project = PROJECTS[hash(user) % len(PROJECTS)]
    pick = rng.random()
    if pick < 0.10:
        return "login", {
            "user": user,
            "ip": f"10.{i % 250}.{i % 7}.{i % 200}",
            "credential": {"kind": "browser-session", "id": f"s-{i:x}"},
            "amr": ["pwd", "otp"],
            "roles": ["user"],
        }
    if pick < 0.15:
        return "server-started", {
            "user": user,
            "server": "",
            "image_digest": DIGEST,
            "image": f"registry.example.org/qustody/notebook@{DIGEST}",
            "profile": "cpu-small",
            "limits": {"mem_bytes": 4 << 30, "cpus": 2, "pids": 512},
        }
    if pick < 0.20:
        return "session-refreshed", {"user": user, "roles": ["user"], "tokens_renewed": True}
    kind = ("qpu-job-submitted", "qpu-job-admitted", "qpu-job-finished")[i % 3]
    data = {
        "user": user,
        "project": project,
        "job_id": f"j-{i // 3:07d}",
        "backend": BACKENDS[i % len(BACKENDS)],
    }
    if kind == "qpu-job-submitted":
        data.update(shots=4000, circuits=3, tags=["experiment=vqe"])
    elif kind == "qpu-job-finished":
        data.update(status="done", shots=12000, duration_seconds=2.5)
    return kind, data


def make_key(folder: Path) -> Path:
    path = folder / "audit.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    return path


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:>10,.0f} events/s  ({n:,} in {seconds:.2f}s)"


# -- append ------------------------------------------------------------------------------


def bench_append(folder: Path, key: Path, n: int, workers: int) -> None:
    print(f"\nappend throughput ({n:,} events each)")
    rng = random.Random(1)
    events = [event(rng, i) for i in range(n)]

    audit = AuditLog(path=str(folder / "a1" / "audit.jsonl"), key_file=str(key))
    start = time.perf_counter()
    for name, data in events:
        audit.emit(name, data)
    print(f"  1 writer, AuditLog.emit        {rate(n, time.perf_counter() - start)}")
    audit.close()

    audit = AuditLog(path=str(folder / "a2" / "audit.jsonl"), key_file=str(key))
    store = audit.store
    serialized = [(name, json.dumps(data, separators=(",", ":"))) for name, data in events]
    start = time.perf_counter()
    for name, data_json in serialized:
        store.append(name, 1, "hub", data_json)
    print(f"  1 writer, store append only    {rate(n, time.perf_counter() - start)}")
    audit.close()

    audit = AuditLog(path=str(folder / "a3" / "audit.jsonl"), key_file=str(key))
    share = n // workers
    barrier = threading.Barrier(workers + 1)

    def work(part: list) -> None:
        barrier.wait()
        for name, data in part:
            audit.emit(name, data)

    threads = [
        threading.Thread(target=work, args=(events[w * share : (w + 1) * share],))
        for w in range(workers)
    ]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    print(
        f"  {workers} threads, one AuditLog     {rate(share * workers, time.perf_counter() - start)}"
    )
    audit.close()

    ctx = multiprocessing.get_context("fork")
    pbarrier = ctx.Barrier(workers + 1)
    path = str(folder / "a4" / "audit.jsonl")
    procs = [
        ctx.Process(
            target=_process_writer,
            args=(path, str(key), events[w * share : (w + 1) * share], pbarrier),
        )
        for w in range(workers)
    ]
    for p in procs:
        p.start()
    pbarrier.wait()
    start = time.perf_counter()
    for p in procs:
        p.join()
    elapsed = time.perf_counter() - start
    print(f"  {workers} processes, one log each  {rate(share * workers, elapsed)}")
    report = verify(path, [key.read_bytes().strip()])
    print(f"  (concurrent log verifies: {report.ok}, {report.records:,} records)")


def _process_writer(path: str, key: str, part: list, barrier) -> None:
    audit = AuditLog(path=path, key_file=key)
    audit.emit("login", {"user": "warm-up"})
    barrier.wait()
    for name, data in part:
        audit.emit(name, data)
    audit.close()


# -- the large log -------------------------------------------------------------------------


def build_log(folder: Path, key: Path, n: int) -> Path:
    path = folder / "big" / "audit.jsonl"
    moment = [datetime(2025, 1, 1, tzinfo=UTC)]
    step = timedelta(milliseconds=250)

    def fake_now() -> datetime:
        moment[0] += step
        return moment[0]

    real_now = clock.now
    clock.now = fake_now  # a quarter second between events: about 3 days per million
    try:
        audit = AuditLog(path=str(path), key_file=str(key))
        rng = random.Random(7)
        start = time.perf_counter()
        for i in range(n):
            name, data = event(rng, i)
            audit.store.append(name, 1, "hub", json.dumps(data, separators=(",", ":")))
        elapsed = time.perf_counter() - start
        audit.close()
    finally:
        clock.now = real_now
    size = sum(p.stat().st_size for p in path.parent.glob("audit*.jsonl"))
    print(
        f"\nlog: {n:,} events, {size / 1e6:,.0f} MB in "
        f"{len(list(path.parent.glob('audit*.jsonl'))) - 1} file(s), built in {elapsed:.0f}s"
    )
    return path


def bench_verify(path: Path, key: bytes) -> None:
    print("\nverification")
    for label, kw in (
        ("full, 1 process      ", {"jobs": 1}),
        (f"full, {os.cpu_count()} processes    ", {"jobs": os.cpu_count() or 1}),
    ):
        report = verify(path, [key], **kw)
        assert report.ok, report.summary()
        mbps = report.bytes / report.seconds / 1e6
        print(
            f"  {label} {mbps:>8,.0f} MB/s  ({report.bytes / 1e6:,.0f} MB, "
            f"{report.records:,} records, {report.seconds:.2f}s)"
        )
    report = verify(path, [key], quick=True)
    assert report.ok, report.summary()
    print(
        f"  quick (checkpoints)   {report.seconds * 1000:>8,.0f} ms    ({report.checkpoints} "
        f"checkpoints and the {report.bytes:,} bytes after the last one)"
    )


def bench_query(path: Path) -> None:
    print("\nquery latency (best of 3, cold-start excluded)")
    day2 = "2025-01-02T00:00:00.000000Z"
    hour = "2025-01-02T01:00:00.000000Z"
    questions = [
        ("one user (of 1000)", Filter(users=frozenset({"user0042"}))),
        ("one job", Filter(jobs=frozenset({"j-0123456"}))),
        ("one project, one hour", Filter(projects=frozenset({"proj07"}), since=day2, until=hour)),
        ("one user, one hour", Filter(users=frozenset({"user0042"}), since=day2, until=hour)),
        ("all logins (10%)", Filter(types=frozenset({"login"}))),
        ("everything in one hour", Filter(since=day2, until=hour)),
    ]
    for label, flt in questions:
        best, hits = float("inf"), 0
        for _ in range(3):
            start = time.perf_counter()
            hits = sum(1 for _ in query(path, flt))
            best = min(best, time.perf_counter() - start)
        print(f"  {label:<26} {best * 1000:>8.0f} ms  ({hits:,} records)")


def bench_postgres(folder: Path, key: Path, n: int, workers: int) -> None:
    import harness  # noqa: F401 - puts tests/ on sys.path
    from pgserver import PgCluster

    from hub_ext.audit.verify import verify_db

    print(f"\nPostgreSQL store ({n:,} events each; throwaway cluster, fsync off)")
    try:
        cluster = PgCluster().start()
    except RuntimeError as e:
        print(f"  skipped: {e}")
        return
    try:
        rng = random.Random(3)
        events = [event(rng, i) for i in range(n)]
        url = cluster.create_database()
        audit = AuditLog(db_url=url, key_file=str(key))
        start = time.perf_counter()
        for name, data in events:
            audit.emit(name, data)
        print(f"  1 writer, AuditLog.emit        {rate(n, time.perf_counter() - start)}")
        audit.close()
        url = cluster.create_database()
        AuditLog(db_url=url, key_file=str(key)).close()  # create the tables once
        ctx = multiprocessing.get_context("fork")
        barrier = ctx.Barrier(workers + 1)
        share = n // workers
        procs = [
            ctx.Process(
                target=_pg_writer,
                args=(url, str(key), events[w * share : (w + 1) * share], barrier),
            )
            for w in range(workers)
        ]
        for p in procs:
            p.start()
        barrier.wait()
        start = time.perf_counter()
        for p in procs:
            p.join()
        print(
            f"  {workers} processes                {rate(share * workers, time.perf_counter() - start)}"
        )
        report = verify_db(url, [key.read_bytes().strip()])
        print(
            f"  verify --db                  {report.bytes / report.seconds / 1e6:>10,.0f} MB/s  "
            f"({report.records:,} records, ok: {report.ok})"
        )
    finally:
        cluster.stop()


def _pg_writer(url: str, key: str, part: list, barrier) -> None:
    audit = AuditLog(db_url=url, key_file=key)
    barrier.wait()
    for name, data in part:
        audit.emit(name, data)
    audit.close()


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--events", type=int, default=1_000_000, help="size of the large log")
    p.add_argument("--append", type=int, default=40_000, help="events per append measurement")
    p.add_argument("--workers", type=int, default=8, help="concurrent writers")
    p.add_argument(
        "--pg",
        type=int,
        default=0,
        metavar="N",
        help="also time N appends to the PostgreSQL store (throwaway cluster; needs postgresql)",
    )
    p.add_argument("--dir", help="work here instead of a temporary directory (kept)")
    p.add_argument(
        "--reuse",
        action="store_true",
        help="with --dir: skip the append figures and reuse the large log built there before",
    )
    args = p.parse_args()
    folder = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="bench-audit-"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, files in {folder}")
    try:
        key = folder / "audit.key"
        path = folder / "big" / "audit.jsonl"
        if not (args.reuse and path.exists()):
            key = make_key(folder)
            bench_append(folder, key, args.append, args.workers)
            path = build_log(folder, key, args.events)
        bench_verify(path, key.read_bytes().strip())
        bench_query(path)
        if args.pg:
            bench_postgres(folder, key, args.pg, args.workers)
    finally:
        if not args.dir:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
