"""Issue 12 items 4 and 7 through a real JupyterHub with the gateway as its service:

- a token revoked at the hub stops submitting within ``auth_cache_seconds`` (<= 5 s);
- run limits: too wide is refused at admission; too much memory, too long and a crashing
  simulation fail with their reason code, the job is refunded, and the gateway process
  (the same instance) keeps serving;
- large payloads are decoded off the event loop: other users are answered meanwhile, a
  user's submissions are admitted in the order they arrived, and the parse pool is
  bounded per user (503 PARSE_BUSY with Retry-After).
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from conftest import BACKENDS, qpy_b64

sys.path.append(str(Path(__file__).resolve().parents[1] / "hub"))
from hubtest import HubError, failed, free_port, launch_hub

ROOT = Path(__file__).resolve().parents[2]

POLICY = """
[tags]
purposes = ["research"]
[projects.qc101]
members = { alice = "member", bob = "member" }
backends = ["*"]
[projects.ordered]
members = { alice = "member" }
backends = ["*"]
[quotas.projects.ordered.simulator]
day = { jobs = 1 }
[run_limits.simulator]
max_qubits = 26
memory_mb = 256
seconds = 4
[run_limits.backends.hog]
memory_mb = 128
"""

OPERATOR_CONFIG = f"""
c = get_config()  # noqa
# these tests watch one gateway process (its instance, its parse pool and the order it
# admits in); the hub's default of two workers is tested in tests/hub/test_service_crash.py
c.QpuGateway.workers = 1
c.QpuGateway.backends = {{**{BACKENDS!r},
    "hog": {{"driver": "tests.qpu.hog_driver:HogDriver"}}}}
c.QpuGateway.auth_cache_seconds = 5
c.QpuGateway.max_payload_bytes = 48 * 1024 * 1024
c.QpuGateway.max_parse_per_user = 1
"""

EXTRA = """
c.Authenticator.allowed_users = {"alice", "bob"}
for service in c.JupyterHub.services:  # a loaded 2-core machine starts them slowly
    service.setdefault("timeout", 240)
