"""The QPU gateway's provider credentials from Vault KV v2 (``SecretStoreCredentials`` with
``store='vault'``), read with the gateway's own token or AppRole, against a real OpenBao."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from localjwt import Vault
from ports import free_port

from hub_ext.qpu.credentials import CredentialError
from hub_ext.qpu.secret_source import SecretStoreCredentials

TOKEN = "ibm-runtime-token-from-vault-5e6f7a8b9c"
ROTATED = "ibm-runtime-token-rotated-1a2b3c4d5e"
PATH = "qustody/service/qpu/ibm_brisbane"
ACL = 'path "secret/data/qustody/service/qpu/*" { capabilities = ["read"] }\n'


def put(vault: Vault, path: str, fields: dict[str, object]) -> None:
    vault.root_client().secrets.kv.v2.create_or_update_secret(
        path=path, secret=fields, mount_point="secret"
    )


def gateway_token(vault: Vault, prefix: str = "secret/data/qustody/service/qpu/") -> str:
    """A token that may read ``prefix`` only, as an operator would give the gateway."""
    name = "qpu-" + os.urandom(3).hex()
    vault.root_client().sys.create_or_update_policy(
        name, f'path "{prefix}*" {{ capabilities = ["read"] }}\n'
    )
    return str(vault.root_client().auth.token.create(policies=[name])["auth"]["client_token"])


def source(
    vault: Vault, tmp_path: Path, token: str, file: str = "gateway.token", **traits: object
) -> SecretStoreCredentials:
    f = tmp_path / file
    f.write_text(token + "\n")
    f.chmod(0o600)
    settings = {"store": "vault", "vault_url": vault.url, "vault_token_file": str(f), **traits}
    return SecretStoreCredentials(**settings)


def test_fields_are_read_fresh_with_the_gateways_token(vault: Vault, tmp_path: Path) -> None:
    put(vault, PATH, {"token": TOKEN, "instance": "crn:v1:bluemix:public:qc:us-east"})
    creds = source(vault, tmp_path, gateway_token(vault))
    assert dict(creds("ibm_brisbane")) == {
        "token": TOKEN, "instance": "crn:v1:bluemix:public:qc:us-east",
    }
    put(vault, PATH, {"token": ROTATED, "instance": "crn:v1:bluemix:public:qc:us-east"})
    assert creds("ibm_brisbane")["token"] == ROTATED  # a new version, no restart
    # a renewed gateway token written to the file is used at the next call
    (tmp_path / "gateway.token").write_text(gateway_token(vault))
    assert creds("ibm_brisbane")["token"] == ROTATED


def test_missing_denied_unreachable_and_malformed_name_the_place_not_a_value(
    vault: Vault, tmp_path: Path
) -> None:
    put(vault, PATH, {"token": TOKEN})
    creds = source(vault, tmp_path, gateway_token(vault))
    with pytest.raises(CredentialError) as e:
        creds("braket_sv1")
    assert str(e.value) == (
        "backend 'braket_sv1' has no provider credentials: Vault "
        "secret/qustody/service/qpu/braket_sv1 does not exist; an admin adds them with "
        "`qustody secrets qpu put braket_sv1`"
    )
    other = source(vault, tmp_path, gateway_token(vault, "secret/data/qustody/other/"), "other")
    with pytest.raises(CredentialError, match="permission denied") as denied:
        other("ibm_brisbane")
    assert "secret/qustody/service/qpu/ibm_brisbane" in str(denied.value)
    closed = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(Exception, match=r"SecretStoreCredentials\.vault_url must be https"):
        source(vault, tmp_path, "x", "x", vault_url="http://vault.example.org:8200")
    with pytest.raises(CredentialError, match="cannot be reached") as unreachable:
        source(vault, tmp_path, "x", "x", vault_url=closed, vault_timeout=2)("ibm_brisbane")
    put(vault, PATH, {"token": TOKEN, "region": "eu"})
    with pytest.raises(CredentialError, match="field region: the value is shorter") as short:
        creds("ibm_brisbane")
    put(vault, PATH, {"token": TOKEN, "retries": 3})
    with pytest.raises(CredentialError, match="must hold fields of text") as typed:
        creds("ibm_brisbane")
    (tmp_path / "gateway.token").unlink()
    with pytest.raises(CredentialError, match=r"cannot read SecretStoreCredentials\.vault_token"):
        creds("ibm_brisbane")
    for err in (e, denied, unreachable, short, typed):
        assert TOKEN not in str(err.value)


def test_deleting_the_vault_secret_fails_the_next_call(vault: Vault, tmp_path: Path) -> None:
    put(vault, PATH, {"token": TOKEN})
    creds = source(vault, tmp_path, gateway_token(vault))
    assert creds("ibm_brisbane")["token"] == TOKEN
    vault.root_client().secrets.kv.v2.delete_metadata_and_all_versions(
        path=PATH, mount_point="secret"
    )
    with pytest.raises(CredentialError, match="backend 'ibm_brisbane' has no provider"):
        creds("ibm_brisbane")


def test_the_gateway_logs_in_with_approle(vault: Vault, tmp_path: Path) -> None:
    put(vault, PATH, {"token": TOKEN})
    root = vault.root_client()
    root.sys.create_or_update_policy("qustody-qpu", ACL)
    root.write_data("auth/approle/role/qustody-qpu", data={"token_policies": ["qustody-qpu"]})
    role_id = root.auth.approle.read_role_id("qustody-qpu")["data"]["role_id"]
    secret_id = tmp_path / "secret-id"
    secret_id.write_text(root.auth.approle.generate_secret_id("qustody-qpu")["data"]["secret_id"])
    secret_id.chmod(0o644)
    creds = SecretStoreCredentials(
        store="vault", vault_url=vault.url, vault_approle_role_id=role_id,
        vault_approle_secret_id_file=str(secret_id),
    )
    with pytest.raises(CredentialError, match="may be read by every user of this machine"):
        creds("ibm_brisbane")  # it logs in as the gateway
    secret_id.chmod(0o600)
    assert creds("ibm_brisbane")["token"] == TOKEN
    assert creds("ibm_brisbane")["token"] == TOKEN  # the login is kept between calls


def test_a_vault_source_needs_a_login() -> None:
    with pytest.raises(ValueError, match="give the gateway a Vault login"):
        SecretStoreCredentials(store="vault", vault_url="http://127.0.0.1:1",
                               vault_token_file="")
    with pytest.raises(ValueError, match="vault_url is not set"):
        SecretStoreCredentials(store="vault", vault_token_file="/x")
    with pytest.raises(Exception, match="must be 'hub', 'vault' or 'embedded'"):
        SecretStoreCredentials(store="s3")
