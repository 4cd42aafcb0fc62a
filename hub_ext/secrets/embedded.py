"""The embedded broker: secrets encrypted with AES-GCM in one SQLite file.

Each version's value is sealed with the master key, a random 96-bit nonce and, as
associated data, the namespace, name, version and class it belongs to, so a ciphertext
moved to another row, another secret or another class fails to open. Rows and grants
carry keyed MACs and the store a MAC'd head over all of them (integrity.py): a database
writer without the key cannot relabel a class, roll a secret back to an older version,
replay, add or delete a row or a grant. Every read checks them first and fails closed,
naming what was altered, with an audit event (``on_tamper``). The file holds no value in
clear; the master key never enters it (only a key id, to say "wrong key" clearly).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .integrity import (
    FORMAT,
    derive_key,
    grant_mac,
    has_column,
    head_mac,
    row_mac,
    store_format,
)
from .model import (
    SERVICE_KINDS,
    Namespace,
    Secret,
    SecretError,
    SecretExists,
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
    revoked_at REAL, updated REAL NOT NULL, mac BLOB,
    UNIQUE (ns_kind, ns_name, name)
);
CREATE TABLE IF NOT EXISTS versions (
    secret_id INTEGER NOT NULL REFERENCES secrets(id),
    version INTEGER NOT NULL, nonce BLOB NOT NULL, sealed BLOB NOT NULL, created REAL NOT NULL,
    PRIMARY KEY (secret_id, version)
);
CREATE TABLE IF NOT EXISTS grants (
    ns_kind TEXT NOT NULL, ns_name TEXT NOT NULL, user TEXT NOT NULL, mac BLOB,
    PRIMARY KEY (ns_kind, ns_name, user)
);
"""
#: Most recent versions kept per secret (older ones are wiped at rotation).
KEEP_VERSIONS = 5

log = logging.getLogger("qustody.secrets")


def _aad(ns: Namespace, name: str, version: int, cls: str) -> bytes:
    return f"qustody-secret/2|{ns}|{name}|{version}|{cls}".encode()


def _aad_v1(ns: Namespace, name: str, version: int) -> bytes:
    """Associated data of format 1 stores (no class), read only by ``migrate``."""
    return f"qustody-secret/1|{ns}|{name}|{version}".encode()


class StoreTampered(SecretError):
    """The store's rows do not match their MACs: it was changed without the key."""

    def __init__(self, path: str, what: str) -> None:
        super().__init__(
            f"the secret store {path} was altered outside Qustody ({what}); nothing is served "
            "from it until an admin restores it from a backup (docs/secrets.md, Integrity)"
        )
        self.what = what


