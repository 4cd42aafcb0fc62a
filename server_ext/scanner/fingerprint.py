"""Short, non-reversible names for secrets, safe to show in responses and logs."""

from __future__ import annotations

import hashlib
import os


class Fingerprinter:
    """Keyed BLAKE2b of the value, prefixed by the detector's public format prefix.

    The key defaults to a random per-process value: a fingerprint lets a user tell
    two findings apart, but nobody can test guesses of a weak password against a
    fingerprint that reached a log. Pass a key to make fingerprints stable across
    processes (e.g. for a CI baseline).
    """

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key if key is not None else os.urandom(32)

    def __call__(self, secret: bytes, public_prefix: int = 0) -> str:
        digest = hashlib.blake2b(secret, key=self._key[:64], digest_size=5).hexdigest()
        prefix = public_part(secret, public_prefix).decode("ascii", "replace")
        return f"{prefix}…{digest}"


def public_part(secret: bytes, public_prefix: int) -> bytes:
    """The detector's public format prefix of ``secret``, at most a third of it.

    One detector may know prefixes of several lengths (``glpat-`` and ``gldt-``, ``sk-proj-``
    and ``sk-``) and counts for the longest: the count is cut after its last separator, so
    a shorter prefix never shows characters of the random part that follows it."""
    head = secret[: min(public_prefix, len(secret) // 3)]
    cut = max(head.rfind(sep) for sep in (b"-", b"_", b"."))
    return head[: cut + 1] if cut >= 0 else head
