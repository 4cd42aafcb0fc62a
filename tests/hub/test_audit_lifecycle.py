"""Spawn, stop, failed spawn and cull are recorded in the hub's audit log (real hub, local servers)."""

from __future__ import annotations

import pytest
from audit_hub import LOCAL_EXTRA, local_env, records, spawn
from hubtest import Hub, failed, launch_hub

CULL_EXTRA = """
c.SpawnPolicy.profiles["researcher"]["idle_timeout"] = 3
c.SpawnPolicy.profiles["researcher"]["kernel_idle_timeout"] = 3
for service in c.JupyterHub.services:
    if service["name"] == "qustody-culler":
        service["command"] = [
            "--cull-every=2" if arg.startswith("--cull-every") else arg
            for arg in service["command"]
        ]
"""


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest):
    base = tmp_path_factory.mktemp("audit-lifecycle")
    hub = launch_hub(
        base / "hub", extra=LOCAL_EXTRA.format(home=base / "home") + CULL_EXTRA, env=local_env()
    )
    yield hub
    hub.stop()
    if failed(request):
        print(hub.log()[-20000:])


def of(hub: Hub, user: str) -> list[dict]:
    """The user's server lifecycle records (not, e.g., the secrets delivered at start)."""
    return [
        r
        for r in records(hub)
        if r["data"].get("user") == user and r["type"].startswith("server-")
    ]


def test_spawn_and_stop_are_recorded_with_profile_image_and_limits(hub):
    spawn(hub, "alice")
    kinds = [r["type"] for r in of(hub, "alice")]
    assert kinds == ["server-spawn-requested", "server-started"]
    requested, started = of(hub, "alice")
    assert requested["data"] == {
        "user": "alice",
        "server": "",
        "actor": "harness-admin",
        "ip": "127.0.0.1",
        "credential": {"kind": "api-token"},
    }
    data = started["data"]
    assert data["profile"] == "student" and data["image_digest"] == "sha256:" + "0" * 64
    assert data["limits"] == {"mem_bytes": 1024**3, "cpus": 1.0, "pids": 256}
    assert data["duration_seconds"] >= 0

    code, _ = hub.api("DELETE", "/users/alice/server")
    assert code in (202, 204)
    hub.wait_for(lambda: len(of(hub, "alice")) == 3, timeout=60, what="server-stopped")
    stopped = of(hub, "alice")[-1]
    assert stopped["type"] == "server-stopped" and stopped["data"]["reason"] == "requested"
    assert stopped["data"]["duration_seconds"] > 0


def test_a_refused_spawn_is_recorded_with_its_reason(hub):
    hub.api("POST", "/users/carol")
    code, body = hub.api("POST", "/users/carol/server", {})
    assert code == 403 and "No server profile" in body["message"]
    failed_ = [r for r in of(hub, "carol") if r["type"] == "server-spawn-failed"]
    assert len(failed_) == 1
    assert failed_[0]["data"]["reason"] == "profile-not-allowed"
    assert "No server profile is available" in failed_[0]["data"]["detail"]
    assert next(r["type"] for r in of(hub, "carol")) == "server-spawn-requested"


def test_a_cull_is_recorded_by_the_culler_with_its_reason(hub):
    spawn(hub, "bob", profile="researcher")

    def culled():
        return [r for r in of(hub, "bob") if r["type"] == "server-culled"]

    (cull,) = hub.wait_for(culled, timeout=90, what="the culler to cull bob's idle server")
    assert cull["data"]["reason"] == "idle" and cull["data"]["actor"] == "qustody-culler"
    assert cull["data"]["policy"] == "researcher" and cull["data"]["idle_seconds"] >= 3
    hub.wait_for(
        lambda: of(hub, "bob")[-1]["type"] == "server-stopped", timeout=60, what="bob stopped"
    )
    kinds = [r["type"] for r in of(hub, "bob")]
    assert kinds == ["server-spawn-requested", "server-started", "server-culled", "server-stopped"]


def test_a_server_that_exits_by_itself_is_recorded_as_exited(hub):
    """JupyterHub does not call stop() for a server that is already gone; the record comes
    from the post-stop hook, so the log never shows a server running that is not."""
    import requests

    before = len(of(hub, "alice"))
    spawn(hub, "alice", name="solo")
    token = hub.user_token("alice")
    r = requests.post(f"{hub.url}user/alice/solo/api/shutdown",
                      headers={"Authorization": f"token {token}"}, timeout=30)
    assert r.status_code in (200, 202, 204), r.text
    # the hub notices at its next poll of the server (c.Spawner.poll_interval)
    hub.wait_for(lambda: of(hub, "alice")[-1]["type"] == "server-stopped", timeout=90,
                 what="alice's exited server recorded")
    mine = [r for r in of(hub, "alice")[before:] if r["data"]["server"] == "solo"]
    assert [r["type"] for r in mine] == [
        "server-spawn-requested", "server-started", "server-stopped"]
    assert mine[-1]["data"]["reason"] == "exited" and mine[-1]["data"]["duration_seconds"] > 0
