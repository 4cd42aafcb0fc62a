"""User servers report audit events to the hub with their own token; the hub stamps them."""

from __future__ import annotations

import pytest
import requests
from audit_hub import LOCAL_EXTRA, local_env, records, server_token, spawn
from hubtest import Hub, failed, launch_hub

EVENT = {
    "type": "save-refused",
    "data": {
        "path": "work/keys.ipynb",
        "detectors": ["github-token"],
        "findings": 1,
        "mode": "block",
    },
}


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest):
    base = tmp_path_factory.mktemp("audit-endpoint")
    started: list[Hub] = []
    hub = launch_hub(
        base / "hub",
        extra=LOCAL_EXTRA.format(home=base / "home"),
        env=local_env(),
        started=started,
        timeout=180,  # the hub waits for its services, slow to start on a loaded machine
    )
    spawn(hub, "alice")
    spawn(hub, "bob")
    yield hub
    hub.stop()
    if failed(request):
        print(hub.log()[-20000:])


def post(hub: Hub, body: bytes | str, token: str | None, **headers: str) -> requests.Response:
    if token is not None:
        headers["Authorization"] = f"token {token}"
    headers.setdefault("Content-Type", "application/json")
    return requests.post(
        f"{hub.url}services/qustody/api/audit/events", data=body, headers=headers, timeout=30
    )


def test_a_servers_own_token_records_an_event_stamped_with_its_user(hub):
    import json

    r = post(hub, json.dumps(EVENT), server_token(hub, "alice"))
    assert r.status_code == 201, r.text
    seq = r.json()["seq"]
    found = [rec for rec in records(hub, "save-refused") if rec["seq"] == seq]
    assert len(found) == 1
    rec = found[0]
    assert rec["origin"] == "user-server"
    assert rec["data"] == {**EVENT["data"], "user": "alice", "server": ""}

    r = post(hub, json.dumps(EVENT), server_token(hub, "bob"))
    assert r.status_code == 201, r.text
    assert [x["data"]["user"] for x in records(hub, "save-refused")] == ["alice", "bob"]


def test_forged_identity_fields_are_refused(hub):
    import json

    before = len(records(hub))
    for field in ("user", "server", "actor"):
        forged = {"type": "save-refused", "data": {**EVENT["data"], field: "bob"}}
        r = post(hub, json.dumps(forged), server_token(hub, "alice"))
        assert r.status_code == 403, r.text
        assert "hub stamps" in r.json()["message"]
    assert len(records(hub)) == before


def test_other_credentials_cannot_write_as_a_server(hub):
    import json

    before = len(records(hub))
    body = json.dumps(EVENT)
    personal = hub.user_token("alice")
    # a personal token, even with the note the hub gives server tokens
    code, made = hub.api("POST", "/users/alice/tokens", {"note": "Server at /user/alice/"})
    assert code == 201, made
    for token in (personal, made["token"], hub.token):
        r = post(hub, body, token)
        assert r.status_code == 403, r.text
        assert "not the hub token of a running server" in r.json()["message"] or (
            "Only a user's running server" in r.json()["message"]
        )
    r = post(hub, body, None)
    assert r.status_code == 401 and "JUPYTERHUB_API_TOKEN" in r.json()["message"]
    r = post(hub, body, "0" * 32)
    assert r.status_code == 401, r.text
    assert len(records(hub)) == before


