"""``QpuGateway.workers``: several processes on one port, one database, one supervisor."""

from __future__ import annotations

import os
import signal
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from conftest import POLICY, Gateway, bell, launch, qpy_b64
from test_admission import QUOTA_20
from waiting import wait_for


def children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def wait_until(predicate, timeout: float = 30.0, what: str = ""):  # type: ignore[no-untyped-def]
    return wait_for(predicate, timeout, 0.1, what)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped) is not serving either
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


def port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def instances(gw: Gateway, n: int = 40) -> set[str]:
    """Which workers answer: each request on a new connection."""
    seen = set()
    for _ in range(n):
        status, stats = gw.call("ops", "GET", "api/admin/stats")
        assert status == 200, stats
        seen.add(stats["instance"])
    return seen


def test_two_workers_serve_one_port_and_hold_one_quota(db_url, start_gateway):
    gw = start_gateway(db_url, policy=QUOTA_20, workers=2, refusal_burst=1000)
    assert gw.process is not None and len(children(gw.process.pid)) == 2
    seen = instances(gw)
    assert len(seen) == 2 and {i.rsplit("/", 1)[1] for i in seen} == {"w0", "w1"}
    payload = [{"qpy": qpy_b64(bell())}]
    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(
            lambda i: gw.submit("alice" if i % 3 else "bob", circuits=payload, shots=10),
            range(200)))
    admitted = [b for s, b in results if s == 201]
    assert len(admitted) == 20
    assert {b["error"] for s, b in results if s != 201} == {"PROJECT_QUOTA"}
    for job in admitted:
        assert gw.wait_final("alice", job["job_id"])["state"] == "DONE"
    _, stats = gw.call("ops", "GET", "api/admin/stats")
    assert stats["jobs"] == {"DONE": 20, "REJECTED": 180}


def test_a_killed_worker_is_replaced_and_its_running_job_recovered(hub, tmp_path):
    backends = {"aer_simulator": {"driver": "aer"},
                "fake_hw": {"driver": "emulated", "num_qubits": 5, "job_seconds": 3.0,
                            "circuit_seconds": 0.0, "shot_seconds": 0.0, "time_scale": 1.0}}
    gw = launch(hub, tmp_path / "gw", f"sqlite:///{tmp_path / 'qpu.sqlite'}",
                backends=backends, workers=2).start()
    try:
        from qiskit import transpile
        from qiskit.providers.fake_provider import GenericBackendV2

        circuit = [{"qpy": qpy_b64(transpile(bell(), GenericBackendV2(5, seed=1234),
                                             seed_transpiler=1))}]
        status, job = gw.submit("alice", circuits=circuit, backend="fake_hw", shots=20)
        assert status == 201, job

        def runner() -> str | None:
            _, decisions = gw.call("alice", "GET", f"api/jobs/{job['job_id']}",
                                   include="decisions")
            started = [d for d in decisions["decisions"] if d["code"] == "STARTED"]
            return started[-1]["detail"]["instance"] if started else None

        instance = wait_until(runner, what="the job to start")
        assert gw.process is not None
        before = children(gw.process.pid)
        # kill -9 the worker that runs the job (the workers are the supervisor's children,
        # in start order: w0 then w1)
        victim = before[int(instance.rsplit("/w", 1)[1])]
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: (c := children(gw.process.pid)) and len(c) == 2
                   and victim not in c, what="a new worker")
        done = gw.wait_final("alice", job["job_id"], timeout=90)
        assert done["state"] == "DONE", done
        _, decisions = gw.call("alice", "GET", f"api/jobs/{job['job_id']}",
                               include="decisions")
        codes = [d["code"] for d in decisions["decisions"]]
        assert codes.count("STARTED") == 2  # lost with its worker, requeued, run again
        assert "worker 1 (pid" in gw.log() or "worker 0 (pid" in gw.log()
        assert "starting it again" in gw.log()
    finally:
        gw.stop()


def test_sigterm_stops_every_worker(hub, tmp_path):
    gw = launch(hub, tmp_path / "gw", f"sqlite:///{tmp_path / 'qpu.sqlite'}",
                workers=3).start()
    assert gw.process is not None
    workers = children(gw.process.pid)
    assert len(workers) == 3
    gw.process.send_signal(signal.SIGTERM)
    assert gw.process.wait(30) == 0
    assert not any(alive(w) for w in workers)
    assert port_free(gw.port)


def test_workers_stop_when_the_supervisor_is_killed(hub, tmp_path):
    gw = launch(hub, tmp_path / "gw", f"sqlite:///{tmp_path / 'qpu.sqlite'}",
                workers=2).start()
    assert gw.process is not None
    workers = children(gw.process.pid)
    os.kill(gw.process.pid, signal.SIGKILL)  # only the supervisor, not its group
    gw.process.wait(10)
    wait_until(lambda: not any(alive(w) for w in workers), what="orphaned workers to exit")
    wait_until(lambda: port_free(gw.port), what="the port to be free")


def test_a_configuration_error_stops_the_gateway_instead_of_a_restart_loop(hub, tmp_path):
    gw = launch(hub, tmp_path / "gw", f"sqlite:///{tmp_path / 'qpu.sqlite'}", workers=2,
                backends={"aer_simulator": {"driver": "no.such.module:Driver"}})
    with pytest.raises(AssertionError, match="gateway exited 2"):
        gw.start(timeout=60)
    log = gw.log()
    assert "QpuGateway.backends" in log and "no.such.module" in log
    assert "configuration error; stopping the QPU gateway" in log
    assert "starting it again" not in log


def test_sighup_reloads_the_policy_in_every_worker(hub, tmp_path):
    gw = launch(hub, tmp_path / "gw", f"sqlite:///{tmp_path / 'qpu.sqlite'}", workers=2,
                policy_reload_seconds=3600.0).start()
    try:
        def digests() -> set[str]:
            return {requests.get(gw.url + "api/health", timeout=10).json()["policy"]
                    for _ in range(30)}

        before = digests()
        assert len(before) == 1
        gw.policy_path.write_text(POLICY + "\n[projects.extra]\nmembers = { zed = 'member' }\n")
        assert gw.process is not None
        gw.process.send_signal(signal.SIGHUP)
        wait_until(lambda: (d := digests()) and len(d) == 1 and d != before,
                   what="both workers to reload")
    finally:
        gw.stop()


@pytest.mark.parametrize("workers", [0, 65])
def test_workers_out_of_range_is_refused_at_start(hub, tmp_path, workers):
    gw = launch(hub, tmp_path / "gw", f"sqlite:///{tmp_path / 'qpu.sqlite'}", workers=workers)
    with pytest.raises(AssertionError, match="gateway exited"):
        gw.start(timeout=60)
    assert "QpuGateway.workers must be between 1 and 64" in gw.log()
