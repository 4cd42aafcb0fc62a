"""A real hub with local-process servers whose audit log the tests read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import requests
from hubtest import Hub

# alice and bob may spawn (student profile); "auditor" has the auditor role. The
# audit page listens on QUSTODY_AUDIT_PAGE_PORT (see local_env()).
LOCAL_EXTRA = """
c.Authenticator.allow_all = True
c.SimpleLocalProcessSpawner.home_dir_template = "{home}/{{username}}"
for role in c.JupyterHub.load_roles:
    if role["name"] == "student":
        role["users"] = ["alice", "bob"]
    if role["name"] == "auditor":
        role["users"] = ["auditor"]
"""
PASSWORD = "audit-test-password"
LOCAL_ENV = {
    "QUSTODY_SPAWNER": "local",
    "QUSTODY_IMAGE_DIGEST": "",
    "QUSTODY_DEMO_PASSWORD": PASSWORD,
}


def records(hub: Hub, type_name: str | None = None) -> list[dict[str, Any]]:
    """The hub's audit records (all files), oldest first."""
    from hub_ext.audit.query import Filter, query

    log = hub.dir / "audit" / "audit.jsonl"
    if not log.exists():
        return []
    flt = Filter(types=frozenset({type_name}) if type_name else frozenset())
    return [hit.record for hit in query(log, flt)]


def spawn(hub: Hub, user: str, name: str = "", profile: str | None = None) -> None:
    """Start ``user``'s server (their first profile by default) and wait until it is ready."""
    hub.start_server(user, name, {"profile": profile} if profile else {})


def server_token(hub: Hub, user: str, name: str = "") -> str:
    """The hub token the hub gave ``user``'s running local-process server (its environment)."""
    code, body = hub.api("GET", f"/users/{user}")
    assert code == 200, body
    pid = body["servers"][name]["state"]["pid"]
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    for item in environ:
        if item.startswith(b"JUPYTERHUB_API_TOKEN="):
            return item.split(b"=", 1)[1].decode()
    raise AssertionError(f"no JUPYTERHUB_API_TOKEN in the environment of {user}'s server")


def dumps(value: Any) -> str:
    return json.dumps(value)


def local_env() -> dict[str, str]:
    """Environment for a local-process hub with the audit page on a free port."""
    from hubtest import free_port

    return {**LOCAL_ENV, "QUSTODY_AUDIT_PAGE_PORT": str(free_port())}


def login(hub: Hub, user: str, password: str = PASSWORD) -> requests.Session:
    """A browser-like session logged in to the hub as ``user``."""
    session = requests.Session()
    r = session.get(f"{hub.url}hub/login", timeout=30)
    xsrf = session.cookies.get("_xsrf", "")
    r = session.post(
        f"{hub.url}hub/login?next=",
        data={"username": user, "password": password, "_xsrf": xsrf},
        timeout=30,
    )
    assert r.status_code == 200 and "jupyterhub-session-id" in session.cookies, r.text[:500]
    return session
