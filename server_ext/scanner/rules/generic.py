"""Keyword-anchored assignments and quoted high-entropy strings (the catch-alls).

Keywords must end the identifier (``db_password``, ``hf_token``), as in
detect-secrets, so ``tokenizer = "..."`` and ``author = "..."`` are not candidates.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from ..detector import Detector, Kind, rx
from ..entropy import is_hex, shannon
from ..filters import Candidate
from ._common import ASSIGN, assignment, literal_gate

_KEYWORDS = (
    r"pass(?:word|wd|phrase)|pwd|secret(?:_?key)?|token|api_?key|apikey|access_?key|auth_?key|"
    # Patterns are bytes: "ñ" is two UTF-8 bytes, so it is an alternative, never in a [class].
    r"private_?key|client_?secret|credentials?|contrase(?:ñ|n)a"
)
# Identifiers that are hashes or ids, not secrets; their long hex/base64 values are not flagged.
_ID_WORDS = re.compile(
    rb"(?i)sha\d*|md5|hash|digest|checksum|commit|etag|uuid|\bid\b|_id\b|nonce|integrity|fingerprint"
)
_ENTROPY_ANCHOR = rb"[\"'`][A-Za-z0-9+/=_-]{20}"


#: How far around a quoted string its name is looked for (``"sha256": "..."``). Lines of
#: minified data are megabytes long: searching all of it for every quoted string would
#: cost quadratic time.
_NAME_REACH = 80


def _named_as_id(c: Candidate) -> bool:
    at = c.line.find(c.secret)
    if at < 0:
        return bool(_ID_WORDS.search(c.line, 0, _NAME_REACH))
    lo, hi = max(0, at - _NAME_REACH), at + len(c.secret) + _NAME_REACH // 2
    return bool(_ID_WORDS.search(c.line[lo:hi]))


def _entropy_gate(minimum: float, hex_only: bool) -> Callable[[Candidate], bool]:
    def gate(c: Candidate) -> bool:
        if hex_only != is_hex(c.secret) or _named_as_id(c):
            return False
        return shannon(c.secret) >= minimum

    return gate


KEYWORD_ENTROPY = 2.5
BASE64_ENTROPY = 4.5
HEX_ENTROPY = 3.0


def detectors(
    keyword_entropy: float = KEYWORD_ENTROPY,
    base64_entropy: float = BASE64_ENTROPY,
    hex_entropy: float = HEX_ENTROPY,
) -> tuple[Detector, ...]:
    """The catch-all detectors with the given entropy limits (bits per character)."""
    return (
        Detector(
            id="generic-keyword",
            title="Secret-named variable assigned a literal (password=, token:, api_key ...)",
            anchor=rf"(?:{_KEYWORDS})s?{ASSIGN}".encode(),
            value=assignment(_KEYWORDS + r")s?(?:", 8),
            kind=Kind.KEYWORD,
            caseless=True,
            validate=literal_gate(keyword_entropy, keyword_entropy + 0.5),
        ),
        Detector(
            id="base64-high-entropy",
            title="Quoted high-entropy base64 string",
            anchor=_ENTROPY_ANCHOR,
            value=rx(r"(?P<q>[\"'`])(?P<secret>[A-Za-z0-9+/=_-]{20,512})(?P=q)"),
            kind=Kind.ENTROPY,
            validate=_entropy_gate(base64_entropy, hex_only=False),
        ),
        Detector(
            id="hex-high-entropy",
            title="Quoted high-entropy hex string",
            anchor=_ENTROPY_ANCHOR,
            value=rx(r"(?P<q>[\"'`])(?P<secret>[0-9a-fA-F]{20,512})(?P=q)"),
            kind=Kind.ENTROPY,
            validate=_entropy_gate(hex_entropy, hex_only=True),
        ),
    )


DETECTORS = detectors()
