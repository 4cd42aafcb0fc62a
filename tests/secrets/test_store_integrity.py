"""The embedded store against a database writer without the key: the SQLite file is
tampered with directly (relabelled class, rolled-back version, replayed, forged or
deleted rows and grants, a whole-file rollback) and every read must refuse, naming what
was altered, with an audit callback. Format 1 stores need an explicit migration."""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from hub_ext.secrets.cli import main as secrets_cli
from hub_ext.secrets.embedded import EmbeddedStore, StoreTampered
from hub_ext.secrets.model import SecretError
from hub_ext.secrets.tickets import TicketSigner

#: The key the hub would sign tickets with; ``issue`` is the hub's side of a spawn.
TICKET_KEY = b"k" * 32


def issue(user: str, server: str, token: str, profile: str, roles: tuple[str, ...]) -> str:
    return TicketSigner(TICKET_KEY, 30).issue(user, server, token, profile, roles)[0]


KEY = bytes(range(32))
PROD = "prod-ibm-token-0123456789abcdef"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "s.sqlite"


@pytest.fixture
def events() -> list[tuple[str, str]]:
    return []


@pytest.fixture
def store(db_path: Path, events: list[tuple[str, str]]) -> Any:
    s = EmbeddedStore(str(db_path), KEY, on_tamper=lambda path, what: events.append((path, what)))
    s.put("user:alice", "PROD_TOKEN", "prod", PROD.encode())
    s.put("user:alice", "SANDBOX_KEY", "sandbox", b"sandbox-key-0000001")
    s.put("project:qaoa", "SHARED_DEV", "dev", b"shared-dev-value-01")
    s.grant("project:qaoa", ["alice"])
    yield s
    s.close()


def sql(path: Path, *statements: str, args: tuple[Any, ...] = ()) -> list[Any]:
    """Write to the file as an attacker with database access (no key) would."""
    db = sqlite3.connect(path)
    rows: list[Any] = []
    for statement in statements:
        rows = db.execute(statement, args if "?" in statement else ()).fetchall()
    db.commit()
    db.close()
    return rows


def refused(store: Any, match: str) -> None:
    for read in (
        lambda: store.secrets_for("alice"),
        lambda: store.current("user:alice", "SANDBOX_KEY"),
        lambda: store.entries(),
        lambda: store.grants(),
    ):
        with pytest.raises(StoreTampered, match=match) as e:
            read()
        assert "restores it from a backup" in str(e.value)
    with pytest.raises(StoreTampered):  # writes refuse too: they would sign the forgery
        store.put("user:alice", "NEW_TOKEN", "dev", b"new-token-value-1")


def test_untouched_store_reads(store: Any, events: list[tuple[str, str]]) -> None:
    assert {(s.name, s.cls) for s in store.secrets_for("alice")} == {
        ("PROD_TOKEN", "prod"), ("SANDBOX_KEY", "sandbox"), ("SHARED_DEV", "dev"),
    }
    assert events == []


def test_relabelling_prod_as_sandbox_is_refused(
    store: Any, db_path: Path, events: list[tuple[str, str]]
) -> None:
    sql(db_path, "UPDATE secrets SET class='sandbox' WHERE name='PROD_TOKEN'")
    refused(store, "the row of user:alice/PROD_TOKEN does not match its MAC")
    assert events and events[0] == (str(db_path), "the row of user:alice/PROD_TOKEN does not match its MAC")
    assert all(PROD not in what for _, what in events)


def test_relabelling_with_another_rows_mac_is_refused(store: Any, db_path: Path) -> None:
    sql(
        db_path,
        "UPDATE secrets SET class='sandbox', mac=(SELECT mac FROM secrets WHERE "
        "name='SANDBOX_KEY') WHERE name='PROD_TOKEN'",
    )
    refused(store, "PROD_TOKEN does not match its MAC")


def test_the_class_is_bound_into_the_ciphertext(store: Any, db_path: Path) -> None:
    """Even a row whose MAC checks cannot carry another class's value: the sandbox row
    is given the prod row's ciphertext (same version number)."""
    sql(
        db_path,
        "UPDATE versions SET nonce=(SELECT nonce FROM versions WHERE secret_id=1), "
        "sealed=(SELECT sealed FROM versions WHERE secret_id=1) WHERE secret_id=2",
    )
    with pytest.raises(StoreTampered, match="SANDBOX_KEY v1 does not decrypt as class sandbox"):
        store.secrets_for("alice")


