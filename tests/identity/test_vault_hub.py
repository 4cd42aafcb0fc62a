"""Secrets from a real OpenBao through a real hub: ``SecretBroker.backend = "vault"``.

The JWT auth method of a real OpenBao trusts the real OpenID provider (its discovery
document and JWKS); each user logs in through the provider, and the hub logs in to
OpenBao with *that user's* ID token, so OpenBao's templated policy decides what each
server receives. Delivery, rotation, revocation and isolation between users are checked
from real kernels, and the user's OpenBao token must die with the server, whether the
hub stops it or it stops by itself.
"""

from __future__ import annotations

import os
import secrets
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from hub.hubtest import failed
from hub.kernelws import Kernel
from hvac import exceptions as vault_errors
from identity.conftest import PASSWORD, USERS
from identity.idp import Idp, IdpError, login, start_idp
from openbao import OpenBao, OpenBaoError, provision_qustody, put, start_openbao

pytestmark = pytest.mark.slow

CLIENT_ID = "hub-0"  # the first hub oidc_hub starts registers this client


@pytest.fixture
def idp(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Idp]:
    """The provider, with ID tokens that outlive a slow server start (the hub logs in to
    OpenBao with the ID token when the server redeems its ticket)."""
    try:
        provider = start_idp(USERS, workdir=tmp_path / "idp", ttl={"IdToken": 600})
    except IdpError as e:
        pytest.fail(str(e))
    yield provider
    provider.stop()
    if failed(request):
        print("---- provider log ----\n" + provider.log()[-4000:])


