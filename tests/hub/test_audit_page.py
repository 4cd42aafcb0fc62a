"""The auditor page: a hub service for the auditor role only, driven by requests and Chromium."""

from __future__ import annotations

import html
import json
from pathlib import Path

import chromium
import pytest
import requests
from audit_hub import LOCAL_EXTRA, PASSWORD, local_env, login, records
from hubtest import Hub, failed, launch_hub

from hub_ext.audit import AuditLog, schema

pytestmark = pytest.mark.slow  # real hubs and gateways: run early (tests/conftest.py)

# A known session of "dora" (a user name no other event uses), in the order it happened.
SESSION = [
    "login",
    "server-spawn-requested",
    "server-started",
    "save-refused",
    "qpu-job-submitted",
    "qpu-job-finished",
    "server-culled",
]

PAGE_EXTRA = """
c.JupyterHub.load_roles.append(
    {"name": "page-only", "scopes": ["access:services!service=audit"], "users": ["bob"]}
)
"""


def write_session(hub: Hub, user: str) -> None:
    """Record SESSION for ``user`` in the hub's log, as the hub's components would."""
    audit = AuditLog(
        path=str(hub.dir / "audit" / "audit.jsonl"), key_file=str(hub.dir / "audit.key")
    )
    try:
        for name in SESSION:
            data = schema.get(name).examples[0]
            data["user"] = user
            if data.get("actor") == user:
                del data["actor"]
            if schema.get(name).origin == schema.USER_SERVER:
                del data["user"], data["server"]
                audit.record_user_event(user, "", {"type": name, "data": data})
            else:
                audit.emit(name, data)
    finally:
        audit.close()


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest):
    base = tmp_path_factory.mktemp("audit-page")
    hub = launch_hub(
        base / "hub",
        extra=LOCAL_EXTRA.format(home=base / "home") + PAGE_EXTRA,
        env=local_env(),
        timeout=180,  # the hub waits for its services, slow to start on a loaded machine
    )
    write_session(hub, "dora")
    hub.wait_for(
        lambda: (
            requests.get(f"{hub.url}services/audit/", timeout=10, allow_redirects=False).status_code
            in (302, 403)
        ),
        timeout=60,
        what="the audit service",
    )
    # the start-up run may have seen the log before the session: verify it as it is now
    assert verified(hub, {"Authorization": f"token {hub.user_token('auditor')}"})["status"] == "ok"
    yield hub
    hub.stop()
    if failed(request):
        print(hub.log()[-20000:])


def verified(hub: Hub, headers: dict[str, str]) -> dict:
    """Start a verification run of the log as it is now, and wait for its result (a run
    already under way may have read the log before the test's last change: wait it out)."""

    def started() -> requests.Response | None:
        r = requests.post(page(hub) + "api/verify", headers=headers, timeout=30)
        assert r.status_code in (202, 409), r.text
        return r if r.status_code == 202 else None

    r = hub.wait_for(started, timeout=60, what="a new verification run")

    def done() -> dict | None:
        state = requests.get(page(hub) + "api/verify", headers=headers, timeout=30).json()
        done = ("ok", "failed", "error", "empty")
        return state if state["status"] in done and r.status_code else None

    return dict(hub.wait_for(done, timeout=60, what="the verification"))


def page(hub: Hub) -> str:
    return f"{hub.url}services/audit/"


def test_auditor_reads_the_timeline_and_verification_as_json(hub):
    token = hub.user_token("auditor")
    headers = {"Authorization": f"token {token}"}
    r = requests.get(page(hub) + "api/events", params={"user": "dora"}, headers=headers, timeout=30)
    assert r.status_code == 200, r.text
    body = r.json()
    assert [e["type"] for s in body["sessions"] for e in s["events"]] == SESSION
    assert {s["user"] for s in body["sessions"]} == {"dora"}
    origins = {e["type"]: e["origin"] for s in body["sessions"] for e in s["events"]}
    assert origins["save-refused"] == "user-server" and origins["login"] == "hub"

    r = requests.get(
        page(hub) + "api/events",
        params={"user": "dora", "type": "save-refused"},
        headers=headers,
        timeout=30,
    )
    assert [e["type"] for s in r.json()["sessions"] for e in s["events"]] == ["save-refused"]

    # the reference a user was shown with a refused save finds that record alone
    ref = schema.get("save-refused").examples[0]["ref"]
    r = requests.get(page(hub) + "api/events", params={"ref": ref.upper()}, headers=headers,
                     timeout=30)
    found = [(s["user"], e) for s in r.json()["sessions"] for e in s["events"]]
    assert [(user, e["type"]) for user, e in found] == [("dora", "save-refused")]
    assert f"ref={ref}" in found[0][1]["summary"]  # the auditor sees which reference
    r = requests.get(page(hub) + "api/events", params={"ref": "0" * 12}, headers=headers,
                     timeout=30)
    assert r.json()["sessions"] == []

    state = verified(hub, headers)
    assert state["status"] == "ok", state
    assert state["report"]["records"] >= len(SESSION)
    assert state["first_bad"] is None
    recorded = [x for x in records(hub, "audit-verified") if x["data"]["actor"] == "auditor"]
    assert recorded and recorded[-1]["data"]["result"] == "ok"


