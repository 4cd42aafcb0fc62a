"""The QPU gateway's provider credentials in the embedded store: put with
``qustody secrets qpu``, read fresh at each call by the hub's ``SecretStoreCredentials``
(``store='embedded'``: read-only, with the master key; the hub answers them to the
gateway, tests/qpu/test_secret_store_credentials_hub.py), never granted to users, and
every error names the backend and the place looked at, never a value."""

from __future__ import annotations

import base64
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from traitlets.config import Config

from hub_ext.qpu.credentials import REDACTED, CredentialBroker, CredentialError
from hub_ext.qpu.secret_source import (
    SecretStoreCredentials,
    gateway_settings,
    hub_reader_settings,
)
from hub_ext.secrets.embedded import EmbeddedStore
from hub_ext.secrets.masterkey import load_master_key
from hub_ext.secrets.model import SecretError
from hub_ext.secrets.provider import parse_fields
from hub_ext.secrets.vault import VaultBroker

TOKEN = "ibm-runtime-token-7c1d9e0f2a3b4c5d6e7f"
ROTATED = "ibm-runtime-token-rotated-0a1b2c3d4e5f"
INSTANCE = "crn:v1:bluemix:public:quantum-computing:us-east:a/1234::"


def cli(state: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server_ext.cli", "secrets", *args],
        input=stdin, capture_output=True, text=True, timeout=60,
        env={"QUSTODY_STATE_DIR": str(state), "PATH": "/usr/bin:/bin"},
    )


def source(state: Path) -> SecretStoreCredentials:
    return SecretStoreCredentials(
        store="embedded", db_path=str(state / "secrets.sqlite"),
        master_key_file=str(state / "secrets.key"),
    )


@pytest.fixture
def state(tmp_path: Path) -> Path:
    out = cli(tmp_path, "qpu", "put", "ibm_brisbane",
              stdin=f"token={TOKEN}\n# the service instance\ninstance={INSTANCE}\n")
    assert out.returncode == 0, out.stderr
    assert "service:qpu/ibm_brisbane: version 1 stored (fields: instance, token)" in out.stdout
    return tmp_path


def no_value(*texts: str) -> None:
    for text in texts:
        for value in (TOKEN, ROTATED, INSTANCE):
            assert value not in text


def test_put_then_read_then_rotate_is_seen_at_the_next_call(state: Path) -> None:
    creds = source(state)
    assert dict(creds("ibm_brisbane")) == {"token": TOKEN, "instance": INSTANCE}
    out = cli(state, "qpu", "put", "ibm_brisbane", "--field", "token", stdin=ROTATED + "\n")
    assert out.returncode == 0 and "version 2" in out.stdout, out.stderr
    assert dict(creds("ibm_brisbane")) == {"token": ROTATED, "instance": INSTANCE}
    f = state / "creds.env"
    f.write_text(f"token={TOKEN}\n")
    assert cli(state, "qpu", "put", "ibm_brisbane", "--file", str(f)).returncode == 0
    assert dict(creds("ibm_brisbane")) == {"token": TOKEN}  # without --field: replaced
    listing = cli(state, "qpu", "list")
    assert "ibm_brisbane" in listing.stdout and "token" in listing.stdout
    assert " 3  active" in listing.stdout
    no_value(out.stdout, out.stderr, listing.stdout, listing.stderr)


