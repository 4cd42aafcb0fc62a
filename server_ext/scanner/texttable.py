"""A reading of plain-text tables that puts each value next to its column name.

``print(df)`` and Markdown-style tables put the credential word in a header line and the
value lines below it::

      service                  api_key          | service | api_key |
    0    qlab  A8fK2mQ9xZ3pL7wRt5Yb             |---------|---------|
                                                | qlab    | A8fK... |

The keyword detectors see them as ``api_key: A8fK...`` in this view; it is scanned
besides the text (never instead of it), and a value found in it is redacted wherever it
occurs in the original, as for HTML tables (html.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from .html import credential_word_ends

#: A header is a line of at most this many bytes; longer lines are data, not a table.
_MAX_HEADER = 512
#: Rows read under one header: a table printed whole is longer, but its head is where
#: ``print(df)`` and ``df.head()`` put the first values, and the view stays linear.
_MAX_ROWS = 200
#: Credential words found in one native pass (the lines that hold them are the only
#: possible headers); text with more is read line by line, as before, after a native pass
#: stopped at the first word past these.
_MAX_WORDS = 1024
#: The view is at most this many times its text's size, plus ``_BUDGET_EXTRA`` bytes: a
#: row under a header of many credential columns repeats its cells once per column, and
#: lines of words (``print("token", word)`` in a loop) are each a header and a row.
_BUDGET_FACTOR = 2
_BUDGET_EXTRA = 64 * 1024
_WORD = re.compile(rb"(?i)credential|token|key|secret|pass(?:word|wd|phrase)?|pwd|bearer|apikey")
_TOKEN = re.compile(rb"[^\s|]+")
_RULE = re.compile(rb"^[\s|:+=-]*$")
#: A column name: a word or identifier, as DataFrame columns and table headings are.
_NAME = re.compile(rb"^[A-Za-z_][\w .()/-]{0,63}$")


def text_table_view(text: bytes) -> bytes:
    """``header: value`` lines for the columns of plain-text tables whose header names a
    credential; empty when there is none (most outputs: one native pass decides).

    A header is a line of two or more column names (``IBM password > ****`` is a prompt, not
    a header); the table is the rows below it with as many cells (or one more, pandas' index)
    up to the first that has not."""
    ends = credential_word_ends(text, _MAX_WORDS)
    if ends is not None and not ends:
        return b""
    lines = text.split(b"\n")
    out: list[bytes] = []
    size, budget = 0, _BUDGET_FACTOR * len(text) + _BUDGET_EXTRA
    read_to = 0  # lines before it were read as rows of a table already: rows, not headers
    for i in _lines_of(text, ends) if ends is not None else _word_lines(lines):
        if i < read_to:
            continue
        header = lines[i]
        i += 1
        if len(header) > _MAX_HEADER:
            continue
        piped = b"|" in header
        names = _cells(header, piped)
        if len(names) < 2 or not all(_NAME.match(n) for n in names):
            continue
        columns = _columns(header, names, piped)
        indexed: bool | None = None  # rows with pandas' index: a line without is a header
        for row in lines[i : i + _MAX_ROWS]:
            if _RULE.match(row) and row.strip():
                i += 1
                continue  # |---|---| or ====
            cells = _cells(row, piped)
            if not len(names) <= len(cells) <= len(names) + (0 if piped else 1):
                break
            if indexed is None:
                indexed = len(cells) > len(names)
            elif indexed and len(cells) == len(names) and _a_header(cells):
                break  # the next DataFrame printed right below: its header
            pairs = _pairs(columns, row, cells, piped)
            size += sum(map(len, pairs)) + len(pairs)
            if size > budget:  # a crafted table: what was read so far is the view
                return b"\n".join(out)
            out.extend(pairs)
            i += 1
        read_to = i
    return b"\n".join(out)


def _a_header(cells: list[bytes]) -> bool:
    """Cells that read as column names, one naming a credential (a row with an empty cell
    has one cell fewer too, but its index is a number)."""
    return all(_NAME.match(c) for c in cells) and any(_WORD.search(c) for c in cells)


def _word_lines(lines: list[bytes]) -> Iterator[int]:
    """The indices of the lines short enough for a header that hold a credential word,
    one regex search each: for text with more words than ``_MAX_WORDS``."""
    for i, line in enumerate(lines):
        if len(line) <= _MAX_HEADER and _WORD.search(line):
            yield i


def _lines_of(text: bytes, ends: list[int]) -> list[int]:
    """The indices of the lines of ``text`` holding the words that end at ``ends`` (in
    order, each once): only they may be a table's header. A word holds no line break, so
    its line is its last byte's; newlines are counted once, between successive words."""
    found: list[int] = []
    line, counted = 0, 0
    for end in ends:
        line += text.count(b"\n", counted, end - 1)
        counted = end - 1
        if not found or found[-1] != line:
            found.append(line)
    return found


def _cells(line: bytes, piped: bool) -> list[bytes]:
    if piped:
        return [c.strip() for c in line.strip().strip(b"|").split(b"|")]
    return line.split()


def _columns(header: bytes, names: list[bytes], piped: bool) -> list[tuple[int, int, bytes]]:
    """(start, end, name) of the header's columns that name a credential; for a piped
    table, start is the column's index."""
    if piped:
        return [(j, j, n) for j, n in enumerate(names) if _WORD.search(n)]
    tokens = _TOKEN.finditer(header)
    return [(m.start(), m.end(), m.group()) for m in tokens if _WORD.search(m.group())]


def _pairs(
    columns: list[tuple[int, int, bytes]], row: bytes, cells: list[bytes], piped: bool
) -> list[bytes]:
    if piped:
        return [name + b": " + cells[j] for j, _, name in columns if j < len(cells) and cells[j]]
    found = []
    tokens = list(_TOKEN.finditer(row))
    for start, end, name in columns:
        # pandas aligns a column's values with its name: right for text and numbers, left
        # when justified so; a value under the name's span is that column's.
        for t in tokens:
            if t.start() < end and t.end() > start:
                found.append(name + b": " + t.group())
                break
    return found
