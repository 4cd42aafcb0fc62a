"""Scheduling, policy and operators through a real gateway process, on both databases."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import POLICY, bell, launch, qpy_b64

pytestmark = pytest.mark.slow  # real hubs and gateways: run early (tests/conftest.py)

SLOW_HW = {
    "aer_simulator": {"driver": "aer", "lanes": 2},
    # Each job holds the device for 60 s of modelled time: it stays RUNNING until acted on.
    "fake_hw": {"driver": "emulated", "num_qubits": 5, "job_seconds": 60.0,
                "circuit_seconds": 0.0, "shot_seconds": 0.0, "time_scale": 1.0},
}
FAST_HW = {
    "aer_simulator": {"driver": "aer", "lanes": 2},
    "fake_hw": {"driver": "emulated", "num_qubits": 5, "job_seconds": 1.0,
                "circuit_seconds": 0.0, "shot_seconds": 0.0, "time_scale": 0.0},
}


def hw_circuit():
    from qiskit import transpile
    from qiskit.providers.fake_provider import GenericBackendV2

    device = GenericBackendV2(num_qubits=5, seed=1234, noise_info=True)
    return [{"qpy": qpy_b64(transpile(bell(), device, seed_transpiler=1))}]


HW = None


def submit_hw(gw, user, **fields):
    global HW
    HW = HW or hw_circuit()
    tags = {"project": "astro" if user in ("carol", "erin") else "qchem", "purpose": "research"}
    tags.update(fields.pop("tags", {}))
    return gw.submit(user, circuits=HW, backend="fake_hw", shots=10, tags=tags, **fields)


def op(gw, path, reason="test", user="ops"):
    status, body = gw.call(user, "POST", f"api/admin/{path}", {"reason": reason})
    assert status == 200, body
    return body


def job(gw, user, job_id, **params):
    status, body = gw.call(user, "GET", f"api/jobs/{job_id}", **params)
    assert status == 200, body
    return body


def wait_state(gw, user, job_id, state, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        body = job(gw, user, job_id)
        if body["state"] == state:
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.1)


def test_pause_resume_positions_cancel_and_refund(db_url, start_gateway):
    gw = start_gateway(db_url, backends=FAST_HW)
    op(gw, "backends/fake_hw/pause", "calibration")
    ids = [submit_hw(gw, "alice")[1]["job_id"] for _ in range(3)]
    held = [job(gw, "alice", i) for i in ids]
    assert [h["reason"] for h in held] == ["HELD:BACKEND_PAUSED"] * 3
    assert [h["queue_position"] for h in held] == [1, 2, 3]
    _status, backends = gw.call("alice", "GET", "api/backends")
    assert {b["name"]: b["paused"] for b in backends["backends"]}["fake_hw"] is True
    quota = gw.call("alice", "GET", "api/quota", project="qchem",
                    backend_class="hardware")[1]["projects"]["qchem"]["quota"]["hardware"]["day"]
    assert quota["jobs"]["used"] == 3  # held at admission
    assert gw.call("alice", "DELETE", f"api/jobs/{ids[2]}")[1]["state"] == "CANCELLED"
    quota = gw.call("alice", "GET", "api/quota", project="qchem",
                    backend_class="hardware")[1]["projects"]["qchem"]["quota"]["hardware"]["day"]
    assert quota["jobs"]["used"] == 2  # refunded
    assert quota["shots"]["used"] == 20
    op(gw, "projects/qchem/pause", "budget review")
    op(gw, "backends/fake_hw/resume", "calibration done")
    assert job(gw, "alice", ids[0])["reason"] == "HELD:PROJECT_PAUSED"
    op(gw, "projects/qchem/resume", "budget ok")
    for i in ids[:2]:
        done = gw.wait_final("alice", i)
        assert done["state"] == "DONE" and done["backend_seconds"] == 1.0
    quota = gw.call("alice", "GET", "api/quota", project="qchem",
                    backend_class="hardware")[1]["projects"]["qchem"]["quota"]["hardware"]["day"]
    # Reconciled: backend-seconds are what the runs used, not the estimates held.
    assert quota["seconds"]["used"] == pytest.approx(2.0)
    actions = gw.call("ops", "GET", "api/admin/actions")[1]["actions"]
    assert [(a["action"], a["actor"], a["reason"]) for a in actions[:4]] == [
        ("resume-project", "ops", "budget ok"), ("resume-backend", "ops", "calibration done"),
        ("pause-project", "ops", "budget review"), ("pause-backend", "ops", "calibration")]


def test_priority_and_fair_share_order(db_url, start_gateway):
    policy = POLICY.replace('max_tier = "high"', 'max_tier = "high"\nshare = 1.0')
    gw = start_gateway(db_url, backends=FAST_HW, policy=policy)
    # qchem builds up usage first; astro has none.
    for _ in range(3):
        gw.wait_final("alice", submit_hw(gw, "alice")[1]["job_id"])
    op(gw, "backends/fake_hw/pause")
    a = submit_hw(gw, "alice")[1]["job_id"]
    c1 = submit_hw(gw, "carol")[1]["job_id"]
    c2 = submit_hw(gw, "carol")[1]["job_id"]
    urgent = submit_hw(gw, "bob", tags={"priority": "high"})[1]["job_id"]
    low = submit_hw(gw, "erin", tags={"priority": "low"})[1]["job_id"]
    op(gw, "backends/fake_hw/resume")
    seq = {}
    for i in (a, c1, c2, urgent, low):
        gw.wait_final("ops", i)
        seq[i] = next(d for d in job(gw, "ops", i, include="decisions")["decisions"]
                  if d["code"] == "STARTED")["at"]
    order = sorted(seq, key=seq.get)
    # high tier first; then astro (no usage) before qchem (3 s used); low tier last
    assert order == [urgent, c1, c2, a, low]


def test_a_run_its_owner_cancels_is_charged_the_time_it_ran_and_a_drained_one_is_not(
    db_url, start_gateway
):
    """Cancelling a run just before it ends would make backend time free: the time it ran
    is charged (quota seconds and fair share; the job and its shots are refunded). A run
    an operator stops (a drain) is not the owner's doing: refunded whole."""
    gw = start_gateway(db_url, backends=SLOW_HW)

    def used(user: str, project: str) -> dict:
        return gw.call(user, "GET", "api/quota", project=project, backend_class="hardware")[
            1]["projects"][project]["quota"]["hardware"]["day"]

    mine = submit_hw(gw, "carol")[1]["job_id"]
    wait_state(gw, "carol", mine, "RUNNING")
    time.sleep(1.5)
    assert gw.call("carol", "DELETE", f"api/jobs/{mine}")[0] == 200
    done = gw.wait_final("carol", mine)
    assert done["state"] == "CANCELLED"
    quota = used("carol", "astro")
    assert (quota["jobs"]["used"], quota["shots"]["used"]) == (0, 0)
    assert 1.0 <= quota["seconds"]["used"] < 30.0
    codes = [d["code"] for d in job(gw, "carol", mine, include="decisions")["decisions"]]
    assert "REFUNDED" in codes and "CHARGED" in codes

    theirs = submit_hw(gw, "alice")[1]["job_id"]
    wait_state(gw, "alice", theirs, "RUNNING")
    time.sleep(1.5)
    op(gw, "backends/fake_hw/drain", "maintenance")
    assert gw.wait_final("alice", theirs)["state"] == "CANCELLED"
    quota = used("alice", "qchem")
    assert (quota["jobs"]["used"], quota["shots"]["used"]) == (0, 0)
    assert quota["seconds"]["used"] == pytest.approx(0.0)


