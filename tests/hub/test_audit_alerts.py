"""Security alerts through a real hub: a user's server reports a burst of refused saves
(as the guard does), the audit service raises one alert citing them, posts it to the
webhook, and the auditor page shows it with a link to its evidence. A server that outlives
its maximum age raises an alert by the passing of time alone, mailed through a real SMTP
server (aiosmtpd) on loopback."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from aiosmtpd.controller import Controller
from audit_hub import LOCAL_EXTRA, PASSWORD, local_env, records, server_token, spawn
from hubtest import Hub, failed, launch_hub
from ports import free_port

EVENT = {"type": "save-refused", "data": {"path": "work/keys.ipynb",
                                          "detectors": ["github-token"], "findings": 1,
                                          "mode": "block"}}


class _Webhook(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []  # noqa: RUF012 - the test's inbox

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        type(self).received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def webhook():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Webhook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/alerts", _Webhook.received
    server.shutdown()
    server.server_close()


class _Inbox:
    def __init__(self) -> None:
        self.subjects: list[str] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        text = envelope.content.decode("utf-8", "replace")
        self.subjects += [line[len("Subject: "):] for line in text.splitlines()
                          if line.startswith("Subject: ")]
        return "250 OK"


@pytest.fixture(scope="module")
def smtp():
    port = free_port()
    inbox = _Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield port, inbox
    controller.stop()


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest, webhook, smtp):
    base = tmp_path_factory.mktemp("audit-alerts")
    # the reference config's audit_page(c) passed the default rules to the service; this
    # hub's admin lowers one threshold and adds a webhook (set before audit_page normally)
    extra = LOCAL_EXTRA.format(home=base / "home") + f"""
import json
from hub_ext.audit.alerts import AlertRules
for service in c.JupyterHub.services:
    if service["name"] == "audit":
        service["environment"]["QUSTODY_ALERT_RULES"] = json.dumps(
            AlertRules(save_refusals=3, webhook_url={webhook[0]!r},
                       email_to=["security@example.org"], smtp_port={smtp[0]},
                       server_max_age={{p: 5 for p in c.SpawnPolicy.profiles}},
                       server_age_slack=1).settings())
"""
    hub = launch_hub(base / "hub", extra=extra, env=local_env(), timeout=180)
    spawn(hub, "alice")
    yield hub
    hub.stop()
    if failed(request):
        print(hub.log()[-20000:])


def test_a_burst_of_refused_saves_raises_one_alert_with_its_evidence(hub: Hub, webhook):
    _url, received = webhook
    token = server_token(hub, "alice")
    seqs = []
    for _ in range(5):  # what the guard reports for five refused saves in a row
        r = requests.post(f"{hub.url}services/qustody/api/audit/events", data=json.dumps(EVENT),
                          headers={"Authorization": f"token {token}",
                                   "Content-Type": "application/json"}, timeout=30)
        assert r.status_code == 201, r.text
        seqs.append(r.json()["seq"])

    def saves(alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [a for a in alerts if a["data"]["rule"] == "save-refusals"]

    hub.wait_for(lambda: saves(records(hub, "alert-raised")), timeout=60, what="an alert record")
    hub.wait_for(lambda: saves(received), timeout=30, what="the webhook's POST")
    [alert] = saves(records(hub, "alert-raised"))  # five refusals, one alert
    data = alert["data"]
    assert (data["rule"], data["subject"], data["count"]) == ("save-refusals", "user:alice", 3)
    assert data["evidence"] == seqs[:3]
    [posted] = saves(received)
    assert posted["seq"] == alert["seq"] and posted["data"] == data

    auditor = {"Authorization": f"token {hub.user_token('auditor')}"}
    page = requests.get(f"{hub.url}services/audit/", headers=auditor, timeout=30)
    assert page.status_code == 200
    assert 'data-rule="save-refusals"' in page.text and "user:alice" in page.text
    # the alert is in the timeline too, with the hub's own events (it is about no user)
    assert 'data-type="alert-raised"' in page.text and "hub events (no user)" in page.text
    # this alert's own link: on a slow machine alice's over-age alert may be listed first
    block = page.text.split(f'data-rule="save-refusals" data-seq="{alert["seq"]}"', 1)[1]
    link = block.split('class="evidence" href="', 1)[1].split('"', 1)[0]
    evidence = requests.get(f"{hub.url.rstrip('/')}{link.replace('&amp;', '&')}",
                            headers=auditor, timeout=30)
    assert evidence.status_code == 200
    # the records the link selects (the page's alert list above them may hold others: on
    # a slow machine alice's server outlives its maximum age meanwhile, and that alerts)
    events = evidence.text.split('<li class="event"')[1:]
    shown = [int(e.split('data-seq="', 1)[1].split('"', 1)[0]) for e in events]
    assert sorted(shown) == seqs[:3]

    api = requests.get(f"{hub.url}services/audit/api/alerts", headers=auditor, timeout=30)
    assert alert["seq"] in [a["seq"] for a in api.json()["alerts"]]

    # a user without the auditor role sees no alert
    alice = {"Authorization": f"token {hub.user_token('alice')}"}
    assert requests.get(f"{hub.url}services/audit/", headers=alice, timeout=30).status_code == 403


def test_a_server_past_its_maximum_age_raises_one_alert_by_mail(hub: Hub, smtp):
    """The hub's admin set every profile's maximum age to 5 s (for this test); alice's
    server outlives it with no new record written about it: the audit service raises
    the alert from the passing of time, cites the server's start, and mails it once."""
    _port, inbox = smtp

    def over_age() -> list[dict[str, Any]]:
        return [a for a in records(hub, "alert-raised")
                if a["data"]["rule"] == "server-over-age"]

    hub.wait_for(over_age, timeout=60, what="a server-over-age alert")
    [alert] = over_age()
    assert alert["data"]["subject"] == "server:alice/"
    [started] = [r for r in records(hub, "server-started") if r["data"]["user"] == "alice"]
    assert alert["data"]["evidence"] == [started["seq"]]
    hub.wait_for(lambda: any("server:alice/" in s for s in inbox.subjects), timeout=30,
                 what="the alert's e-mail")
    assert [s for s in inbox.subjects if "server:alice/" in s] == [
        "[Qustody alert] A server running past its maximum age (its culling failed): "
        "server:alice/"]



