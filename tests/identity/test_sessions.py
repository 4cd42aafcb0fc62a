"""Short sessions and revocation through the real provider and a real hub.

The hub re-validates every ``auth_refresh_age`` seconds with the refresh token (cookie
requests) and in a sweep (users making no requests): a disabled user, a revoked grant or
a user removed from every allowed group loses their session, hub tokens and servers.

The tests share one provider and two hubs (with and without the sweep); each signs in as
users of its own, made at the provider for it.
"""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from identity.conftest import PASSWORD, new_user
from identity.idp import login
from identity.test_login_flow import audit_events

pytestmark = pytest.mark.slow

FAST = """
c.Authenticator.auth_refresh_age = 2
c.QustodyAuthenticator.sweep_interval = 2
c.SimpleLocalProcessSpawner.home_dir_template = "{home}/{{username}}"
"""


NO_SWEEP = FAST + "c.QustodyAuthenticator.sweep_interval = 0\n"


@pytest.fixture
def idp(module_idp: Any) -> Any:
    """One provider for the module; each test signs in as users of its own (new_user)."""
    return module_idp


@pytest.fixture(scope="module")
def fast_hub(module_oidc_hub: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A hub re-validating sessions every 2 s, in requests and in the sweep."""
    return module_oidc_hub(extra=FAST.format(home=tmp_path_factory.mktemp("home")))


@pytest.fixture(scope="module")
def quiet_hub(module_oidc_hub: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A hub re-validating sessions every 2 s in requests, with no sweep."""
    return module_oidc_hub(extra=NO_SWEEP.format(home=tmp_path_factory.mktemp("home")))


def whoami(hub: Any, session: requests.Session) -> requests.Response:
    return session.get(f"{hub.url}hub/api/user", timeout=30)


def signed_in(hub: Any, name: str) -> requests.Session:
    """A client that went through the provider's login into the hub."""
    session = requests.Session()
    assert login(session, hub.url, name, PASSWORD).status_code == 200
    return session


def start_server(hub: Any, name: str) -> None:
    """Start ``name``'s default server (researcher profile) and wait until it is ready."""
    hub.start_server(name, body={"user_options": {"profile": "researcher"}}, timeout=90)


def auth_state(hub: Any, name: str) -> dict[str, Any]:
    status, model = hub.api("GET", f"/users/{name}")
    assert status == 200, model
    return dict(model.get("auth_state") or {})


def test_expired_access_token_is_refreshed(fast_hub: Any, idp: Any) -> None:
    rita = new_user(idp, "rita")
    hub = fast_hub
    session = signed_in(hub, rita)
    before = auth_state(hub, rita)
    assert before["id_token"].count(".") == 2 and before["qustody"]["amr"] == ["pwd", "otp"]
    time.sleep(5)  # the provider's access tokens live 4 s here
    response = whoami(hub, session)
    assert response.status_code == 200 and response.json()["name"] == rita
    after = auth_state(hub, rita)
    assert after["access_token"] != before["access_token"]
    assert after["refresh_token"] != before["refresh_token"]  # rotated
    assert after["qustody"]["login_at"] == before["qustody"]["login_at"]
    assert after["qustody"]["access_expires_at"] > time.time()
    assert any(e["user"] == rita for e in audit_events(hub, "session-refreshed"))


def test_disabled_user_loses_servers_tokens_and_session_without_requests(
    fast_hub: Any, idp: Any
) -> None:
    rita = new_user(idp, "rita")
    hub = fast_hub
    session = signed_in(hub, rita)
    start_server(hub, rita)
    token = hub.user_token(rita)
    assert (
        requests.get(
            f"{hub.api_url}/user", headers={"Authorization": f"token {token}"}, timeout=30
        ).status_code
        == 200
    )

    idp.set_user(rita, disabled=True)
    # no request from rita: the sweep must find it within a refresh interval or two
    hub.wait_for(
        lambda: not hub.api("GET", f"/users/{rita}")[1]["servers"],
        timeout=40,
        what="rita's server stopped by the sweep",
    )
    assert (
        requests.get(
            f"{hub.api_url}/user", headers={"Authorization": f"token {token}"}, timeout=30
        ).status_code
        == 403
    )
    assert whoami(hub, session).status_code == 403  # the browser's cookie is void too
    ended = [e for e in audit_events(hub, "session-ended") if e["user"] == rita]
    assert ended and ended[0]["reason"] == "idp-disabled" and ended[0]["servers_stopped"] == [""]
    assert any(
        e["reason"] == "idp-disabled" and e.get("user") == rita
        for e in audit_events(hub, "token-revoked")
    )
    # and logging in again is refused by the provider itself
    assert "Wrong username or password" in login(requests.Session(), hub.url, rita, PASSWORD).text


def test_revoked_grant_ends_session_at_next_request(
    quiet_hub: Any, idp: Any
) -> None:
    sam = new_user(idp, "sam")
    hub = quiet_hub
    session = signed_in(hub, sam)
    assert idp.revoke(sam) > 0
    time.sleep(2.5)
    assert whoami(hub, session).status_code == 403
    assert [e["reason"] for e in audit_events(hub, "session-ended") if e["user"] == sam] == [
        "idp-disabled"
    ]


def test_group_changes_apply_at_refresh(quiet_hub: Any, idp: Any) -> None:
    ivan = new_user(idp, "ivan")
    hub = quiet_hub
    session = signed_in(hub, ivan)
    assert "instructor-course-101" in hub.api("GET", f"/users/{ivan}")[1]["roles"]

    idp.set_user(ivan, groups=["qustody-researchers"])
    time.sleep(2.5)
    assert whoami(hub, session).status_code == 200
    roles = set(hub.api("GET", f"/users/{ivan}")[1]["roles"])
    assert "researcher" in roles and not {"instructor", "instructor-course-101"} & roles
    assert hub.api("GET", f"/users/{ivan}")[1]["groups"] == []
    changed = [e for e in audit_events(hub, "role-changed") if e["user"] == ivan]
    assert any("instructor-course-101" in e["removed"] for e in changed)

    idp.set_user(ivan, groups=["marketing"])  # no allowed group left
    time.sleep(2.5)
    assert whoami(hub, session).status_code == 403
    assert [e["reason"] for e in audit_events(hub, "session-ended") if e["user"] == ivan] == [
        "group-removed"
    ]


def test_absolute_session_lifetime_ends_the_session(quiet_hub: Any, idp: Any) -> None:
    rita = new_user(idp, "rita")
    hub = quiet_hub
    session = signed_in(hub, rita)
    state = auth_state(hub, rita)
    state["qustody"]["login_at"] -= 9 * 3600  # past the default 8 h session_max_age
    assert hub.api("PATCH", f"/users/{rita}", {"auth_state": state})[0] == 200
    time.sleep(2.5)
    assert whoami(hub, session).status_code == 403
    assert [e["reason"] for e in audit_events(hub, "session-ended") if e["user"] == rita] == [
        "expired"
    ]
    # signing in again starts a new session
    assert login(session, hub.url, rita, PASSWORD).status_code == 200


def test_logout_stops_servers_and_no_token_reaches_logs(
    quiet_hub: Any, idp: Any
) -> None:
    rita = new_user(idp, "rita")
    hub = quiet_hub
    session = signed_in(hub, rita)
    time.sleep(2.5)
    assert whoami(hub, session).status_code == 200  # one refresh, with rotated tokens
    start_server(hub, rita)
    state = auth_state(hub, rita)
    # a link (on another site, or in a shared notebook on this one) asks first: nothing
    # stops, the session goes on
    asked = session.get(f"{hub.url}hub/logout", timeout=60,
                        headers={"Sec-Fetch-Site": "same-origin"})
    assert asked.status_code == 200 and "Sign out of the hub?" in asked.text, asked.text
    assert hub.api("GET", f"/users/{rita}")[1]["servers"]
    assert whoami(hub, session).status_code == 200
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', asked.text)
    assert xsrf, asked.text
    no_token = session.post(f"{hub.url}hub/logout", data={}, timeout=60)
    assert no_token.status_code == 403 and hub.api("GET", f"/users/{rita}")[1]["servers"]
    # the page's own form signs out
    session.post(f"{hub.url}hub/logout", data={"_xsrf": xsrf.group(1)}, timeout=60)
    hub.wait_for(
        lambda: not hub.api("GET", f"/users/{rita}")[1]["servers"],
        timeout=60,
        what="server stopped at logout",
    )
    logs = hub.log() + (hub.dir / "audit" / "audit.jsonl").read_text() + idp.log()
    for secret in (state["access_token"], state["refresh_token"], state["id_token"]):
        assert secret not in logs
    assert hub.api("GET", f"/users/{rita}")[0] == 200


def test_provider_key_rotation_keeps_sessions(quiet_hub: Any, idp: Any) -> None:
    rita = new_user(idp, "rita")
    sam = new_user(idp, "sam")
    hub = quiet_hub
    session = signed_in(hub, rita)
    old_kid = jwt.get_unverified_header(auth_state(hub, rita)["id_token"])["kid"]
    new_kid = idp.rotate_keys()
    time.sleep(11)  # past the hub's JWKS refetch rate limit (10 s) and the refresh age
    assert whoami(hub, session).status_code == 200
    refreshed = auth_state(hub, rita)
    assert jwt.get_unverified_header(refreshed["id_token"])["kid"] == new_kid != old_kid
    assert not [e for e in audit_events(hub, "session-ended") if e["user"] == rita]
    # and a fresh login verifies with the new key too
    assert signed_in(hub, sam).cookies.get("jupyterhub-hub-login")


def test_concurrent_refreshes_keep_the_session(fast_hub: Any, idp: Any) -> None:
    """Requests that all find the session due for a refresh (and the sweep) refresh one
    after another; none may present a refresh token the provider has already rotated,
    or the provider refuses it and the session ends as if the account were disabled."""
    rita = new_user(idp, "rita")
    hub = fast_hub
    session = signed_in(hub, rita)
    for _ in range(4):
        time.sleep(2.5)  # past auth_refresh_age: every request below wants a refresh
        with ThreadPoolExecutor(12) as pool:
            codes = list(pool.map(lambda _: whoami(hub, session).status_code, range(12)))
        assert codes == [200] * 12, codes
    assert not [e for e in audit_events(hub, "session-ended") if e["user"] == rita]
    assert whoami(hub, session).status_code == 200


def test_the_sweep_asks_the_provider_once_per_refresh_age(
    oidc_hub: Any, idp: Any, tmp_path: Path
) -> None:
    """A user with a token but no requests is re-validated by the sweep, every
    ``auth_refresh_age`` and not at every sweep: the sweep reads when the provider last
    vouched for the user from the auth state every refresh writes."""
    rita = new_user(idp, "rita")
    paced = FAST.replace("auth_refresh_age = 2", "auth_refresh_age = 6").replace(
        "sweep_interval = 2", "sweep_interval = 1")
    hub = oidc_hub(extra=paced.format(home=tmp_path))
    signed_in(hub, rita)
    hub.user_token(rita)  # a token, so the sweep looks after rita without a server
    time.sleep(15)  # about 15 sweeps; two or three refresh ages
    refreshed = [e for e in audit_events(hub, "session-refreshed") if e["user"] == rita]
    assert 1 <= len(refreshed) <= 3, [e["expires_at"] for e in refreshed]