def test_rolling_back_to_an_older_version_is_refused(store: Any, db_path: Path) -> None:
    store.rotate("user:alice", "PROD_TOKEN", b"prod-ibm-token-rotated-2")
    store.rotate("user:alice", "PROD_TOKEN", b"prod-ibm-token-rotated-3")
    sql(db_path, "UPDATE secrets SET current=1 WHERE name='PROD_TOKEN'")
    refused(store, "PROD_TOKEN does not match its MAC")


def test_replaying_an_older_copy_of_a_row_is_refused(store: Any, db_path: Path) -> None:
    [old] = sql(db_path, "SELECT current, mac, updated FROM secrets WHERE name='PROD_TOKEN'")
    store.rotate("user:alice", "PROD_TOKEN", b"prod-ibm-token-rotated-2")
    # the old row, with its own genuine MAC: each row on its own still checks
    sql(
        db_path,
        "UPDATE secrets SET current=?, mac=?, updated=? WHERE name='PROD_TOKEN'",
        args=tuple(old),
    )
    refused(store, "replaced by older copies")


def test_a_forged_grant_is_refused(store: Any, db_path: Path) -> None:
    sql(db_path, "INSERT INTO grants VALUES ('project', 'qaoa', 'mallory', NULL)")
    with pytest.raises(StoreTampered, match="grant of project:qaoa to mallory is not genuine"):
        store.secrets_for("mallory")
    # nor with a genuine grant's MAC copied over
    sql(
        db_path,
        "UPDATE grants SET mac=(SELECT mac FROM grants WHERE user='alice') WHERE user='mallory'",
    )
    refused(store, "grant of project:qaoa to mallory is not genuine")


def test_deleting_a_grant_or_a_secret_row_is_refused(store: Any, db_path: Path) -> None:
    sql(db_path, "DELETE FROM grants WHERE user='alice'")
    refused(store, "rows were added, deleted")


def test_a_whole_file_rollback_is_refused_while_the_hub_runs(
    store: Any, db_path: Path, tmp_path: Path
) -> None:
    sql(db_path, "PRAGMA wal_checkpoint(TRUNCATE)")
    shutil.copy(db_path, tmp_path / "old.sqlite")
    store.rotate("user:alice", "PROD_TOKEN", b"prod-ibm-token-rotated-2")
    old = sqlite3.connect(tmp_path / "old.sqlite")
    live = sqlite3.connect(db_path)
    old.backup(live)  # the file's whole content, meta and head included, from before
    old.close()
    live.close()
    with pytest.raises(StoreTampered, match="rolled back to generation"):
        store.secrets_for("alice")


def test_the_read_only_reader_refuses_too(store: Any, db_path: Path) -> None:
    sql(db_path, "UPDATE secrets SET class='dev' WHERE name='SANDBOX_KEY'")
    reader = EmbeddedStore(str(db_path), KEY, read_only=True)
    try:
        with pytest.raises(StoreTampered):
            reader.current("user:alice", "SANDBOX_KEY")
    finally:
        reader.close()


# -- format 1 stores -------------------------------------------------------------------

V1_SCHEMA = """
CREATE TABLE meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE secrets (id INTEGER PRIMARY KEY, ns_kind TEXT NOT NULL, ns_name TEXT NOT NULL,
    name TEXT NOT NULL, class TEXT NOT NULL, current INTEGER NOT NULL, revoked_at REAL,
    updated REAL NOT NULL, UNIQUE (ns_kind, ns_name, name));
CREATE TABLE versions (secret_id INTEGER NOT NULL REFERENCES secrets(id),
    version INTEGER NOT NULL, nonce BLOB NOT NULL, sealed BLOB NOT NULL, created REAL NOT NULL,
    PRIMARY KEY (secret_id, version));
CREATE TABLE grants (ns_kind TEXT NOT NULL, ns_name TEXT NOT NULL, user TEXT NOT NULL,
    PRIMARY KEY (ns_kind, ns_name, user));
"""