def test_a_missing_entry_names_the_backend_and_the_place_never_a_value(state: Path) -> None:
    creds = source(state)
    with pytest.raises(CredentialError) as missing:
        creds("braket_sv1")
    message = str(missing.value)
    assert "backend 'braket_sv1' has no provider credentials" in message
    assert f"service:qpu/braket_sv1 in the secret store {state / 'secrets.sqlite'}" in message
    assert "qustody secrets qpu put braket_sv1" in message
    gone = cli(state, "qpu", "delete", "ibm_brisbane", "--field", "instance")
    assert gone.returncode == 0 and "field instance removed" in gone.stdout
    assert dict(creds("ibm_brisbane")) == {"token": TOKEN}
    gone = cli(state, "qpu", "delete", "ibm_brisbane")
    assert gone.returncode == 0 and "deleted" in gone.stdout
    with pytest.raises(CredentialError, match="backend 'ibm_brisbane' has no provider") as e:
        creds("ibm_brisbane")
    assert "deleted" in cli(state, "qpu", "list", "ibm_brisbane").stdout
    no_value(str(e.value), gone.stdout)


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("other key", "master key does not match the secret store"),
        ("key readable by others", "is readable by others: chmod 600"),
        ("no key file", "secrets.key does not exist"),
        ("no store", "secrets.sqlite does not exist"),
        ("not a database", "secrets.sqlite cannot be read"),
    ],
)
def test_an_unreadable_store_fails_closed_with_the_reason(
    state: Path, breakage: str, message: str
) -> None:
    key, db = state / "secrets.key", state / "secrets.sqlite"
    if breakage == "other key":
        key.write_text(base64.b64encode(os.urandom(32)).decode())
    elif breakage == "key readable by others":
        key.chmod(0o644)
    elif breakage == "no key file":
        key.unlink()
    elif breakage == "no store":
        for p in state.glob("secrets.sqlite*"):
            p.unlink()
    else:
        for p in state.glob("secrets.sqlite*"):
            p.unlink()
        db.write_bytes(b"this is not an SQLite database at all" * 100)
    with pytest.raises(CredentialError) as e:
        source(state)("ibm_brisbane")
    assert "provider credentials for backend 'ibm_brisbane' are unavailable" in str(e.value)
    assert message in str(e.value)
    no_value(str(e.value))


def test_the_gateway_opens_the_store_read_only(state: Path) -> None:
    key = load_master_key(str(state / "secrets.key"), "", create=False)
    store = EmbeddedStore(str(state / "secrets.sqlite"), key, read_only=True)
    try:
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            store.put("service:qpu", "ibm_brisbane", "provider", b"token=overwritten-by-gateway")
    finally:
        store.close()
    assert dict(source(state)("ibm_brisbane"))["token"] == TOKEN


def test_provider_credentials_are_never_given_to_users(state: Path) -> None:
    key = load_master_key(str(state / "secrets.key"), "", create=False)
    store = EmbeddedStore(str(state / "secrets.sqlite"), key)
    try:
        with pytest.raises(SecretError, match="belongs to a hub service"):
            store.grant("service:qpu", ["alice"])
        store.put("user:alice", "OWN_TOKEN", "dev", b"alice-own-token-123")
        assert [s.name for s in store.secrets_for("alice")] == ["OWN_TOKEN"]
    finally:
        store.close()
    out = cli(state, "grant", "service:qpu", "alice")
    assert out.returncode == 2 and "belongs to a hub service" in out.stderr
    out = cli(state, "put", "service:qpu", "ibm_brisbane", "--class", "dev", stdin=ROTATED)
    assert out.returncode == 2 and "use `qustody secrets qpu put`" in out.stderr
    c = Config()
    c.VaultBroker.url = "http://127.0.0.1:1"
    c.VaultBroker.namespaces = ["user:{username}", "service:qpu"]
    with pytest.raises(ValueError, match="belongs to a hub service"):
        VaultBroker(config=c)


ALICE = "alice-own-provider-token-9f8e7d6c5b4a"


@pytest.mark.parametrize(
    "backend",
    ["ALICE_KEY", "../user:alice/ALICE_KEY", "user:alice/ALICE_KEY", "alice/ALICE_KEY",
     "ibm_brisbane/../../user/alice/ALICE_KEY", "user:alice", ".ALICE_KEY", "ALICE_KEY\0",
     "ALICE_KEY%2f..", ""],
)
def test_the_gateways_source_cannot_read_a_users_secret(state: Path, backend: str) -> None:
    """alice keeps a provider token of her own; every name the gateway could be asked for
    resolves inside service:qpu or is refused, and no answer or error carries her value."""
    key = load_master_key(str(state / "secrets.key"), "", create=False)
    store = EmbeddedStore(str(state / "secrets.sqlite"), key)
    try:
        store.put("user:alice", "ALICE_KEY", "dev", ALICE.encode())
    finally:
        store.close()
    with pytest.raises(CredentialError) as e:
        CredentialBroker(source(state))(backend)
    assert ALICE not in str(e.value)
    assert "service:qpu" in str(e.value) or "unavailable" in str(e.value)