class EmbeddedStore:
    """Encrypted secrets in SQLite. Thread-safe; one writer at a time (SQLite's lock)."""

    broker_name = "embedded"

    def __init__(
        self,
        path: str,
        master_key: bytes,
        read_only: bool = False,
        on_tamper: Callable[[str, str], None] | None = None,
    ) -> None:
        self.path = path
        self._aes = AESGCM(master_key)
        self._mac_key = derive_key(master_key, "row-mac/2")
        self._key_id = hashlib.sha256(b"qustody-key-id|" + master_key).hexdigest()[:16]
        self._lock = threading.Lock()
        #: Called with (path, what) before a read or write fails on altered rows.
        self.on_tamper = on_tamper
        self._seen_generation = 0
        if read_only:
            self._db = _open_read_only(path)
            row = self._db.execute("SELECT v FROM meta WHERE k='key_id'").fetchone()
            if row is None or row[0] != self._key_id:
                self._db.close()
                raise SecretError(
                    f"the master key does not match the secret store {path}: give the hub's "
                    "master key file"
                )
            if store_format(self._db) != FORMAT:
                self._db.close()
                raise _needs_migration(path)
            return
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        new = not os.path.exists(path)
        if new:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # deleted rows are overwritten, not left in free pages (revoke wipes versions)
        self._db.execute("PRAGMA secure_delete=ON")
        self._db.executescript(_SCHEMA)
        row = self._db.execute("SELECT v FROM meta WHERE k='key_id'").fetchone()
        if row is None:
            self._db.execute("INSERT INTO meta VALUES ('key_id', ?)", (self._key_id,))
        elif row[0] != self._key_id:
            self._db.close()
            raise SecretError(
                f"the master key does not match the secret store {path} (it was created "
                "with another key): restore the original key file"
            )
        if store_format(self._db) != FORMAT:
            if self._db.execute(
                "SELECT (SELECT count(*) FROM secrets) + (SELECT count(*) FROM grants)"
            ).fetchone()[0]:
                self._db.close()
                raise _needs_migration(path)
            with self._tx() as db:  # an empty store: nothing to migrate, start signed
                _add_mac_columns(db)
                _set_meta(db, "format", FORMAT)
                self._seal_head(db, 1)

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

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction on a verified store; the head is re-sealed at the end."""
        with self._tx() as db:
            generation = self._verify(db)
            yield db
            self._seal_head(db, generation + 1)

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A read snapshot (one transaction) of a verified store."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._verify(self._db)
                yield self._db
            finally:
                self._db.execute("ROLLBACK")

    # -- integrity -----------------------------------------------------------------------

    def _tampered(self, what: str) -> StoreTampered:
        if self.on_tamper is not None:
            with contextlib.suppress(Exception):  # reporting must not hide the refusal
                self.on_tamper(self.path, what)
        return StoreTampered(self.path, what)

    def _verify(self, db: sqlite3.Connection) -> int:
        """Check every row and grant MAC and the head; returns the store's generation."""
        key = self._mac_key
        row_macs, grant_macs = [], []
        for kind, ns_name, name, cls, current, revoked_at, mac in db.execute(
            "SELECT ns_kind, ns_name, name, class, current, revoked_at, mac FROM secrets"
        ):
            want = row_mac(key, kind, ns_name, name, cls, current, revoked_at)
            if not isinstance(mac, bytes) or not hmac.compare_digest(mac, want):
                raise self._tampered(f"the row of {kind}:{ns_name}/{name} does not match its MAC")
            row_macs.append(want)
        for kind, ns_name, user, mac in db.execute(
            "SELECT ns_kind, ns_name, user, mac FROM grants"
        ):
            want = grant_mac(key, kind, ns_name, user)
            if not isinstance(mac, bytes) or not hmac.compare_digest(mac, want):
                raise self._tampered(f"the grant of {kind}:{ns_name} to {user} is not genuine")
            grant_macs.append(want)
        meta = dict(db.execute("SELECT k, v FROM meta WHERE k IN ('generation', 'head')"))
        try:
            generation = int(meta.get("generation", ""))
        except ValueError:
            raise self._tampered("its generation counter is missing") from None
        if not hmac.compare_digest(
            str(meta.get("head", "")), head_mac(key, generation, row_macs, grant_macs)
        ):
            raise self._tampered(
                "rows were added, deleted or replaced by older copies of themselves"
            )
        if generation < self._seen_generation:
            raise self._tampered(
                f"it was rolled back to generation {generation}; this process has seen "
                f"{self._seen_generation}"
            )
        self._seen_generation = generation
        return generation

    def _seal_head(self, db: sqlite3.Connection, generation: int) -> None:
        rows = [r[0] for r in db.execute("SELECT mac FROM secrets")]
        grants = [r[0] for r in db.execute("SELECT mac FROM grants")]
        _set_meta(db, "generation", str(generation))
        _set_meta(db, "head", head_mac(self._mac_key, generation, rows, grants))
        self._seen_generation = generation

    def _sign_row(self, db: sqlite3.Connection, ns: Namespace, name: str) -> None:
        cls, current, revoked_at = db.execute(
            "SELECT class, current, revoked_at FROM secrets "
            "WHERE ns_kind=? AND ns_name=? AND name=?",
            (ns.kind, ns.name, name),
        ).fetchone()
        db.execute(
            "UPDATE secrets SET mac=? WHERE ns_kind=? AND ns_name=? AND name=?",
            (
                row_mac(self._mac_key, ns.kind, ns.name, name, cls, current, revoked_at),
                ns.kind, ns.name, name,
            ),
        )

    def _seal(
        self, ns: Namespace, name: str, version: int, cls: str, value: str
    ) -> tuple[bytes, bytes]:
        nonce = os.urandom(12)
        return nonce, self._aes.encrypt(nonce, value.encode(), _aad(ns, name, version, cls))

    def _open(
        self, ns: Namespace, name: str, version: int, cls: str, nonce: bytes, sealed: bytes
    ) -> str:
        try:
            return self._aes.decrypt(nonce, sealed, _aad(ns, name, version, cls)).decode()
        except InvalidTag:
            raise self._tampered(
                f"{ns}/{name} v{version} does not decrypt as class {cls}"
            ) from None

    # -- admin -------------------------------------------------------------------------

    def put(
        self,
        namespace: str,
        name: str,
        cls: str,
        value: bytes,
        create_only: bool = False,
        at_most: int | None = None,
    ) -> int:
        """Store a new secret, or a new version of one (rotation). Returns the version.

        ``create_only``: SecretExists if the name was ever used in the namespace (revoked
        too), and SecretError if the namespace already holds ``at_most`` live secrets;
        checked in the write transaction, so no other writer slips in between."""
        ns = parse_namespace(namespace)
        check_name(name, ns)
        check_class(cls)
        text = check_value(value)
        now = time.time()
        with self._write() as db:
            row = db.execute(
                "SELECT id, current, class FROM secrets WHERE ns_kind=? AND ns_name=? AND name=?",
                (ns.kind, ns.name, name),
            ).fetchone()
            if create_only and row is not None:
                raise SecretExists(
                    f"you already have (or had) a secret named {name}: choose another name "
                    "(an admin can rotate or revoke the existing one with `qustody secrets`)"
                )
            if at_most is not None:
                (held,) = db.execute(
                    "SELECT count(*) FROM secrets WHERE ns_kind=? AND ns_name=? "
                    "AND revoked_at IS NULL",
                    (ns.kind, ns.name),
                ).fetchone()
                if held >= at_most:
                    raise SecretError(
                        f"you already hold {held} secrets of your own, the most this hub "
                        f"allows (SecretBroker.self_service_limit = {at_most}): ask an admin "
                        "to revoke ones you no longer use"
                    )
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
            nonce, sealed = self._seal(ns, name, version, cls, text)
            db.execute(
                "INSERT INTO versions VALUES (?, ?, ?, ?, ?)", (sid, version, nonce, sealed, now)
            )
            self._sign_row(db, ns, name)
            db.execute(
                "DELETE FROM versions WHERE secret_id=? AND version<=?",
                (sid, version - KEEP_VERSIONS),
            )
        return version

    def add_own(
        self,
        user: str,
        server: str,
        auth_state: dict[str, Any] | None,
        name: str,
        cls: str,
        value: str,
        at_most: int,
    ) -> Secret:
        """A new secret in the user's own namespace, stored by the user (self-service):
        never a new version of an existing one, and at most ``at_most`` of them."""
        ns = parse_namespace(f"user:{user}")
        text = check_value(value.encode("utf-8", "surrogatepass"))
        version = self.put(str(ns), name, cls, text.encode(), create_only=True, at_most=at_most)
        return Secret(ns, name, cls, version, text)

    def discard_own(
        self, user: str, server: str, auth_state: dict[str, Any] | None, name: str
    ) -> None:
        """Undo ``add_own`` (its audit record could not be written)."""
        self.revoke(f"user:{user}", name)

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
        with self._write() as db:
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
            self._sign_row(db, ns, name)
        # the write-ahead log still holds the deleted pages until a checkpoint empties it
        with self._lock:
            busy, _, _ = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy:  # a reader held it: the next revoke's checkpoint (or a restart) empties it
            log.warning("secrets: the store's write-ahead log could not be emptied after a "
                        "revoke (a reader was busy); the old version stays there until then")

    def grant(self, namespace: str, users: Iterable[str], revoke: bool = False) -> None:
        """Give users (or take from them) the secrets of a project or course namespace."""
        ns = parse_namespace(namespace)
        if ns.kind == "user":
            raise SecretError("user namespaces belong to their user: grant project: or course:")
        if ns.kind in SERVICE_KINDS:
            raise SecretError(f"{ns} belongs to a hub service and is never given to users")
        with self._write() as db:
            for user in users:
                if revoke:
                    db.execute(
                        "DELETE FROM grants WHERE ns_kind=? AND ns_name=? AND user=?",
                        (ns.kind, ns.name, user),
                    )
                else:
                    db.execute(
                        "INSERT OR IGNORE INTO grants VALUES (?, ?, ?, ?)",
                        (ns.kind, ns.name, user, grant_mac(self._mac_key, ns.kind, ns.name, user)),
                    )

    def entries(self, namespace: str | None = None) -> list[SecretInfo]:
        query = "SELECT ns_kind, ns_name, name, class, current, revoked_at, updated FROM secrets"
        args: tuple[str, ...] = ()
        if namespace:
            ns = parse_namespace(namespace)
            query += " WHERE ns_kind=? AND ns_name=?"
            args = (ns.kind, ns.name)
        with self._read() as db:
            rows = db.execute(query + " ORDER BY ns_kind, ns_name, name", args).fetchall()
        return [
            SecretInfo(Namespace(r[0], r[1]), r[2], r[3], int(r[4]), r[5] is not None, r[6])
            for r in rows
        ]

    def grants(self) -> list[tuple[str, str]]:
        with self._read() as db:
            rows = db.execute(
                "SELECT ns_kind || ':' || ns_name, user FROM grants ORDER BY 1, 2"
            ).fetchall()
        return [(str(r[0]), str(r[1])) for r in rows]

    def current(self, namespace: str, name: str) -> Secret | None:
        """The current version of one unrevoked secret, or None."""
        ns = parse_namespace(namespace)
        check_name(name, ns)
        with self._read() as db:
            row = db.execute(
                "SELECT s.class, s.current, v.nonce, v.sealed FROM secrets s "
                "JOIN versions v ON v.secret_id=s.id AND v.version=s.current "
                "WHERE s.ns_kind=? AND s.ns_name=? AND s.name=? AND s.revoked_at IS NULL",
                (ns.kind, ns.name, name),
            ).fetchone()
        if row is None:
            return None
        cls, version, nonce, sealed = row
        value = self._open(ns, name, int(version), cls, nonce, sealed)
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

    def course_secrets(
        self, user: str, server: str, auth_state: dict[str, Any] | None, course: str,
        names: tuple[str, ...],
    ) -> list[Secret]:
        ns = parse_namespace(f"course:{course}")
        wanted = set(names)
        out = []
        with self._read() as db:
            rows = _current_rows(db, ns)
        for name, cls, version, nonce, sealed in rows:
            if name in wanted:
                value = self._open(ns, name, int(version), cls, nonce, sealed)
                out.append(Secret(ns, name, cls, int(version), value))
        return out

    def release(self, user: str, server: str) -> None:
        """Nothing to revoke: the embedded store hands out no tokens or leases."""

    def outstanding(self) -> list[tuple[str, str]]:
        return []

    def namespaces_of(self, user: str) -> list[Namespace]:
        """The user's own namespace, then the project and course namespaces granted to them."""
        with self._read() as db:
            return self._namespaces_of(db, user)

    @staticmethod
    def _namespaces_of(db: sqlite3.Connection, user: str) -> list[Namespace]:
        rows = db.execute(
            "SELECT ns_kind, ns_name FROM grants WHERE user=? ORDER BY ns_kind DESC, ns_name",
            (user,),
        ).fetchall()
        return [Namespace("user", user), *(Namespace(r[0], r[1]) for r in rows)]

    def secrets_for(self, user: str) -> list[Secret]:
        """Current versions of every unrevoked secret the user may receive.

        A name defined in several namespaces is taken from the first: the user's own,
        then projects, then courses (each in name order). One verified snapshot.
        """
        found: list[tuple[Namespace, tuple[Any, ...]]] = []
        with self._read() as db:
            for ns in self._namespaces_of(db, user):
                rows = _current_rows(db, ns)
                found.extend((ns, tuple(r)) for r in rows)
        out: dict[str, Secret] = {}
        for ns, (name, cls, version, nonce, sealed) in found:
            if name not in out:
                value = self._open(ns, name, int(version), cls, nonce, sealed)
                out[name] = Secret(ns, name, cls, int(version), value)
        return list(out.values())


