"""Start-up refusals and provider outages, with a real hub and the real provider.

The start-up tests share one provider; each outage test stops a provider of its own.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from hub.hubtest import HubError, launch_hub
from identity.conftest import PASSWORD
from identity.idp import login

pytestmark = pytest.mark.slow


def oidc_env(idp: Any, **changes: str) -> dict[str, str]:
    env = {
        "QUSTODY_OIDC_ISSUER": idp.issuer,
        "QUSTODY_OIDC_CLIENT_ID": "hub",
        "QUSTODY_OIDC_CLIENT_SECRET": secrets.token_hex(24),
        "JUPYTERHUB_CRYPT_KEY": secrets.token_hex(32),
        "QUSTODY_SPAWNER": "local",
    }
    env.update(changes)
    return env


@pytest.mark.parametrize(
    ("env_changes", "extra", "message"),
    [
        ({"JUPYTERHUB_CRYPT_KEY": ""}, "", "set JUPYTERHUB_CRYPT_KEY"),
        # defence in depth: the authenticator itself refuses, whatever the config file did
        ({}, "import os\nos.environ.pop('JUPYTERHUB_CRYPT_KEY')\n", "set JUPYTERHUB_CRYPT_KEY"),
        ({"QUSTODY_OIDC_CLIENT_SECRET": ""}, "", "QUSTODY_OIDC_CLIENT_SECRET is missing"),
        ({}, "c.QustodyAuthenticator.group_roles = {'staff': 'superuser'}", "unknown roles"),
        ({}, "c.QustodyAuthenticator.mfa_amr_values = set()", "no MFA requirement"),
        ({}, "c.QustodyAuthenticator.session_max_age = 30 * 86400", "use 300 to 604800 seconds"),
        ({}, "c.QustodyAuthenticator.discovery_ttl = 0", "use 1 to 86400 seconds"),
        ({}, "c.QustodyAuthenticator.login_state_ttl = 5", "use 60 to 3600 seconds"),
    ],
    ids=[
        "no-crypt-key",
        "no-crypt-key-in-authenticator",
        "no-client-secret",
        "bad-role",
        "no-mfa",
        "long-session",
        "no-discovery-cache",
        "short-login-state",
    ],
)
def test_hub_refuses_to_start(
    module_idp: Any, tmp_path: Path, env_changes: dict[str, str], extra: str, message: str
) -> None:
    with pytest.raises(HubError) as refused:
        launch_hub(tmp_path / "hub", extra=extra, env=oidc_env(module_idp, **env_changes),
                   timeout=60)
    assert message in str(refused.value)
    assert "QUSTODY_OIDC_CLIENT_SECRET=" not in str(refused.value)


def test_demo_mode_generates_a_private_crypt_key(module_idp: Any, tmp_path: Path) -> None:
    hub = launch_hub(
        tmp_path / "hub", env=oidc_env(module_idp, JUPYTERHUB_CRYPT_KEY="", QUSTODY_DEMO_MODE="1")
    )
    try:
        assert hub.api("GET", "/")[0] == 200
        key = tmp_path / "hub" / "jupyterhub_crypt_key"
        assert key.stat().st_mode & 0o777 == 0o600 and len(key.read_text()) == 64
        assert key.read_text() not in hub.log()
    finally:
        hub.stop()


@pytest.mark.parametrize("policy", ["logout", "grace"])
def test_provider_down(oidc_hub: Any, idp: Any, tmp_path: Path, policy: str) -> None:
    hub = oidc_hub(
        extra=f"""
c.Authenticator.auth_refresh_age = 2
c.QustodyAuthenticator.sweep_interval = 0
c.QustodyAuthenticator.provider_outage_policy = "{policy}"
c.QustodyAuthenticator.discovery_ttl = 2
"""
    )
    session = requests.Session()
    assert login(session, hub.url, "rita", PASSWORD).status_code == 200
    idp.stop()

    time.sleep(2.5)  # past auth_refresh_age and the discovery document's lifetime
    page = requests.get(f"{hub.url}hub/oauth_login", timeout=30)
    assert page.status_code == 503
    assert "identity provider is not reachable" in page.text and "Traceback" not in page.text
    assert "<h1>503 : Sign-in is unavailable</h1>" in page.text
    assert '<a class="btn btn-primary qustody-retry" href="/hub/oauth_login">Try again</a>' in (
        page.text
    )
    # more visits during the outage: the same page, no new attempt and no new record
    assert {
        requests.get(f"{hub.url}hub/oauth_login", timeout=30).status_code for _ in range(10)
    } == {503}
    audit = hub.dir / "audit" / "audit.jsonl"
    assert audit.read_text().count('"idp-error"') == 1

    status = session.get(f"{hub.url}hub/api/user", timeout=30).status_code
    assert status == (200 if policy == "grace" else 403)
    # an outage is not a revocation: nothing was ended
    assert "session-ended" not in (hub.dir / "audit" / "audit.jsonl").read_text()
