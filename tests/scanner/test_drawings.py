"""SVG drawings in outputs are read with the drawing database, their text with every
detector; strings nbformat writes itself are not segments.

A notebook's SVG outputs are megabytes of path data: the guard scans them without the
anchors that run hyperscan's automata over every byte of it (and without the quoted-string
detectors: quotes there open attribute values), and scans the drawing's text (titles,
labels, comments) as text. Each test below fails if that shortcut loses a credential a
reader could see, or if it stops saving what it is there to save.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from server_ext.guard import SaveGuard, SaveRefused
from server_ext.scanner import rules
from server_ext.scanner.documents import scan_notebook
from server_ext.scanner.drawing import drawing_text
from server_ext.scanner.engine import Engine, SegmentKind
from server_ext.scanner.notebook import walk

GUARD = SaveGuard()
#: A D-Wave Leap token (our own fake): its anchor has no literal, so it is one of the
#: detectors the drawing database leaves out.
LEAP = "DEV-0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c"
GITHUB = "ghp_Zq8kP3vT9xLm2RwY7nB4cJ6hF1sD5gA0eKuW"
#: What matplotlib writes: glyphs as path data, each label's text in a comment.
PATHS = '<path d="m3853-1259v-250h-3853v250h3853z" id="DejaVuSans-2212"/>\n' * 200


def drawing_nb(svg: str) -> dict[str, Any]:
    output = {
        "output_type": "display_data",
        "metadata": {},
        "data": {"image/svg+xml": svg.splitlines(keepends=True), "text/plain": ["<Figure>"]},
    }
    cell = {"cell_type": "code", "id": "c", "metadata": {}, "source": "plot()",
            "execution_count": 1, "outputs": [output]}
    return {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [cell]}


def saved_drawing(svg: str) -> tuple[str, list[str]]:
    """The drawing as the guard would write it, and the detectors that found something."""
    nb = drawing_nb(svg)
    report = GUARD.check({"type": "notebook", "content": nb}, "plot.ipynb")
    assert report is not None
    saved = "".join(nb["cells"][0]["outputs"][0]["data"]["image/svg+xml"])
    return saved, sorted({loc.finding.detector for loc in report.findings})


@pytest.mark.parametrize(
    "where",
    [
        "<!-- {} -->\n",  # a label matplotlib drew as glyphs
        '<text x="1" y="2">run {}</text>\n',
        '<text x="1"><tspan>{}</tspan></text>\n',
        "<title>{}</title>\n",
        "<desc>{}</desc>\n",
        '<svg:text x="1">{}</svg:text>\n',  # a namespace prefix
        "<foreignObject><div>\n  {}\n</div></foreignObject>\n",
        "<metadata><dc:title>{}</dc:title></metadata>\n",  # savefig(metadata=...)
        "<script><![CDATA[ const t = '<{}>'; ]]></script>\n",
    ],
)
def test_a_token_a_drawing_shows_or_notes_is_found_whatever_its_format(where: str) -> None:
    svg = "<svg>\n" + PATHS + where.format(LEAP) + PATHS + "</svg>\n"
    saved, found = saved_drawing(svg)
    assert LEAP not in saved and found == ["dwave-leap-token"]
    # everything else of the drawing is written as it was
    assert saved == svg.replace(LEAP, "[REDACTED:dwave-leap-token]")


def test_text_before_the_first_tag_of_a_drawing_is_read_as_text() -> None:
    saved, found = saved_drawing(f"{LEAP}\n<svg>{PATHS}</svg>\n")
    assert LEAP not in saved and found == ["dwave-leap-token"]


def test_a_token_with_a_prefix_is_found_anywhere_in_a_drawing() -> None:
    svg = f'<svg>\n{PATHS}<a href="https://x.test/?t={GITHUB}"><path d="M 1 2"/></a>\n</svg>\n'
    saved, found = saved_drawing(svg)
    assert GITHUB not in saved and found == ["github-token"]


def test_a_quoted_attribute_value_of_a_drawing_is_not_taken_for_a_credential() -> None:
    """A clip-path id or a glyph id is random-looking and quoted; as a quoted string in
    code it would be refused, in a drawing it is an attribute value."""
    ident = "a3f9c2e81b7d4605f2e9a8c1d3b7e4f6"
    svg = f'<svg>\n<clipPath id="{ident}"><rect/></clipPath>\n{PATHS}</svg>\n'
    saved, found = saved_drawing(svg)
    assert saved == svg and found == []
    with pytest.raises(SaveRefused):
        cell = {"cell_type": "code", "id": "c", "metadata": {}, "source": f'x = "{ident}"\n',
                "outputs": []}
        GUARD.check({"type": "notebook", "content": {
            "nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [cell]}}, "a.ipynb")


def test_the_drawing_database_leaves_out_only_the_detectors_marked_so() -> None:
    engine = Engine(rules.catalogue())
    left_out = {d.id for d in engine.detectors if not d.in_markup}
    assert left_out == {
        "dwave-leap-token", "discord-bot-token", "airtable-pat", "vault-legacy-token",
        "quoted-line", "base64-high-entropy", "hex-high-entropy",
    }
    line = f"run {LEAP}".encode()
    assert [f.detector for f in engine.scan_one(line, SegmentKind.TEXT)] == ["dwave-leap-token"]
    assert engine.scan_one(line, SegmentKind.MARKUP) == []
    # segments of every kind in one scan: each keeps its own findings, in order
    mixed = engine.scan(
        [line, b"<path/>" + line, GITHUB.encode(), line],
        [SegmentKind.TEXT, SegmentKind.MARKUP, SegmentKind.MARKUP, SegmentKind.CODE],
    )
    assert [[f.detector for f in found] for found in mixed] == [
        ["dwave-leap-token"], [], ["github-token"], ["dwave-leap-token"]]


def test_only_the_svg_of_an_outputs_mime_bundle_is_a_drawing() -> None:
    nb = drawing_nb("<svg>" + PATHS + "</svg>")
    nb["cells"][0]["outputs"][0]["metadata"] = {"image/svg+xml": {"note": "x" * 20}}
    kinds = {str(s.key): s.kind for s in walk(nb)}
    assert kinds["image/svg+xml"] is SegmentKind.MARKUP
    assert kinds["note"] is SegmentKind.TEXT  # metadata about the drawing is text
    # an svg a code cell prints is text like any other output
    printed = drawing_nb("x")
    printed["cells"][0]["outputs"] = [
        {"output_type": "stream", "name": "stdout", "text": ["<svg>" + PATHS + "</svg>"]}]
    assert {s.kind for s in walk(printed) if s.zone.value == "output"} == {SegmentKind.TEXT}


def svg_elsewhere() -> list[dict[str, Any]]:
    """Notebooks holding an SVG bundle where no figure is: all of it is read as text."""
    svg = f'<svg><a href="?t={LEAP}"/></svg>'
    bundle = {"data": {"image/svg+xml": svg}}

    def figureless() -> dict[str, Any]:
        nb = drawing_nb("x")
        nb["cells"][0]["outputs"] = []
        return nb

    attached = figureless()
    attached["cells"][0] = {"cell_type": "markdown", "id": "m", "metadata": {},
                            "source": "![p](attachment:p.svg)",
                            "attachments": {"p.svg": {"image/svg+xml": [svg]}}}
    in_metadata = figureless()
    in_metadata["metadata"] = copy.deepcopy(bundle)
    in_cell_metadata = figureless()
    in_cell_metadata["cells"][0]["metadata"] = copy.deepcopy(bundle)
    in_json = drawing_nb("x")
    in_json["cells"][0]["outputs"][0]["data"] = {"application/json": copy.deepcopy(bundle)}
    in_widgets = figureless()
    in_widgets["metadata"] = {"widgets": {"state": copy.deepcopy(bundle)}}
    return [attached, in_metadata, in_cell_metadata, in_json, in_widgets]


@pytest.mark.parametrize("nb", svg_elsewhere())
def test_an_svg_bundle_outside_an_outputs_data_is_read_as_text(nb: dict[str, Any]) -> None:
    assert SegmentKind.MARKUP not in {s.kind for s in walk(nb)}
    found: list[str] = []
    try:
        report = GUARD.check({"type": "notebook", "content": nb}, "a.ipynb")
        found = [loc.finding.detector for loc in report.findings] if report else []
    except SaveRefused as refused:
        found = [loc.finding.detector for loc in refused.findings]
    assert "dwave-leap-token" in found


def text_of(svg: bytes) -> bytes:
    """The drawing's text, from the openings the guard's engine finds in its scan."""
    return drawing_text(svg, GUARD.engine.scan_drawing(svg)[1])


@pytest.mark.parametrize("size", [100, 200_000])  # in the joined buffer, and in its own
def test_a_drawing_scanned_for_its_text_has_the_findings_of_any_scan_of_it(size: int) -> None:
    svg = (f'<svg><a href="https://x.test/?t={GITHUB}"><text>{LEAP}</text></a>'
           + "<path d='M 1 2'/>" * (size // 17) + "</svg>").encode()
    found, openings = GUARD.engine.scan_drawing(svg)
    among_others = GUARD.engine.scan(  # another drawing, and text, around it
        [b"<svg><path d='M 3 4'/></svg>", svg, b"y = 2"],
        [SegmentKind.MARKUP, SegmentKind.MARKUP, SegmentKind.TEXT],
    )
    assert [f.detector for f in found] == ["github-token"]  # the Leap token: in the text
    assert [(f.start, f.end, f.line) for f in found] == [
        (f.start, f.end, f.line) for f in among_others[1]
    ] and among_others[0] == among_others[2] == []
    assert drawing_text(svg, openings) == f"<text>{LEAP}</text>".encode()


def test_a_drawings_text_is_read_when_no_detector_looks_at_drawings(tmp_path: Path) -> None:
    """The openings of a drawing's text are expressions of the drawing database: they are
    there when every detector an admin left on is one the drawing database leaves out."""
    engine = Engine([rules.BY_ID["dwave-leap-token"]])
    nb = drawing_nb(f"<svg>\n{PATHS}<text>{LEAP}</text></svg>\n")
    found = [loc.finding.detector for loc in scan_notebook(engine, nb).located()]
    assert found == ["dwave-leap-token"]
    assert len(engine.store_databases(tmp_path)) == 2  # text, and drawings (no binary)


def test_a_drawing_shown_twice_is_redacted_in_both_places() -> None:
    svg = f"<svg>\n{PATHS}<text>{LEAP}</text><a href='https://x.test/?t={GITHUB}'/></svg>\n"
    nb = drawing_nb(svg)
    nb["cells"].append(copy.deepcopy(nb["cells"][0]) | {"id": "d"})  # in another cell
    outputs = nb["cells"][0]["outputs"]
    outputs.append(copy.deepcopy(outputs[0]))  # and twice in one cell
    report = GUARD.check({"type": "notebook", "content": nb}, "plot.ipynb")
    assert report is not None and report.redacted == 6
    expected = svg.replace(LEAP, "[REDACTED:dwave-leap-token]").replace(
        GITHUB, "[REDACTED:github-token]")
    drawings = [o["data"]["image/svg+xml"] for c in nb["cells"] for o in c["outputs"]]
    assert ["".join(d) for d in drawings] == [expected] * 3


def test_terminal_colours_in_a_drawing_do_not_hide_a_token() -> None:
    saved, found = saved_drawing(f'<svg><g data-t="\x1b[31m{GITHUB}\x1b[0m"/>{PATHS}</svg>')
    assert GITHUB not in saved and found == ["github-token"]


def test_the_text_of_a_drawing_is_its_parts_in_order_each_read_once() -> None:
    svg = b"<svg><text>a<!-- c --></text><path d='M 1'/><!-- > --><desc>\n e</desc><title>t"
    assert text_of(svg) == b"<text>a<!-- c --></text>\n<!-- > -->\n<desc>\n e</desc>\n<title>t"
    assert text_of(PATHS.encode()) == b""
    assert text_of(b"lead<svg>") == b"lead" and text_of(b"no tags") == b"no tags"
    # </text> is not </textPath>: the text after a text path is in the part
    assert text_of(b"<text><textPath>a</textPath> b </text ><path/>") == (
        b"<text><textPath>a</textPath> b </text >")
    nested = b"<!-- <text>a</text> -->" * 1000 + b"<text><!--" * 1000
    view = text_of(nested)  # 1,000 comments, then one text element to the end
    assert view.count(b"\n") == 1000 and len(view) == len(nested) + 1000


def test_strings_nbformat_writes_are_not_segments_but_anything_else_there_is() -> None:
    nb = drawing_nb("<svg/>")
    cell = nb["cells"][0]
    cell["id"] = "6982ee0e-5f67-4c34-9cda-190b47378c3d"  # JupyterLab's uuid4 cell id
    cell["metadata"] = {"raw_mimetype": "text/restructuredtext", "needs_background": "light"}
    markdown = {"cell_type": "markdown", "id": "1a2b3c4d", "metadata": {}, "source": "# Title"}
    nb["cells"].append(markdown)
    texts = {s.text for s in walk(nb)}
    for known in ("markdown", "display_data", "text/restructuredtext", "needs_background",
                  cell["id"], "1a2b3c4d"):
        assert known not in texts
    odd = copy.deepcopy(nb)
    odd["cells"][1]["id"] = GITHUB  # not a generated id: scanned, and refused
    with pytest.raises(SaveRefused) as refused:
        GUARD.check({"type": "notebook", "content": odd}, "a.ipynb")
    assert [loc.finding.detector for loc in refused.value.findings] == ["github-token"]


def test_a_guard_with_delivered_values_reads_generated_ids_too() -> None:
    """A delivered value may be any hexadecimal string or UUID: where it is looked for,
    a cell id of that form is read like any other string."""
    delivered = "6982ee0e-5f67-4c34-9cda-190b47378c3d"
    nb = drawing_nb("<svg/>")
    nb["cells"][0]["id"] = delivered
    guard = SaveGuard()
    guard.set_known_values([delivered])
    with pytest.raises(SaveRefused) as refused:
        guard.check({"type": "notebook", "content": nb}, "a.ipynb")
    assert [loc.finding.detector for loc in refused.value.findings] == ["known-secret"]
    assert SaveGuard().check({"type": "notebook", "content": nb}, "a.ipynb") is not None
