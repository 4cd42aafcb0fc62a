"""The gateway's security events land in the hub's audit log, on one verified chain."""

from __future__ import annotations

import time

from conftest import POLICY, audit_records, launch


def wait_records(gw, predicate, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        exists = (gw.dir / "audit" / "audit.jsonl").exists()
        records = gw.audit_records() if exists else []
        if predicate(records) or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def of(records, type_name, **match):
    return [r["data"] for r in records if r["type"] == type_name
            and all(r["data"].get(k) == v for k, v in match.items())]


def test_jobs_refusals_operators_and_policy_changes_are_audited(start_gateway, tmp_path):
    gw = start_gateway(f"sqlite:///{tmp_path / 'qpu.sqlite'}")
    status, body = gw.submit("bob", tags={"project": "qchem", "purpose": "testing",
                                          "labels": {"run": "a1"}})
    assert status == 201, body
    done_id = body["job_id"]
    assert gw.wait_final("bob", done_id)["state"] == "DONE"

    status, body = gw.submit("carol", tags={"project": "qchem", "purpose": "testing"})
    assert (status, body["error"]) == (403, "NOT_A_MEMBER")

    ok = gw.call("ops", "POST", "api/admin/backends/aer_simulator/pause",
                 {"reason": "calibration INC-7"})
    assert ok[0] == 200, ok
    status, body = gw.submit("alice")
    assert status == 201 and body["state"] == "HELD", body
    held_id = body["job_id"]
    assert gw.call("alice", "DELETE", f"api/jobs/{held_id}")[0] in (200, 202)
    status, body = gw.submit("alice")
    drained_id = body["job_id"]
    assert gw.call("ops", "POST", "api/admin/backends/aer_simulator/drain",
                   {"reason": "end of calibration"})[0] == 200
    assert gw.call("ops", "POST", "api/admin/backends/aer_simulator/resume",
                   {"reason": "calibration done"})[0] == 200

    gw.policy_path.write_text(POLICY + "\n[projects.extra]\nmembers = { dave = 'member' }\n"
                              "backends = ['aer_simulator']\n")
    records = wait_records(gw, lambda rs: of(rs, "policy-changed")
                           and len(of(rs, "break-glass")) >= 3)

    submitted = of(records, "qpu-job-submitted", job_id=done_id)
    assert submitted and submitted[0]["user"] == "bob" and submitted[0]["project"] == "qchem"
    assert submitted[0]["backend"] == "aer_simulator" and submitted[0]["shots"] == 100
    assert "purpose=testing" in submitted[0]["tags"] and "labels.run=a1" in submitted[0]["tags"]
    assert of(records, "qpu-job-admitted", job_id=done_id)
    finished = of(records, "qpu-job-finished", job_id=done_id)
    assert finished and finished[0]["status"] == "done" and finished[0]["user"] == "bob"

    rejected = of(records, "qpu-job-rejected", user="carol")
    assert rejected and rejected[0]["reason"] == "not-member"
    assert rejected[0]["code"] == "NOT_A_MEMBER" and "qchem" in rejected[0]["detail"]

    queued = of(records, "qpu-job-queued", job_id=held_id)
    assert queued and queued[0]["reason"] == "backend-offline"
    own = of(records, "qpu-job-cancelled", job_id=held_id)
    assert own and own[0]["reason"] == "user-request" and "actor" not in own[0]
    drained = of(records, "qpu-job-cancelled", job_id=drained_id)
    assert drained and drained[0]["reason"] == "admin" and drained[0]["actor"] == "ops"
    assert drained[0]["user"] == "alice" and "end of calibration" in drained[0]["detail"]

    glass = {(g["action"], g["target"]): g for g in of(records, "break-glass")}
    pause = glass[("qpu-backend-pause", "backend:aer_simulator")]
    assert pause["actor"] == "ops" and pause["justification"] == "calibration INC-7"
    assert ("qpu-backend-drain", "backend:aer_simulator") in glass
    assert ("qpu-backend-resume", "backend:aer_simulator") in glass

    changed = of(records, "policy-changed", policy="qpu.policy")
    assert changed and "file changed" in changed[0]["summary"]


def test_revoke_and_manual_reload_name_the_operator(start_gateway, tmp_path):
    gw = start_gateway(f"sqlite:///{tmp_path / 'qpu.sqlite'}")
    assert gw.call("ops", "POST", "api/admin/users/bob/revoke", {"reason": "left the lab"})[0] == 200
    status, body = gw.submit("bob")
    assert body["error"] == "USER_REVOKED", body
    gw.policy_path.write_text(POLICY.replace('max_tier = "high"', 'max_tier = "normal"'))
    status, body = gw.call("ops", "POST", "api/admin/reload")
    assert status == 200 and body["changed"] in (True, False)
    records = wait_records(gw, lambda rs: of(rs, "qpu-job-rejected", user="bob")
                           and of(rs, "policy-changed"))
    revoke = of(records, "break-glass", action="qpu-user-revoke")
    assert revoke and revoke[0]["user"] == "bob" and revoke[0]["justification"] == "left the lab"
    assert of(records, "qpu-job-rejected", user="bob")[0]["reason"] == "access-revoked"
    assert any(c["actor"] in ("ops", "qpu") for c in of(records, "policy-changed"))


def test_a_gateway_without_an_audit_log_refuses_to_start(hub, tmp_path):

    gw = launch(hub, tmp_path / "gw", f"sqlite:///{tmp_path / 'qpu.sqlite'}",
                extra_config="c.AuditLog.path = ''\n")
    try:
        gw.start(timeout=30)
        raise AssertionError("the gateway started without an audit log")
    except AssertionError as e:
        assert "c.AuditLog.path (or db_url) is not set" in str(e)
    finally:
        gw.stop()


def test_audit_records_share_one_chain_with_another_writer(start_gateway, tmp_path):
    """The hub (another process) and the gateway append to the same chain."""
    from traitlets.config import Config

    from hub_ext.audit import AuditLog

    gw = start_gateway(f"sqlite:///{tmp_path / 'qpu.sqlite'}")
    config = Config()
    config.AuditLog.path = str(gw.dir / "audit" / "audit.jsonl")
    config.AuditLog.key_file = str(gw.dir / "audit.key")
    hub_log = AuditLog(config=config)
    ids = []
    for i in range(6):
        if i % 2:
            hub_log.emit("server-started", {"user": "alice", "server": "", "image": "qustody",
                                            "image_digest": "sha256:" + "0" * 64})
        status, body = gw.submit("alice")
        assert status == 201, body
        ids.append(body["job_id"])
    hub_log.close()
    records = wait_records(gw, lambda rs: all(of(rs, "qpu-job-submitted", job_id=j)
                                               for j in ids))
    assert {r["type"] for r in records} >= {"server-started", "qpu-job-submitted"}
    assert [r["seq"] for r in records] == list(range(records[0]["seq"],
                                                     records[0]["seq"] + len(records)))
    assert audit_records(gw.dir / "audit" / "audit.jsonl", gw.dir / "audit.key")


# -- the writer thread, with a real AuditLog on real files ----------------------------------


def bridge_log(tmp_path, **config):
    import logging

    from hub_ext.audit import AuditLog
    from hub_ext.qpu.audit import AuditBridge

    audit = AuditLog(path=str(tmp_path / "audit" / "audit.jsonl"),
                     key_file=str(tmp_path / "audit.key"), create_key_file=True, **config)
    audit.emit("login", {"user": "ops"})  # the head file exists: tests can hold its lock
    logger = logging.getLogger(f"test-qpu-audit-{tmp_path.name}")
    return AuditBridge(audit, lambda job_id: None, logger), tmp_path / "audit" / "audit.jsonl"


class HeldLock:
    """Hold the log's writer lock (the head file's flock) as another process would."""

    def __init__(self, log_path):
        import fcntl
        import os

        self.fd = os.open(log_path.with_name("audit.head"), os.O_RDWR)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def release(self):
        import fcntl
        import os

        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def submitted(i, **extra):
    return ("qpu.job.submitted", {"job_id": f"j-{i}", "user": "alice", "project": "qchem",
                                  "backend": "aer_simulator", "shots": 100, **extra})


def wait_taken(bridge):
    deadline = time.monotonic() + 30
    while not bridge._queue.empty() and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(0.05)  # the writer thread is now waiting for the lock


def test_a_burst_of_events_is_written_in_batches_on_one_chain(tmp_path):
    bridge, log_path = bridge_log(tmp_path)
    held = HeldLock(log_path)
    bridge(*submitted(0))
    wait_taken(bridge)
    for i in range(1, 400):  # queued while the writer waits: it takes them as batches
        bridge(*submitted(i, reason="RATE_LIMIT" if i % 4 == 0 else ""))
    held.release()
    bridge.close()
    records = audit_records(log_path, tmp_path / "audit.key")
    assert [r["seq"] for r in records] == list(range(len(records)))
    for i in range(400):
        assert of(records, "qpu-job-submitted", job_id=f"j-{i}")
        assert of(records, "qpu-job-admitted", job_id=f"j-{i}")
    assert len(of(records, "qpu-job-queued")) == 99
    assert len(records) == 1 + 800 + 99 and bridge.failures == 0
    assert 1 <= bridge.batches <= 5  # 899 records: not one write each


def test_a_bad_record_in_a_batch_costs_only_itself(tmp_path, caplog):
    bridge, log_path = bridge_log(tmp_path)
    held = HeldLock(log_path)
    bridge(*submitted(0))
    wait_taken(bridge)
    bridge(*submitted(1))
    # no operator name: break-glass needs an actor, so this record fails its schema
    bridge("qpu.operator.action", {"kind": "users", "action": "revoke", "name": "bob",
                                   "by": "", "reason": "left the lab 4f9a"})
    bridge(*submitted(2))
    held.release()
    bridge.close()
    records = audit_records(log_path, tmp_path / "audit.key")
    assert {r["data"]["job_id"] for r in records if "job_id" in r["data"]} == {"j-0", "j-1", "j-2"}
    assert not of(records, "break-glass")
    assert bridge.failures == 1
    lost = [r for r in caplog.records if r.levelname == "CRITICAL"]
    assert len(lost) == 1
    assert "break-glass" in lost[0].getMessage() and "qpu.operator.action" in lost[0].getMessage()
    assert "left the lab" not in caplog.text and "4f9a" not in caplog.text


def test_a_log_that_cannot_be_written_is_loud_and_counted(tmp_path, caplog):
    import os

    bridge, log_path = bridge_log(tmp_path)
    bridge.audit.close()
    os.replace(log_path, tmp_path / "moved.jsonl")  # the live file vanished: writes refused
    for i in range(3):
        bridge(*submitted(i))
    bridge.close()
    assert bridge.failures == 6
    lost = [r.getMessage() for r in caplog.records if r.levelname == "CRITICAL"]
    assert len(lost) == 6 and all("NOT written: AuditWriteError" in m for m in lost)
    assert sum("qpu-job-submitted for qpu.job.submitted" in m for m in lost) == 3
    assert "alice" not in "".join(lost)


def test_a_burst_of_submissions_through_the_gateway_is_all_audited(start_gateway, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    gw = start_gateway(f"sqlite:///{tmp_path / 'qpu.sqlite'}")
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda i: gw.submit("alice" if i % 2 else "bob"), range(48)))
    assert all(status == 201 for status, _ in results), results
    ids = [body["job_id"] for _, body in results]
    records = wait_records(gw, lambda rs: all(of(rs, "qpu-job-admitted", job_id=j) for j in ids))
    for j in ids:
        assert len(of(records, "qpu-job-submitted", job_id=j)) == 1
        assert len(of(records, "qpu-job-admitted", job_id=j)) == 1
    assert [r["seq"] for r in records] == list(range(len(records)))