def test_a_users_row_relabelled_into_service_qpu_is_refused_not_served(state: Path) -> None:
    """A database writer (no master key) moves alice's secret into service:qpu under a
    backend's name: the value was sealed for user:alice, so it fails to open there."""
    key = load_master_key(str(state / "secrets.key"), "", create=False)
    store = EmbeddedStore(str(state / "secrets.sqlite"), key)
    try:
        store.put("user:alice", "ALICE_KEY", "dev", f"token={ALICE}".encode())
    finally:
        store.close()
    db = sqlite3.connect(state / "secrets.sqlite")
    with db:
        db.execute("DELETE FROM versions WHERE secret_id IN (SELECT id FROM secrets WHERE "
                   "ns_kind='service' AND name='ibm_brisbane')")
        db.execute("DELETE FROM secrets WHERE ns_kind='service' AND name='ibm_brisbane'")
        db.execute("UPDATE secrets SET ns_kind='service', ns_name='qpu', name='ibm_brisbane', "
                   "class='provider' WHERE ns_kind='user' AND name='ALICE_KEY'")
    db.close()
    with pytest.raises(CredentialError) as e:
        CredentialBroker(source(state))("ibm_brisbane")
    assert ALICE not in str(e.value) and "ibm_brisbane" in str(e.value)


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (("qpu", "put", "ibm_brisbane"), f"token {TOKEN}\n", "the input: line 1 is not field=value"),
        (("qpu", "put", "ibm_brisbane"), f"token={TOKEN}\ntoken={ROTATED}\n", "given twice"),
        (("qpu", "put", "ibm_brisbane"), "token=\n", "field token has an empty value"),
        (("qpu", "put", "ibm_brisbane"), "\n# nothing\n", "holds no field=value line"),
        (("qpu", "put", "ibm_brisbane", "--field", "bad-name"), TOKEN, "not a field name"),
        (("qpu", "put", "../etc"), f"token={TOKEN}\n", "not an entry name in service:qpu"),
        (("qpu", "put", "ibm_brisbane", "--field", "token"), "short", "field token: the value is shorter"),
        (("qpu", "delete", "nope"), "", "no secret nope in service:qpu"),
        (("qpu", "delete", "ibm_brisbane", "--field", "region"), "", "has no field region"),
    ],
)
def test_bad_cli_input_exits_2_with_a_message_and_no_value(
    state: Path, args: tuple[str, ...], stdin: str, message: str
) -> None:
    out = cli(state, *args, stdin=stdin)
    assert out.returncode == 2, out
    assert message in out.stderr and "Traceback" not in out.stderr
    no_value(out.stdout, out.stderr)
    assert dict(source(state)("ibm_brisbane"))["token"] == TOKEN  # nothing was lost


def test_help_says_values_come_from_stdin_or_a_file(tmp_path: Path) -> None:
    out = cli(tmp_path, "qpu", "put", "--help")
    assert out.returncode == 0
    text = " ".join(out.stdout.split())
    assert "field=value lines" in text and "--file" in text and "standard input" in text
    top = cli(tmp_path, "qpu", "--help")
    assert "never the command line" in " ".join(top.stdout.split())
    assert not (tmp_path / "secrets.sqlite").exists()  # --help touches no store


