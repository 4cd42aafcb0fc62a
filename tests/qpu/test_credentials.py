"""Provider credentials reach the driver through QpuGateway.credentials and nowhere else:
not job records, provenance, responses, the gateway's log, its database or the audit log."""

from __future__ import annotations

import secrets

import requests
from conftest import BACKENDS

KEY = "qk-" + secrets.token_hex(20)

EXTRA = f"""
def credentials(backend):
    return {{"api_key": {KEY!r}, "region": "eu"}} if backend == "keyed" else {{}}
c.QpuGateway.credentials = credentials
c.QpuGateway.log_level = "DEBUG"
"""

BACKENDS_WITH_PROVIDER = {**BACKENDS, "keyed": {"driver": "tests.qpu.keyed_driver:KeyedDriver"}}


def test_the_credential_never_leaves_the_driver(start_gateway, tmp_path):
    gw = start_gateway(f"sqlite:///{tmp_path / 'qpu.sqlite'}", backends=BACKENDS_WITH_PROVIDER,
                       extra_config=EXTRA)
    seen: list[str] = []

    def get(user, path, **params):
        r = requests.get(gw.url + path, params=params or None, timeout=60,
                         headers={"Authorization": f"token {gw.token(user)}"})
        seen.append(r.text)
        return r

    status, body = gw.submit("alice", backend="keyed")
    assert status == 201, body
    ok = gw.wait_final("alice", body["job_id"])
    assert ok["state"] == "DONE", ok  # the driver got the key from the broker callable
    result = get("alice", f"api/jobs/{ok['job_id']}/result")
    assert result.status_code == 200
    assert "[REDACTED:provider-credential]" in result.text  # the echo was scrubbed

    status, body = gw.submit("alice", backend="keyed", shots=13)
    failed = gw.wait_final("alice", body["job_id"])
    assert failed["state"] == "FAILED", failed
    assert "provider error 401 for key [REDACTED:provider-credential]" in str(failed), failed

    # an operator pasting the key into a reason does not put it on record either
    assert gw.call("ops", "POST", "api/admin/backends/keyed/pause",
                   {"reason": f"rotating {KEY}"})[0] == 200
    assert gw.call("ops", "POST", "api/admin/backends/keyed/resume", {"reason": "done"})[0] == 200

    for job_id in (ok["job_id"], failed["job_id"]):
        get("alice", f"api/jobs/{job_id}", include="provenance")
        get("alice", f"api/jobs/{job_id}", include="decisions")
    get("alice", "api/jobs")
    get("alice", "api/backends")
    get("auditor", "api/admin/export")
    get("ops", "api/admin/actions")
    get("ops", "api/admin/stats")
    assert all(KEY not in text for text in seen)
    assert any(ok["job_id"] in text for text in seen)

    gw.stop()  # flushes the audit writer and the database
    assert KEY not in gw.log_path.read_text(errors="replace")
    assert "QPU event qpu.job.finished" in gw.log_path.read_text()  # DEBUG events were logged
    for path in tmp_path.glob("qpu.sqlite*"):
        assert KEY.encode() not in path.read_bytes(), path
    records = gw.audit_records()
    assert any(r["type"] == "break-glass" for r in records)
    for path in (gw.dir / "audit").iterdir():
        assert KEY.encode() not in path.read_bytes(), path


def test_a_broken_credential_source_fails_the_job_without_quoting_it(start_gateway, tmp_path):
    extra = f"""
def credentials(backend):
    raise RuntimeError("vault said no to token {KEY}")
c.QpuGateway.credentials = credentials
"""
    gw = start_gateway(f"sqlite:///{tmp_path / 'qpu.sqlite'}", backends=BACKENDS_WITH_PROVIDER,
                       extra_config=extra)
    status, body = gw.submit("alice", backend="keyed")
    assert status == 201, body
    job = gw.wait_final("alice", body["job_id"])
    assert job["state"] == "FAILED", job
    assert KEY not in str(job) and KEY not in gw.log()
    assert "CredentialError" in str(job) or "credential" in str(job).lower(), job
