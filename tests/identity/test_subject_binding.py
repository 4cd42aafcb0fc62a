"""Hub names bound to the provider's subject: a user who renames themselves at the provider
to another user's name is refused, audited, and reaches nothing of the victim's.

The provider's ``sub`` is its account id; ``preferred_username`` (the hub's default
``username_claim``) is changed through its control API, as a user could at an IdP that
lets users edit their user name.

The tests share one provider and one hub; each signs in as users of its own.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from html import unescape
from typing import Any

import pytest
import requests
from identity import test_sessions
from identity.conftest import PASSWORD, new_user
from identity.idp import login
from identity.test_login_flow import audit_events
from identity.test_sessions import auth_state, signed_in, start_server, whoami

pytestmark = pytest.mark.slow

idp = test_sessions.idp  # one provider for the module
quiet_hub = test_sessions.quiet_hub  # one hub for the module, with no sweep


def bindings_cli(hub: Any, *args: str) -> subprocess.CompletedProcess[str]:
    """The admin CLI against the hub's database."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "hub_ext.identity.bindings",
            "--db-url",
            f"sqlite:///{hub.dir}/jupyterhub.sqlite",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def id_claims(id_token: str) -> dict[str, Any]:
    """An ID token's claims (read, not verified: the hub verified it when it stored it)."""
    payload = id_token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def refusals(hub: Any, reason: str) -> list[dict[str, Any]]:
    return [e for e in audit_events(hub, "login-refused") if e["reason"] == reason]


def test_renamed_account_cannot_take_over_another_user(
    quiet_hub: Any, idp: Any
) -> None:
    rita = new_user(idp, "rita")
    sam = new_user(idp, "sam")
    samuel = f"{sam}uel"  # a name nobody has
    hub = quiet_hub
    logins_before = len(audit_events(hub, "login"))  # the module's other tests signed in too
    victim = signed_in(hub, rita)
    start_server(hub, rita)
    before_state = auth_state(hub, rita)
    before_server = hub.api("GET", f"/users/{rita}")[1]["servers"][""]

    # sam (student) renames himself to rita at the provider and signs in
    idp.set_user(sam, preferred_username=rita)
    attacker = requests.Session()
    page = login(attacker, hub.url, sam, PASSWORD)
    assert page.status_code == 403, page.text[:500]
    assert f"is not the one the hub user '{rita}' belongs to" in unescape(page.text)
    assert "Traceback" not in page.text
    assert whoami(hub, attacker).status_code == 403  # no hub session for the attacker
    files = attacker.get(f"{hub.url}user/{rita}/api/contents", timeout=30)
    assert files.status_code == 403 and "content" not in files.text  # her files stay hers
    refused = [e for e in refusals(hub, "subject-mismatch") if e["user"] == rita]
    assert len(refused) == 1 and refused[0]["user"] == rita
    assert f"subject {sam}" in refused[0]["detail"] and refused[0]["idp"] == idp.issuer

    # the victim's session, server, tokens and auth_state are exactly as before
    assert whoami(hub, victim).json()["name"] == rita
    after_server = hub.api("GET", f"/users/{rita}")[1]["servers"][""]
    assert after_server["ready"] and after_server["started"] == before_server["started"]
    after_state = auth_state(hub, rita)
    assert id_claims(after_state["id_token"])["sub"] == rita
    assert after_state["oauth_user"]["sub"] == rita
    if after_state["refresh_token"] != before_state["refresh_token"]:
        # rita's own session may have been refreshed meanwhile (auth_refresh_age = 2 s on a
        # slow runner); that is audited as hers, and sam's login never wrote her state
        assert [e for e in audit_events(hub, "session-refreshed") if e["user"] == rita]
    assert not [e for e in audit_events(hub, "session-ended") if e["user"] == rita]
    assert hub.api("GET", f"/users/{sam}")[0] == 404  # no hub user for the attacker either
    assert [e["user"] for e in audit_events(hub, "login")[logins_before:]] == [rita]

    # sam, back to his own name, is sam; renamed to a free name, he is refused too: one
    # subject is one hub user (a second name would double his quota and split his trail)
    idp.set_user(sam, preferred_username=sam)
    assert login(requests.Session(), hub.url, sam, PASSWORD).status_code == 200
    idp.set_user(sam, preferred_username=samuel)
    page = login(requests.Session(), hub.url, sam, PASSWORD)
    assert page.status_code == 403 and "Traceback" not in page.text
    assert hub.api("GET", f"/users/{samuel}")[0] == 404
    assert refusals(hub, "subject-mismatch")[-1]["detail"] == (
        f"subject {sam} is already the hub user {sam}"
    )

    # the bindings are in the hub's database, where the admin CLI reads them
    listed = bindings_cli(hub, "list")
    assert listed.returncode == 0 and f"{rita}\t" in listed.stdout and f"{sam}\t" in listed.stdout


