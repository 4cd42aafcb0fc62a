"""Unauthenticated amplification at the login endpoints, against a real hub and provider:
the discovery document is cached, and a replayed OAuth callback is refused without a
provider request and recorded once. The provider counts the requests it serves."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from identity.conftest import PASSWORD
from identity.idp import captured_callback, send_callback
from identity.test_login_flow import audit_events

from hub_ext.identity.login_state import LoginStates, Outcome

DISCOVERY = "/.well-known/openid-configuration"


@pytest.mark.slow
def test_replayed_callback_is_refused_without_asking_the_provider(oidc_hub: Any, idp: Any) -> None:
    hub = oidc_hub()
    url, state_cookie = captured_callback(requests.Session(), hub.url, "rita", PASSWORD)
    first = send_callback(url, state_cookie)
    assert first.status_code == 302 and "jupyterhub-session-id" in first.cookies
    served = idp.served()

    replays = [send_callback(url, state_cookie) for _ in range(20)]
    assert {r.status_code for r in replays} == {400}
    assert "already used or has expired" in replays[0].text
    assert "Traceback" not in replays[0].text
    assert not any("jupyterhub-session-id" in r.cookies for r in replays)
    assert idp.served() == served  # not one request reached the provider
    refused = [e for e in audit_events(hub, "login-refused") if e["reason"] == "state-replayed"]
    assert len(refused) == 1 and refused[0]["idp"] == idp.issuer  # one record for the burst
    assert [e["user"] for e in audit_events(hub, "login")] == ["rita"]

    # a second captured login has its own state: used once, then refused and recorded once
    url2, cookie2 = captured_callback(requests.Session(), hub.url, "sam", PASSWORD)
    assert send_callback(url2, cookie2).status_code == 302
    assert {send_callback(url2, cookie2).status_code for _ in range(5)} == {400}
    refused = [e for e in audit_events(hub, "login-refused") if e["reason"] == "state-replayed"]
    assert len(refused) == 2


@pytest.mark.slow
def test_login_page_reuses_the_discovery_document(oidc_hub: Any, idp: Any) -> None:
    hub = oidc_hub()

    def visit(_: int) -> int:
        page = requests.get(f"{hub.url}hub/oauth_login", allow_redirects=False, timeout=30)
        return page.status_code

    with ThreadPoolExecutor(8) as pool:  # concurrent first visits share one fetch
        assert set(pool.map(visit, range(16))) == {302}
    assert {visit(i) for i in range(30)} == {302}
    assert idp.served().get(DISCOVERY) == 1


def test_login_states_are_single_use_and_reported_once_per_period() -> None:
    states = LoginStates(ttl=600)
    now = 1_000_000.0
    assert states.consume("a", now - 10, now) is Outcome.FRESH
    assert states.consume("a", now - 10, now + 1) is Outcome.REPLAYED
    assert states.consume("b", now - 601, now) is Outcome.EXPIRED
    assert states.consume("c", now + 60, now) is Outcome.EXPIRED  # issued in the future
    assert states.consume("d", "yesterday", now) is Outcome.EXPIRED
    assert states.consume("e", None, now) is Outcome.EXPIRED
    assert states.first_refusal("a", now) and not states.first_refusal("a", now + 599)
    assert states.first_refusal("a", now + 601)  # a new period, a new record
    # a used state is remembered as long as it could be accepted
    assert states.consume("a", now - 10, now + 589) is Outcome.REPLAYED
    assert states.consume("a", now - 10, now + 591) is Outcome.EXPIRED

    small = LoginStates(ttl=600, max_entries=3)
    for name in "wxyz":
        assert small.consume(name, now, now) is Outcome.FRESH
    assert small.consume("z", now, now) is Outcome.REPLAYED  # the newest are kept
