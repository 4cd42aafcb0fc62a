"""When the audit disk is nearly full the hub refuses what it must record, clearly and on
the record, and keeps doing what ends access.

A real hub logging in through the real OpenID provider, its audit log on a real 8 MiB
tmpfs that the test mounts (as root) and fills with a plain file.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from pathlib import Path

import pytest
import requests
from audit_hub import server_token
from hubtest import Hub, HubError, failed, launch_hub
from identity.idp import login, start_idp

PASSWORD = secrets.token_urlsafe(12)
USERS = {
    name: {"password": PASSWORD, "groups": ["qustody-researchers"], "amr": ["pwd", "otp"]}
    for name in ("rita", "remy")
}
MiB = 1024 * 1024
THRESHOLD = 4 * MiB
EXTRA = f"""
c.Spawner.http_timeout = 300  # a loaded machine starts servers slowly
c.Spawner.start_timeout = 300
c.SecretBroker.ticket_ttl = 60  # the longest allowed: servers start slowly on a loaded machine
c.AuditLog.min_free_bytes = {THRESHOLD}
import os
from hub_ext.server_api.hub import server_api
from hub_ext.wiring import apply
# the qustody service's config again, with this threshold
apply(c, server_api(c, os.environ["QUSTODY_STATE_DIR"], profiles=list(c.SpawnPolicy.profiles)))
for service in c.JupyterHub.services:
    service["timeout"] = 300
from hub_ext.audit.hub import hub_audit, reset_hub_audit
reset_hub_audit()
hub_audit(c)
"""
REFUSAL = "audit log disk is nearly full"
pytestmark = pytest.mark.timeout(900)  # servers start slowly on a loaded machine


@pytest.fixture
def audit_fs(tmp_path: Path):
    """An 8 MiB tmpfs for the audit log, unmounted at the end."""
    mount = tmp_path / "auditfs"
    mount.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs", str(mount)], check=True
    )
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


@pytest.fixture
def hub_and_idp(tmp_path: Path, audit_fs: Path, request: pytest.FixtureRequest):
    idp = start_idp(USERS, workdir=tmp_path / "idp")
    started: list[Hub] = []
    client_secret = secrets.token_hex(24)
    env = {
        "QUSTODY_OIDC_ISSUER": idp.issuer,
        "QUSTODY_OIDC_CLIENT_ID": "hub",
        "QUSTODY_OIDC_CLIENT_SECRET": client_secret,
        "JUPYTERHUB_CRYPT_KEY": secrets.token_hex(32),
        "QUSTODY_SPAWNER": "local",
        "QUSTODY_IMAGE_DIGEST": "",
        "QUSTODY_AUDIT_LOG": str(audit_fs / "audit.jsonl"),
    }
    try:
        hub = launch_hub(tmp_path / "hub", extra=EXTRA, env=env, started=started, timeout=180)
    except HubError as e:
        idp.stop()
        pytest.fail(str(e))
    idp.add_client("hub", client_secret, f"{hub.url}hub/oauth_callback")
    yield hub, idp
    hub.stop()
    idp.stop()
    if failed(request):
        print(hub.log()[-20000:])


def records(log: Path, type_name: str) -> list[dict]:
    from hub_ext.audit.query import Filter, query

    return [h.record for h in query(log, Filter(types=frozenset({type_name})))]


def fill(mount: Path, leave: int) -> Path:
    """Write a file that leaves ``leave`` bytes free on ``mount``."""
    st = os.statvfs(mount)
    filler = mount / "filler.bin"
    with filler.open("wb") as f:
        f.write(b"\0" * (st.f_bavail * st.f_frsize - leave))
    return filler


def test_nearly_full_disk_refuses_audited_actions_and_keeps_stops(hub_and_idp, audit_fs):
    hub, _ = hub_and_idp
    log = audit_fs / "audit.jsonl"
    for user in ("rita", "remy"):  # first logins (and their role changes) while there is room
        assert login(requests.Session(), hub.url, user, PASSWORD).status_code == 200
    hub.start_server("rita", timeout=300)
    token = server_token(hub, "rita")
    hub.wait_for(
        lambda: records(log, "secret-delivered"), timeout=120, what="rita's server's claim"
    )
    event = {
        "type": "save-refused",
        "data": {"path": "a.py", "detectors": ["github-token"], "findings": 1},
    }

    filler = fill(audit_fs, THRESHOLD // 2)
    size = log.stat().st_size

    # a login is refused with a page that says why and what the admin must do; no session
    other = requests.Session()
    page = login(other, hub.url, "remy", PASSWORD)
    assert page.status_code == 503, page.text[:2000]
    assert REFUSAL in page.text and "Admin: free space" in page.text
    assert str(audit_fs) not in page.text
    assert "jupyterhub-hub-login" not in other.cookies
    # a new server is refused
    code, body = hub.api("POST", "/users/rita/servers/second", {})
    assert code >= 400 or not hub.api("GET", "/users/rita")[1]["servers"]["second"]["ready"]
    # the user server's audit report and secret refresh are refused, nothing delivered
    headers = {"Authorization": f"token {token}", "Content-Type": "application/json"}
    r = requests.post(
        f"{hub.url}services/qustody/api/audit/events", data=json.dumps(event), headers=headers,
        timeout=60,
    )
    assert r.status_code == 503 and REFUSAL in r.json()["message"], r.text
    r = requests.post(
        f"{hub.url}services/qustody/api/secrets/refresh", data="{}", headers=headers, timeout=60
    )
    assert r.status_code == 503 and REFUSAL in r.json()["message"], r.text
    assert "secrets" not in r.json()

    # stopping still works, and is recorded
    code, body = hub.api("DELETE", "/users/rita/server", timeout=120)
    assert code in (202, 204), body
    hub.wait_for(
        lambda: "" not in hub.api("GET", "/users/rita")[1]["servers"], timeout=120, what="the stop"
    )
    assert [r["data"]["user"] for r in records(log, "server-stopped")] == ["rita"]
    # the refusals are on the record, once per writing process (the hub's, and its qustody
    # service's for the server's report and refresh); the next one is due after a minute
    lows = records(log, "audit-space-low")
    assert 1 <= len(lows) <= 2, lows
    refused = {x["type"] for low in lows for x in low["data"]["refused"]}
    assert "login" in refused, lows  # remy's second login
    assert all(low["data"]["free_bytes"] < THRESHOLD for low in lows)
    assert "remy" in {user for low in lows for user in low["data"]["users"]}
    assert [r["data"]["user"] for r in records(log, "login")] == ["rita", "remy"]
    assert not records(log, "save-refused")
    assert log.stat().st_size > size  # only the stop and the refusal were written
    assert "free space on" in hub.log()  # the admin's log names the filesystem

    # room again: logins work without a restart, and the end of the refusals is recorded
    filler.unlink()
    assert login(requests.Session(), hub.url, "remy", PASSWORD).status_code == 200
    assert [r["data"]["user"] for r in records(log, "login")][-1] == "remy"
    assert records(log, "audit-space-low")[-1]["data"].get("resolved") is True

    from hub_ext.audit.verify import verify

    report = verify(log, [(hub.dir / "audit.key").read_bytes().strip()])
    assert report.ok, report.summary()
