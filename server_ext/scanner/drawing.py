"""The text of an SVG drawing: what its text elements show, what its title, description
and metadata say, its scripts, styles and foreign objects (whatever their namespace
prefix), its comments (matplotlib writes each label it draws as glyphs in one), its CDATA
sections and any text before its first tag. Character data elsewhere is not drawn.

A notebook's SVG outputs are megabytes of path data, scanned with the drawing database
(``SegmentKind.MARKUP``, which leaves out the detectors that are costly or meaningless
there). The text found here is scanned as text besides, with every detector: a token
in a plot's title is found whatever its format. As with the HTML views, a value found
here is redacted wherever it occurs in the drawing.
"""

from __future__ import annotations

from collections.abc import Iterable

#: Elements whose content is text (or holds it: metadata, a foreign object's HTML).
_TEXT_ELEMENTS = rb"text|tspan|textPath|title|desc|metadata|script|style|foreignObject"
#: Where text starts, and what ends it: an element above, its name with any namespace
#: prefix (``<svg:text``), up to its closing tag; a comment; a CDATA section.
_TEXT_PARTS = (
    (rb"<(?:[A-Za-z0-9_.-]{1,32}:)?(?:" + _TEXT_ELEMENTS + rb")\b", b""),
    (rb"<!--", b"-->"),
    (rb"<!\[CDATA\[", b"]]>"),
)
#: The expressions of the openings, found by the engine in its scan of the drawing (a
#: pass of their own over megabytes of path data would cost half as much as that scan).
TEXT_OPENINGS = tuple(pattern for pattern, _ in _TEXT_PARTS)


def drawing_text(svg: bytes, openings: Iterable[tuple[int, int]]) -> bytes:
    """The text parts of ``svg`` in order, one per line (text before its first tag, if
    any, first); empty when it has none. ``openings``: (``TEXT_OPENINGS`` index, end) of
    each match of those expressions in ``svg`` (``Engine.scan_drawing``).

    An unclosed part runs to the end of the drawing (nothing is left out), and a part
    inside another (a title in a comment) is read with it: each byte is read once, and the
    view is longer than the drawing by a line break per part at most."""
    parts: list[bytes] = []
    covered = svg.find(b"<")  # text before the first tag is character data too
    covered = len(svg) if covered < 0 else covered
    if svg[:covered].strip():
        parts.append(svg[:covered])
    # Every opening starts at the last "<" before its end (none holds another).
    for start, opened, kind in sorted((svg.rfind(b"<", 0, end), end, i) for i, end in openings):
        if start < covered:
            continue
        if kind == 0:  # an element: to its closing tag, ``</name>`` with the same prefix
            end = _closing_tag(svg, b"</" + svg[start + 1 : opened], opened)
            covered = len(svg) if end < 0 else end
        else:
            closing = _TEXT_PARTS[kind][1]
            end = svg.find(closing, opened)
            covered = len(svg) if end < 0 else end + len(closing)
        parts.append(svg[start:covered])
    return b"\n".join(parts)


def _closing_tag(svg: bytes, closing: bytes, at: int) -> int:
    """Where the first ``closing`` tag after ``at`` ends (``</text>`` is not the start of
    ``</textPath>``), or -1."""
    pos = svg.find(closing, at)
    while pos >= 0:
        after = pos + len(closing)
        if svg[after : after + 1] in (b">", b" ", b"\t", b"\r", b"\n"):
            end = svg.find(b">", after)
            return -1 if end < 0 else end + 1
        pos = svg.find(closing, after)
    return -1
