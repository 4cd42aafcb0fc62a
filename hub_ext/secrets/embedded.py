"""The embedded broker: secrets encrypted with AES-GCM in one SQLite file.

Each version's value is sealed with the master key, a random 96-bit nonce and, as
associated data, the namespace, name and version it belongs to, so a ciphertext moved
to another row (or another secret) fails to open. The file holds no value in clear;
the master key never enters it (only a key id, to say "wrong key" clearly).
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .model import (
    SERVICE_KINDS,
    Namespace,
    Secret,
    SecretError,
    SecretInfo,
    check_class,
    check_name,
    check_value,
    parse_namespace,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS secrets (
    id INTEGER PRIMARY KEY,
    ns_kind TEXT NOT NULL, ns_name TEXT NOT NULL, name TEXT NOT NULL,
    class TEXT NOT NULL, current INTEGER NOT NULL,
    revoked_at REAL, updated REAL NOT NULL,
    UNIQUE (ns_kind, ns_name, name)
);
CREATE TABLE IF NOT EXISTS versions (
    secret_id INTEGER NOT NULL REFERENCES secrets(id),
    version INTEGER NOT NULL, nonce BLOB NOT NULL, sealed BLOB NOT NULL, created REAL NOT NULL,
    PRIMARY KEY (secret_id, version)
);
CREATE TABLE IF NOT EXISTS grants (
    ns_kind TEXT NOT NULL, ns_name TEXT NOT NULL, user TEXT NOT NULL,
    PRIMARY KEY (ns_kind, ns_name, user)
);
"""
#: Most recent versions kept per secret (older ones are wiped at rotation).
KEEP_VERSIONS = 5


def _aad(ns: Namespace, name: str, version: int) -> bytes:
    return f"qustody-secret/1|{ns}|{name}|{version}".encode()


