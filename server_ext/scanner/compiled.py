"""Hyperscan databases compiled once, when the image is built, not at every server start.

Compiling the guard's three databases (text, binary payloads, drawings) takes about 0.6 s
of CPU, which every single-user server paid as it started (and ten of them at once, on a
class's first minute). The image stores the databases of the default rules, serialized,
in a read-only directory of its venv (``python -m server_ext.guard_db`` at build time);
a server whose expressions are the same loads them in a few milliseconds. Anything else
compiles as before: other rules or settings, known values, a CPU the stored database was
not built for, a damaged or missing file (a file that is there but unusable is logged).

A file's name is a hash of everything that goes into the compile (``FORMAT``, hyperscan's
version, the mode, each expression and its flags, in order), so a stored database is only ever
used for the expressions it was compiled from. Only the running environment's own
directory is read: in the image it is owned by root on a read-only root filesystem, out
of a user's reach (``make test`` and ``make demo`` fill ``.venv``'s, for local processes,
which have no isolation to keep anyway).
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

import hyperscan

_log = logging.getLogger(__name__)

#: A stored file is the SHA-256 of the serialized database, then the database: a damaged
#: file is compiled again, never loaded.
_CHECK = 32

#: Where the image keeps them: inside the venv, so a server of another venv never reads them.
STORE = Path(sys.prefix) / "share" / "qustody" / "guard-db"


def database(expressions: Sequence[bytes], flags: Sequence[int],
             directory: Path | None = None) -> hyperscan.Database:
    """A block-mode database of ``expressions`` (ids are their positions): the stored one
    when there is one for exactly these, else a new compile."""
    try:
        stored = ((directory or STORE) / f"{key(expressions, flags)}.hsdb").read_bytes()
    except OSError:
        stored = b""
    check, data = stored[:_CHECK], stored[_CHECK:]
    if data:
        try:
            if hashlib.sha256(data).digest() != check:
                raise ValueError("its checksum does not match")
            return hyperscan.loadb(data, hyperscan.HS_MODE_BLOCK)
        except (ValueError, hyperscan.error) as e:
            # Safe (compiled below) but slow at every start: say so, once per database.
            _log.warning("Qustody guard: the stored database for these rules is not usable "
                         "(%s: %s); compiling it (about 0.6 s of CPU at each server start). "
                         "Was the image built on a machine with other CPU features?",
                         type(e).__name__, e)
    return _compile(expressions, flags)


#: Part of every stored file's name: raise it when ``_compile`` changes how it compiles
#: (a stored file of the old way is then compiled again, never loaded)
FORMAT = 1


def key(expressions: Sequence[bytes], flags: Sequence[int]) -> str:
    version = getattr(hyperscan, "__version__", "?")  # the wheel bundles its library
    digest = hashlib.sha256(f"qustody {FORMAT} hyperscan {version} block\n".encode())
    for expression, flag in zip(expressions, flags, strict=True):
        digest.update(b"%d %d:%s\n" % (flag, len(expression), expression))
    return digest.hexdigest()


def store(expressions: Sequence[bytes], flags: Sequence[int], directory: Path) -> Path:
    """Compile and write one database where ``database`` will look for it."""
    data = hyperscan.dumpb(_compile(expressions, flags))
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{key(expressions, flags)}.hsdb"
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".hsdb-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(hashlib.sha256(data).digest() + data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def _compile(expressions: Sequence[bytes], flags: Sequence[int]) -> hyperscan.Database:
    db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    db.compile(
        expressions=list(expressions),
        ids=list(range(len(expressions))),
        elements=len(expressions),
        flags=list(flags),
    )
    return db


class Matcher:
    """A block-mode database with one scratch space per thread: a scratch serves one scan
    at a time, and saves are checked on several threads."""

    def __init__(self, db: hyperscan.Database | None) -> None:
        self._db = db
        self._local = threading.local()

    def _database(self) -> hyperscan.Database:
        assert self._db is not None
        return self._db

    def matches(self, data: bytes) -> list[tuple[int, int, int]]:
        """(expression id, start, end) of each match, in hyperscan's order (by end). The
        start is the match's leftmost one only if its expression asked for it
        (``HS_FLAG_SOM_LEFTMOST``)."""
        db, scratch = self._prepared()
        found: list[tuple[int, int, int]] = []
        add = found.append
        db.scan(data, match_event_handler=lambda i, s, e, _f, _c: add((i, s, e)), scratch=scratch)
        return found

    def _prepared(self) -> tuple[hyperscan.Database, hyperscan.Scratch]:
        """The database, and this thread's scratch space for it."""
        db = self._database()
        scratch = getattr(self._local, "scratch", None)
        if scratch is None:
            scratch = self._local.scratch = hyperscan.Scratch(db)
        return db, scratch

    def first_matches(self, data: bytes, limit: int) -> list[tuple[int, int, int]] | None:
        """``matches``, or None when there are more than ``limit`` (the scan stops there:
        a caller with a cheaper way for many matches need not pay a callback for each)."""
        db, scratch = self._prepared()
        found: list[tuple[int, int, int]] = []
        add = found.append

        def on_match(i: int, s: int, e: int, _f: int, _c: object) -> bool:
            add((i, s, e))
            return len(found) > limit

        try:
            db.scan(data, match_event_handler=on_match, scratch=scratch)
        except hyperscan.ScanTerminated:
            return None
        return found


class _CompiledOnUse(Matcher):
    """A few fixed expressions, compiled at the first scan (about 7 ms) rather than when
    their module is imported: a server's start does not wait for them."""

    def __init__(self, expressions: Sequence[bytes], flags: Sequence[int]) -> None:
        super().__init__(None)
        self._source = (list(expressions), list(flags))
        self._lock = threading.Lock()

    def _database(self) -> hyperscan.Database:
        if self._db is None:
            with self._lock:
                if self._db is None:
                    self._db = _compile(*self._source)
        return self._db


def matcher(expressions: Sequence[bytes], flags: Sequence[int]) -> Matcher:
    """A Matcher of ``expressions`` (their ids are their positions), compiled when first
    used."""
    return _CompiledOnUse(expressions, flags)
