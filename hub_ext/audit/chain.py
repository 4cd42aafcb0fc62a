"""Record format, hash chain and keyed MAC.

One record is one line of ASCII JSON, written by this module and nothing else::

    {"seq":7,"prev":"<sha256 of line 6>","ts":"...","type":"login","v":1,
     "origin":"hub","data":{...},"kid":"<key id>","mac":"<HMAC-SHA256>"}

* ``seq`` counts records from 0 with no gaps, across rotated files.
* ``prev`` is the SHA-256 of the previous record's line (without its newline); the
  first record's is 64 zeros. Deleting, inserting or reordering records breaks it.
* ``mac`` is HMAC-SHA256 with the log key over the line as it would read without the
  ``"mac"`` member (the *body*, ending in ``}``). Editing any byte breaks it, and
  nobody without the key can make a new one.
* ``seq`` and ``prev`` lead the line and ``kid``/``mac`` end it at fixed widths, so
  verification reads them by position without parsing JSON: the MAC covers the exact
  bytes, so nothing parsed could disagree with what was sealed.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from .keys import key_id

GENESIS = "0" * 64
HASH_HEX = 64
KID_HEX = 16

_SEQ = b'{"seq":'
_PREV = b',"prev":"'
_KID = b',"kid":"'
_MAC = b',"mac":"'
# ...,"kid":"<16>","mac":"<64>"}  read from the end of the line
_MAC_TAIL = len(_MAC) + HASH_HEX + 2  # ,"mac":"<64>"}
_KID_TAIL = _MAC_TAIL + 1 + KID_HEX + len(_KID)  # ,"kid":"<16>" before it
MIN_LINE = len(_SEQ) + 1 + len(_PREV) + HASH_HEX + _KID_TAIL


class Malformed(ValueError):
    """A line that is not a record as this module writes them."""


@dataclass(frozen=True)
class Parsed:
    """The positional parts of a record line."""

    seq: int
    prev: bytes  # 64 hex digits
    kid: str
    body: bytes  # what the MAC covers
    mac: bytes  # 64 hex digits


def parse(line: bytes) -> Parsed:
    """Split a record line (no newline) into the parts verification needs."""
    if (
        len(line) < MIN_LINE
        or not line.startswith(_SEQ)
        or line[-_MAC_TAIL : -_MAC_TAIL + len(_MAC)] != _MAC
        or line[-2:] != b'"}'
        or line[-_KID_TAIL : -_KID_TAIL + len(_KID)] != _KID
        or line[-_MAC_TAIL - 1 : -_MAC_TAIL] != b'"'
    ):
        raise Malformed("not a sealed record (its frame of seq, prev, kid and mac is broken)")
    comma = line.find(b",", len(_SEQ))
    digits = line[len(_SEQ) : comma]
    if not digits.isdigit() or (len(digits) > 1 and digits[:1] == b"0"):
        raise Malformed("its sequence number is not a number")
    if line[comma : comma + len(_PREV)] != _PREV:
        raise Malformed("its prev hash is missing")
    start = comma + len(_PREV)
    return Parsed(
        seq=int(digits),
        prev=line[start : start + HASH_HEX],
        kid=line[-_KID_TAIL + len(_KID) : -_MAC_TAIL - 1].decode("ascii", "replace"),
        body=line[:-_MAC_TAIL] + b"}",
        mac=line[-_MAC_TAIL + len(_MAC) : -2],
    )


def line_hash(line: bytes) -> str:
    """The hash the next record's ``prev`` must hold."""
    return hashlib.sha256(line).hexdigest()


_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


def keyed_states(key: bytes) -> tuple[hashlib._Hash, hashlib._Hash]:
    """HMAC-SHA256's inner and outer hash states after absorbing the padded key (RFC 2104).

    Copying these per message is HMAC exactly as the ``hmac`` module computes it, without
    its per-call wrapper objects: records are small, so that overhead would dominate.
    """
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    block = key.ljust(64, b"\0")
    return hashlib.sha256(block.translate(_IPAD)), hashlib.sha256(block.translate(_OPAD))


class Sealer:
    """Seals records and small state documents with one key. Thread-safe."""

    def __init__(self, key: bytes) -> None:
        self._inner, self._outer = keyed_states(key)
        self.kid = key_id(key)

    def mac(self, body: bytes) -> str:
        """HMAC-SHA256 of ``body``, hex."""
        inner = self._inner.copy()
        inner.update(body)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.hexdigest()

    def check(self, body: bytes, mac: bytes) -> bool:
        return hmac.compare_digest(self.mac(body).encode("ascii"), mac)

    def seal_record(
        self,
        seq: int,
        prev: str,
        ts: str,
        type_: str,
        version: int,
        origin: str,
        data_json: str,
        extra_json: str = "",
    ) -> bytes:
        """The record line (no newline). ``data_json`` is compact ASCII JSON of the event;
        ``extra_json`` is ``,"name":value`` members for the envelope, or empty."""
        body = (
            f'{{"seq":{seq},"prev":"{prev}","ts":"{ts}","type":"{type_}","v":{version},'
            f'"origin":"{origin}","data":{data_json}{extra_json},"kid":"{self.kid}"}}'
        ).encode("ascii")
        return body[:-1] + b',"mac":"' + self.mac(body).encode("ascii") + b'"}'

    def seal_document(self, members: str) -> str:
        """``{members,"kid":...,"mac":...}`` for heads and checkpoints (same frame as records)."""
        body = f'{{{members},"kid":"{self.kid}"}}'
        return body[:-1] + ',"mac":"' + self.mac(body.encode("ascii")) + '"}'


def open_document(text: bytes, sealers: dict[str, Sealer]) -> bytes:
    """The body of a sealed head or checkpoint, or raise Malformed saying why not."""
    if (
        len(text) < _KID_TAIL + 2
        or text[-_MAC_TAIL : -_MAC_TAIL + len(_MAC)] != _MAC
        or text[-_KID_TAIL : -_KID_TAIL + len(_KID)] != _KID
    ):
        raise Malformed("not a sealed document")
    kid = text[-_KID_TAIL + len(_KID) : -_MAC_TAIL - 1].decode("ascii", "replace")
    sealer = sealers.get(kid)
    if sealer is None:
        raise Malformed(
            f"sealed with key id {kid}, which is not among the verifying keys "
            f"({', '.join(sealers)}): wrong key file?"
        )
    body = text[:-_MAC_TAIL] + b"}"
    if not sealer.check(body, text[-_MAC_TAIL + len(_MAC) : -2]):
        raise Malformed("its MAC does not match: it was edited")
    return body
