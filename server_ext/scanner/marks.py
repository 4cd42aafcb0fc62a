"""Marks: what the text scan reports about each segment besides the detectors' anchors.

The notebook layer reads an output as a table (html.py, texttable.py) only when it has a
long token right after a tag or mentions a credential word. The engine's text scan, which
reads every segment anyway, reports the credential words (``SCANNED``), so a text output
is not read a second time to find out. The long-token mark is left to html.py's own probe
of HTML outputs: in the engine's scan it would cost more than the probe (every ``>`` in
every segment starts it).
"""

from __future__ import annotations

from enum import IntEnum


class Mark(IntEnum):
    LONG_TEXT = 0  # a tag, then 16 characters of one token: an HTML cell may hold a value
    CREDENTIAL_WORD = 1  # "token", "Password", ...: a table's header may name its values


#: The marks the engine's text scan reports.
SCANNED = (Mark.CREDENTIAL_WORD,)

#: Each mark's expression and whether it ignores case.
EXPRESSIONS: dict[Mark, tuple[bytes, bool]] = {
    Mark.LONG_TEXT: (rb">\s{0,64}[^<>\s]{16}", False),
    Mark.CREDENTIAL_WORD: (rb"credential|token|key|secret|pass|pwd|bearer", True),
}
