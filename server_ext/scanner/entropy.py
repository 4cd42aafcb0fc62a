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


# A word inside an identifier: "Password" in "addPassword", "layer" in "layer1.weight".
_WORD = re.compile(rb"[A-Z]?[a-z]{3,}|[A-Z]{4,}(?![a-z])")


def word_share(data: bytes) -> float:
    """The share of ``data`` in runs of three or more lowercase letters (optionally
    capitalised): high for names made of words (``model_state_dict_v2``,
    ``/home/user/.cache``), low for random tokens, whose letters change case every
    character or two."""
    if not data:
        return 0.0
    return sum(m.end() - m.start() for m in _WORD.finditer(data)) / len(data)
