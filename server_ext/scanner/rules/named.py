"""Credentials recognised by the name they are kept under, beyond the generic keywords.

``DD_APP_KEY=...``, ``SEGMENT_WRITE_KEY=...``, ``CLARIFAI_PAT=...``, ``KAGGLE_KEY=...``:
most vendor keys without a distinctive shape live in an environment variable or a
constant named ``*_KEY`` / ``*_PAT``. Such names are also given to ordinary values
(``SORT_KEY = "timestamp"``), so the value must look generated: long, mixing
digits and letters, with a token's entropy.
"""

from __future__ import annotations

from ..detector import Detector, Kind, rx
from ..entropy import has_digit_and_letter, shannon
from ..filters import Candidate
from ._common import ASSIGN, BARE, QUOTED, assignment

#: Key names that say "credential" (``app_key``, ``write_key``, ``sdk_key``), any case.
_KEY_NAMES = (
    r"(?:app|admin|write|read|sdk|license|master|signing|encryption|subscription|account|"
    r"service|unseal|shared|function|ingest|management|mobile|server|integration|user|"
    r"developer|consumer|partner|merchant|webhook)[_-]?key|_pat"
)
#: ``SOMETHING_KEY``: an upper-case constant or environment variable (case-sensitive).
_CONSTANT = r"\b[A-Z][A-Z0-9_]{0,48}_KEY"


def _generated(c: Candidate) -> bool:
    return len(c.secret) >= 16 and has_digit_and_letter(c.secret) and shannon(c.secret) >= 3.3


DETECTORS = (
    Detector(
        id="named-key-assignment",
        title="A literal assigned to a key-named variable (app_key=, write_key=, *_PAT=)",
        anchor=rf"(?:{_KEY_NAMES})s?{ASSIGN}".encode(),
        value=assignment(_KEY_NAMES + r")s?(?:", 16),
        kind=Kind.KEYWORD,
        caseless=True,
        validate=_generated,
    ),
    Detector(
        id="key-constant-assignment",
        title="A generated-looking literal assigned to an upper-case *_KEY constant",
        anchor=rf"{_CONSTANT}{ASSIGN}".encode(),
        # Publishable and public keys are meant to be shown (``STRIPE_PUBLISHABLE_KEY``).
        value=rx(rf"(?![A-Z0-9_]{{0,48}}PUBLI){_CONSTANT}{ASSIGN}(?:{QUOTED % 16}|{BARE % 16})"),
        kind=Kind.KEYWORD,
        validate=_generated,
    ),
)