def test_reasons_while_waiting(db_url, start_gateway):
    gw = start_gateway(db_url, backends=SLOW_HW)
    first = submit_hw(gw, "carol")[1]["job_id"]
    wait_state(gw, "carol", first, "RUNNING")
    second = submit_hw(gw, "erin", tags={"priority": "normal"})[1]["job_id"]
    third = submit_hw(gw, "alice", tags={"priority": "low"})[1]["job_id"]
    body = job(gw, "erin", second)
    assert body["reason"] == "QUEUED:BACKEND_BUSY" and body["queue_position"] == 1
    assert body["estimated_start"] > time.time() + 30  # after the running 60 s job
    body = job(gw, "alice", third)
    assert body["reason"] == "QUEUED:PRIORITY" and body["queue_position"] == 2
    # cancel while running: the lane is freed and the quota refunded
    assert gw.call("carol", "DELETE", f"api/jobs/{first}")[0] == 200
    assert gw.wait_final("carol", first)["state"] == "CANCELLED"
    wait_state(gw, "erin", second, "RUNNING")
    op(gw, "backends/fake_hw/drain", "maintenance")  # cancels waiting and running jobs
    assert gw.wait_final("alice", third)["state"] == "CANCELLED"
    assert gw.wait_final("erin", second)["state"] == "CANCELLED"