def test_admin_moves_a_user_to_a_new_account(quiet_hub: Any, idp: Any) -> None:
    """rita's account is re-created at the provider (new subject): refused until an admin
    re-binds; then the old account's live session ends at its next refresh."""
    rita = new_user(idp, "rita")
    rita_new = f"{rita}-new"  # her account, made again at the provider
    hub = quiet_hub
    old = signed_in(hub, rita)
    idp.set_user(
        rita_new,
        password=PASSWORD,
        groups=["qustody-researchers"],
        amr=["pwd", "otp"],
        preferred_username=rita,
    )
    assert login(requests.Session(), hub.url, rita_new, PASSWORD).status_code == 403
    assert f"subject {rita_new}" in refusals(hub, "subject-mismatch")[-1]["detail"]

    missing = bindings_cli(hub, "set", rita, rita_new)
    assert missing.returncode == 2 and "--issuer" in missing.stderr  # a clear usage error
    moved = bindings_cli(hub, "set", rita, rita_new, "--issuer", idp.issuer)
    assert moved.returncode == 0, moved.stderr

    time.sleep(2.5)  # past auth_refresh_age: the old account's session refreshes and ends
    assert whoami(hub, old).status_code == 403
    assert refusals(hub, "subject-mismatch")[-1]["detail"] == (
        f"subject {rita} is not the one bound to this hub user"
    )
    ended = [e for e in audit_events(hub, "session-ended") if e["user"] == rita]
    assert [e["reason"] for e in ended] == ["refresh-failed"]

    new = requests.Session()
    assert login(new, hub.url, rita_new, PASSWORD).status_code == 200
    assert whoami(hub, new).json()["name"] == rita

    # releasing a name that has no binding says so
    result = bindings_cli(hub, "release", "nobody")
    assert result.returncode == 1 and "'nobody' has no binding" in result.stderr


def test_hub_users_older_than_binding_are_not_handed_to_the_first_claimant(
    quiet_hub: Any, idp: Any
) -> None:
    """A hub user with no binding row (as every user of a hub upgraded to subject binding)
    is bound only to the subject its stored session shows; a never-used user an admin
    created is bound at its first sign-in."""
    rita = new_user(idp, "rita")
    sam = new_user(idp, "sam")
    tess = rita.replace("rita", "tess")  # a user an admin makes
    hub = quiet_hub
    signed_in(hub, rita)
    assert bindings_cli(hub, "release", rita).returncode == 0  # as before the upgrade

    idp.set_user(sam, preferred_username=rita)
    page = login(requests.Session(), hub.url, sam, PASSWORD)
    assert page.status_code == 403 and "Traceback" not in page.text
    assert refusals(hub, "subject-mismatch")[-1]["detail"] == (
        f"subject {sam} is not the one that last signed in as this hub user"
    )
    assert f"{rita}\t" not in bindings_cli(hub, "list").stdout  # nothing bound to the attacker

    own = requests.Session()  # rita herself is bound again by her own sign-in
    assert login(own, hub.url, rita, PASSWORD).status_code == 200
    assert whoami(hub, own).json()["name"] == rita
    assert f"{rita}\t" in bindings_cli(hub, "list").stdout

    # an account an admin created and nobody used yet binds at its first sign-in
    idp.set_user(sam, preferred_username=sam)
    assert hub.api("POST", f"/users/{tess}")[0] == 201
    idp.set_user(
        tess, password=PASSWORD, groups=["qustody-researchers"], amr=["pwd", "otp"]
    )
    first = requests.Session()
    assert login(first, hub.url, tess, PASSWORD).status_code == 200
    assert whoami(hub, first).json()["name"] == tess
