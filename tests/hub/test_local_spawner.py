"""Without Docker: the demo's local-process spawner keeps the policy's choices and warns."""

from __future__ import annotations

import requests


def test_local_process_spawner_applies_profiles_and_warns(start_hub, tmp_path):
    hub = start_hub(
        extra=f"""
c.Authenticator.allow_all = True
c.SimpleLocalProcessSpawner.home_dir_template = "{tmp_path}/home/{{username}}"
c.JupyterHub.services = []
c.JupyterHub.load_roles = [{{"name": "student", "scopes": ["self"], "users": ["alice"]}}]
""",
        env={"QUSTODY_SPAWNER": "local", "QUSTODY_IMAGE_DIGEST": ""},
    )
    assert "NO\n!! container isolation" in hub.log()
    code, body = hub.api("POST", "/users/carol/server", {"user_options": {}})
    if code == 404:
        hub.api("POST", "/users/carol")
        code, body = hub.api("POST", "/users/carol/server", {"user_options": {}})
    assert code == 403 and "No server profile" in body["message"]

    code, body = hub.api("POST", "/users/alice/server", {"user_options": {"profile": "student"}})
    assert code in (201, 202), body
    hub.wait_for(
        lambda: hub.api("GET", "/users/alice")[1]["servers"].get("", {}).get("ready"),
        timeout=90,
        what="alice's local server",
    )
    assert "WITHOUT CONTAINER ISOLATION" in hub.log()
    token = hub.user_token("alice")
    r = requests.get(
        f"{hub.url}user/alice/qustody/api/session",
        headers={"Authorization": f"token {token}"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["profile"] == "student" and body["age"]["max_seconds"] == 4 * 3600
    code, _ = hub.api("DELETE", "/users/alice/server")
    assert code in (202, 204)