@pytest.mark.parametrize(
    ("body", "headers", "status", "message"),
    [
        (b"{not json", {}, 400, "not valid JSON"),
        (b'{"type": "save-refused", "data": {"path": "\xff\xfe"}}', {}, 400, "not UTF-8"),
        (b"x" * (65 * 1024), {}, 413, "limit is"),
        (b'{"type": "login", "data": {}}', {}, 403, "may report only"),
        (b'{"type": "no-such-type", "data": {}}', {}, 403, "may report only"),
        (b'["save-refused"]', {}, 400, "JSON object"),
        (b'{"type": "save-refused", "data": {"path": "a"}}', {}, 400, "detectors"),
        (
            b'{"type": "save-refused", "data": {"path": "a", "detectors": [], "findings": 1,'
            b' "ref": "<b>not-a-ref</b>"}}',
            {},
            400,
            "ref",
        ),
        (
            b'{"type": "save-refused", "data": {}}',
            {"Content-Type": "text/plain"},
            415,
            "application/json",
        ),
    ],
)
def test_bad_events_get_a_clear_4xx_and_record_nothing(hub, body, headers, status, message):
    before = len(records(hub))
    r = post(hub, body, server_token(hub, "alice"), **headers)
    assert r.status_code == status, r.text
    assert message in r.json()["message"]
    assert len(records(hub)) == before


def test_a_refused_save_in_a_users_server_reaches_the_hub_log(hub):
    """End to end: alice's real server refuses a save and reports it; the hub stamps alice."""
    from qtest import GITHUB_TOKEN

    token = hub.user_token("alice")
    r = requests.put(
        f"{hub.url}user/alice/api/contents/leak.py",
        json={"type": "file", "format": "text", "content": f'key = "{GITHUB_TOKEN}"\n'},
        headers={"Authorization": f"token {token}"},
        timeout=30,
    )
    assert r.status_code == 422, r.text
    shown = r.json()["audit_ref"]  # what the user is shown with the refusal

    def reported():
        return [x for x in records(hub, "save-refused") if x["data"]["path"] == "leak.py"]

    (rec,) = hub.wait_for(reported, timeout=30, what="the save-refused record")
    assert rec["origin"] == "user-server"
    assert rec["data"] == {
        "user": "alice",
        "server": "",
        "path": "leak.py",
        "detectors": ["github-token"],
        "findings": 1,
        "ref": shown,
    }
    assert GITHUB_TOKEN not in (hub.dir / "audit" / "audit.jsonl").read_text()


def test_a_token_minted_with_the_server_scope_reports_for_no_server_that_is_not_running(hub):
    """The service knows a server by the scope the hub puts on every server token for its
    own server. A user may mint a personal token carrying it: it names only their own
    servers, and nothing is written for one that does not run."""
    import json

    before = len(records(hub))
    personal = hub.user_token("alice")
    code, made = hub.api("POST", "/users/alice/tokens",
                         {"scopes": ["custom:qustody:server!server=alice/ghost"]}, token=personal)
    assert code == 201, made
    r = post(hub, json.dumps(EVENT), made["token"])
    assert r.status_code == 403 and "not running" in r.json()["message"], r.text
    # her running server redeemed its ticket with its own token: a token she minted for
    # it is not that token
    code, made = hub.api("POST", "/users/alice/tokens",
                         {"scopes": ["custom:qustody:server!server=alice/"]}, token=personal)
    assert code == 201, made
    r = post(hub, json.dumps(EVENT), made["token"])
    assert r.status_code == 403 and "not the hub token" in r.json()["message"], r.text
    # another user's server is not hers to name: the hub refuses to mint that
    code, made = hub.api("POST", "/users/alice/tokens",
                         {"scopes": ["custom:qustody:server!server=bob/"]}, token=personal)
    assert code in (400, 403), made
    assert len(records(hub)) == before


def test_the_hub_starts_without_a_deprecation_warning_from_qustody(hub):
    """The routes servers call are a hub-managed service, not hub handlers: JupyterHub's
    warning about the deprecated ``extra_handlers`` never appears."""
    log = hub.log()
    assert "extra_handlers" not in log and "deprecated" not in log.lower(), [
        line for line in log.splitlines() if "deprecat" in line.lower()][:5]


def test_the_service_answers_the_hubs_health_check_at_its_prefix(hub):
    for path in ("services/qustody/", "services/qustody/api/health"):
        r = requests.get(hub.url + path, timeout=30)
        assert r.status_code == 200 and r.json()["service"] == "qustody", (path, r.text)
    assert "404 GET /services/qustody/" not in hub.log()
