"""QPU gateway: admission throughput/latency, and end-to-end overhead on Aer.

    .venv/bin/python benchmarks/bench_qpu.py [--clients 32,8] [--requests 4000]
        [--db sqlite,sqlite-normal,postgresql] [--runs 30] [--no-audit] [--no-e2e]
        [--large 200] [--idempotency-keys]

Admission: starts the gateway (``python -m hub_ext.qpu``) on 127.0.0.1 against a stand-in
hub (tests/qpu/fakehub.py), pauses its backend so jobs are admitted (validated, tag- and
quota-checked, rate-limited, persisted) but not executed, then ``--clients`` concurrent
keep-alive connections (spread over two load processes) submit a small QPY circuit each.
Prints jobs/s and client-side p50/p99 latency, on SQLite (synchronous=FULL, the default)
and on a throwaway PostgreSQL cluster (tests/pgserver.py; needs Debian's postgresql).
``--idempotency-keys``: each submission carries a new ``Idempotency-Key``, as the kernel's
client sends them (the gateway then claims a key per job in the admission transaction).

Large payloads (``--large N``): N health checks while the gateway is idle, then N while
one client sends ~6 MB QPY submissions back to back: how long the event loop stalls
behind decoding. Then the same for a provider backend whose driver needs its
credentials to build (tests/qpu/keyed_driver.py ``KeyedTargetDriver``), whose large
bodies the parse processes check against a stand-in of the driver, and, as the baseline,
with the stand-ins switched off (such bodies then decoded on the event loop, as before).

End to end: a 5-qubit GHZ, 1024 shots, run directly on AerSimulator in this process and
through the gateway with ``server_ext.qpu`` (``backend.run(...).result()``), median of
``--runs``; the difference is what the gateway adds.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import harness
import requests
from fakehub import FakeHub

ROOT = harness.ROOT

POLICY = """
[tags]
purposes = ["benchmark"]
[projects.bench]
members = { alice = "member" }
backends = ["*"]
[quotas.user.simulator]
day = { jobs = 100000000, shots = 100000000000 }
month = { jobs = 1000000000 }
[quotas.project.simulator]
day = { jobs = 100000000, shots = 100000000000 }
[rate_limits.simulator]
rate = 1000000.0
burst = 1000000
"""


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def small_circuit_b64() -> str:
    from qiskit import QuantumCircuit, qpy

    qc = QuantumCircuit(2)
    qc.h(0)
    qc.cx(0, 1)
    qc.measure_all()
    buf = io.BytesIO()
    qpy.dump(qc, buf)
    return base64.b64encode(buf.getvalue()).decode()


class Gateway:
    def __init__(self, workdir: Path, hub_url: str, db_url: str, sync: str = "FULL",
                 audit: bool = True, workers: int = 1, extra: str = "") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        policy = workdir / "policy.toml"
        policy.write_text(POLICY)
        config = workdir / f"config_{self.port}.py"
        settings = {
            "hub_api_url": hub_url, "db_url": db_url, "policy_file": str(policy),
            "backends": {"aer_simulator": {"driver": "aer", "lanes": 1},
                         # a provider whose driver needs its key to build
                         "keyed_target": {"driver": "tests.qpu.keyed_driver:KeyedTargetDriver",
                                          "lanes": 1}},
            "ip": "127.0.0.1", "port": self.port, "auth_cache_seconds": 5.0,
            "dispatch_poll_seconds": 1.0, "sqlite_synchronous": sync,
            "workers": workers,
        }
        if audit:  # as in production: every admission is recorded in the audit log
            settings["AuditLog.path"] = str(workdir / f"audit_{self.port}" / "audit.jsonl")
            settings["AuditLog.key_file"] = str(workdir / "audit.key")
            settings["AuditLog.create_key_file"] = True
        else:
            settings["audit_log"] = False
        config.write_text("c = get_config()  # noqa\n" + "".join(
            f"c.{k if '.' in k else 'QpuGateway.' + k} = {v!r}\n" for k, v in settings.items())
            + "c.QpuGateway.credentials = lambda backend: {'api_key': 'qk-bench-0123456789'}\n"
            + extra
            # e.g. a profiler for the database thread
            + os.environ.get("QUSTODY_BENCH_EXTRA_CONFIG", ""))
        env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTERHUB_")}
        self.log = (workdir / f"gateway_{self.port}.log").open("wb")
        profile = os.environ.get("QUSTODY_BENCH_PROFILE")  # cProfile of the event loop
        self.proc = subprocess.Popen(
            [sys.executable, *(["-m", "cProfile", "-o", profile] if profile else []),
             "-m", "hub_ext.qpu", f"--config={config}", "--log-level=WARN"],
            cwd=workdir, env={**env, "PYTHONPATH": str(ROOT)}, stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(self.url + "api/health", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"gateway did not start; see {self.log.name}")
            time.sleep(0.1)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        self.log.close()


# -- load generator -------------------------------------------------------------------------


KEY_SLOT = b"K" * 32  # in a request template: a new Idempotency-Key for each request


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    request: bytes) -> bool:
    """Send one request on a keep-alive connection and read its answer; True if 201."""
    if KEY_SLOT in request:
        request = request.replace(KEY_SLOT, uuid.uuid4().hex.encode())
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    await reader.readexactly(length)
    return head.startswith(b"HTTP/1.1 201")


async def _client(host: str, port: int, request: bytes, n: int, out: list[float]) -> int:
    """Closed loop: one connection, the next request as soon as the answer is in."""
    reader, writer = await asyncio.open_connection(host, port)
    errors = 0
    for _ in range(n):
        t0 = time.perf_counter()
        ok = await _exchange(reader, writer, request)
        out.append(time.perf_counter() - t0)
        errors += not ok
    writer.close()
    return errors


async def _paced(host: str, port: int, request: bytes, rate: float, n: int, conns: int,
                 out: list[float]) -> int:
    """Open loop: request i is due at start + i / rate whatever the answers do; its latency
    runs from when it was due (a late send counts against the gateway)."""
    pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(conns):
        pool.put_nowait(await asyncio.open_connection(host, port))
    errors = 0

    async def one(due: float) -> None:
        nonlocal errors
        reader, writer = await pool.get()
        ok = await _exchange(reader, writer, request)
        out.append(time.perf_counter() - due)
        errors += not ok
        pool.put_nowait((reader, writer))

    start = time.perf_counter() + 0.05
    tasks = []
    for i in range(n):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(due)))
    await asyncio.gather(*tasks)
    while not pool.empty():
        pool.get_nowait()[1].close()
    return errors


def _load_process(port: int, request: bytes, clients: int, per_client: int, q: mp.Queue,
                  rate: float = 0.0) -> None:
    """``clients`` closed-loop clients, or with ``rate`` one open-loop generator over
    ``clients`` connections sending ``per_client`` requests in all."""
    async def main() -> tuple[list[float], int]:
        lat: list[float] = []
        if rate:
            return lat, await _paced("127.0.0.1", port, request, rate, per_client, clients, lat)
        errs = await asyncio.gather(*[
            _client("127.0.0.1", port, request, per_client, lat) for _ in range(clients)])
        return lat, sum(errs)

    lat, errors = asyncio.run(main())
    q.put((lat, errors, time.process_time()))


KEYED = False  # --idempotency-keys


def job_request(token: str) -> bytes:
    body = json.dumps({
        "backend": "aer_simulator", "circuits": [{"qpy": small_circuit_b64()}], "shots": 100,
        "tags": {"project": "bench", "purpose": "benchmark"},
    }).encode()
    key = b"Idempotency-Key: " + KEY_SLOT + b"\r\n" if KEYED else b""
    return (
        f"POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: token {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    ).encode() + key + b"\r\n" + body


def cpu_seconds(pid: int) -> float:
    """User + system CPU time so far of a process and its live children (from /proc;
    Linux): the gateway's supervisor and its workers."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return own + sum(cpu_seconds(int(c)) for c in children)


