"""Browser-less logins through the real provider into a real hub: roles, scopes, refusals.

The tests share one provider; those that need no settings of their own share one hub.
"""

from __future__ import annotations

import json
import re
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import chromium
import pytest
import requests
from identity.conftest import PASSWORD, new_user
from identity.idp import login

pytestmark = pytest.mark.slow


@pytest.fixture
def idp(module_idp: Any) -> Any:
    return module_idp


@pytest.fixture(scope="module")
def shared_hub(module_oidc_hub: Any) -> Any:
    """The reference configuration, for the tests that change nothing in it."""
    return module_oidc_hub()


def audit_events(hub: Any, type_name: str) -> list[dict[str, Any]]:
    path = hub.dir / "audit" / "audit.jsonl"
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r["data"] for r in records if r["type"] == type_name]


def user_scopes(hub: Any, session: requests.Session) -> set[str]:
    """The scopes the logged-in browser's user holds, as the hub reports them."""
    xsrf = session.cookies.get("_xsrf", "")
    response = session.get(f"{hub.url}hub/api/user", headers={"X-XSRFToken": xsrf}, timeout=30)
    assert response.status_code == 200, response.text
    return set(response.json()["scopes"])


def test_roles_land_with_least_privilege_scopes(shared_hub: Any) -> None:
    hub = shared_hub
    logins_before = len(audit_events(hub, "login"))  # the module's hub: count from here
    seen: dict[str, tuple[set[str], set[str]]] = {}
    sessions: dict[str, requests.Session] = {}
    for name in ("rita", "ivan", "sam", "tess", "ada", "audrey"):
        session = sessions[name] = requests.Session()
        page = login(session, hub.url, name, PASSWORD)
        assert page.status_code == 200, page.text[:500]
        assert "jupyterhub-session-id" in session.cookies or session.cookies.get(
            "jupyterhub-hub-login"
        )
        status, model = hub.api("GET", f"/users/{name}")
        assert status == 200
        seen[name] = (set(model["roles"]), user_scopes(hub, session))

    roles, scopes = seen["rita"]
    assert "researcher" in roles and "admin" not in roles
    assert "admin:users" not in scopes and "access:servers!user=rita" in scopes

    roles, scopes = seen["ivan"]
    assert "instructor-course-101" in roles
    assert {"servers!group=course-101:students", "access:servers!group=course-101:students"} <= (
        scopes
    )
    assert not any(s.endswith("!group=course-101") for s in scopes)  # not every member
    assert not any(s.startswith("servers") and "course-202" in s for s in scopes)
    assert "admin:users" not in scopes

    roles, scopes = seen["ada"]
    assert "admin" in roles and "admin:users" in scopes

    roles, scopes = seen["audrey"]
    assert "auditor" in roles
    assert "read:users:activity" in scopes
    # the auditor page's scopes reach the IdP-mapped role (and no one else)
    assert {"custom:audit:read", "access:services!service=audit"} <= scopes
    assert "custom:audit:read" not in seen["rita"][1] | seen["ada"][1]
    assert "custom:qpu:read-all" in scopes and "custom:qpu:submit" not in scopes
    # the QPU gateway's scopes: everyone with a server submits (the banner's example), and
    # admins also operate
    for user in ("rita", "sam", "ivan", "ada"):
        have = seen[user][1]
        assert "custom:qpu:submit" in have, user
        assert {"access:services!service=qpu", "access:services"} & have, user  # admin: all
    assert "custom:qpu:admin" in seen["ada"][1]
    assert "custom:qpu:admin" not in seen["rita"][1]
    assert not any(s.startswith("access:servers") and "!user=audrey" not in s for s in scopes)
    assert "admin:users" not in scopes and "tokens" not in scopes

    # course membership became hub groups; an instructor reads only their course's users
    status, group = hub.api("GET", "/groups/course-101")
    assert status == 200 and set(group["users"]) == {"ivan", "sam"}

    def sees(viewer: str, user: str) -> bool:
        response = sessions[viewer].get(f"{hub.url}hub/api/users/{user}", timeout=30)
        assert response.status_code in (200, 403, 404), response.text
        return response.status_code == 200

    assert sees("ivan", "sam") and not sees("ivan", "tess") and not sees("ivan", "rita")
    assert not sees("rita", "sam") and not sees("sam", "tess")
    assert sees("audrey", "rita") and sees("ada", "tess")

    # machine access: API tokens for a user always expire, at most after 7 days
    status, body = hub.api("POST", "/users/rita/tokens", {"note": "ci", "expires_in": 30 * 86400})
    assert status == 400, body
    status, body = hub.api("POST", "/users/rita/tokens", {"note": "ci"})
    assert status == 201 and body["expires_at"], body

    logins = audit_events(hub, "login")[logins_before:]
    assert sorted(e["user"] for e in logins) == sorted(
        ["rita", "ivan", "sam", "tess", "ada", "audrey"]
    )
    assert all("access_token" not in json.dumps(e) for e in logins)


