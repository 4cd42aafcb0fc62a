"""The detector catalogue, most specific families first."""

from __future__ import annotations

from ..detector import Detector
from . import cloud, generic, hashes, keys, named, platforms, quantum, vendors

ALL: tuple[Detector, ...] = (
    *keys.DETECTORS,
    *cloud.DETECTORS,
    *platforms.DETECTORS,
    *vendors.DETECTORS,
    *hashes.DETECTORS,
    *quantum.DETECTORS,
    *named.DETECTORS,
    *generic.DETECTORS,
)
BY_ID: dict[str, Detector] = {d.id: d for d in ALL}


def catalogue(
    keyword_entropy: float = generic.KEYWORD_ENTROPY,
    base64_entropy: float = generic.BASE64_ENTROPY,
    hex_entropy: float = generic.HEX_ENTROPY,
) -> tuple[Detector, ...]:
    """All detectors, with the catch-alls' entropy limits as configured."""
    tuned = {d.id: d for d in generic.detectors(keyword_entropy, base64_entropy, hex_entropy)}
    return tuple(tuned.get(d.id, d) for d in ALL)


DEFAULT_IDS: tuple[str, ...] = tuple(d.id for d in ALL if d.default_enabled)