def test_verification_names_the_first_bad_record(hub, tmp_path):
    """Edit one record: the page's verification fails and names it; restore it afterwards."""
    headers = {"Authorization": f"token {hub.user_token('auditor')}"}
    log = hub.dir / "audit" / "audit.jsonl"
    original = log.read_bytes()
    lines = original.splitlines(keepends=True)
    bad = next(i for i, x in enumerate(lines) if b'"qpu-job-finished"' in x)
    lines[bad] = lines[bad].replace(b'"dora"', b'"eve!"', 1)
    log.write_bytes(b"".join(lines))
    try:
        state = verified(hub, headers)
        assert state["status"] == "failed"
        assert state["first_bad"]["seq"] == json.loads(original.splitlines()[bad])["seq"]
        assert state["first_bad"]["file"] == "audit.jsonl"  # its name: no server paths
        assert str(hub.dir) not in json.dumps(state)
        session = login(hub, "auditor")
        r = session.get(page(hub), timeout=30)
        assert 'data-status="failed"' in r.text and "First bad record: seq" in r.text
        assert "in audit.jsonl line" in r.text and str(hub.dir) not in r.text
    finally:
        with log.open("r+b") as f:  # same length: put the original bytes back in place
            f.write(original[: len(b"".join(lines))])
    assert verified(hub, headers)["status"] == "ok"


def test_export_is_the_documented_siem_format(hub):
    headers = {"Authorization": f"token {hub.user_token('auditor')}"}
    r = requests.get(page(hub) + "export", params={"user": "dora"}, headers=headers, timeout=30)
    assert r.status_code == 200, r.text
    assert (
        "attachment" in r.headers["Content-Disposition"]
        and ".jsonl" in r.headers["Content-Disposition"]
    )
    lines = [json.loads(x) for x in r.text.splitlines()]
    assert [x["type"] for x in lines] == SESSION
    assert all(x["user"] == "dora" and x["integrity"]["hash"] for x in lines)
    assert lines[0]["schema"] == "https://qustody.org/audit/login"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"type": "no-such-type"}, "Unknown event type(s) no-such-type"),
        ({"since": "yesterday"}, "since: 'yesterday' is not an ISO 8601"),
        ({"ref": "3f9a0c12b7e"}, "A reference is the 12 hex digits a user was shown"),
        ({"ref": '"ref":"3f9a0c12b7e4"'}, "A reference is the 12 hex digits a user was shown"),
        ({"seq": "12; DROP"}, "seq: give record sequence numbers"),
        ({"seq": [str(n) for n in range(51)]}, "seq: at most 50 records at once"),
    ],
)
def test_bad_filters_get_a_clear_400(hub, params, message):
    headers = {"Authorization": f"token {hub.user_token('auditor')}"}
    r = requests.get(page(hub) + "api/events", params=params, headers=headers, timeout=30)
    assert r.status_code == 400 and message in r.json()["message"], r.text
    session = login(hub, "auditor")
    r = session.get(page(hub), params=params, timeout=30)
    assert r.status_code == 400 and "text/html" in r.headers["Content-Type"]
    assert html.escape(message) in r.text and "Traceback" not in r.text


def test_non_auditors_get_403_on_the_page_and_the_api(hub):
    # every user may reach the service (for the alerts about themselves, api/my-alerts),
    # and one without custom:audit:read gets the page's own 403 saying whom to ask
    for user in ("alice", "bob"):
        r = login(hub, user).get(page(hub), timeout=30)
        assert r.status_code == 403 and "text/html" in r.headers["Content-Type"]
        assert f"{user} may not read the audit log" in r.text and "auditor role" in r.text
    for user in ("alice", "bob"):
        headers = {"Authorization": f"token {hub.user_token(user)}"}
        for path in ("api/events", "api/verify", "export", ""):
            r = requests.get(page(hub) + path, headers=headers, timeout=30, allow_redirects=False)
            assert r.status_code == 403, (user, path, r.status_code)
        r = requests.post(page(hub) + "api/verify", headers=headers, timeout=30)
        assert r.status_code == 403
    r = requests.get(page(hub) + "api/events", timeout=30)
    assert r.status_code == 403 and "Log in to the hub as an auditor" in r.json()["message"]


# -- Chromium --------------------------------------------------------------------------------


def drive(hub: Hub, tmp_path: Path, **opts: object) -> dict:
    args = {
        "hub": hub.url,
        "password": PASSWORD,
        "userDataDir": str(tmp_path / "chromium-profile"),
        **opts,
    }
    return chromium.drive("audit_page.mjs", args)