def refusal_page(page: requests.Response) -> dict[str, Any]:
    """What the hub's error page shows: heading, message, the way forward, whom to ask."""
    text = page.text
    heading = re.search(r"<h1>\s*(.*?)\s*</h1>", text, re.S)
    message = re.search(r'<span class="qustody-refusal">(.*?)</span>', text, re.S)
    retry = re.search(r'<a class="btn btn-primary qustody-retry" href="([^"]*)">(.*?)</a>', text)
    contact = re.search(r'<span class="qustody-contact">(.*?)</span>', text, re.S)
    return {
        "heading": unescape(heading.group(1)) if heading else None,
        "message": unescape(message.group(1)) if message else None,
        "retry": (unescape(retry.group(1)), retry.group(2)) if retry else None,
        "contact": unescape(contact.group(1)) if contact else None,
        "text": text,
    }


def test_user_without_mfa_is_refused_with_a_clear_page(oidc_hub: Any) -> None:
    hub = oidc_hub(extra='c.QustodyAuthenticator.support_contact = "research-it@example.org"\n')
    session = requests.Session()
    page = login(session, hub.url, "nomfa", PASSWORD)
    assert page.status_code == 403
    shown = refusal_page(page)
    assert shown["heading"] == "403 : A second sign-in factor is required"
    assert shown["message"].startswith("Multi-factor authentication is required.")
    # the factors in words, not RFC 8176 codes
    assert "a hardware security key" in shown["message"], shown["message"]
    assert "hwk" not in shown["message"]
    assert shown["text"].count("Multi-factor authentication is required") == 1
    assert shown["retry"] == ("/hub/oauth_login?reauth=1", "Sign in again")
    assert shown["contact"] == "If this keeps happening, ask research-it@example.org."
    assert "Traceback" not in page.text
    assert hub.api("GET", "/users/nomfa")[0] == 404
    assert [e["reason"] for e in audit_events(hub, "mfa-refused")] == ["mfa-missing"]
    # "Sign in again" makes the provider ask again (prompt=login), even with its session
    again = session.get(f"{hub.url.rstrip('/')}{shown['retry'][0]}", allow_redirects=False)
    assert again.status_code == 302
    query = parse_qs(urlsplit(again.headers["Location"]).query)
    assert query["prompt"] == ["login"]
    plain = session.get(f"{hub.url}hub/oauth_login", allow_redirects=False)
    assert "prompt" not in parse_qs(urlsplit(plain.headers["Location"]).query)