def test_reservation_and_policy_reload(db_url, start_gateway):
    now = time.time()
    window = (
        "\n[[reservations]]\nbackend = 'fake_hw'\nproject = 'astro'\n"
        f"start = {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(now - 3600))}\n"
        f"end = {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(now + 3600))}\n"
    )
    gw = start_gateway(db_url, backends=FAST_HW, policy=POLICY + window)
    blocked = submit_hw(gw, "alice")[1]["job_id"]
    body = job(gw, "alice", blocked)
    assert body["reason"] == "QUEUED:RESERVATION"
    owner_job = submit_hw(gw, "carol")[1]["job_id"]
    assert gw.wait_final("carol", owner_job)["state"] == "DONE"
    assert job(gw, "alice", blocked)["reason"] == "QUEUED:RESERVATION"
    status, backends = gw.call("alice", "GET", "api/backends/fake_hw")
    assert backends["reserved_for"] == "astro"
    # An invalid policy is refused and the old one kept...
    gw.policy_path.write_text(POLICY + "[quotas.user.simulator]\nday = { jobz = 1 }\n")
    status, body = gw.call("ops", "POST", "api/admin/reload")
    assert status == 422 and "jobz" in body["error"]
    assert gw.call(None, "GET", "api/health")[1]["policy_reload_error"] is True
    assert job(gw, "alice", blocked)["reason"] == "QUEUED:RESERVATION"
    # ...and a valid one takes effect without a restart (here: the reservation ends).
    gw.policy_path.write_text(POLICY)
    assert gw.wait_final("alice", blocked)["state"] == "DONE"
    assert gw.call(None, "GET", "api/health")[1]["policy_reload_error"] is False


def test_rate_limit_queues_then_refuses(db_url, start_gateway):
    policy = POLICY + "[rate_limits.simulator]\nrate = 0.01\nburst = 2\nmax_delay = 150\n"
    gw = start_gateway(db_url, policy=policy)
    states = [gw.submit("alice") for _ in range(4)]
    assert [s for s, _ in states] == [201, 201, 201, 429]
    assert states[2][1]["reason"] == "QUEUED:RATE_LIMIT"
    body = job(gw, "alice", states[2][1]["job_id"])
    assert body["reason"] == "QUEUED:RATE_LIMIT" and body["estimated_start"] > time.time() + 50
    refused = states[3][1]
    assert refused["error"] == "RATE_LIMIT" and "Retry in" in refused["message"]
    assert refused["detail"]["retry_after"] > 0
    # another user has their own bucket
    assert gw.submit("bob")[0] == 201
    assert gw.wait_final("alice", states[0][1]["job_id"])["state"] == "DONE"


def test_sensitivity_routing_and_soft_quota_warning(db_url, start_gateway):
    policy = POLICY + "[quotas.user.simulator]\nday = { jobs = 10 }\nsoft = 0.05\n"
    gw = start_gateway(db_url, backends=FAST_HW, policy=policy)
    status, body = submit_hw(gw, "alice", tags={"sensitivity": "confidential"})
    assert status == 201, body
    assert body["warnings"] and body["warnings"][0]["code"] == "WARN:USER_QUOTA_SOFT"
    done = gw.wait_final("alice", body["job_id"])
    assert (done["backend"], done["requested_backend"]) == ("aer_simulator", "fake_hw")
    assert done["tags"]["sensitivity"] == "confidential"
    decisions = job(gw, "alice", body["job_id"], include="decisions")["decisions"]
    assert "ROUTED:SENSITIVITY" in [d["code"] for d in decisions]


def test_revoke_restore_and_the_event_hook(db_url, start_gateway, tmp_path):
    events = tmp_path / "events.jsonl"
    hook = f"""
        import json
        def _hook(name, fields):
            with open({str(events)!r}, "a") as f:
                f.write(json.dumps({{**fields, "event": name}}, default=str) + "\\n")
        c.QpuGateway.on_event = _hook
    """
    gw = start_gateway(db_url, extra_config=hook)
    op(gw, "users/bob/revoke", "left the group")
    status, body = gw.submit("bob")
    assert (status, body["error"]) == (403, "USER_REVOKED")
    op(gw, "users/bob/restore", "back")
    status, body = gw.submit("bob")
    assert status == 201
    gw.wait_final("bob", body["job_id"])
    status, body = gw.call("ops", "POST", "api/admin/users/bob/revoke", {})
    assert (status, body["error"]) == (400, "REASON_REQUIRED")
    names = [json.loads(line)["event"] for line in events.read_text().splitlines()]
    for expected in ("qpu.operator.action", "qpu.job.submitted", "qpu.job.started",
                     "qpu.job.finished", "qpu.job.rejected"):
        assert expected in names
    revoke = next(json.loads(x) for x in events.read_text().splitlines()
                  if json.loads(x).get("action") == "revoke")
    assert (revoke["by"], revoke["reason"]) == ("ops", "left the group")