def test_auditor_page_in_chromium_renders_the_known_session(hub, tmp_path):
    from png_pixels import colours_in

    shot = tmp_path / "audit-page.png"
    out = drive(hub, tmp_path, user="auditor", filterUser="dora", screenshot=str(shot))
    assert out["status"] == 200
    assert "user=dora" in out["url"]
    assert out["verifyStatus"] == "ok" and out["verifySummary"].startswith("OK:")
    assert [s["user"] for s in out["sessions"]] == ["dora"]
    assert out["sessions"][0]["types"] == SESSION
    assert any("reason=idle" in s for s in out["sessions"][0]["summaries"])
    assert "user=dora" in out["exportHref"]
    assert out["exportName"].endswith(".jsonl")
    assert [json.loads(x)["type"] for x in out["exportBody"].splitlines()] == SESSION

    box = out["timelineBox"]
    counts = colours_in(shot, (int(box["x"]), int(box["y"]), int(box["width"]), int(box["height"])))
    background = max(counts, key=counts.__getitem__)
    drawn = sum(n for colour, n in counts.items() if colour != background)
    total = sum(counts.values())
    assert total > 10000 and drawn / total > 0.02, (drawn, total)
    # the badge colours of a refused save and of a QPU job are on screen
    assert any(abs(r - 0xFB) < 8 and abs(g - 0xD5) < 8 and abs(b - 0xD1) < 8 for r, g, b in counts)
    assert any(abs(r - 0xD8) < 8 and abs(g - 0xF0) < 8 and abs(b - 0xDD) < 8 for r, g, b in counts)
    print(f"screenshot: {shot}")


def test_non_auditor_gets_the_403_page_in_chromium(hub, tmp_path):
    shot = tmp_path / "denied.png"
    out = drive(hub, tmp_path, user="bob", expectDenied=True, screenshot=str(shot))
    assert out["status"] == 403
    assert "bob may not read the audit log" in out["text"]
    assert shot.stat().st_size > 1000


def test_verify_now_button_needs_the_forms_xsrf_token(hub):
    import re

    session = login(hub, "auditor")
    r = session.get(page(hub), timeout=30)
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', r.text)
    assert xsrf, "the Verify now form carries an XSRF token"
    r = session.post(page(hub) + "verify", data={}, timeout=30, allow_redirects=False)
    assert r.status_code == 403 and "XSRF token is missing" in r.text
    r = session.post(
        page(hub) + "verify", data={"_xsrf": xsrf.group(1)}, timeout=30, allow_redirects=False
    )
    assert r.status_code == 302 and r.headers["Location"].endswith("/services/audit/")
    headers = {"Authorization": f"token {hub.user_token('auditor')}"}

    def finished() -> dict | None:
        state = requests.get(page(hub) + "api/verify", headers=headers, timeout=30).json()
        return state if state["status"] in ("ok", "failed") else None

    state = hub.wait_for(finished, timeout=60, what="the verification the button started")
    assert state["status"] == "ok"


# -- a fresh hub: no records yet -------------------------------------------------------------


@pytest.fixture
def fresh_hub(tmp_path: Path, request: pytest.FixtureRequest):
    slow = 'for s in c.JupyterHub.services:\n    s["timeout"] = 300\n'  # a loaded machine
    hub = launch_hub(
        tmp_path / "hub",
        extra=LOCAL_EXTRA.format(home=tmp_path / "home") + slow,
        env=local_env(),
        timeout=300,
    )
    yield hub
    hub.stop()
    if failed(request):
        print(hub.log()[-20000:])


def test_a_fresh_hub_shows_no_records_yet_then_a_deleted_log_fails(fresh_hub, tmp_path):
    hub = fresh_hub
    headers = {"Authorization": f"token {hub.user_token('auditor')}"}
    log = hub.dir / "audit" / "audit.jsonl"
    assert not log.exists()

    def settled() -> dict | None:
        r = requests.get(page(hub) + "api/verify", headers=headers, timeout=30)
        state = r.json() if r.status_code == 200 else {}
        return state if state.get("status") not in (None, "running", "not run yet") else None

    state = hub.wait_for(settled, timeout=90, what="the start-up verification")
    assert state["status"] == "empty", state
    assert "No records yet" in state["summary"] and str(hub.dir) not in json.dumps(state)
    assert not log.exists(), "verifying an empty log wrote to it"
    assert verified(hub, headers)["status"] == "empty"
    # the page says so, in words, in the browser
    out = drive(
        hub, tmp_path, user="auditor", filterUser="nobody", screenshot=str(tmp_path / "e.png")
    )
    assert out["status"] == 200 and out["verifyStatus"] == "no records yet", out
    assert "failed" not in out["verifySummary"] and str(hub.dir) not in json.dumps(out)

    # once records exist they are verified; if the log then vanishes, that is a failure
    write_session(hub, "dora")
    assert verified(hub, headers)["status"] == "ok"
    for path in log.parent.iterdir():
        path.unlink()
    # (the page may record its last run just after: the log then starts again at seq 0)
    state = verified(hub, headers)
    assert state["status"] == "failed", state
    assert "deleted" in state["summary"] and str(hub.dir) not in json.dumps(state)
    r = login(hub, "auditor").get(page(hub), timeout=30)
    assert 'data-status="failed"' in r.text and "deleted" in r.text
    assert str(hub.dir) not in r.text