"""


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest):
    d = tmp_path_factory.mktemp("hardhub")
    (d / "qpu_operator.py").write_text(OPERATOR_CONFIG)
    (d / "policy.toml").write_text(POLICY)
    started: list = []
    try:
        hub = launch_hub(
            d / "hub", extra=EXTRA,
            env={"QUSTODY_SPAWNER": "local", "QUSTODY_IMAGE_DIGEST": "",
                 "QUSTODY_QPU_PORT": str(free_port()),
                 "QUSTODY_QPU_CONFIG": str(d / "qpu_operator.py"),
                 "QUSTODY_QPU_POLICY": str(d / "policy.toml"),
                 "PYTHONPATH": str(ROOT)},
            started=started, timeout=240,  # the hub waits for its three services
        )
    except HubError as e:
        pytest.fail(str(e))
    hub.qpu = f"{hub.url}services/qpu/"
    hub.tokens = {u: hub.user_token(u) for u in ("alice", "bob", "admin")}
    hub.wait_for(lambda: _health(hub.qpu), timeout=120, what="the gateway behind the proxy")
    yield hub
    hub.stop()
    if failed(request):
        print(f"\n===== hub log =====\n{hub.log()[-30000:]}")


def _health(url: str) -> bool:
    try:
        return requests.get(url + "api/health", timeout=5).status_code == 200
    except requests.RequestException:
        return False


def call(hub, who, method, path, body=None, token=None, **params):
    r = requests.request(method, hub.qpu + path, json=body, params=params or None,
                         headers={"Authorization": f"token {token or hub.tokens[who]}"},
                         timeout=300)
    return r.status_code, (r.json() if r.content else None), r.headers


def circuit(n=2, layers=0, rz=0):
    from qiskit import QuantumCircuit

    qc = QuantumCircuit(n)
    qc.h(range(n))
    qc.t(range(n))
    for _ in range(layers):
        qc.rz(0.1, range(n))
        qc.cx(0, range(1, n))
    for i in range(rz):
        qc.rz(0.001 * i, i % n)
    qc.measure_all()
    return qc


def job(qc=None, backend="aer_simulator", project="qc101", shots=100, copies=1):
    payload = qpy_b64(qc if qc is not None else circuit())
    return {"backend": backend, "circuits": [{"qpy": payload}] * copies, "shots": shots,
            "tags": {"project": project, "purpose": "research"}}


def final(hub, who, job_id, timeout=180):
    deadline = time.monotonic() + timeout
    while True:
        status, got, _ = call(hub, who, "GET", f"api/jobs/{job_id}", wait=5)
        assert status == 200, got
        if got["state"] in ("DONE", "FAILED", "CANCELLED", "REJECTED"):
            return got
        assert time.monotonic() < deadline, got


def used_jobs(hub, who="alice"):
    status, quota, _ = call(hub, who, "GET", "api/quota", project="qc101")
    assert status == 200, quota
    return quota["user"]["quota"]["simulator"]["day"]["jobs"]["used"]


def instance(hub):
    status, stats, _ = call(hub, "admin", "GET", "api/admin/stats")
    assert status == 200, stats
    return stats["instance"], stats["decoding"]


def test_a_token_revoked_at_the_hub_stops_submitting_within_the_cache_bound(hub):
    code, made = hub.api("POST", "/users/alice/tokens", {"note": "to revoke", "expires_in": 600})
    assert code == 201, made
    status, body, _ = call(hub, "alice", "POST", "api/jobs", job(), token=made["token"])
    assert status == 201, body  # known and cached by the gateway now
    code, _ = hub.api("DELETE", f"/users/alice/tokens/{made['id']}")
    assert code == 204
    revoked = time.monotonic()
    while True:  # poll: at most auth_cache_seconds (5) later it must be refused
        status, body, _ = call(hub, "alice", "POST", "api/jobs", job(), token=made["token"])
        if status == 403:
            break
        assert status == 201, body
        assert time.monotonic() - revoked < 60, "a revoked token kept submitting"
        time.sleep(0.25)
    assert body["error"] == "BAD_TOKEN", body
    print(f"revoked token refused after {time.monotonic() - revoked:.2f} s")


def test_over_limit_jobs_fail_with_a_reason_are_refunded_and_the_gateway_survives(hub):
    before_instance, _ = instance(hub)
    status, body, _ = call(hub, "alice", "POST", "api/jobs", job(circuit(27)))
    assert (status, body["reason"]) == (422, "REJECTED:WIDTH_LIMIT"), body
    assert "run_limits.simulator.max_qubits" in body["message"]
    # minutes of statevector work are estimated as such and refused, not run to the limit
    status, body, _ = call(hub, "alice", "POST", "api/jobs", job(circuit(22, layers=400),
                                                                  shots=10))
    assert (status, body["reason"]) == (422, "REJECTED:TIME_LIMIT"), body

    cases = [  # (job, reason): each a real run that the sandbox stops
        (job(circuit(25)), "FAILED:MEMORY_LIMIT"),  # 512 MiB statevector > 256: Aer refuses
        (job(backend="hog", shots=11), "FAILED:TIME_LIMIT"),  # killed at 4 s
        (job(backend="hog"), "FAILED:MEMORY_LIMIT"),  # past the address-space cap
        (job(backend="hog", shots=13), "FAILED:SANDBOX_CRASHED"),  # the worker dies
    ]
    for body_in, reason in cases:
        used = used_jobs(hub)
        status, body, _ = call(hub, "alice", "POST", "api/jobs", body_in)
        assert status == 201, body
        done = final(hub, "alice", body["job_id"])
        assert done["reason"] == reason, done
        # the job is refunded; a run that overran its limits is charged the time it ran
        settled = "refunded" if reason == "FAILED:SANDBOX_CRASHED" else "time it ran is charged"
        assert reason in done["error"] and settled in done["error"], done
        assert used_jobs(hub) == used, f"{reason}: the job was not refunded"

    # the same gateway process still serves, and the workers were replaced
    assert instance(hub)[0] == before_instance
    for backend, shots in (("aer_simulator", 100), ("hog", 7)):
        status, body, _ = call(hub, "alice", "POST", "api/jobs", job(backend=backend,
                                                                      shots=shots))
        assert status == 201, body
        assert final(hub, "alice", body["job_id"])["state"] == "DONE"


def _post_in_thread(hub, who, body, out):
    def run():
        out["answer"] = call(hub, who, "POST", "api/jobs", body)
        out["done"] = True

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _wait_decoding(hub, until_done: dict):
    while instance(hub)[1] < 1:
        assert not until_done.get("done"), until_done.get("answer")
        time.sleep(0.01)


BIG = None


def big_job(project="qc101"):
    global BIG
    if BIG is None:
        BIG = circuit(5, rz=80_000)
    return job(BIG, project=project, shots=10, copies=4)


def test_a_large_payload_is_decoded_off_the_event_loop(hub):
    call(hub, "bob", "GET", "api/projects")  # bob's token is known to the gateway
    out: dict = {}
    thread = _post_in_thread(hub, "alice", big_job(), out)
    _wait_decoding(hub, out)
    # while alice's megabytes are decoded, bob is admitted and health answers
    status, body, _ = call(hub, "bob", "POST", "api/jobs", job())
    assert status == 201, body
    assert _health(hub.qpu)
    assert not out.get("done"), "the large submission finished before bob was answered"
    thread.join(300)
    status, body, _ = out["answer"]
    assert status == 201, body


def test_a_users_submissions_keep_their_order_and_the_parse_pool_is_bounded(hub):
    # project "ordered" has room for one job: alice's large one, sent first, must get it
    first: dict = {}
    t1 = _post_in_thread(hub, "alice", big_job("ordered"), first)
    _wait_decoding(hub, first)
    second: dict = {}
    t2 = _post_in_thread(hub, "alice", job(project="ordered"), second)
    tries = [call(hub, "alice", "POST", "api/jobs", big_job())]
    t1.join(300)
    t2.join(300)
    status, body, _ = first["answer"]
    assert status == 201, body
    status, body, _ = second["answer"]
    assert (status, body["reason"]) == (429, "REJECTED:PROJECT_QUOTA"), body
    # The pool's bound: a large submission of alice's while one of hers is being decoded is
    # refused. The one being decoded can finish before the next one has arrived (a loaded
    # machine, a fast decode); that answer is then no refusal, and another pair is sent. A
    # gateway without the bound never refuses.
    while tries[-1][0] != 503 and len(tries) < 4:
        out: dict = {}
        thread = _post_in_thread(hub, "alice", big_job(), out)
        _wait_decoding(hub, out)
        tries.append(call(hub, "alice", "POST", "api/jobs", big_job()))
        thread.join(300)
    status, body, headers = tries[-1]
    assert (status, body["error"]) == (503, "PARSE_BUSY"), [t[:2] for t in tries]
    assert headers["Retry-After"] == "1"
