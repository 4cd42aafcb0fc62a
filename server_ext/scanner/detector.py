"""The detector model: a cheap anchor found by hyperscan, confirmed by a bounded regex.

Every detector has a stable ``id`` that appears in findings, redaction markers,
configuration and audit events, so ids are never renamed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from .filters import Candidate


class Kind(Enum):
    """How specific a detector is; decides where it runs and which wins on overlap."""

    #: A documented credential format (``ghp_...``, ``AKIA...``).
    FORMAT = 1
    #: A value anchored on a vendor's keyword (``IONQ_API_KEY = ...``).
    VENDOR = 2
    #: A value anchored on a generic keyword (``password = ...``) behind an entropy gate.
    KEYWORD = 3
    #: A quoted high-entropy string. Never runs over binary payloads.
    ENTROPY = 4


@dataclass(frozen=True)
class Detector:
    """One kind of credential.

    ``anchor`` is a hyperscan expression that must report once per candidate
    (end it on a fixed-width token, never on an open repeat) so a pathological
    input cannot make it report at every byte. ``value`` is a Python regex run
    with ``match`` at the anchor's start on at most ``window`` bytes; its
    groups named ``secret`` (or ``secret2``, ``secret3``) hold the credential.
    """

    id: str
    title: str
    anchor: bytes
    value: re.Pattern[bytes]
    kind: Kind = Kind.FORMAT
    caseless: bool = False
    window: int = 512
    #: How many leading bytes of the value are a public format prefix
    #: (``ghp_``), safe to show in a fingerprint. Zero shows nothing.
    public_prefix: int = 0
    #: Minimum Shannon entropy (bits per byte) of the secret; None disables the gate.
    min_entropy: float | None = None
    #: Extra check on the candidate (a checksum, a JSON header, an entropy gate that
    #: depends on whether the value was quoted). Returns True to keep the finding.
    validate: Callable[[Candidate], bool] | None = None
    #: The questions of ``validate`` that the value alone answers, asked before its line
    #: is read (a minified script gives thousands of quoted strings, most of them out on
    #: these). False only where ``validate`` is False: the outcome is the same.
    screen: Callable[[bytes], bool] | None = None
    #: Bytes before the anchor start where the value may begin (``search`` instead of ``match``).
    back: int = 0
    #: Where else inside the anchor's match the value may start, tried when it does not
    #: match at the anchor's start. Hyperscan reports one (leftmost) start per match end,
    #: and a value whose first word must start a name part may start later than the
    #: anchor: in ``newsapi key X`` the anchor starts at ``api key``, the value at ``key``.
    restart: re.Pattern[bytes] | None = None
    #: Where the anchor's match starts, given the buffer and the match's end. With this the
    #: anchor is compiled without start-of-match tracking, which hyperscan pays for on
    #: every candidate; for anchors whose start is plain to see (an opening quote).
    anchor_start: Callable[[bytes, int], int] | None = None
    #: Safe to run over base64 payloads of images: the format has a character or
    #: structure that random base64 cannot produce by chance.
    in_binary: bool = False
    #: Run over SVG drawings (``SegmentKind.MARKUP``) too. Off where a drawing makes the
    #: anchor costly and the value implausible: an anchor with no literal of its own, or
    #: one that path data holds everywhere, runs hyperscan's automata at most of its bytes
    #: (an SVG is megabytes of them); a quoted string there is an attribute value.
    in_markup: bool = True
    #: A shorter anchor for text segments, when ``anchor`` is costly for hyperscan (one
    #: with few literal bytes) and the shorter one fires rarely in text. Binary payloads
    #: keep ``anchor``: random base64 would fire the shorter one thousands of times.
    text_anchor: bytes | None = None
    #: Off unless an admin enables it (kinds that are not credentials).
    default_enabled: bool = True
    #: A value known to be secret (delivered to this server): never filtered or allowed.
    known: bool = False
    examples: tuple[str, ...] = field(default=(), compare=False)

    def secret_of(self, match: re.Match[bytes]) -> tuple[int, int] | None:
        """The span of the credential inside ``match``, or None."""
        for name in ("secret", "secret2", "secret3"):
            if name in self.value.groupindex and match.group(name) is not None:
                return match.span(name)
        return match.span() if not self.value.groupindex else None


def rx(pattern: str, flags: int = 0) -> re.Pattern[bytes]:
    """Compile a bytes regex; kept in one place so every detector uses the same flags."""
    return re.compile(pattern.encode(), flags)
