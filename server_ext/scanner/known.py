"""Known secret values: one detector that finds delivered values and their encodings.

The server extension knows the exact values it delivered, so it does not need a
pattern: every value is searched for as itself, base64 (standard and URL-safe, padded
or not), URL-encoded, hex (lower and upper case) and JSON-escaped. They are compiled into
the same hyperscan database as the other detectors, so the guard still scans a
notebook in one pass. Findings are never filtered (no entropy gate, allow-list or
pragma): a delivered value is a secret wherever it appears.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

from .detector import Detector, Kind

DETECTOR_ID = "known-secret"
#: Values shorter than this are not searched for (they would match everywhere).
MIN_BYTES = 8


def encodings(value: str) -> set[bytes]:
    """The byte forms of ``value`` the guard looks for."""
    raw = value.encode("utf-8")
    forms = {
        raw,
        json.dumps(value)[1:-1].encode(),
        json.dumps(value, ensure_ascii=False)[1:-1].encode("utf-8"),
        base64.b64encode(raw),
        base64.b64encode(raw).rstrip(b"="),
        base64.urlsafe_b64encode(raw),
        base64.urlsafe_b64encode(raw).rstrip(b"="),
        quote(value, safe="").encode(),
        quote_plus(value, safe="").encode(),
        raw.hex().encode(),
        raw.hex().upper().encode(),
    }
    return {f for f in forms if len(f) >= MIN_BYTES}


def known_detectors(values: Iterable[str]) -> list[Detector]:
    """One detector per value, all with the id ``known-secret`` (hyperscan limits the
    length of one expression, so the values cannot share one alternation)."""
    out = []
    for value in sorted(set(values)):
        if len(value.encode("utf-8")) < MIN_BYTES:
            continue
        # Longest first, so at one position the longest form (padded base64) wins.
        ordered = sorted(encodings(value), key=lambda f: (-len(f), f))
        anchor = b"|".join(b"".join(b"\\x%02x" % c for c in f) for f in ordered)
        out.append(
            Detector(
                id=DETECTOR_ID,
                title="A secret value delivered to this server (or an encoding of it)",
                anchor=b"(?:" + anchor + b")",
                value=re.compile(b"|".join(re.escape(f) for f in ordered)),
                kind=Kind.FORMAT,
                window=max(len(f) for f in ordered),
                in_binary=True,
                known=True,
            )
        )
    return out
