"""The embedded broker: encryption at rest, versions, rotation, revocation, namespaces."""

from __future__ import annotations

import base64
import os
import sqlite3
from pathlib import Path

import pytest

from hub_ext.secrets.embedded import EmbeddedStore
from hub_ext.secrets.masterkey import load_master_key
from hub_ext.secrets.model import SecretError

KEY = bytes(range(32))
VALUE = "ibmq-token-9f8e7d6c5b4a39281706"


@pytest.fixture
def store(tmp_path: Path) -> EmbeddedStore:
    s = EmbeddedStore(str(tmp_path / "s.sqlite"), KEY)
    yield s
    s.close()


def raw_bytes(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


def test_values_are_encrypted_at_rest(store: EmbeddedStore, tmp_path: Path) -> None:
    store.put("user:alice", "QISKIT_IBM_TOKEN", "hardware", VALUE.encode())
    store.close()
    data = raw_bytes(tmp_path / "s.sqlite")
    assert b"QISKIT_IBM_TOKEN" in data  # names are metadata, in clear
    for form in (VALUE.encode(), base64.b64encode(VALUE.encode()), VALUE.encode().hex().encode()):
        assert form not in data
    assert oct(os.stat(tmp_path / "s.sqlite").st_mode & 0o777) == "0o600"


def test_wrong_master_key_is_refused_clearly(store: EmbeddedStore, tmp_path: Path) -> None:
    store.put("user:alice", "A_TOKEN", "dev", VALUE.encode())
    with pytest.raises(SecretError, match="master key does not match"):
        EmbeddedStore(str(tmp_path / "s.sqlite"), bytes(32))


def test_a_ciphertext_moved_to_another_secret_does_not_open(
    store: EmbeddedStore, tmp_path: Path
) -> None:
    store.put("user:alice", "A_TOKEN", "dev", VALUE.encode())
    store.put("user:bob", "B_TOKEN", "dev", b"bobs-own-value-123")
    db = sqlite3.connect(tmp_path / "s.sqlite")
    db.execute(
        "UPDATE versions SET nonce=(SELECT nonce FROM versions WHERE secret_id=1), "
        "sealed=(SELECT sealed FROM versions WHERE secret_id=1) WHERE secret_id=2"
    )
    db.commit()
    db.close()
    with pytest.raises(SecretError, match="does not decrypt"):
        store.secrets_for("bob")


def test_rotation_serves_the_new_version_only(store: EmbeddedStore) -> None:
    assert store.put("user:alice", "A_TOKEN", "dev", VALUE.encode()) == 1
    assert store.rotate("user:alice", "A_TOKEN", b"rotated-value-0001\n") == 2
    [s] = store.secrets_for("alice")
    assert (s.value, s.version, s.cls) == ("rotated-value-0001", 2, "dev")
    assert VALUE not in repr(s)


def test_revocation_stops_serving_and_wipes_values(store: EmbeddedStore, tmp_path: Path) -> None:
    store.put("user:alice", "A_TOKEN", "dev", VALUE.encode())
    store.put("user:alice", "B_TOKEN", "dev", b"another-value-42")
    store.revoke("user:alice", "A_TOKEN")
    assert [s.name for s in store.secrets_for("alice")] == ["B_TOKEN"]
    [info] = [i for i in store.entries("user:alice") if i.name == "A_TOKEN"]
    assert info.revoked
    db = sqlite3.connect(tmp_path / "s.sqlite")
    assert db.execute("SELECT count(*) FROM versions WHERE secret_id=1").fetchone()[0] == 0
    db.close()
    # putting it again brings it back with a new version
    store.put("user:alice", "A_TOKEN", "dev", b"fresh-value-0002")
    assert {s.name for s in store.secrets_for("alice")} == {"A_TOKEN", "B_TOKEN"}


def test_revocation_leaves_no_ciphertext_in_the_files(store: EmbeddedStore,
                                                      tmp_path: Path) -> None:
    """The doc says revoke wipes the stored versions: no ciphertext of them stays in the
    database's free pages or its write-ahead log (which still open with the master key)."""
    store.put("user:alice", "T", "sandbox", b"value-to-be-wiped-0001")
    store.rotate("user:alice", "T", b"value-to-be-wiped-0002")
    db = sqlite3.connect(tmp_path / "s.sqlite")
    blobs = [bytes(r[0]) for r in db.execute("SELECT sealed FROM versions")]
    db.close()
    assert len(blobs) == 2 and all(len(b) >= 24 for b in blobs)
    store.revoke("user:alice", "T")
    stored = raw_bytes(tmp_path / "s.sqlite")
    for blob in blobs:
        assert blob[-24:] not in stored


def test_namespaces_and_grants(store: EmbeddedStore) -> None:
    store.put("user:alice", "OWN", "dev", b"alice-own-value")
    store.put("user:bob", "OWN", "dev", b"bobs-own-value!")
    store.put("project:qaoa", "SHARED", "dev", b"project-value-1")
    store.put("project:qaoa", "OWN", "dev", b"project-own-val")
    store.put("course:qc101", "COURSE", "sandbox", b"course-value-01")
    assert {s.name: s.value for s in store.secrets_for("alice")} == {"OWN": "alice-own-value"}
    store.grant("project:qaoa", ["alice"])
    store.grant("course:qc101", ["alice", "bob"])
    got = {s.name: (s.value, str(s.namespace)) for s in store.secrets_for("alice")}
    # the user's own namespace wins over a project's secret of the same name
    assert got == {
        "OWN": ("alice-own-value", "user:alice"),
        "SHARED": ("project-value-1", "project:qaoa"),
        "COURSE": ("course-value-01", "course:qc101"),
    }
    assert {s.name for s in store.secrets_for("bob")} == {"OWN", "COURSE"}
    store.grant("project:qaoa", ["alice"], revoke=True)
    assert "SHARED" not in {s.name for s in store.secrets_for("alice")}
    with pytest.raises(SecretError, match="belong to their user"):
        store.grant("user:bob", ["alice"])


@pytest.mark.parametrize(
    ("namespace", "name", "cls", "value", "message"),
    [
        ("alice", "X_TOKEN", "dev", b"long-enough-value", "not a namespace"),
        ("team:x", "X_TOKEN", "dev", b"long-enough-value", "not a namespace"),
        ("user:alice", "1BAD", "dev", b"long-enough-value", "not a secret name"),
        ("user:alice", "a/b", "dev", b"long-enough-value", "not a secret name"),
        ("user:alice", "X_TOKEN", "Prod!", b"long-enough-value", "not a secret class"),
        ("user:alice", "X_TOKEN", "dev", b"short", "shorter than 8 bytes"),
        ("user:alice", "X_TOKEN", "dev", b"\xff\xfe-not-utf8-at-all", "not UTF-8"),
        ("user:alice", "X_TOKEN", "dev", b"x" * (64 * 1024 + 1), "at most 65,536 bytes"),
    ],
)
def test_bad_inputs_are_refused_with_a_clear_message(
    store: EmbeddedStore, namespace: str, name: str, cls: str, value: bytes, message: str
) -> None:
    with pytest.raises(SecretError, match=message) as e:
        store.put(namespace, name, cls, value)
    assert "long-enough-value" not in str(e.value)
    assert store.entries() == []


def test_unknown_secret_for_rotate_and_revoke(store: EmbeddedStore) -> None:
    with pytest.raises(SecretError, match="no secret NOPE in user:alice"):
        store.rotate("user:alice", "NOPE", b"some-new-value")
    with pytest.raises(SecretError, match="no secret NOPE"):
        store.revoke("user:alice", "NOPE")


def test_master_key_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "k"
    with pytest.raises(SecretError, match="does not exist"):
        load_master_key(str(path), "QK_TEST", create=False)
    key = load_master_key(str(path), "QK_TEST", create=True)
    assert len(key) == 32 and oct(path.stat().st_mode & 0o777) == "0o600"
    assert load_master_key(str(path), "QK_TEST", create=False) == key
    path.chmod(0o644)
    with pytest.raises(SecretError, match="readable by others"):
        load_master_key(str(path), "QK_TEST", create=False)
    monkeypatch.setenv("QK_TEST", base64.b64encode(KEY).decode())
    assert load_master_key(str(path), "QK_TEST", create=False) == KEY
    monkeypatch.setenv("QK_TEST", "not base64!")
    with pytest.raises(SecretError, match="not base64"):
        load_master_key(str(path), "QK_TEST", create=False)
    monkeypatch.setenv("QK_TEST", base64.b64encode(b"short").decode())
    with pytest.raises(SecretError, match="32 bytes"):
        load_master_key(str(path), "QK_TEST", create=False)
