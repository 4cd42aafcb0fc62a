"""Floods of the login endpoints, against a real hub and the real provider: one address
over its login bucket gets 429 with Retry-After (a readable page, or JSON), no OAuth state
and no provider request; other addresses still sign in; the address signs in again once
its bucket refills; the refusals are audited once per address and period.

Clients connect to the proxy from their own loopback addresses (127.0.0.x); the proxy on
127.0.0.1 (a trusted proxy) adds them to X-Forwarded-For, as it would a remote client's.
"""

from __future__ import annotations

import secrets
import time
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from identity.conftest import PASSWORD
from identity.idp import login
from identity.test_login_flow import audit_events
from requests.adapters import HTTPAdapter

pytestmark = pytest.mark.slow
BURST = 6
RATE = 0.2  # a token every 5 s: a quick flood cannot be refilled during it
LIMITS = f"""
c.RequestLimits.login_burst = {BURST}
c.RequestLimits.login_rate = {RATE}
c.RequestLimits.refusal_delay = 0
c.RequestLimits.login_audit_every = 3600
from hub_ext.ratelimit import setup_limits
setup_limits(c)
"""


class FromAddress(HTTPAdapter):
    """Connections from a chosen loopback address (a distinct client)."""

    def __init__(self, source: str) -> None:
        self.source = source
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["source_address"] = (self.source, 0)
        super().init_poolmanager(*args, **kwargs)


def client(source: str) -> requests.Session:
    session = requests.Session()
    session.mount("http://", FromAddress(source))
    return session


def oauth_login(session: requests.Session, hub: Any, **headers: str) -> requests.Response:
    return session.get(
        f"{hub.url}hub/oauth_login", allow_redirects=False, headers=headers, timeout=30
    )


def signed_in(page: requests.Response, session: requests.Session) -> bool:
    return page.status_code == 200 and bool(
        session.cookies.get("jupyterhub-session-id") or session.cookies.get("jupyterhub-hub-login")
    )


def rate_limited(hub: Any, ip: str) -> list[dict[str, Any]]:
    return [
        e
        for e in audit_events(hub, "login-refused")
        if e["reason"] == "rate-limited" and e.get("ip") == ip
    ]


def test_a_login_flood_is_refused_per_address_and_others_still_sign_in(oidc_hub: Any) -> None:
    hub = oidc_hub(extra=LIMITS)
    flooder = client("127.0.0.2")
    flood = [oauth_login(flooder, hub) for _ in range(BURST + 20)]
    assert [r.status_code for r in flood[:BURST]] == [302] * BURST  # the burst passes
    refused = [r for r in flood if r.status_code == 429]
    assert refused, [r.status_code for r in flood]
    for response in refused:
        assert int(response.headers["Retry-After"]) >= 1
        assert "oauthenticator-state" not in response.headers.get("Set-Cookie", "")  # no state
        assert "Location" not in response.headers  # not sent to the provider
    page = refused[0].text
    assert "Too many sign-in attempts from your network address (127.0.0.2)" in page
    assert "Traceback" not in page and "<html" in page.lower()
    as_json = oauth_login(flooder, hub, Accept="application/json")
    assert as_json.status_code == 429 and int(as_json.headers["Retry-After"]) >= 1
    assert "Too many sign-in attempts" in as_json.json()["message"]

    # another address signs in during the flood
    other = client("127.0.0.3")
    page3 = login(other, hub.url, "rita", PASSWORD)
    assert signed_in(page3, other), page3.text[:500]
    assert [e.get("ip") for e in audit_events(hub, "login")] == ["127.0.0.3"]

    # the flood is one audit record and one log line, not one per request
    records = rate_limited(hub, "127.0.0.2")
    assert len(records) == 1, records
    assert records[0]["detail"].startswith("1 sign-in request(s) from this address refused")
    assert hub.log().count("login requests from 127.0.0.2 refused") == 1

    # once its bucket refills (a token per 1/RATE s; a login takes two) the address signs in
    time.sleep(2 / RATE + 1)
    page2 = login(flooder, hub.url, "sam", PASSWORD)
    assert signed_in(page2, flooder), page2.text[:500]
    assert [e.get("ip") for e in audit_events(hub, "login")] == ["127.0.0.3", "127.0.0.2"]


def fresh_state(session: requests.Session, hub: Any) -> tuple[str, str]:
    """A login state the hub issued (the state URL parameter and its signed cookie)."""
    start = oauth_login(session, hub)
    assert start.status_code == 302, start.text[:300]
    state = parse_qs(urlsplit(start.headers["Location"]).query)["state"][0]
    return state, session.cookies["oauthenticator-state"]


def callback(session: requests.Session, hub: Any, state: str = "", cookie: str = "") -> Any:
    query = urlencode({"code": secrets.token_urlsafe(24), **({"state": state} if state else {})})
    return session.get(
        f"{hub.url}hub/oauth_callback?{query}",
        cookies={"oauthenticator-state": cookie} if cookie else {},
        allow_redirects=False,
        timeout=30,
    )


def test_a_callback_flood_never_reaches_the_providers_token_endpoint(
    oidc_hub: Any, idp: Any
) -> None:
    hub = oidc_hub(extra=LIMITS)
    token_path = urlsplit(
        requests.get(f"{idp.issuer}/.well-known/openid-configuration", timeout=10).json()[
            "token_endpoint"
        ]
    ).path
    # login states the hub issued to a browser elsewhere: with a made-up code, each would
    # cost a token exchange with the provider
    states = [fresh_state(client("127.0.0.5"), hub) for _ in range(4)]

    flooder = client("127.0.0.4")
    flood = [callback(flooder, hub) for _ in range(BURST + 10)]  # no state: refused at once
    codes = [r.status_code for r in flood]
    assert codes[:BURST] == [400] * BURST and 429 in codes, codes
    served = idp.served().get(token_path, 0)
    with_state = [callback(flooder, hub, state, cookie) for state, cookie in states]
    assert 429 in [r.status_code for r in with_state]
    assert all("Traceback" not in r.text for r in with_state)
    # not one refused callback reached the provider
    reached = sum(r.status_code != 429 for r in with_state)
    assert idp.served().get(token_path, 0) == served + reached
    # what a refused callback would have cost: the same state from an address with room
    state, cookie = states[-1]
    control = callback(client("127.0.0.6"), hub, state, cookie)
    assert control.status_code == 403 and "refused the sign-in code" in control.text
    assert idp.served().get(token_path, 0) == served + reached + 1

    # one rate-limit record for the whole flood
    assert len(rate_limited(hub, "127.0.0.4")) == 1