def test_provenance_export(db_url, start_gateway):
    gw = start_gateway(db_url)
    data = qpy_b64(bell())
    status, body = gw.submit("alice", circuits=[{"qpy": data}], options={"transpile_seed": 9},
                             client={"qiskit": "2.x"},
                             context={"notebook_path": "work/a.ipynb", "kernel_id": "k1"},
                             tags={"project": "qchem", "purpose": "research",
                                   "labels": {"run": "7"}})
    assert status == 201
    gw.wait_final("alice", body["job_id"])
    status, text = gw.call("auditor", "GET", "api/admin/export")
    assert status == 200
    lines = [json.loads(x) for x in text.strip().splitlines()] if isinstance(text, str) else [text]
    rec = next(x for x in lines if x["id"] == body["job_id"])
    prov = rec["provenance"]
    assert prov["owner"] == "alice"
    assert prov["circuit_hashes"] == [hashlib.sha256(base64.b64decode(data)).hexdigest()]
    assert len(prov["backend_config_hash"]) == 64
    assert prov["client_reported"]["transpile_seed"] == 9
    assert prov["client_reported"]["notebook_path"] == "work/a.ipynb"
    assert prov["gateway"]["qiskit"]
    assert rec["tags"]["labels"] == {"run": "7"}
    assert [d["code"] for d in rec["decisions"]] == ["ADMITTED", "STARTED", "DONE"]
    assert all(d["at"] >= rec["submitted_at"] for d in rec["decisions"])
    # The same records offline, straight from the database.
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "hub_ext.qpu", "export", "--db-url", db_url],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    offline = next(json.loads(x) for x in out.splitlines() if json.loads(x)["id"] == rec["id"])
    assert offline == rec


def test_the_qiskit_job_cancels_while_running(db_url, start_gateway, monkeypatch):
    from qiskit.providers import JobError, JobStatus

    from server_ext.qpu import gateway_backend

    gw = start_gateway(db_url, backends=SLOW_HW)
    monkeypatch.setenv("QUSTODY_QPU_URL", gw.url)
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", gw.token("alice"))
    backend = gateway_backend("fake_hw", project="qchem", purpose="research")
    from qiskit import transpile

    qjob = backend.run(transpile(bell(), backend, seed_transpiler=1), shots=10)
    wait_state(gw, "alice", qjob.job_id(), "RUNNING")
    assert qjob.status() is JobStatus.RUNNING
    assert qjob.cancel()
    with pytest.raises(JobError, match="CANCELLED"):
        qjob.result(timeout=60)
    assert qjob.status() is JobStatus.CANCELLED


@pytest.mark.parametrize("requeue", [True, False])
def test_a_run_lost_in_a_crash_is_requeued_or_failed_and_refunded(db_url, hub, tmp_path, requeue):
    gw = launch(hub, tmp_path / "a", db_url, backends=SLOW_HW, requeue_lost=requeue)
    gw.start()
    try:
        job_id = submit_hw(gw, "alice")[1]["job_id"]
        wait_state(gw, "alice", job_id, "RUNNING")
        gw.kill()
        # The same database, restarted with a fast device.
        gw2 = launch(hub, tmp_path / "b", db_url, backends=FAST_HW, requeue_lost=requeue)
        gw2.start()
        final = gw2.wait_final("alice", job_id)
        codes = [d["code"] for d in job(gw2, "alice", job_id, include="decisions")["decisions"]]
        quota = gw2.call("alice", "GET", "api/quota", project="qchem", backend_class="hardware")
        used = quota[1]["projects"]["qchem"]["quota"]["hardware"]["day"]["jobs"]["used"]
        if requeue:
            assert final["state"] == "DONE"
            assert codes == ["ADMITTED", "STARTED", "QUEUED:RECOVERED", "STARTED", "DONE"]
            assert used == 1
        else:
            assert final["state"] == "FAILED" and final["reason"] == "FAILED:LOST"
            assert codes == ["ADMITTED", "STARTED", "REFUNDED", "FAILED:LOST"]
            assert used == 0
        gw2.stop()
    finally:
        gw.stop()


def test_drain_of_a_long_queue_cancels_and_refunds_every_job(db_url, start_gateway):
    # More jobs than one cancel transaction takes (500): the drain spans several.
    gw = start_gateway(db_url)
    op(gw, "backends/aer_simulator/pause", "hold for the drain")
    payload = [{"qpy": qpy_b64(bell())}]
    with ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(lambda _: gw.submit("bob", circuits=payload, shots=10)[0],
                              range(1100)))
    assert codes.count(201) == 1100
    _, used = gw.call("bob", "GET", "api/quota", project="qchem")
    assert used["projects"]["qchem"]["quota"]["simulator"]["day"]["jobs"]["used"] == 1100
    status, body = gw.call("ops", "POST", "api/admin/backends/aer_simulator/drain",
                           {"reason": "end of the allocation"})
    assert status == 200 and body["cancelled"] == 1100
    _, stats = gw.call("ops", "GET", "api/admin/stats")
    assert stats["jobs"] == {"CANCELLED": 1100}
    _, quota = gw.call("bob", "GET", "api/quota", project="qchem")
    assert quota["projects"]["qchem"]["quota"]["simulator"]["day"]["jobs"]["used"] == 0