def _current_rows(db: sqlite3.Connection, ns: Namespace) -> list[tuple[Any, ...]]:
    """(name, class, version, nonce, sealed) of each unrevoked secret of ``ns``, by name."""
    rows: list[tuple[Any, ...]] = db.execute(
        "SELECT s.name, s.class, s.current, v.nonce, v.sealed FROM secrets s "
        "JOIN versions v ON v.secret_id=s.id AND v.version=s.current "
        "WHERE s.ns_kind=? AND s.ns_name=? AND s.revoked_at IS NULL ORDER BY s.name",
        (ns.kind, ns.name),
    ).fetchall()
    return rows


def migrate(path: str, master_key: bytes) -> int:
    """Convert a format 1 store (values not bound to their class, rows without MACs) to
    the current format, in one transaction; returns how many values were re-sealed.

    It trusts what the file holds: run it once, right after upgrading, on a store no one
    else could write (restore a backup first if in doubt).
    """
    if not os.path.exists(path):
        raise SecretError(f"the secret store {path} does not exist")
    db = sqlite3.connect(path, isolation_level=None)
    try:
        row = db.execute("SELECT v FROM meta WHERE k='key_id'").fetchone()
        key_id = hashlib.sha256(b"qustody-key-id|" + master_key).hexdigest()[:16]
        if row is None or row[0] != key_id:
            raise SecretError(f"the master key does not match the secret store {path}")
        if store_format(db) == FORMAT:
            raise SecretError(f"the secret store {path} is already in format {FORMAT}")
        aes, mac_key = AESGCM(master_key), derive_key(master_key, "row-mac/2")
        db.execute("BEGIN IMMEDIATE")
        try:
            _add_mac_columns(db)
            count = 0
            for sid, kind, ns_name, name, cls, current, revoked_at in db.execute(
                "SELECT id, ns_kind, ns_name, name, class, current, revoked_at FROM secrets"
            ).fetchall():
                ns = Namespace(kind, ns_name)
                for version, nonce, sealed in db.execute(
                    "SELECT version, nonce, sealed FROM versions WHERE secret_id=?", (sid,)
                ).fetchall():
                    try:
                        value = aes.decrypt(nonce, sealed, _aad_v1(ns, name, int(version)))
                    except InvalidTag:
                        raise SecretError(
                            f"{ns}/{name} v{version} does not decrypt: the store was altered; "
                            "restore a backup before migrating"
                        ) from None
                    fresh = os.urandom(12)
                    db.execute(
                        "UPDATE versions SET nonce=?, sealed=? WHERE secret_id=? AND version=?",
                        (fresh, aes.encrypt(fresh, value, _aad(ns, name, int(version), cls)),
                         sid, version),
                    )
                    count += 1
                db.execute(
                    "UPDATE secrets SET mac=? WHERE id=?",
                    (row_mac(mac_key, kind, ns_name, name, cls, current, revoked_at), sid),
                )
            for kind, ns_name, user in db.execute(
                "SELECT ns_kind, ns_name, user FROM grants"
            ).fetchall():
                db.execute(
                    "UPDATE grants SET mac=? WHERE ns_kind=? AND ns_name=? AND user=?",
                    (grant_mac(mac_key, kind, ns_name, user), kind, ns_name, user),
                )
            rows = [r[0] for r in db.execute("SELECT mac FROM secrets")]
            grants = [r[0] for r in db.execute("SELECT mac FROM grants")]
            _set_meta(db, "format", FORMAT)
            _set_meta(db, "generation", "1")
            _set_meta(db, "head", head_mac(mac_key, 1, rows, grants))
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return count
    finally:
        db.close()


def _needs_migration(path: str) -> SecretError:
    return SecretError(
        f"the secret store {path} is in format 1 (values not bound to their class, rows "
        "without MACs): stop the hub, back the file up and run `qustody secrets migrate` "
        "once (docs/secrets.md, Integrity)"
    )


def _add_mac_columns(db: sqlite3.Connection) -> None:
    for table in ("secrets", "grants"):
        if not has_column(db, table, "mac"):
            db.execute(f"ALTER TABLE {table} ADD COLUMN mac BLOB")


def _set_meta(db: sqlite3.Connection, key: str, value: str) -> None:
    db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))


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
