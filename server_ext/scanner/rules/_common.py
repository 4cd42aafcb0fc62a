"""Regex pieces and gates the rule families share."""

from __future__ import annotations

import re

from ..detector import Detector, Kind, rx
from ..entropy import has_digit_and_letter, shannon
from ..filters import Candidate

#: ``= value``, ``: value``, ``:= value``, ``=> value`` and ``name: str = value``; the name's
#: closing quote may be escaped (``"{\"password\": \"...\"}"``, a JSON body in a string).
ASSIGN = (
    r"""(?:\\?["'\]]){0,2}\s{0,8}"""
    r"""(?::\s{0,4}[A-Za-z_][\w.\[\]| ]{0,30}?\s{0,4}=|:=|=>|=|:)\s{0,8}"""
)
#: Python's r/b/u/f string prefixes, only where a quote follows: in ``KEY=f7k...`` the ``f``
#: is the first character of a bare value.
STRING_PREFIX = r"""(?:[rRbBuUfF]{1,2}(?=["'`]))?"""
#: A quoted literal (string prefixes r/b/u/f allowed) or a bare token up to a delimiter,
#: which may be the closing quote of a string it sits in (``"host=db password=..."``).
# Quotes may be escaped, as in a JSON body written inside a string literal.
# Possessive repeats: a value that is not followed by its delimiter fails at once
# instead of backtracking through every shorter length.
QUOTED = r"""[rRbBuUfF]{0,2}\\?(?P<q>["'`])(?P<secret>[^"'`\s\\]{%d,256}+)\\?(?P=q)"""
# A bare value may end in base64 padding but holds no other "=": "password=password=..."
# then fails after one word instead of after 256 bytes at every anchor.
# "&" ends it where the next query parameter follows (``?api_key=X&limit=10``); a password
# with "&" in it (``abcd1234&xyz``) is read whole by BARE_PUNCT below.
BARE = (
    r"""(?P<secret2>[^\s"'`,;()\[\]{}<>=&]{%d,256}+={0,2})"""
    r"""(?=[\s,;)\]}"'`]|&[\w.-]{1,40}=|$)"""
)
# Passwords carry ``;``, ``,`` and parentheses (``Kx9;fQ2m(Z7``): where the bare value up
# to the first of them is too short to be one, it runs to a blank, a quote or the end of
# the line. A connection string (``password=ab;database=x``) ends at the next "=": no match.
BARE_PUNCT = r"""(?P<secret3>[^\s"'`\[\]{}<>=\\]{%d,256}+)(?=[\s"'`]|$)"""


def assignment(keywords: str, min_len: int = 8, lead: str = "") -> re.Pattern[bytes]:
    """``<lead><keyword> = value`` with the value quoted or bare."""
    return rx(
        rf"(?i){lead}(?:{keywords}){ASSIGN}"
        rf"(?:{QUOTED % min_len}|{BARE % min_len}|{BARE_PUNCT % min_len})",
    )


def literal_gate(quoted_entropy: float, bare_entropy: float) -> _Gate:
    return _Gate(quoted_entropy, bare_entropy)


class _Gate:
    """Entropy gate for keyword-anchored values.

    A quoted literal next to ``password =`` is almost always a credential, so the
    gate is low. Prose and config words ("required", "enabled") are bare too, so a
    bare value must mix digits and letters (then only repetition is ruled out, as
    for a quoted literal: ``PASSWORD=hunter2hunter9``) or have clearly high entropy.
    """

    def __init__(self, quoted_entropy: float, bare_entropy: float) -> None:
        self.quoted_entropy = quoted_entropy
        self.bare_entropy = bare_entropy

    def __call__(self, c: Candidate) -> bool:
        entropy = shannon(c.secret)
        if c.quoted:
            return entropy >= self.quoted_entropy
        if has_digit_and_letter(c.secret):
            return entropy >= min(self.quoted_entropy, self.bare_entropy)
        return entropy >= self.bare_entropy + 0.7


#: ``IQM_TOKENS_FILE=/path``, ``PASQAL_TOKEN_URL=...``: the name says where a credential
#: is kept, so its value is a path or an address, not the credential.
_NOT_A_LOCATION = r"(?!\w{0,20}?(?:file|path|dir|url|uri)(?![A-Za-z0-9]))"


def vendor(
    id: str,
    title: str,
    vendor_words: str,
    key_words: str,
    secret_class: str = r"[^\s\"'`,;()\[\]{}<>]",  # noqa: S107 - a regex class
    min_len: int = 12,
    distance: int = 160,
) -> Detector:
    """A credential assigned near a vendor's name: ``IONQ_API_KEY = "..."``,
    ``IonQProvider(token="...")``, ``[pasqal] password = ...``."""
    value = rx(
        rf"(?i)(?:{vendor_words})[\s\S]{{0,{distance}}}?(?:{key_words}){_NOT_A_LOCATION}\w{{0,20}}"
        rf"{ASSIGN}"
        rf"{STRING_PREFIX}(?P<q>[\"'`]?)(?P<secret>{secret_class}{{{min_len},256}})(?P=q)"
        rf"(?![A-Za-z0-9_])"
    )
    return Detector(
        id=id,
        title=title,
        anchor=rf"(?:{vendor_words})".encode(),
        value=value,
        kind=Kind.VENDOR,
        caseless=True,
        window=distance + 400,
        validate=literal_gate(2.5, 3.0),
    )


def format_token(
    id: str, title: str, anchor: bytes, value: str, prefix: int, in_binary: bool = True
) -> Detector:
    """A token with a documented shape (``ghp_...``, ``AIza...``), ended by a non-token
    character; ``prefix`` bytes of it are the public format prefix."""
    return Detector(
        id=id,
        title=title,
        anchor=anchor,
        value=rx(rf"(?P<secret>{value})(?![A-Za-z0-9_-])"),
        public_prefix=prefix,
        in_binary=in_binary,
    )
