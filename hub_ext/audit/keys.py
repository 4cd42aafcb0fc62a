"""The MAC key: loaded from a key file (created 0600 on request) or given by a secret broker.

A key is never logged or put in a message; records name it by ``key_id``, a keyed
digest that identifies the key without revealing anything about it.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path

MIN_KEY_BYTES = 32


def key_id(key: bytes) -> str:
    """16 hex characters naming a key in records ("kid"); not reversible."""
    return hmac.new(key, b"qustody audit key id v1", hashlib.sha256).hexdigest()[:16]


def check_key(key: bytes, source: str) -> bytes:
    if not isinstance(key, bytes):
        raise ValueError(f"{source} must provide the audit MAC key as bytes")
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(
            f"{source} holds a key of {len(key)} bytes; the audit MAC key needs at least "
            f"{MIN_KEY_BYTES} random bytes (e.g. `openssl rand -hex 32 > keyfile`)"
        )
    return key


def load_key_file(path: str | os.PathLike[str], create: bool = False) -> bytes:
    """The key in ``path`` (its bytes, trailing whitespace removed).

    With ``create``, a missing file is created with 32 random bytes (hex), mode 0600.
    A key file that group or others may read is refused: anyone who can read it can
    forge records.
    """
    where = Path(path)
    if create and not where.exists():
        where.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Written aside, then linked into place: a process starting at the same moment
        # (the hub and a service, or gateway workers) sees no file or the whole key, never
        # an empty one; the first link wins and the others read that key.
        tmp = where.with_name(f".{where.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="ascii") as f:
                f.write(secrets.token_hex(32) + "\n")
            with contextlib.suppress(FileExistsError):
                os.link(tmp, where)
        finally:
            tmp.unlink()
    try:
        fd = os.open(where, os.O_RDONLY)
    except FileNotFoundError:
        raise ValueError(
            f"audit key file {where} does not exist; create it (`openssl rand -hex 32 > {where}; "
            f"chmod 600 {where}`) or set AuditLog.create_key_file = True"
        ) from None
    except OSError as e:
        raise ValueError(f"audit key file {where} cannot be read: {e.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        mode = os.fstat(f.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise ValueError(f"audit key file {where} is not a regular file")
        if mode & 0o077:
            raise ValueError(
                f"audit key file {where} may be read by group or others (mode "
                f"{stat.S_IMODE(mode):04o}); run `chmod 600 {where}`"
            )
        key = f.read().rstrip()
    return check_key(key, f"audit key file {where}")
