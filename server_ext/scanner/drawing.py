"""The text of an SVG drawing: what it shows (text elements, titles, descriptions) and
what it notes (comments; matplotlib writes each label drawn as glyph paths in one).

A notebook's SVG outputs are megabytes of path data, scanned with the drawing database
(``SegmentKind.MARKUP``, which leaves out the detectors that are costly or meaningless
there). The text found here is scanned as text besides, with every detector: a token
in a plot's title is found whatever its format. As with the HTML views, a value found
here is redacted wherever it occurs in the drawing.
"""

from __future__ import annotations

import threading

import hyperscan

#: Where text sits in a drawing: each opening and the closing that ends it. ``<text`` also
#: opens ``<textPath``; the elements inside (``<tspan>``) are kept with their text.
_TEXT_PARTS = (
    (b"<!--", b"-->"),
    (b"<text", b"</text>"),
    (b"<title", b"</title>"),
    (b"<desc", b"</desc>"),
)


class _Openings:
    """Where the text parts open, in one native pass (four ``bytes.find`` passes cost
    five times as much over megabytes of path data)."""

    def __init__(self) -> None:
        self._db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
        self._db.compile(
            expressions=[opening for opening, _ in _TEXT_PARTS],
            ids=list(range(len(_TEXT_PARTS))),
            elements=len(_TEXT_PARTS),
            flags=[0] * len(_TEXT_PARTS),
        )
        self._local = threading.local()

    def __call__(self, svg: bytes) -> list[tuple[int, int]]:
        """(start, part kind) of each opening, in order."""
        scratch = getattr(self._local, "scratch", None)
        if scratch is None:
            scratch = self._local.scratch = hyperscan.Scratch(self._db)
        found: list[tuple[int, int]] = []
        add = found.append
        self._db.scan(
            svg,
            match_event_handler=lambda i, _s, end, _f, _c: add(
                (end - len(_TEXT_PARTS[i][0]), i)
            ),
            scratch=scratch,
        )
        return found


_openings = _Openings()


def drawing_text(svg: bytes) -> bytes:
    """The text parts of ``svg`` in order, one per line; empty when it has none.

    An unclosed part runs to the end of the drawing (nothing is left out), and a part
    inside another (a comment in a text element) is read with it: each byte is read once,
    and the view is longer than the drawing by a line break per part at most."""
    parts: list[bytes] = []
    covered = 0  # the end of the last part taken
    for start, kind in _openings(svg):
        if start < covered:
            continue
        opening, closing = _TEXT_PARTS[kind]
        end = svg.find(closing, start + len(opening))
        covered = len(svg) if end < 0 else end + len(closing)
        parts.append(svg[start:covered])
    return b"\n".join(parts)
