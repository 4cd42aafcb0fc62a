"""Keyword-anchored assignments and quoted high-entropy strings (the catch-alls).

Keywords must end the identifier (``db_password``, ``hf_token``), as in
detect-secrets, so ``tokenizer = "..."`` and ``author = "..."`` are not candidates.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

from ..detector import Detector, Kind, rx
from ..entropy import has_digit_and_letter, is_hex, shannon, word_share
from ..filters import Candidate
from ._common import ASSIGN, assignment, literal_gate

#: What ends in ``pass`` without naming a password, run together or with ``_``
#: (``bypass``, ``lowpass``, ``forward_pass``); ``db_pass``, ``DBPASS`` and
#: ``smtp_pass`` do name one. (JSON keys too: ``notebook.names_a_credential``.)
NOT_A_PASS_BEFORE = (
    "by", "com", "encom", "sur", "over", "under", "tres", "im", "low", "high", "band",
    "all", "hi", "multi", "one", "two", "single", "first", "second", "third", "final",
    "last", "next", "sub", "render", "re", "forward", "backward", "back", "each", "per",
    "skip", "full", "half", "double", "fast", "slow", "mountain", "boarding",
)
NOT_A_PASS = frozenset(w + "pass" for w in NOT_A_PASS_BEFORE)
_OTHER_KEYWORDS = (
    r"pwd|secret(?:_?key)?|token|api_?key|apikey|access_?key|auth_?key|"
    # Patterns are bytes: "ñ" is two UTF-8 bytes, so it is an alternative, never in a [class].
    r"private_?key|client_?secret|credentials?|contrase(?:ñ|n)a"
)
#: What hyperscan looks for (it has no lookbehind) ...
_KEYWORD_ANCHORS = r"pass(?:word|wd|phrase)?|" + _OTHER_KEYWORDS
#: ... and what confirms it: a bare ``pass`` that does not end one of those words.
_KEYWORDS = (
    r"pass(?:word|wd|phrase|"
    + "".join(f"(?<!{w}pass)(?<!{w}_pass)" for w in NOT_A_PASS_BEFORE)
    + ")|"
    + _OTHER_KEYWORDS
)
# Identifiers that are hashes or ids, not secrets; their long hex/base64 values are not flagged.
# Searched for in lower case, as plain substrings where they are words of their own: a
# case-insensitive alternation costs tens of microseconds per candidate.
_ID_LITERALS = (
    b"sha", b"md5", b"hash", b"digest", b"checksum", b"commit", b"etag", b"uuid", b"nonce",
    b"integrity", b"fingerprint",
)  # fmt: skip
_ID_TOKEN = re.compile(rb"\bid\b|_id\b")


def _names_an_id(text: bytes) -> bool:
    """``text`` has a hash or id word (``sha256``, ``commit``, ``user_id``), in any case."""
    low = text.lower()
    return any(w in low for w in _ID_LITERALS) or (
        b"id" in low and _ID_TOKEN.search(low) is not None
    )


# The whole quoted string: hyperscan finds it several times faster than the opening quote
# and 20 characters (quotes are everywhere in code), and the start is its opening quote.
_ENTROPY_MAX = 512
_ENTROPY_ANCHOR = rb"[\"'`][A-Za-z0-9+/=_-]{20,%d}[\"'`]" % _ENTROPY_MAX


def _opening_quote(buf: bytes, end: int) -> int:
    """Where a quoted string that closes at ``end - 1`` opens: no quote is inside it, so
    at the last quote before the closing one."""
    lo = max(0, end - _ENTROPY_MAX - 2)
    return max(buf.rfind(q, lo, end - 1) for q in (b'"', b"'", b"`"))


#: How far around a quoted string its name is looked for (``"sha256": "..."``). Lines of
#: minified data are megabytes long: searching all of it for every quoted string would
#: cost quadratic time.
_NAME_REACH = 80


def _named_as_id(c: Candidate) -> bool:
    at = c.line.find(c.secret)
    if at < 0:
        return _names_an_id(c.line[:_NAME_REACH])
    lo, hi = max(0, at - _NAME_REACH), at + len(c.secret) + _NAME_REACH // 2
    return _names_an_id(c.line[lo:hi])


def _entropy_screen(minimum: float, hex_only: bool) -> Callable[[bytes], bool]:
    def screen(s: bytes) -> bool:
        # Cheapest questions first. A string of k distinct symbols has at most log2(k) bits
        # per symbol, so most quoted words and paths are out before entropy is computed.
        if hex_only != is_hex(s) or math.log2(len(set(s))) + 1e-9 < minimum:
            return False
        return shannon(s) >= minimum

    return screen


def _entropy_gate(minimum: float, hex_only: bool) -> Callable[[Candidate], bool]:
    screen = _entropy_screen(minimum, hex_only)

    def gate(c: Candidate) -> bool:
        return screen(c.secret) and not _named_as_id(c)

    return gate


# Credentials named in prose and printed output: "connecting with credential X",
# "token: X", "Bearer X", "your API key is X", and a tracebacks' "bad secret key X".
_CONTEXT_WORDS = (
    r"credentials?|tokens?|(?:api|access|secret|private|auth|account|service)[ _-]?keys?|"
    r"keys?|secrets?|pass(?:words?|wd|phrase)|pwd|bearer|apikey|access|private"
)
# Between the word and the value: blanks, quotes, ``:``/``=``/``->``, a table's ``|``, the
# padding of a pandas Series or an aligned listing (``api_key                  X``), and
# at most two linking words ("is", "was set to", an XML config's
# ``<add key="SmtpPassword" value="X"/>``).
_BLANKS = r"""[\s"'`:=|>(\[,-]{1,8}"""
_PADDING = r"[ \t:=]{9,48}"
_CONTEXT_LINK = (
    rf"(?:{_BLANKS}(?:(?:is|was|set|to|as|of|with|for|now|value)\b{_BLANKS}){{0,2}}|{_PADDING})"
)
# No "=" inside (only base64 padding at the end): "password=password=..." then fails
# after one word instead of reading 500 bytes at every anchor.
# Passwords carry punctuation (``*Ke6-cEJ...``, ``i8%1!U6...``, ``Kx9;fQ2m,Z7``); a sentence's
# final "." ":" "," ";" is not part of the value.
_CONTEXT_VALUE = r"[A-Za-z0-9_+/~!#$%^&*][A-Za-z0-9_+/~.!#$%^&*:@;,-]{14,510}(?<![.:;,-])={0,2}"
CONTEXT_ENTROPY = 3.5


# Where a credential word may start: a word's start, or inside a name where a new part
# starts (``atera_key``, ``geckoboardKEY``, ``appSecret``); not ``monkey``, ``hostkey``.
_WORD_START = r"(?:\b|(?<=_)|(?-i:(?<=[a-z0-9])(?=[A-Z])))"
_CONTEXT_WORD = re.compile(rf"(?i){_WORD_START}(?:{_CONTEXT_WORDS})".encode())
# Names of keys that are data, not credentials: a table's row or partition key, a cache or
# object key, a public key (``partitionKey``, ``cache_key``, ``s3_key``, ``hostKey``).
_DATA_KEY = re.compile(
    # Where a name part starts: ``bitbucket_key`` is no bucket's key.
    _WORD_START.encode()
    + rb"(?i:(?:partition|row|sort|primary|foreign|cache|hash|range|routing|object|s3|bucket|"
    rb"dedup|idempotency|start|evaluated|lookup|host|pub|public|verify|verifying)[ _-]?keys?\b)"
)
# An SSH public key (``AAAAC3NzaC1lZDI1NTE5...``) or a DER public key (``MCowBQYDK2Vw...``).
_PUBLIC_KEY_VALUE = re.compile(rb"^(?:AAAA[BC][0-9A-Za-z]Nza|MCowBQYDK2Vw|MFkwEwYH|MIIBIjAN)")
_UPPER_ALNUM = re.compile(rb"^[A-Z0-9-]+$")
_UPPER, _LOWER = re.compile(rb"[A-Z]"), re.compile(rb"[a-z]")


def _nearest_word(line: bytes, at: int) -> re.Match[bytes] | None:
    """The credential word nearest before the value at ``at`` (within 80 bytes)."""
    words = list(_CONTEXT_WORD.finditer(line, max(0, at - 80), at))
    return words[-1] if words else None


def _name_around(line: bytes, at: int, end: int, word: re.Match[bytes] | None) -> bytes:
    """The words that name a value in prose: the credential word before it (``word``)
    with the two words before that (``commit token``, ``fingerprint of key``), the link
    up to the value (``key id:``), and the word after it. The rest of the line is other
    clauses: ``user_id=42 connecting with credential X`` names X a credential, not an id."""
    lo = max(0, at - 80)
    start = word.start() if word is not None else lo
    for _ in range(2):
        blank = line.rfind(b" ", lo, max(lo, start - 1))
        start = blank + 1 if blank >= 0 else lo
    after = line[end : end + 40].lstrip()
    return line[start:at] + b" " + after.split(None, 1)[0] if after else line[start:at]


def _looks_random(s: bytes, minimum: float) -> bool:
    """Letters and digits mixed, or (without digits) letters whose case changes throughout,
    at a high entropy. Upper-case-and-digit keys (``9WE0DPY0GGAA0D1E``) have 36 symbols, so
    their entropy tops out lower: they get the hex gate, as hex does."""
    if has_digit_and_letter(s):
        gate = min(minimum, HEX_ENTROPY) if is_hex(s) or _UPPER_ALNUM.match(s) else minimum
        return shannon(s) >= gate
    upper, lower = len(_UPPER.findall(s)), len(_LOWER.findall(s))
    return min(upper, lower) >= 4 and shannon(s) >= minimum and word_share(s) < 0.3


#: A package file with its digest, as lock files pin them
#: (``sonarqube-reporter-1.2.4.tgz#3b335d61...``): a name and a hash, no credential.
_PINNED_ARTIFACT = re.compile(rb"\.(?:tgz|tar\.gz|tar\.bz2|whl|zip|jar|gem|nupkg|crate)[#@]")


#: Pairs of a name and a value in a list (a minified script's keyword table,
#: ``private:152,protected:152,virtual:154``): a listing, not one credential.
_LISTED_PAIRS = re.compile(rb"[,;][ \t]*[A-Za-z_][A-Za-z0-9_]{2,}[:=]")


#: Words that name a credential only as a key's name: in prose they are common
#: ("grant access to <id>", "private   i-0abc..." in a listing).
_KEY_NAME_ONLY = (b"access", b"private")


def _names_a_key(line: bytes, at: int, word: re.Match[bytes] | None) -> bool:
    """The credential word nearest before the value (``word``), if it is ``access`` or
    ``private``, is written as a key's name: upper case (``ACCESS X``) or glued into a
    longer name (``logzPrivateAccess=X``, ``weatherbitACCESS``), and only blanks or signs
    lead to the value (no linking word)."""
    if word is None:
        return True
    text = word.group()
    if text.lower() not in _KEY_NAME_ONLY:
        return True
    glued = word.start() > 0 and line[word.start() - 1 : word.start()].isalnum()
    if not (text.isupper() or glued):
        return False
    return not any(65 <= (b & 0xDF) <= 90 for b in line[word.end() : at])


def _leads_listing(s: bytes, minimum: float) -> bool:
    """No listing in ``s``, or a credential before it (``Xy9aB3cD5eF7gH1jKq2,region:us``:
    the whole value is redacted); ``152,protected:152,...`` has none."""
    listed = _LISTED_PAIRS.search(s)
    if listed is None:
        return True
    head = s[: listed.start()]
    return len(head) >= 15 and _looks_random(head, minimum)


def _context_screen(minimum: float) -> Callable[[bytes], bool]:
    """What ``_context_gate`` asks of the value alone."""

    def screen(s: bytes) -> bool:
        return (
            _looks_random(s, minimum)
            and _PINNED_ARTIFACT.search(s) is None
            and _PUBLIC_KEY_VALUE.match(s) is None
            and _leads_listing(s, minimum)
        )

    return screen


def _context_gate(minimum: float) -> Callable[[Candidate], bool]:
    """Prose is a weak context, so the value must read as a random token (see
    ``_looks_random``), not a name made of words (``model_state_dict_v2``,
    ``/home/user/.cache/token``), nor an id named by a hash word (``commit``, ``sha``),
    nor a package file pinned by its digest."""

    screen = _context_screen(minimum)

    def gate(c: Candidate) -> bool:
        s = c.secret
        if not screen(s):
            return False
        # Only near the value: a minified line may be megabytes long.
        at = max(0, c.line.find(s))
        word = _nearest_word(c.line, at)
        name = _name_around(c.line, at, at + len(s), word)
        if _names_an_id(name) or _DATA_KEY.search(name) or not _names_a_key(c.line, at, word):
            return False
        digits = sum(48 <= b <= 57 for b in s) / len(s)
        return word_share(s) < 0.5 or digits >= 0.15

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
            anchor=rf"(?:{_KEYWORD_ANCHORS})s?{ASSIGN}".encode(),
            value=assignment(_KEYWORDS + r")s?(?:", 8),
            kind=Kind.KEYWORD,
            caseless=True,
            validate=literal_gate(keyword_entropy, keyword_entropy + 0.5),
        ),
        Detector(
            id="keyword-context",
            title="Random-looking value next to a credential word in prose or output "
            "(credential X, token: X, Bearer X)",
            anchor=(
                rf"(?:{_CONTEXT_WORDS}){_CONTEXT_LINK}[\"'`]?"
                r"[A-Za-z0-9_+/~!#$%^&*][A-Za-z0-9_+/~.!#$%^&*:@;,-]{11}"
            ).encode(),
            value=rx(
                # The word may end a longer name (``atera_key``, ``geckoboardKEY=``;
                # _WORD_START). A public key's ("-----BEGIN PUBLIC KEY-----\nMIIB...",
                # ``publicKey``) is no credential: the gate reads the name (_DATA_KEY).
                rf"(?i){_WORD_START}(?:{_CONTEXT_WORDS}){_CONTEXT_LINK}[\"'`]?"
                rf"(?P<secret>{_CONTEXT_VALUE})(?![A-Za-z0-9_+/~=!#$%^&*@])"
            ),
            kind=Kind.KEYWORD,
            caseless=True,
            window=600,
            validate=_context_gate(CONTEXT_ENTROPY),
            screen=_context_screen(CONTEXT_ENTROPY),
            restart=_CONTEXT_WORD,
        ),
        Detector(
            id="quoted-line",
            title="A line that is only a quoted random-looking string (the repr of a "
            "token printed or returned by a cell)",
            anchor=rb"(?:^|\n)[ \t]{0,8}[\"'][A-Za-z0-9_+/~!#$%^&*][A-Za-z0-9_+/~.!#$%^&*:@-]{11}",
            value=rx(
                rf"\n?[ \t]{{0,8}}(?P<q>[\"'])(?P<secret>{_CONTEXT_VALUE})(?P=q)"
                r"[ \t]{0,8}(?:\n|$)"
            ),
            kind=Kind.KEYWORD,
            window=600,
            validate=_context_gate(CONTEXT_ENTROPY),
            screen=_context_screen(CONTEXT_ENTROPY),
            in_markup=False,  # a drawing has no printed lines
        ),
        Detector(
            id="base64-high-entropy",
            title="Quoted high-entropy base64 string",
            anchor=_ENTROPY_ANCHOR,
            anchor_start=_opening_quote,
            value=rx(r"(?P<q>[\"'`])(?P<secret>[A-Za-z0-9+/=_-]{20,512})(?P=q)"),
            kind=Kind.ENTROPY,
            validate=_entropy_gate(base64_entropy, hex_only=False),
            screen=_entropy_screen(base64_entropy, hex_only=False),
            in_markup=False,  # a quoted string in a drawing is an attribute value
        ),
        Detector(
            id="hex-high-entropy",
            title="Quoted high-entropy hex string",
            anchor=_ENTROPY_ANCHOR,
            anchor_start=_opening_quote,
            value=rx(r"(?P<q>[\"'`])(?P<secret>[0-9a-fA-F]{20,512})(?P=q)"),
            kind=Kind.ENTROPY,
            validate=_entropy_gate(hex_entropy, hex_only=True),
            screen=_entropy_screen(hex_entropy, hex_only=True),
            in_markup=False,
        ),
    )


DETECTORS = detectors()