def load(gw: Gateway, token: str, clients: int, per_client: int,
         rate: float = 0.0) -> dict[str, float]:
    """Two load processes (``clients`` and ``rate`` split between them) against ``gw``;
    jobs/s, latency percentiles and the gateway's CPU time per job."""
    request = job_request(token)
    warm: mp.Queue = mp.Queue()  # token cache, connection pools, code paths
    _load_process(gw.port, request, 4, 25, warm)
    warm.get()
    procs = 2
    q: mp.Queue = mp.Queue()
    workers = [mp.Process(target=_load_process,
                          args=(gw.port, request, clients // procs, per_client, q, rate / procs))
               for _ in range(procs)]
    cpu0 = cpu_seconds(gw.proc.pid)
    t0 = time.perf_counter()
    for w in workers:
        w.start()
    results = [q.get() for _ in workers]
    elapsed = time.perf_counter() - t0
    cpu = cpu_seconds(gw.proc.pid) - cpu0
    for w in workers:
        w.join()
    lat = sorted(x for r in results for x in r[0])
    return {
        "jobs": len(lat), "errors": sum(r[1] for r in results), "seconds": elapsed,
        "jobs_per_s": len(lat) / elapsed, "cpu_ms": cpu * 1000 / max(1, len(lat)),
        "client_cpu_ms": sum(r[2] for r in results) * 1000 / max(1, len(lat)),
        "p50_ms": lat[len(lat) // 2] * 1000, "p99_ms": lat[int(len(lat) * 0.99)] * 1000,
    }


def admission(gw: Gateway, token: str, clients: int, total: int) -> dict[str, float]:
    """Closed loop: ``clients`` connections, each sending its next job on the answer."""
    return load(gw, token, clients, max(1, total // clients))


def paced(gw: Gateway, token: str, rate: float, total: int) -> dict[str, float]:
    """Open loop: ``rate`` jobs/s offered over 64 connections, ``total`` jobs."""
    return load(gw, token, 64, total // 2, rate)


def end_to_end(gw: Gateway, token: str, runs: int) -> dict[str, float]:
    from qiskit import QuantumCircuit, transpile
    from qiskit_aer import AerSimulator

    os.environ["QUSTODY_QPU_URL"] = gw.url
    os.environ["JUPYTERHUB_API_TOKEN"] = token
    from server_ext.qpu import gateway_backend

    qc = QuantumCircuit(5)
    qc.h(0)
    for i in range(4):
        qc.cx(i, i + 1)
    qc.measure_all()
    sim = AerSimulator()
    isa = transpile(qc, sim)
    backend = gateway_backend("aer_simulator", project="bench", purpose="benchmark")
    direct, via = [], []
    for i in range(runs + 3):  # the first 3 warm up both paths
        t0 = time.perf_counter()
        sim.run(isa, shots=1024, seed_simulator=i).result().get_counts()
        t1 = time.perf_counter()
        counts = backend.run(isa, shots=1024, seed_simulator=i).result().get_counts()
        t2 = time.perf_counter()
        assert sum(counts.values()) == 1024
        if i >= 3:
            direct.append(t1 - t0)
            via.append(t2 - t1)
    d, v = statistics.median(direct), statistics.median(via)
    return {"direct_ms": d * 1000, "gateway_ms": v * 1000, "added_ms": (v - d) * 1000,
            "ratio": v / d}


def large_payload_stall(gw: Gateway, token: str, runs: int,
                        backend: str = "aer_simulator") -> dict[str, float]:
    """How long other requests wait while large submissions are decoded: ``runs`` health
    checks, first idle, then while one client sends ~6 MB QPY jobs back to back (the
    backend is paused, so they are only admitted)."""
    import threading

    from qiskit import QuantumCircuit, qpy

    qc = QuantumCircuit(5)
    for i in range(60_000):
        qc.rz(0.001 * i, i % 5)
    qc.measure_all()
    buf = io.BytesIO()
    qpy.dump(qc, buf)
    body = json.dumps({"backend": backend, "shots": 10,
                       "circuits": [{"qpy": base64.b64encode(buf.getvalue()).decode()}],
                       "tags": {"project": "bench", "purpose": "benchmark"}})
    headers = {"Authorization": f"token {token}", "Content-Type": "application/json"}
    session = requests.Session()

    def probe() -> list[float]:
        out = []
        for _ in range(runs):
            t0 = time.perf_counter()
            session.get(gw.url + "api/health", timeout=60).raise_for_status()
            out.append(time.perf_counter() - t0)
            time.sleep(0.01)
        return sorted(out)

    # one large body first: the parse processes are started and warm before measuring
    session.post(gw.url + "api/jobs", data=body, headers=headers, timeout=300)
    idle = probe()
    stop, sent = threading.Event(), [0]

    def flood() -> None:
        with requests.Session() as s:
            while not stop.is_set():
                s.post(gw.url + "api/jobs", data=body, headers=headers, timeout=300)
                sent[0] += 1

    thread = threading.Thread(target=flood)
    thread.start()
    time.sleep(0.5)
    busy = probe()
    stop.set()
    thread.join()
    return {"idle_p50": idle[len(idle) // 2] * 1000, "idle_max": idle[-1] * 1000,
            "busy_p50": busy[len(busy) // 2] * 1000,
            "busy_p90": busy[int(len(busy) * 0.9)] * 1000,
            "busy_p99": busy[int(len(busy) * 0.99)] * 1000, "busy_max": busy[-1] * 1000,
            "large_sent": sent[0], "mb": len(body) / 1e6}


#: Benchmark-only: the gateway without stand-ins, as before they existed (the baseline).
NO_STAND_INS = "import hub_ext.qpu.app\nhub_ext.qpu.app.stand_ins = lambda drivers: {}\n"


def credentialed_stall(work: Path, hub_url: str, token: str, ops: str, runs: int) -> None:
    """Event-loop stalls behind large bodies for a backend whose driver needs credentials
    to build: with the stand-ins, then without (the baseline)."""
    for label, extra in (("stand-in in the parse processes", ""),
                         ("baseline: no stand-in, decoded on the event loop", NO_STAND_INS)):
        gw = Gateway(work, hub_url, f"sqlite:///{work / f'bench-keyed-{len(extra)}.sqlite'}",
                     audit=False, extra=extra)
        try:
            requests.post(gw.url + "api/admin/backends/keyed_target/pause",
                          headers={"Authorization": f"token {ops}"},
                          json={"reason": "benchmark: admit only"},
                          timeout=30).raise_for_status()
            st = large_payload_stall(gw, token, runs, "keyed_target")
            print(f"large payloads [credentialed backend, {label}]: health check idle p50 "
                  f"{st['idle_p50']:.2f} ms (max {st['idle_max']:.1f}); while "
                  f"{st['mb']:.1f} MB jobs are decoded ({st['large_sent']} sent): p50 "
                  f"{st['busy_p50']:.2f} ms, p90 {st['busy_p90']:.1f} ms, "
                  f"p99 {st['busy_p99']:.1f} ms, max "
                  f"{st['busy_max']:.1f} ms")
        finally:
            gw.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--clients", default="32,8",
                        help="concurrent clients; one admission run per value")
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--db", default="sqlite,sqlite-normal,postgresql",
                        help="sqlite (synchronous=FULL, the default), sqlite-normal, postgresql")
    parser.add_argument("--no-audit", action="store_true",
                        help="run the gateway without its audit log (to see what it costs)")
    parser.add_argument("--no-e2e", action="store_true", help="admission runs only")
    parser.add_argument("--large", type=int, default=0,
                        help="health checks measured idle and while ~6 MB jobs are decoded "
                        "(0: skip)")
    parser.add_argument("--workers", default="1,2",
                        help="gateway processes (QpuGateway.workers); one set of runs per value")
    parser.add_argument("--rates", default="1000",
                        help="open-loop runs: offered jobs/s (comma-separated; '' for none)")
    parser.add_argument("--idempotency-keys", action="store_true",
                        help="each submission with a new Idempotency-Key (as server_ext.qpu)")
    args = parser.parse_args()
    global KEYED
    KEYED = args.idempotency_keys
    hub = FakeHub()
    hub_url = hub.start()
    token = hub.add("alice", ["custom:qpu:submit"])
    ops = hub.add("ops", ["custom:qpu:admin"])
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; "
          f"requests per run {args.requests}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        cluster = None
        if args.large:
            credentialed_stall(work, hub_url, token, ops, args.large)
        for db, workers in [(d, int(w)) for d in args.db.split(",")
                            for w in args.workers.split(",")]:
            sync = "NORMAL" if db == "sqlite-normal" else "FULL"
            if db.startswith("sqlite"):
                url = f"sqlite:///{work / f'bench-{db}-{workers}.sqlite'}"
            else:
                from pgserver import PgCluster

                cluster = cluster or PgCluster().start()
                url = cluster.create_database()
            gw = Gateway(work, hub_url, url, sync, audit=not args.no_audit, workers=workers)
            where = f"{db}, {workers} worker{'s' if workers > 1 else ''}"
            try:
                r = requests.post(gw.url + "api/admin/backends/aer_simulator/pause",
                                  headers={"Authorization": f"token {ops}"},
                                  json={"reason": "benchmark: admit only"}, timeout=30)
                r.raise_for_status()
                runs = [(f"{c} clients", admission, int(c)) for c in args.clients.split(",") if c]
                runs += [(f"open loop {float(r):.0f} jobs/s offered", paced, float(r))
                         for r in args.rates.split(",") if r]
                if args.large:
                    st = large_payload_stall(gw, token, args.large)
                    print(f"large payloads [{where}]: health check idle p50 "
                          f"{st['idle_p50']:.2f} ms (max {st['idle_max']:.1f}); while "
                          f"{st['mb']:.1f} MB jobs are decoded ({st['large_sent']} sent): p50 "
                          f"{st['busy_p50']:.2f} ms, p99 {st['busy_p99']:.1f} ms, max "
                          f"{st['busy_max']:.1f} ms")
                for label, run, amount in runs:
                    res = run(gw, token, amount, args.requests)  # type: ignore[operator]
                    print(f"admission [{where}, {label}]: {res['jobs']} jobs in "
                          f"{res['seconds']:.2f} s = {res['jobs_per_s']:.0f} jobs/s; "
                          f"p50 {res['p50_ms']:.2f} ms, p99 {res['p99_ms']:.2f} ms"
                          f"{' (from the due time)' if run is paced else ''}; "
                          f"CPU per job: gateway {res['cpu_ms']:.2f} ms, load generator "
                          f"{res['client_cpu_ms']:.2f} ms; errors {res['errors']}")
                if args.no_e2e:
                    continue
                requests.post(gw.url + "api/admin/backends/aer_simulator/drain",
                              headers={"Authorization": f"token {ops}"},
                              json={"reason": "benchmark done"}, timeout=600)
                requests.post(gw.url + "api/admin/backends/aer_simulator/resume",
                              headers={"Authorization": f"token {ops}"},
                              json={"reason": "benchmark: e2e"}, timeout=30).raise_for_status()
                e2e = end_to_end(gw, token, args.runs)
                print(f"end-to-end [{where}] 5 qubits, 1024 shots: direct Aer "
                      f"{e2e['direct_ms']:.2f} ms, through the gateway {e2e['gateway_ms']:.2f} ms"
                      f" (+{e2e['added_ms']:.2f} ms, x{e2e['ratio']:.2f})")
            finally:
                gw.stop()
        if cluster:
            cluster.stop()
    hub.stop()


if __name__ == "__main__":
    main()