def test_a_source_error_reaches_the_job_scrubbed_and_other_errors_say_only_their_type() -> None:
    def flaky(backend: str) -> dict[str, str]:
        if backend == "ok":
            return {"token": TOKEN}
        if backend == "quoting":
            raise CredentialError(f"backend {backend!r}: the store rejected {TOKEN}")
        raise RuntimeError(f"boom {TOKEN}")

    broker = CredentialBroker(flaky)
    assert broker("ok")["token"] == TOKEN
    with pytest.raises(CredentialError) as e:
        broker("quoting")
    assert str(e.value) == f"backend 'quoting': the store rejected {REDACTED}"
    with pytest.raises(CredentialError) as e:
        broker("other")
    assert str(e.value) == "the credential source failed for backend 'other' (RuntimeError)"


def test_parse_fields_never_quotes_a_line() -> None:
    with pytest.raises(SecretError) as e:
        parse_fields(f"token={TOKEN}\n{ROTATED}\n", "creds.env")
    assert str(e.value).startswith("creds.env: line 2 is not field=value")
    no_value(str(e.value))


def test_gateway_settings_follow_the_hubs_broker(tmp_path: Path) -> None:
    c = Config()
    c.SecretBroker.db_path = str(tmp_path / "s.sqlite")
    c.SecretBroker.master_key_file = str(tmp_path / "k")
    # the gateway asks the hub: neither the master key's file nor its variable
    assert gateway_settings(c) == {"store": "hub"}
    assert hub_reader_settings(c) == {
        "store": "embedded", "db_path": str(tmp_path / "s.sqlite"),
        "master_key_file": str(tmp_path / "k"), "master_key_env": "QUSTODY_SECRETS_MASTER_KEY",
    }
    c.SecretStoreCredentials.store = "embedded"
    with pytest.raises(ValueError, match="would give the QPU gateway the hub's master key"):
        gateway_settings(c)
    del c.SecretStoreCredentials["store"]
    c.SecretBroker.backend = "vault"
    c.VaultBroker.url = "https://vault.example.org:8200"
    with pytest.raises(ValueError, match="give the gateway a Vault login"):
        gateway_settings(c)
    c.SecretStoreCredentials.vault_token_file = str(tmp_path / "gateway.token")
    assert hub_reader_settings(c) is None
    assert gateway_settings(c) == {
        "store": "vault", "vault_url": "https://vault.example.org:8200", "vault_ca_file": "",
        "vault_kv_mount": "secret", "vault_base_path": "qustody",
        "vault_token_file": str(tmp_path / "gateway.token"),
    }


@pytest.mark.parametrize("how", ["embedded source", "key in the environment"])
def test_the_gateway_refuses_to_start_holding_the_master_key(
    state: Path, tmp_path: Path, how: str
) -> None:
    """The gateway decodes hostile QPY from every user: it must not hold the key that
    decrypts their secrets, whichever way an operator tries to give it."""
    config = tmp_path / "gateway_config.py"
    text = ("c = get_config()  # noqa\n"
            "c.QpuGateway.hub_api_url = 'http://127.0.0.1:1/hub/api'\n"
            f"c.QpuGateway.policy_file = {str(tmp_path / 'policy.toml')!r}\n"
            "c.QpuGateway.audit_log = False\n")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    if how == "embedded source":
        text += ("from hub_ext.qpu.secret_source import SecretStoreCredentials\n"
                 "c.QpuGateway.credentials = SecretStoreCredentials(store='embedded', "
                 f"db_path={str(state / 'secrets.sqlite')!r}, "
                 f"master_key_file={str(state / 'secrets.key')!r})\n")
        message = "master key, which decrypts every user's secret"
    else:
        env["QUSTODY_SECRETS_MASTER_KEY"] = (state / "secrets.key").read_text().strip()
        message = "environment holds QUSTODY_SECRETS_MASTER_KEY"
    config.write_text(text)
    out = subprocess.run([sys.executable, "-m", "hub_ext.qpu", f"--config={config}"],
                         capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 2, out
    assert message in out.stderr + out.stdout
    no_value(out.stderr, out.stdout)
    assert env.get("QUSTODY_SECRETS_MASTER_KEY", "\0") not in out.stderr + out.stdout