def _save_alert(hub: Hub) -> dict[str, Any]:
    """alice's save-refusals alert (raised here if the test above did not run first)."""

    def found() -> list[dict[str, Any]]:
        return [a for a in records(hub, "alert-raised")
                if a["data"]["rule"] == "save-refusals"]

    if not found():
        token = server_token(hub, "alice")
        for _ in range(3):
            requests.post(f"{hub.url}services/qustody/api/audit/events", data=json.dumps(EVENT),
                          headers={"Authorization": f"token {token}",
                                   "Content-Type": "application/json"}, timeout=30)
    hub.wait_for(found, timeout=60, what="alice's save-refusals alert")
    return found()[0]


def test_the_user_an_alert_is_about_sees_it_in_jupyterlab_and_no_one_else_does(hub: Hub):
    alert = _save_alert(hub)
    alice = {"Authorization": f"token {hub.user_token('alice')}"}
    # through her server (what the JupyterLab extension asks), with its own token
    r = requests.get(f"{hub.url}user/alice/qustody/api/notices", headers=alice, timeout=30)
    assert r.status_code == 200, r.text
    notices = {n["rule"]: n for n in r.json()["notices"]}
    saves = notices["save-refusals"]
    assert saves["seq"] == alert["seq"] and saves["count"] == 3
    assert "3 of your saves were refused within 10 minutes" in saves["message"]
    assert "Secrets panel" in saves["message"]
    assert "evidence" not in saves  # the records themselves are for the auditors
    # the service answers each user about themselves only
    mine = requests.get(f"{hub.url}services/audit/api/my-alerts", headers=alice, timeout=30)
    assert [n["seq"] for n in mine.json()["alerts"]] == [n["seq"] for n in r.json()["notices"]]
    bob = {"Authorization": f"token {hub.user_token('bob')}"}
    theirs = requests.get(f"{hub.url}services/audit/api/my-alerts", headers=bob, timeout=30)
    assert theirs.status_code == 200 and theirs.json() == {"user": "bob", "alerts": []}
    nobody = requests.get(f"{hub.url}services/audit/api/my-alerts", timeout=30)
    assert nobody.status_code == 403 and "Authorization: token" in nobody.json()["message"]
    # every user may ask for their own alerts; the log itself stays the auditors'
    for path in ("", "api/alerts", "api/events"):
        assert requests.get(f"{hub.url}services/audit/{path}", headers=alice,
                            timeout=30).status_code == 403


def test_jupyterlab_shows_each_notice_once(hub: Hub, tmp_path):
    """In Chromium: alice signs in through the hub, her JupyterLab shows the notice about
    her refused saves (in the service's words), and a reload does not show it again."""
    import chromium

    _save_alert(hub)
    out = chromium.drive("notices.mjs", {
        "hub": hub.url, "user": "alice", "password": PASSWORD,
        "userDataDir": str(tmp_path / "chromium-profile"),
        "screenshot": str(tmp_path / "notices.png"), "expect": "of your saves were refused",
    })
    assert out["status"] == 200 and out["againStatus"] == 200
    saves = [t for t in out["first"] if "of your saves were refused" in t]
    assert saves == ["Security notice: 3 of your saves were refused within 10 minutes because "
                     "they held keys or tokens."]
    assert "Keep credentials in the Secrets panel" in out["dialog"]
    assert out["dialog"].endswith("read them with get_secret().")
    # a reload shows none of them again (an alert raised in between is new, and shown)
    assert not set(out["first"]) & set(out["afterReload"]), out


def test_a_tampered_byte_raises_an_alert_citing_the_failed_verification(hub: Hub):
    """Last in this module: it breaks the hub's log on purpose. One byte of an old record
    changed on disk; the auditor's next verification fails and the engine raises the
    integrity alert, whose evidence is the failed verification's own record."""
    log = hub.dir / "audit" / "audit.jsonl"
    text = log.read_bytes()
    at = text.index(b'"user":"alice"')
    log.write_bytes(text[:at] + b'"user":"alicf"' + text[at + len(b'"user":"alice"'):])
    auditor = {"Authorization": f"token {hub.user_token('auditor')}"}

    def started() -> bool:  # a run already under way may have read the log before
        r = requests.post(f"{hub.url}services/audit/api/verify", headers=auditor, timeout=30)
        assert r.status_code in (202, 409), r.text
        return r.status_code == 202

    hub.wait_for(started, timeout=60, what="a verification run of the tampered log")

    def integrity() -> list[dict[str, Any]]:
        return [a for a in records(hub, "alert-raised")
                if a["data"]["rule"] == "audit-verification-failed"]

    hub.wait_for(integrity, timeout=90, what="the integrity alert")
    [alert] = integrity()
    [failed_run] = [r for r in records(hub, "audit-verified") if r["data"]["result"] == "failed"]
    assert alert["data"]["evidence"] == [failed_run["seq"]]
