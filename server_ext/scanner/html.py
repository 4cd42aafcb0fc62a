"""A reading of HTML tables that puts each value next to its column or row name.

``<tr><th>api_key</th>...</tr><tr><td>abc...</td></tr>`` has the credential word and the
value far apart in the markup; the keyword detectors see them as ``api_key: abc...`` in
this view. The view is scanned besides the HTML itself (never instead of it: attributes
such as ``href`` keep their own findings), and a value found in it is redacted wherever
it occurs in the original text.
"""

from __future__ import annotations

import re

import hyperscan

from . import compiled

_TABLE = re.compile(rb"(?is)<table\b.*?(?:</table\s*>|\Z)")
_ROW = re.compile(rb"(?is)<tr\b[^<>]{0,4096}>(.*?)(?=<tr\b|</table|\Z)")
_CELL = re.compile(rb"(?is)<t([hd])\b[^<>]{0,4096}>(.*?)(?=<t[hd]\b|</tr|\Z)")
_TAG = re.compile(rb"<[^<>]{0,4096}>")
_BLANKS = re.compile(rb"\s+")


def _text(fragment: bytes) -> bytes:
    return _BLANKS.sub(b" ", _TAG.sub(b" ", fragment)).strip()


# A cell holding one long token, and a table that mentions a credential at all: most
# tables (DataFrames of numbers) need neither the per-row pairing nor any Python per cell.
# Case-sensitive first: the literal "<t" lets the regex engine skip ahead (renderers write
# lower-case tags); HTML with upper-case tags gets the slower case-insensitive pattern.
_LONG_CELL_PATTERN = rb"<t[hd]\b[^<>]{0,512}>\s*([^<>\s]{16,512})\s*</t[hd]"
_LONG_CELL = re.compile(_LONG_CELL_PATTERN)
_LONG_CELL_ANY_CASE = re.compile(_LONG_CELL_PATTERN, re.IGNORECASE)

_LONG_TEXT, _CREDENTIAL_WORD = 0, 1
#: The words that name a credential, for the probes below (any case).
_CREDENTIAL_WORDS = rb"credential|token|key|secret|pass|pwd|bearer"


class _Probe:
    """One native pass that says whether a table has a long token after a tag and whether
    it mentions a credential word, so that tables of numbers cost no Python regex."""

    def __init__(self) -> None:
        self._matcher = compiled.matcher(
            [rb">\s{0,64}[^<>\s]{16}", _CREDENTIAL_WORDS],
            [
                hyperscan.HS_FLAG_SINGLEMATCH,
                hyperscan.HS_FLAG_SINGLEMATCH | hyperscan.HS_FLAG_CASELESS,
            ],
        )

    def __call__(self, html: bytes) -> set[int]:
        return {i for i, _start, _end in self._matcher.matches(html)}


_probe = _Probe()
#: Whether markup has a table at all, in one literal pass (most HTML outputs have none;
#: two ``bytes`` searches, for ``<table`` and ``<TABLE``, cost twice that and missed
#: ``<Table``).
_TABLE_TAG = compiled.matcher(
    [rb"<table"], [hyperscan.HS_FLAG_SINGLEMATCH | hyperscan.HS_FLAG_CASELESS]
)


def has_credential_word(text: bytes) -> bool:
    """Whether ``text`` mentions a credential word at all (one native pass)."""
    return _CREDENTIAL_WORD in _probe(text)


#: The credential words of ``_probe``, each occurrence reported (``credential_word_ends``).
_WORDS = compiled.matcher([_CREDENTIAL_WORDS], [hyperscan.HS_FLAG_CASELESS])


def credential_word_ends(text: bytes, limit: int) -> list[int] | None:
    """Where each credential word in ``text`` ends, in order (one native pass); None when
    there are more than ``limit``."""
    found = _WORDS.first_matches(text, limit)
    # hyperscan reports by end already; sorting a sorted list is one pass
    return None if found is None else sorted(end for _i, _start, end in found)


def table_view(html: bytes) -> bytes:
    """One line per single-token cell (``'cell'``, quoted as a repr is: the ``quoted-line``
    detector then asks whether it reads as a random token) and, for tables that mention a
    credential word, one line per row (``name: value``) and one per cell under a header
    row (``header: cell``); empty when ``html`` has no table."""
    if not _TABLE_TAG.matches(html):
        return b""
    found = _probe(html)
    lines: list[bytes] = []
    if _LONG_TEXT in found:
        cells = _LONG_CELL_ANY_CASE if b"<T" in html else _LONG_CELL
        lines = [b"'" + m.group(1) + b"'" for m in cells.finditer(html)]
    if _CREDENTIAL_WORD in found:
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
