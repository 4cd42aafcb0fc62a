"""A reading of HTML tables that puts each value next to its column or row name.

``<tr><th>api_key</th>...</tr><tr><td>abc...</td></tr>`` has the credential word and the
value far apart in the markup; the keyword detectors see them as ``api_key: abc...`` in
this view. The view is scanned besides the HTML itself (never instead of it: attributes
such as ``href`` keep their own findings), and a value found in it is redacted wherever
it occurs in the original text.
"""

from __future__ import annotations

import re

_TABLE = re.compile(rb"(?is)<table\b.*?(?:</table\s*>|\Z)")
_ROW = re.compile(rb"(?is)<tr\b[^>]*>(.*?)(?=<tr\b|</table|\Z)")
_CELL = re.compile(rb"(?is)<t([hd])\b[^>]*>(.*?)(?=<t[hd]\b|</tr|\Z)")
_TAG = re.compile(rb"<[^<>]{0,4096}>")
_BLANKS = re.compile(rb"\s+")


def _text(fragment: bytes) -> bytes:
    return _BLANKS.sub(b" ", _TAG.sub(b" ", fragment)).strip()


# A cell holding one long token, and a table that mentions a credential at all: most
# tables (DataFrames of numbers) need neither the per-row pairing nor any Python per cell.
_LONG_CELL = re.compile(rb"(?i)<t[hd]\b[^<>]{0,512}>\s*([^<>\s]{16,512})\s*</t[hd]")
# Plain substring tests on the lower-cased text: a case-insensitive regex alternation is
# an order of magnitude slower over large outputs.
_CREDENTIAL_WORDS = (b"credential", b"token", b"key", b"secret", b"pass", b"pwd", b"bearer")


def table_view(html: bytes) -> bytes:
    """One line per single-token cell (``'cell'``, quoted as a repr is: the ``quoted-line``
    detector then asks whether it reads as a random token) and, for tables that mention a
    credential word, one line per row (``name: value``) and one per cell under a header
    row (``header: cell``); empty when ``html`` has no table."""
    if b"<table" not in html and b"<TABLE" not in html:
        return b""
    lines = [b"'" + m.group(1) + b"'" for m in _LONG_CELL.finditer(html)]
    lowered = html.lower()
    if any(word in lowered for word in _CREDENTIAL_WORDS):
        for table in _TABLE.finditer(html):
            lines.extend(_paired(table.group()))
    return b"\n".join(lines)


def _paired(table: bytes) -> list[bytes]:
    lines: list[bytes] = []
    header: list[bytes] | None = None
    for row in _ROW.finditer(table):
        cells = _CELL.findall(row.group(1))
        texts = [_text(body) for _, body in cells]
        if not texts:
            continue
        lines.append(b": ".join(texts))
        if header is None and all(kind.lower() == b"h" for kind, _ in cells):
            header = texts
        elif header is not None:
            # pandas puts the index in a <th> of each row: it lines up with the header's.
            lines.extend(h + b": " + t for h, t in zip(header, texts, strict=False) if h and t)
    return lines