@pytest.fixture
def bao(idp: Idp, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[OpenBao]:
    try:
        server = start_openbao(tmp_path / "openbao")
    except OpenBaoError as e:
        pytest.fail(str(e))
    try:
        provision_qustody(server, {"oidc_discovery_url": idp.issuer}, CLIENT_ID)
        yield server
    finally:
        server.stop()
        if failed(request):
            print(f"\n===== OpenBao log =====\n{server.log()[-8000:]}")


def vault_tokens(bao: OpenBao, user: str) -> list[str]:
    """Accessors of live tokens OpenBao issued to ``user`` through JWT login."""
    root = bao.client()
    try:
        accessors = root.list("auth/token/accessors")["data"]["keys"]
    except vault_errors.InvalidPath:
        return []
    out = []
    for accessor in accessors:
        try:
            info = root.auth.token.lookup_accessor(accessor)["data"]
        except (vault_errors.Forbidden, vault_errors.InvalidRequest):
            continue  # revoked meanwhile
        if info.get("path") == "auth/jwt/login" and info.get("display_name") == f"jwt-{user}":
            out.append(accessor)
    return out


def signed_in(hub: Any, name: str) -> requests.Session:
    session = requests.Session()
    assert login(session, hub.url, name, PASSWORD).status_code == 200
    return session


def test_users_get_their_own_vault_secrets_rotated_revoked_and_released(
    oidc_hub: Any, idp: Idp, bao: OpenBao, tmp_path: Path
) -> None:
    values = {
        k: f"qv-{k.lower()}-{secrets.token_hex(12)}"
        for k in ("RITA_PROD", "RITA_SANDBOX", "RITA_NEW", "SAM_SANDBOX", "SAM_PROD")
    }
    put(bao, "qustody/user/rita/RITA_PROD", values["RITA_PROD"], "prod")
    put(bao, "qustody/user/rita/RITA_SANDBOX", values["RITA_SANDBOX"], "sandbox")
    put(bao, "qustody/user/sam/SAM_SANDBOX", values["SAM_SANDBOX"], "sandbox")
    put(bao, "qustody/user/sam/SAM_PROD", values["SAM_PROD"], "prod")
    hub = oidc_hub(
        extra=f"""
import os
from hub_ext.server_api.hub import server_api
from hub_ext.wiring import apply
c.SimpleLocalProcessSpawner.home_dir_template = "{tmp_path}/home/{{username}}"
c.Spawner.poll_interval = 1
c.Spawner.http_timeout = 240  # a busy test machine starts servers slowly
c.SecretBroker.ticket_ttl = 60
c.SecretBroker.backend = "vault"
c.VaultBroker.url = "{bao.url}"
# the hub tries every user's namespace for everyone: only OpenBao's policy stands between
c.VaultBroker.namespaces = ["user:{{username}}", "user:rita", "user:sam"]
apply(c, server_api(c, os.environ["QUSTODY_STATE_DIR"], profiles=list(c.SpawnPolicy.profiles)))
""",
        timeout=180,  # four services start with it on a shared, busy machine
    )
    signed_in(hub, "rita")
    signed_in(hub, "sam")
    hub.start_server("rita", body={"user_options": {"profile": "researcher"}}, timeout=300)
    hub.start_server("sam", body={"user_options": {"profile": "student"}}, timeout=300)
    rita = Kernel(f"{hub.url}user/rita/", hub.user_token("rita"))
    sam = Kernel(f"{hub.url}user/sam/", hub.user_token("sam"))

    # each server holds exactly its user's secrets (the student profile: sandbox only)
    assert rita.run("from server_ext.secrets import *; print(list_secrets())").strip() == (
        "['RITA_PROD', 'RITA_SANDBOX']"
    )
    assert sam.run("from server_ext.secrets import *; print(list_secrets())").strip() == (
        "['SAM_SANDBOX']"
    )
    assert rita.run(
        f"print(get_secret('RITA_PROD') == {values['RITA_PROD']!r})"
    ).strip() == "True"
    assert len(vault_tokens(bao, "rita")) == 1 and len(vault_tokens(bao, "sam")) == 1

    # sam's own ID token opens only sam's paths in OpenBao, whatever sam asks for
    status, model = hub.api("GET", "/users/sam")
    assert status == 200, model
    client = bao.client(token="")
    client.auth.jwt.jwt_login(role="qustody-user", jwt=model["auth_state"]["id_token"])
    kv = client.secrets.kv.v2
    assert kv.read_secret_version(
        path="qustody/user/sam/SAM_PROD", mount_point="secret", raise_on_deleted_version=True
    )
    for attempt in (
        lambda: kv.read_secret_version(
            path="qustody/user/rita/RITA_PROD", mount_point="secret", raise_on_deleted_version=True
        ),
        lambda: kv.list_secrets(path="qustody/user/rita", mount_point="secret"),
    ):
        with pytest.raises(vault_errors.Forbidden):
            attempt()
    client.auth.token.revoke_self()

    # rotation and revocation in OpenBao reach rita's running server on refresh()
    put(bao, "qustody/user/rita/RITA_SANDBOX", values["RITA_NEW"], "sandbox")
    bao.client().secrets.kv.v2.delete_metadata_and_all_versions(
        path="qustody/user/rita/RITA_PROD", mount_point="secret"
    )
    out = rita.run(
        "print(refresh())\n"
        f"print(get_secret('RITA_SANDBOX') == {values['RITA_NEW']!r})\n"
        "try:\n    get_secret('RITA_PROD')\nexcept KeyError:\n    print('revoked')\n"
    )
    assert out.splitlines() == ["['RITA_SANDBOX']", "True", "revoked"]

    # a server that stops by itself (here: killed) loses its OpenBao token
    status, model = hub.api("GET", "/users/rita")
    pid = int(model["servers"][""]["state"]["pid"])
    os.kill(pid, signal.SIGKILL)
    hub.wait_for(lambda: not vault_tokens(bao, "rita"), timeout=60, what="rita's token revoked")
    hub.wait_for(
        lambda: not hub.api("GET", "/users/rita")[1]["servers"], timeout=60, what="rita gone"
    )
    assert len(vault_tokens(bao, "sam")) == 1  # sam's server and token are untouched

    # a server the hub stops loses its token too
    code, _ = hub.api("DELETE", "/users/sam/server")
    assert code in (202, 204)
    hub.wait_for(lambda: not vault_tokens(bao, "sam"), timeout=60, what="sam's token revoked")

    text = hub.log() + (hub.dir / "audit" / "audit.jsonl").read_text()
    for value in values.values():
        assert value not in text
    delivered = [line for line in text.splitlines() if "secret-delivered" in line]
    assert delivered and "SAM_PROD" not in "".join(delivered)