def test_a_quota_refusal_says_which_period_ran_out_and_how_much_of_it_is_left(
    start_gateway, tmp_path
):
    """What the audit service needs to flag a quota used up early (quota-burnt-early)."""
    from hub_ext.qpu.policy import period_left

    policy = POLICY + "\n[quotas.project.simulator]\nmonth = { jobs = 1 }\n"
    gw = start_gateway(f"sqlite:///{tmp_path / 'qpu.sqlite'}", policy=policy)
    assert gw.submit("alice")[0] == 201
    status, body = gw.submit("alice")
    assert (status, body["error"]) == (429, "PROJECT_QUOTA"), body
    records = wait_records(gw, lambda rs: of(rs, "qpu-job-rejected", user="alice"))
    [rejected] = of(records, "qpu-job-rejected", user="alice")
    assert rejected["reason"] == "quota-exceeded" and rejected["period"] == "month"
    assert abs(rejected["period_left"] - period_left("month", time.time())) < 0.01


def test_a_user_flooding_refused_submissions_is_slowed_before_the_audit_log_fills(
    start_gateway, tmp_path
):
    """Each refused submission is a qpu-job-rejected record, a type written even when the
    audit disk runs low: past ``refusal_burst`` refusals a user's submissions get 429
    until ``refusals_per_minute`` allows another, and nothing more is recorded. Other
    users are not slowed; an oversized or multi-line tag is refused unrecorded (400)."""
    gw = start_gateway(f"sqlite:///{tmp_path / 'qpu.sqlite'}",
                       refusal_burst=3, refusals_per_minute=1)
    for _ in range(3):
        status, body = gw.submit("carol", tags={"project": "qchem", "purpose": "testing"})
        assert (status, body["error"]) == (403, "NOT_A_MEMBER")
    status, body = gw.submit("carol", tags={"project": "qchem", "purpose": "testing"})
    assert (status, body["error"]) == (429, "TOO_MANY_REFUSED"), body
    assert "submit again in" in body["message"]
    status, body = gw.submit("carol")  # her own project: slowed all the same
    assert (status, body["error"]) == (429, "TOO_MANY_REFUSED"), body
    status, body = gw.submit("bob")
    assert status == 201, body
    for tag in ("q" * 129, "qchem\nforged line"):
        status, body = gw.submit("bob", tags={"project": tag, "purpose": "testing"})
        assert (status, body["error"]) == (400, "BAD_TAG"), body
        assert tag not in body["message"]
    records = wait_records(gw, lambda rs: len(of(rs, "qpu-job-rejected", user="carol")) >= 3
                           and of(rs, "qpu-job-admitted"))
    time.sleep(1.0)  # anything queued behind them is written by now
    records = gw.audit_records()
    assert len(of(records, "qpu-job-rejected", user="carol")) == 3
    assert of(records, "qpu-job-rejected", user="bob") == []