def test_user_in_no_mapped_group_is_refused(shared_hub: Any) -> None:
    hub = shared_hub
    page = login(requests.Session(), hub.url, "outsider", PASSWORD)
    assert page.status_code == 403
    shown = refusal_page(page)
    assert shown["heading"] == "403 : Not allowed on this hub"
    assert "not in any group allowed" in shown["message"]
    assert shown["retry"] is None  # signing in again changes nothing: ask someone
    assert shown["contact"] == "If this keeps happening, ask your hub administrator."
    assert hub.api("GET", "/users/outsider")[0] == 404
    assert any(
        e.get("user") == "outsider" and e["reason"] == "no-role"
        for e in audit_events(hub, "login-refused")
    )


def test_stricter_acr_for_admins(oidc_hub: Any, idp: Any) -> None:
    ada, rita = new_user(idp, "ada"), new_user(idp, "rita")
    idp.set_user(ada, acr="urn:qustody:acr:mfa")
    idp.set_user(rita, acr="urn:qustody:acr:mfa")
    hub = oidc_hub(
        extra="""
        c.QustodyAuthenticator.acr_levels = ["urn:qustody:acr:pwd", "urn:qustody:acr:mfa", "urn:qustody:acr:phr"]
        c.QustodyAuthenticator.role_min_acr = {"admin": "urn:qustody:acr:phr"}
    """
    )
    page = login(requests.Session(), hub.url, ada, PASSWORD)
    assert page.status_code == 403 and "stronger sign-in" in page.text
    assert login(requests.Session(), hub.url, rita, PASSWORD).status_code == 200
    idp.set_user(ada, acr="urn:qustody:acr:phr")
    assert login(requests.Session(), hub.url, ada, PASSWORD).status_code == 200
    assert [e["reason"] for e in audit_events(hub, "mfa-refused")] == ["acr-too-low"]


def test_the_mfa_refusal_page_in_chromium_offers_a_way_forward(
    shared_hub: Any, tmp_path: Path
) -> None:
    hub = shared_hub
    shot = tmp_path / "mfa-refused.png"
    out = chromium.drive("refusal_page.mjs", {
        "hub": hub.url, "user": "nomfa", "password": PASSWORD,
        "screenshot": str(shot), "userDataDir": str(tmp_path / "chromium-profile"),
    })
    assert out["status"] == 403
    assert out["heading"] == "403 : A second sign-in factor is required"
    assert "a hardware security key" in out["message"]
    assert out["bodyText"].count("Multi-factor authentication is required") == 1
    assert out["contact"] == "If this keeps happening, ask your hub administrator."
    assert out["retryVisible"] and out["retryLabel"] == "Sign in again"
    # the provider shows its form again instead of answering from its session
    assert "/interaction/" in out["afterRetryUrl"], out["afterRetryUrl"]
    assert shot.stat().st_size > 1000


def test_a_sign_in_loop_without_a_second_factor_raises_alerts(oidc_hub: Any) -> None:
    """A scripted attack on the real provider and hub: the same account signs in again and
    again with only a password. The audit service raises one alert for the account and one
    for the address, each citing the refusals; the hub's admin lowered the threshold."""
    import time

    extra = """
import json
from hub_ext.audit.alerts import AlertRules
for service in c.JupyterHub.services:
    if service["name"] == "audit":
        service["environment"]["QUSTODY_ALERT_RULES"] = json.dumps(
            AlertRules(login_failures=3).settings())
"""
    hub = oidc_hub(extra=extra)
    for _ in range(4):
        assert login(requests.Session(), hub.url, "nomfa", PASSWORD).status_code == 403
    refusals = audit_events(hub, "mfa-refused")
    assert len(refusals) == 4
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        alerts = {a["rule"]: a for a in audit_events(hub, "alert-raised")}
        if {"login-failures-user", "login-failures-ip"} <= set(alerts):
            break
        time.sleep(0.5)
    assert alerts["login-failures-user"]["subject"] == "user:nomfa"
    assert alerts["login-failures-ip"]["subject"] == "ip:127.0.0.1"
    assert len(alerts["login-failures-user"]["evidence"]) == 3
    assert len(audit_events(hub, "alert-raised")) == 2  # the fourth refusal is the same alert
