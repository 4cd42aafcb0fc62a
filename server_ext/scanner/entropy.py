"""Shannon entropy and the character-class checks the entropy gates use."""

from __future__ import annotations

import math
import re
from collections import Counter

HEX = frozenset(b"0123456789abcdefABCDEF")


def shannon(data: bytes) -> float:
    """Bits of entropy per byte of ``data`` (0.0 for empty input)."""
    if not data:
        return 0.0
    n = len(data)
    return -sum(c / n * math.log2(c / n) for c in Counter(data).values())


def is_hex(data: bytes) -> bool:
    return bool(data) and all(b in HEX for b in data)


def has_digit_and_letter(data: bytes) -> bool:
    return any(48 <= b <= 57 for b in data) and any(65 <= (b & 0xDF) <= 90 for b in data)


def has_digit_lower_upper(data: bytes, upper: bool = True) -> bool:
    """Digits, small letters and (with ``upper``) capitals: a generated token's mix."""
    return (
        any(48 <= b <= 57 for b in data)
        and any(97 <= b <= 122 for b in data)
        and (not upper or any(65 <= b <= 90 for b in data))
    )


# A word inside an identifier: "Password" in "addPassword", "layer" in "layer1.weight".
_WORD = re.compile(rb"[A-Z]?[a-z]{3,}|[A-Z]{4,}(?![a-z])")


def word_share(data: bytes) -> float:
    """The share of ``data`` in pronounceable runs of three or more lowercase letters
    (optionally capitalised): high for names made of words (``model_state_dict_v2``,
    ``/home/user/.cache``), low for random tokens, whose letters change case every
    character or two."""
    if not data:
        return 0.0
    words = (m.group() for m in _WORD.finditer(data))
    return sum(len(w) for w in words if _pronounceable(w)) / len(data)


_VOWEL = re.compile(rb"[aeiouyAEIOUY]")
_CONSONANTS = re.compile(rb"[^aeiouyAEIOUY]{4}")


def _pronounceable(run: bytes) -> bool:
    """Words have vowels and no four consonants in a row; "zmzjzp" in a token does not."""
    return _VOWEL.search(run) is not None and _CONSONANTS.search(run) is None
