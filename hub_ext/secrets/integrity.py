"""Integrity of the embedded store's rows: keyed MACs a database writer without the key
cannot forge.

The master key is split with HKDF-SHA256 into a MAC key (never the AES key itself).
Each ``secrets`` row carries a MAC over its namespace, name, class, current version and
revocation; each ``grants`` row one over its namespace and user. A store-wide ``head`` in
``meta`` is the MAC of a generation counter (raised by every write) and of every row's
MAC, so replaying an older copy of a row, deleting one or adding one breaks it even
when each row on its own is genuine. A process keeps the highest generation it has seen:
a store swapped for an older copy of itself while the hub runs is detected too.

Format 1 stores (before this) are converted by ``migrate``, explicitly (``qustody
secrets migrate``): it signs what the file holds, so run it once, on a store you trust.
"""

from __future__ import annotations

import hashlib
import hmac
import sqlite3
from collections.abc import Iterable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

#: Format of a store whose rows carry MACs and whose values bind their class.
FORMAT = "2"


def derive_key(master_key: bytes, purpose: str) -> bytes:
    """A 32-byte key for one ``purpose``, independent of the master key's other uses."""
    info = f"qustody-store/{purpose}".encode()
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info)
    return hkdf.derive(master_key)


def _mac(key: bytes, *fields: object) -> bytes:
    # Length-prefixed fields: no two field lists encode alike.
    h = hmac.new(key, digestmod=hashlib.sha256)
    for f in fields:
        data = repr(f).encode("utf-8", "surrogatepass")
        h.update(len(data).to_bytes(4, "big") + data)
    return h.digest()


def row_mac(
    key: bytes, kind: str, ns_name: str, name: str, cls: str, current: int, revoked_at: float | None
) -> bytes:
    return _mac(key, "secret", kind, ns_name, name, cls, int(current), revoked_at)


def grant_mac(key: bytes, kind: str, ns_name: str, user: str) -> bytes:
    return _mac(key, "grant", kind, ns_name, user)


def head_mac(
    key: bytes, generation: int, row_macs: Iterable[bytes], grant_macs: Iterable[bytes]
) -> str:
    return _mac(key, "head", int(generation), sorted(row_macs), sorted(grant_macs)).hex()


def store_format(db: sqlite3.Connection) -> str:
    row = db.execute("SELECT v FROM meta WHERE k='format'").fetchone()
    return str(row[0]) if row else "1"


def has_column(db: sqlite3.Connection, table: str, column: str) -> bool:
    return any(r[1] == column for r in db.execute(f"PRAGMA table_info({table})"))