class EmbeddedStore:
    """Encrypted secrets in SQLite. Thread-safe; one writer at a time (SQLite's lock)."""

    broker_name = "embedded"

    def __init__(self, path: str, master_key: bytes, read_only: bool = False) -> None:
        self.path = path
        self._aes = AESGCM(master_key)
        self._key_id = hashlib.sha256(b"qustody-key-id|" + master_key).hexdigest()[:16]
        self._lock = threading.Lock()
        if read_only:
            self._db = _open_read_only(path)
            row = self._db.execute("SELECT v FROM meta WHERE k='key_id'").fetchone()
            if row is None or row[0] != self._key_id:
                self._db.close()
                raise SecretError(
                    f"the master key does not match the secret store {path}: give the hub's "
                    "master key file"
                )
            return
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        new = not os.path.exists(path)
        if new:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        row = self._db.execute("SELECT v FROM meta WHERE k='key_id'").fetchone()
        if row is None:
            self._db.execute("INSERT INTO meta VALUES ('key_id', ?)", (self._key_id,))
        elif row[0] != self._key_id:
            raise SecretError(
                f"the master key does not match the secret store {path} (it was created "
                "with another key): restore the original key file"
            )

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _seal(self, ns: Namespace, name: str, version: int, value: str) -> tuple[bytes, bytes]:
        nonce = os.urandom(12)
        return nonce, self._aes.encrypt(nonce, value.encode(), _aad(ns, name, version))

    def _open(self, ns: Namespace, name: str, version: int, nonce: bytes, sealed: bytes) -> str:
        try:
            return self._aes.decrypt(nonce, sealed, _aad(ns, name, version)).decode()
        except InvalidTag:
            raise SecretError(
                f"{ns}/{name} v{version} does not decrypt: the store was altered"
            ) from None

    # -- admin -------------------------------------------------------------------------

    def put(self, namespace: str, name: str, cls: str, value: bytes) -> int:
        """Store a new secret, or a new version of one (rotation). Returns the version."""
        ns = parse_namespace(namespace)
        check_name(name, ns)
        check_class(cls)
        text = check_value(value)
        now = time.time()
        with self._tx() as db:
            row = db.execute(
                "SELECT id, current, class FROM secrets WHERE ns_kind=? AND ns_name=? AND name=?",
                (ns.kind, ns.name, name),
            ).fetchone()
            if row is None:
                cur = db.execute(
                    "INSERT INTO secrets (ns_kind, ns_name, name, class, current, updated) "
                    "VALUES (?, ?, ?, ?, 1, ?)",
                    (ns.kind, ns.name, name, cls, now),
                )
                sid, version = int(cur.lastrowid or 0), 1
            else:
                sid, version = int(row[0]), int(row[1]) + 1
                db.execute(
                    "UPDATE secrets SET current=?, class=?, revoked_at=NULL, updated=? WHERE id=?",
                    (version, cls, now, sid),
                )
            nonce, sealed = self._seal(ns, name, version, text)
            db.execute(
                "INSERT INTO versions VALUES (?, ?, ?, ?, ?)", (sid, version, nonce, sealed, now)
            )
            db.execute(
                "DELETE FROM versions WHERE secret_id=? AND version<=?",
                (sid, version - KEEP_VERSIONS),
            )
        return version

    def rotate(self, namespace: str, name: str, value: bytes) -> int:
        """A new version of an existing secret (same class); the old one stops being served."""
        ns = parse_namespace(namespace)
        info = self._info(ns, check_name(name, ns))
        return self.put(namespace, name, info.cls, value)

    def revoke(self, namespace: str, name: str) -> None:
        """Stop serving the secret at once and wipe every stored version."""
        ns = parse_namespace(namespace)
        self._info(ns, check_name(name, ns))  # SecretError if there is no such secret
        now = time.time()
        with self._tx() as db:
            db.execute(
                "UPDATE secrets SET revoked_at=?, updated=? "
                "WHERE ns_kind=? AND ns_name=? AND name=?",
                (now, now, ns.kind, ns.name, name),
            )
            db.execute(
                "DELETE FROM versions WHERE secret_id=(SELECT id FROM secrets "
                "WHERE ns_kind=? AND ns_name=? AND name=?)",
                (ns.kind, ns.name, name),
            )

    def grant(self, namespace: str, users: Iterable[str], revoke: bool = False) -> None:
        """Give users (or take from them) the secrets of a project or course namespace."""
        ns = parse_namespace(namespace)
        if ns.kind == "user":
            raise SecretError("user namespaces belong to their user: grant project: or course:")
        if ns.kind in SERVICE_KINDS:
            raise SecretError(f"{ns} belongs to a hub service and is never given to users")
        with self._tx() as db:
            for user in users:
                if revoke:
                    db.execute(
                        "DELETE FROM grants WHERE ns_kind=? AND ns_name=? AND user=?",
                        (ns.kind, ns.name, user),
                    )
                else:
                    db.execute(
                        "INSERT OR IGNORE INTO grants VALUES (?, ?, ?)", (ns.kind, ns.name, user)
                    )

    def entries(self, namespace: str | None = None) -> list[SecretInfo]:
        query = "SELECT ns_kind, ns_name, name, class, current, revoked_at, updated FROM secrets"
        args: tuple[str, ...] = ()
        if namespace:
            ns = parse_namespace(namespace)
            query += " WHERE ns_kind=? AND ns_name=?"
            args = (ns.kind, ns.name)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY ns_kind, ns_name, name", args).fetchall()
        return [
            SecretInfo(Namespace(r[0], r[1]), r[2], r[3], int(r[4]), r[5] is not None, r[6])
            for r in rows
        ]

    def grants(self) -> list[tuple[str, str]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT ns_kind || ':' || ns_name, user FROM grants ORDER BY 1, 2"
            ).fetchall()
        return [(str(r[0]), str(r[1])) for r in rows]

    def current(self, namespace: str, name: str) -> Secret | None:
        """The current version of one unrevoked secret, or None."""
        ns = parse_namespace(namespace)
        check_name(name, ns)
        with self._lock:
            row = self._db.execute(
                "SELECT s.class, s.current, v.nonce, v.sealed FROM secrets s "
                "JOIN versions v ON v.secret_id=s.id AND v.version=s.current "
                "WHERE s.ns_kind=? AND s.ns_name=? AND s.name=? AND s.revoked_at IS NULL",
                (ns.kind, ns.name, name),
            ).fetchone()
        if row is None:
            return None
        cls, version, nonce, sealed = row
        value = self._open(ns, name, int(version), nonce, sealed)
        return Secret(ns, name, cls, int(version), value)

    def _info(self, ns: Namespace, name: str) -> SecretInfo:
        for info in self.entries(str(ns)):
            if info.name == name:
                return info
        raise SecretError(f"no secret {name} in {ns}: `qustody secrets list` shows what exists")

    # -- delivery (the Broker interface) -----------------------------------------------

    def secrets_for_spawn(
        self, user: str, server: str, auth_state: dict[str, Any] | None
    ) -> list[Secret]:
        return self.secrets_for(user)

    def release(self, user: str, server: str) -> None:
        """Nothing to revoke: the embedded store hands out no tokens or leases."""

    def namespaces_of(self, user: str) -> list[Namespace]:
        """The user's own namespace, then the project and course namespaces granted to them."""
        with self._lock:
            rows = self._db.execute(
                "SELECT ns_kind, ns_name FROM grants WHERE user=? ORDER BY ns_kind DESC, ns_name",
                (user,),
            ).fetchall()
        return [Namespace("user", user), *(Namespace(r[0], r[1]) for r in rows)]

    def secrets_for(self, user: str) -> list[Secret]:
        """Current versions of every unrevoked secret the user may receive.

        A name defined in several namespaces is taken from the first: the user's own,
        then projects, then courses (each in name order).
        """
        out: dict[str, Secret] = {}
        for ns in self.namespaces_of(user):
            with self._lock:
                rows = self._db.execute(
                    "SELECT s.name, s.class, s.current, v.nonce, v.sealed FROM secrets s "
                    "JOIN versions v ON v.secret_id=s.id AND v.version=s.current "
                    "WHERE s.ns_kind=? AND s.ns_name=? AND s.revoked_at IS NULL ORDER BY s.name",
                    (ns.kind, ns.name),
                ).fetchall()
            for name, cls, version, nonce, sealed in rows:
                if name not in out:
                    value = self._open(ns, name, int(version), nonce, sealed)
                    out[name] = Secret(ns, name, cls, int(version), value)
        return list(out.values())


def _open_read_only(path: str) -> sqlite3.Connection:
    """A connection that cannot write: a service reading what the hub's admins stored."""
    if not os.path.exists(path):
        raise SecretError(f"the secret store {path} does not exist (the hub creates it)")
    try:
        db = sqlite3.connect(
            f"file:{os.path.abspath(path)}?mode=ro", uri=True, check_same_thread=False,
            isolation_level=None,
        )
        db.execute("SELECT 1 FROM meta LIMIT 1").fetchall()
    except sqlite3.Error as e:
        raise SecretError(f"the secret store {path} cannot be read ({e})") from None
    return db