def write_format_1(path: Path) -> None:
    """A store as the previous release wrote it (no class in the AAD, no MACs)."""
    import hashlib

    db = sqlite3.connect(path)
    db.executescript(V1_SCHEMA)
    key_id = hashlib.sha256(b"qustody-key-id|" + KEY).hexdigest()[:16]
    db.execute("INSERT INTO meta VALUES ('key_id', ?)", (key_id,))
    aes = AESGCM(KEY)
    for sid, (ns, name, cls, value) in enumerate(
        [("user:alice", "PROD_TOKEN", "prod", PROD), ("project:qaoa", "SHARED_DEV", "dev",
                                                      "shared-dev-value-01")],
        start=1,
    ):
        kind, ns_name = ns.split(":")
        db.execute(
            "INSERT INTO secrets VALUES (?, ?, ?, ?, ?, 1, NULL, 0)", (sid, kind, ns_name, name, cls)
        )
        nonce = os.urandom(12)
        sealed = aes.encrypt(nonce, value.encode(), f"qustody-secret/1|{ns}|{name}|1".encode())
        db.execute("INSERT INTO versions VALUES (?, 1, ?, ?, 0)", (sid, nonce, sealed))
    db.execute("INSERT INTO grants VALUES ('project', 'qaoa', 'alice')")
    db.commit()
    db.close()


def test_a_format_1_store_is_refused_until_migrated_explicitly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "old.sqlite"
    write_format_1(path)
    with pytest.raises(SecretError, match=r"format 1.*qustody secrets migrate"):
        EmbeddedStore(str(path), KEY)
    with pytest.raises(SecretError, match="format 1"):
        EmbeddedStore(str(path), KEY, read_only=True)
    key_file = tmp_path / "key"
    key_file.write_text(__import__("base64").b64encode(KEY).decode())
    key_file.chmod(0o600)
    args = ["--db", str(path), "--key-file", str(key_file), "migrate"]
    assert secrets_cli(args) == 0
    assert "2 values re-sealed" in capsys.readouterr().out
    store = EmbeddedStore(str(path), KEY)
    try:
        assert {(s.name, s.cls, s.value) for s in store.secrets_for("alice")} == {
            ("PROD_TOKEN", "prod", PROD), ("SHARED_DEV", "dev", "shared-dev-value-01"),
        }
        sql(path, "UPDATE secrets SET class='sandbox' WHERE name='PROD_TOKEN'")
        with pytest.raises(StoreTampered):  # migrated rows are protected like new ones
            store.secrets_for("alice")
    finally:
        store.close()
    assert secrets_cli(args) == 2
    assert "already in format 2" in capsys.readouterr().err


def test_migration_refuses_a_store_already_altered(tmp_path: Path) -> None:
    from hub_ext.secrets.embedded import migrate

    path = tmp_path / "old.sqlite"
    write_format_1(path)
    sql(path, "UPDATE secrets SET name='OTHER' WHERE name='PROD_TOKEN'")
    with pytest.raises(SecretError, match="does not decrypt: the store was altered"):
        migrate(str(path), KEY)
    with pytest.raises(SecretError, match="format 1"):  # nothing was half-migrated
        EmbeddedStore(str(path), KEY)


def test_the_hub_records_the_tampering_in_its_audit_log(tmp_path: Path) -> None:
    import json

    from traitlets.config import Config

    from hub_ext.audit.hub import hub_audit, reset_hub_audit
    from hub_ext.secrets.delivery import SecretDelivery

    c = Config()
    c.AuditLog.path = str(tmp_path / "audit" / "audit.jsonl")
    c.AuditLog.key_file = str(tmp_path / "audit.key")
    c.AuditLog.create_key_file = True
    c.SecretBroker.db_path = str(tmp_path / "s.sqlite")
    c.SecretBroker.master_key_file = str(tmp_path / "s.key")
    c.SecretBroker.create_master_key = True
    c.SecretClassPolicy.profile_classes = {"researcher": ["*"]}
    c.SecretClassPolicy.role_classes = {"researcher": ["*"]}
    reset_hub_audit()
    hub_audit(c)
    try:
        d = SecretDelivery(c, ["researcher"], ticket_key=TICKET_KEY)
        d.broker.put("user:alice", "PROD_TOKEN", "prod", PROD.encode())  # type: ignore[attr-defined]
        sql(tmp_path / "s.sqlite", "UPDATE secrets SET class='sandbox'")
        text = issue("alice", "", "tok", "researcher", ("researcher",))
        with pytest.raises(StoreTampered):
            d.redeem(text, "alice", "", "tok", None, ("researcher",))
    finally:
        reset_hub_audit()
    log = (tmp_path / "audit" / "audit.jsonl").read_text()
    records = [json.loads(line) for line in log.splitlines() if line.strip()]
    [event] = [r for r in records if r["type"] == "secret-store-tampered"]
    assert event["data"] == {
        "store": str(tmp_path / "s.sqlite"),
        "detail": "the row of user:alice/PROD_TOKEN does not match its MAC",
    }
    assert PROD not in log
