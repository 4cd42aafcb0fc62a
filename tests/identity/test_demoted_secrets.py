"""A user demoted at the identity provider gets no more secrets of the role they lost.

A real hub logs rita in through the real provider as a researcher; her researcher server
redeems its ticket and holds a prod secret. The provider then demotes her to student and
the admin rotates the secret: the server's next refresh delivers nothing (the rotated
value reaches no response, log or record), the hub stops the server, and both are
audited. The hub re-validates her with the provider for the refresh itself, so the
demotion counts at once (``auth_refresh_age`` stays at its default of 5 minutes here).
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from hub.hubtest import BIN
from identity.conftest import PASSWORD
from identity.idp import login
from identity.test_login_flow import audit_events

pytestmark = pytest.mark.slow

CONFIG = """
c.QustodyAuthenticator.sweep_interval = 0
# local servers start slowly on a loaded machine: the longest ticket life (set again
# after the reference configuration created the delivery)
import os
from hub_ext.server_api.hub import server_api
from hub_ext.wiring import apply
c.SecretBroker.ticket_ttl = 60
apply(c, server_api(c, os.environ["QUSTODY_STATE_DIR"], profiles=list(c.SpawnPolicy.profiles)))
c.SimpleLocalProcessSpawner.home_dir_template = "{home}/{{username}}"
# local servers start slowly on a loaded 2-core machine
c.Spawner.http_timeout = 180
c.Spawner.start_timeout = 180
"""


def put(state: Path, namespace: str, name: str, cls: str, value: str, verb: str = "put") -> None:
    """The admin CLI, as an admin stores or rotates a secret (value on standard input)."""
    args = [verb, namespace, name] + (["--class", cls] if verb == "put" else [])
    result = subprocess.run(
        [str(BIN / "qustody"), "secrets", *args],
        input=value.encode(),
        capture_output=True,
        env={"QUSTODY_STATE_DIR": str(state), "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def recorded(state: Path, type_name: str) -> list[dict[str, Any]]:
    """Audit records of one type, from the log in the hub's state directory."""
    lines = (state / "audit" / "audit.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    return [r["data"] for r in records if r["type"] == type_name]


@pytest.fixture
def values() -> dict[str, str]:
    return {k: f"qv-{k.lower()}-{secrets.token_hex(12)}" for k in ("PROD", "PROD2", "SANDBOX")}


@pytest.fixture
def state(tmp_path: Path, values: dict[str, str]) -> Path:
    state = tmp_path / "state"
    state.mkdir()
    put(state, "user:rita", "RITA_PROD", "prod", values["PROD"])
    put(state, "user:rita", "RITA_SANDBOX", "sandbox", values["SANDBOX"])
    return state


def held(url: str, token: str) -> list[str]:
    r = requests.get(
        url + "qustody/api/secrets", headers={"Authorization": f"token {token}"}, timeout=30
    )
    assert r.status_code == 200, r.text
    return sorted(s["name"] for s in r.json()["secrets"])


def refresh(url: str, token: str) -> requests.Response:
    return requests.post(
        url + "qustody/api/secrets/refresh",
        headers={"Authorization": f"token {token}"},
        timeout=60,
    )


def test_demoted_user_gets_nothing_and_loses_the_server(
    oidc_hub: Any, idp: Any, tmp_path: Path, state: Path, values: dict[str, str]
) -> None:
    hub = oidc_hub(
        # the hub re-validates a user with the provider when its last check is older than
        # this: the qustody service's question "who calls?" is such a request
        extra=CONFIG.format(home=tmp_path / "home") + "c.Authenticator.auth_refresh_age = 2\n",
        env={"QUSTODY_STATE_DIR": str(state)},
        timeout=180,
    )
    browser = requests.Session()
    assert login(browser, hub.url, "rita", PASSWORD).status_code == 200
    url = hub.start_server("rita", body={"user_options": {"profile": "researcher"}}, timeout=120)
    token = hub.user_token("rita")
    assert held(url, token) == ["RITA_PROD", "RITA_SANDBOX"]
    # a refresh while she is a researcher follows the rotation
    put(state, "user:rita", "RITA_PROD", "", values["PROD2"], verb="rotate")
    assert refresh(url, token).status_code == 200
    delivered = [e for e in recorded(state, "secret-delivered") if e["user"] == "rita"]
    assert len(delivered) == 2

    idp.set_user("rita", groups=["qustody-students"])  # demoted at the provider
    time.sleep(2.5)  # past auth_refresh_age: her server's next request re-validates her
    rotated = f"qv-rotated-{secrets.token_hex(12)}"
    put(state, "user:rita", "RITA_PROD", "", rotated, verb="rotate")
    answer = refresh(url, token)
    # the hub refuses (the server reports 502 with the hub's reason), or the server is
    # already gone: the refresh's own identity check stops it while the request runs
    assert answer.status_code != 200, answer.text
    if answer.status_code == 502:
        assert "no longer allow the 'researcher' profile" in answer.json()["message"]
    hub.wait_for(
        lambda: not hub.api("GET", "/users/rita")[1]["servers"],
        timeout=60,
        what="rita's researcher server stopped",
    )

    assert len([e for e in recorded(state, "secret-delivered") if e["user"] == "rita"]) == 2
    withheld = recorded(state, "secret-withheld")
    assert len(withheld) == 1
    record = withheld[0]
    assert (record["user"], record["stage"], record["reason"], record["profile"]) == (
        "rita",
        "refresh",
        "role-lost",
        "researcher",
    )
    assert "researcher" not in record["roles"] and "student" in record["roles"]
    stopped = [e for e in recorded(state, "server-stopped") if e["user"] == "rita"]
    assert [e["reason"] for e in stopped] == ["role-lost"]
    roles = set(hub.api("GET", "/users/rita")[1]["roles"])
    assert "student" in roles and "researcher" not in roles
    everything = hub.log() + (state / "audit" / "audit.jsonl").read_text() + answer.text
    assert rotated not in everything

    # as a student she starts the student profile only, and gets no prod secret
    status, body = hub.api(
        "POST", "/users/rita/server", {"user_options": {"profile": "researcher"}}, token=token
    )
    assert status in (400, 403), body
    url = hub.start_server("rita", body={"user_options": {"profile": "student"}}, timeout=120)
    assert held(url, token) == ["RITA_SANDBOX"]  # the student classes, never prod


def students(hub: Any) -> list[str]:
    """Members of course-101:students (the group exists once someone joined it)."""
    status, group = hub.api("GET", "/groups/course-101:students")
    return sorted(group["users"]) if status == 200 else []


def test_demotion_found_by_the_sweep_stops_the_server_before_the_course_reaches_it(
    oidc_hub: Any, idp: Any, tmp_path: Path
) -> None:
    """rhea, a researcher taking course-101, runs a researcher server and makes no
    request. Demoted to student at the provider, she would join ``course-101:students``
    and her instructor would reach her prod workspace: the sweep's refresh stops the
    server before the new roles and groups apply."""
    hub = oidc_hub(
        extra=CONFIG.replace("sweep_interval = 0", "sweep_interval = 2").format(
            home=tmp_path / "home"
        )
        + "c.Authenticator.auth_refresh_age = 2\n",
        timeout=180,
    )
    assert login(requests.Session(), hub.url, "rhea", PASSWORD).status_code == 200
    hub.start_server("rhea", body={"user_options": {"profile": "researcher"}}, timeout=240)
    assert students(hub) == []

    idp.set_user("rhea", groups=["qustody-students", "course-101"])
    hub.wait_for(
        lambda: not hub.api("GET", "/users/rhea")[1]["servers"],
        timeout=120,
        what="rhea's researcher server stopped by the sweep",
    )
    stopped = [e for e in audit_events(hub, "server-stopped") if e["user"] == "rhea"]
    assert [e["reason"] for e in stopped] == ["role-lost"]
    hub.wait_for(
        lambda: students(hub) == ["rhea"],
        timeout=60,
        what="rhea in course-101:students",
    )
    assert not audit_events(hub, "secret-withheld")  # she asked for nothing