def test_a_personal_sandbox_job_with_a_long_label_is_audited(tmp_path):
    """A job in a personal sandbox (project ``personal:<user>``) and one whose label is as
    long as a submission allows: both are recorded, submitted to finished (their records
    used to break their schemas and were dropped)."""
    bridge, log_path = bridge_log(tmp_path)
    bridge("qpu.job.submitted", {"job_id": "j-own", "user": "alice",
                                 "project": "personal:alice", "backend": "aer_simulator",
                                 "shots": 100, "state": "QUEUED", "reason": ""})
    bridge("qpu.job.finished", {"job_id": "j-own", "state": "DONE", "shots": 100})
    bridge("qpu.job.submitted", {"job_id": "j-label", "user": "alice", "project": "qchem",
                                 "backend": "aer_simulator", "shots": 100,
                                 "tags": {"labels": {"k" * 64: "x" * 256}}})
    bridge.close()
    records = audit_records(log_path, tmp_path / "audit.key")
    assert of(records, "qpu-job-submitted", job_id="j-own", project="personal:alice")
    assert of(records, "qpu-job-admitted", job_id="j-own")
    assert of(records, "qpu-job-finished", job_id="j-own")
    [labelled] = of(records, "qpu-job-submitted", job_id="j-label")
    assert all(len(tag) <= 256 for tag in labelled["tags"])
    assert bridge.failures == 0
