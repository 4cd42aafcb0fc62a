"""Shannon entropy and the character-class checks the entropy gates use."""

from __future__ import annotations

import math
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
