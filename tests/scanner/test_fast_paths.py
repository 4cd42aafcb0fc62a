"""The shortcuts the scanner takes for speed give the answers the long way gives.

The entropy anchor is found without start-of-match tracking (its start is recovered from
the closing quote), HTML entity views skip ``html.unescape`` where no reference can be,
the walker spells out JSON pointers only for reported segments, and a repeated segment is
scanned once. Each test below would
fail if a shortcut lost a credential or misplaced one.
"""

from __future__ import annotations

import html
import random
import re
import string

import pytest

from server_ext.guard import SaveGuard, SaveRefused
from server_ext.scanner import rules
from server_ext.scanner.documents import _entity_decoded
from server_ext.scanner.engine import AllowList, Engine, SegmentKind
from server_ext.scanner.html import credential_word_ends
from server_ext.scanner.notebook import walk
from server_ext.scanner.texttable import _MAX_WORDS, _lines_of, _word_lines, text_table_view

GUARD = SaveGuard()
#: A random-looking base64 string that only the entropy detector knows (our own fake).
BLOB = "q8ZkP3vT9xLm2RwY7nB4cJ6hF1sD5gA0eKuWoI"


def refused_detectors(source: str) -> list[str]:
    cell = {"cell_type": "code", "id": "c", "metadata": {}, "source": source, "outputs": []}
    nb = {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [cell]}
    try:
        GUARD.check({"type": "notebook", "content": nb}, "probe.ipynb")
    except SaveRefused as refused:
        return sorted({loc.finding.detector for loc in refused.findings})
    return []


@pytest.mark.parametrize(
    "source",
    [
        f'blob = "{BLOB}"\n',
        f"pair = ['ab', '{BLOB}']\n",  # the opening quote follows another string's closing one
        f'blob = "x" "{BLOB}"\n',
        f"blob = `{BLOB}`\n",
        f"{{'{BLOB}': 1}}\n",
    ],
)
def test_a_quoted_high_entropy_string_is_found_wherever_its_quote_opens(source: str) -> None:
    assert refused_detectors(source) == ["base64-high-entropy"]


def test_a_quoted_string_longer_than_the_entropy_window_is_not_a_candidate() -> None:
    # 512 characters is the detector's limit; the anchor now spans the whole string.
    long = (BLOB * 20)[:600]
    assert refused_detectors(f'blob = "{long}"\n') == []


def _unescaped(markup: bytes) -> bytes:
    text = markup.decode("utf-8", "surrogatepass")
    decoded = html.unescape(text)
    return decoded.encode("utf-8", "surrogatepass") if decoded != text else b""


PIECES = [
    b"&lt;", b"&gt;", b"&amp;", b"&quot;", b"&#39;", b"&#x27;", b"&", b"&&", b"&#",
    b"&#95;", b"&#x67;", b"&not", b"&notin;", b"&copy", b"&foo;", b"&amp", b"lt;", b";",
    b"e&&t", b"&void 0", b"\xc3\xa9", b"<td>", b"x", b" ",
]  # fmt: skip


def test_the_entity_view_reads_html_as_html_unescape_does() -> None:
    rng = random.Random(13)
    samples = [b"".join(rng.choice(PIECES) for _ in range(rng.randint(0, 10))) for _ in range(5000)]
    samples += [b"<script>a&&b&&c</script><p>k&#x67;hp&#95;x&amp;y</p>", b"&&&&", b"no refs"]
    for markup in samples:
        assert _entity_decoded(markup) == _unescaped(markup), markup


def test_segments_carry_escaped_json_pointers_and_their_cell() -> None:
    key = "a/b~c" + "k" * 12  # a long key is scanned too, and "/" and "~" are escaped
    nb = {
        "metadata": {},
        "cells": [
            {"cell_type": "raw", "id": "m", "metadata": {}, "source": "a short note"},
            {
                "cell_type": "code",
                "id": "c2",
                "metadata": {key: {"v": ["first line", "second line"]}},
                "source": ["x = 1\n", "y = 2\n"],
                "outputs": [],
            },
        ],
    }
    got = [(s.pointer, s.cell, s.cell_id, s.text) for s in walk(nb)]
    assert got == [
        ("/cells/0/source", 0, "m", "a short note"),
        ("/cells/1/metadata/a~1b~0ckkkkkkkkkkkk", 1, "c2", key),
        ("/cells/1/metadata/a~1b~0ckkkkkkkkkkkk/v/1", 1, "c2", "second line"),
        ("/cells/1/metadata/a~1b~0ckkkkkkkkkkkk/v/0", 1, "c2", "first line"),
        ("/cells/1/source", 1, "c2", "x = 1\ny = 2\n"),
    ]


#: A minified script as notebooks inline them (plotly, bokeh): "&&" everywhere, one line.
SCRIPT = b"function f(a,b){return a&&b&&(a>>8&255)};var x=t&&t.y;" * 4000


def test_a_large_page_gives_only_the_windows_around_references_that_decode() -> None:
    value = b"ghp" + b"&#95;" + b"Zq8kP3vT9xLm2RwY7nB4cJ6hF1sD5gA0eKuW"
    markup = b"<div><script>" + SCRIPT + b"</script><p>" + value + b"</p><script>" + SCRIPT
    view = _entity_decoded(markup)
    assert b"ghp_Zq8kP3vT9xLm2RwY7nB4cJ6hF1sD5gA0eKuW" in view
    # The stretch around the reference, whole tokens at its edges: not the megabyte page.
    assert len(view) < len(markup) / 5
    assert view[:1] in b";,(){}[]<>" and view[-1:] in b";,(){}[]<>"
    # Markup whose references all decode to themselves (``a&b;``) gives no view at all.
    assert _entity_decoded(SCRIPT + b"x&e;y" + SCRIPT) == b""


def test_a_value_written_with_references_in_a_large_page_is_redacted_where_it_is() -> None:
    token = "ghp_Zq8kP3vT9xLm2RwY7nB4cJ6hF1sD5gA0eKuW"
    written = token.replace("_", "&#95;")
    page = (SCRIPT.decode() + f"<p>{written}</p>" + SCRIPT.decode())
    output = {"output_type": "display_data", "metadata": {},
              "data": {"text/html": page, "text/plain": "<IPython.core.display.HTML object>"}}
    cell = {"cell_type": "code", "id": "c", "metadata": {}, "source": "show()", "outputs": [output]}
    nb = {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [cell]}
    report = GUARD.check({"type": "notebook", "content": nb}, "page.ipynb")
    assert report is not None and report.redacted == 1
    saved = nb["cells"][0]["outputs"][0]["data"]["text/html"]
    assert written not in saved and "[REDACTED:github-token]" in saved
    assert saved.startswith(SCRIPT.decode()) and saved.endswith(SCRIPT.decode())


def test_the_text_anchor_of_a_detector_stays_out_of_binary_payloads() -> None:
    """Random base64 is full of word starts: the short text anchor would fire thousands of
    times per image, so the binary database compiles the detector's own anchor."""
    discord = next(d for d in GUARD.engine.detectors if d.id == "discord-bot-token")
    assert discord.text_anchor is not None and discord.in_binary
    expressions = {
        db: {anchor for anchor, members in zip(db.expressions, db._groups, strict=True)
             if any(db.detectors[i] is discord for i in members)}
        for db in (GUARD.engine._text, GUARD.engine._binary)
    }
    assert expressions[GUARD.engine._text] == {discord.text_anchor}
    assert expressions[GUARD.engine._binary] == {discord.anchor}


def test_a_print_of_a_table_naming_its_key_column_is_redacted() -> None:
    table = f"  service   api_key\n0 qlab      {BLOB}\n"
    output = {"output_type": "stream", "name": "stdout", "text": table}
    cell = {"cell_type": "code", "id": "c", "metadata": {}, "source": "print(df)",
            "outputs": [output]}
    nb = {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [cell]}
    report = GUARD.check({"type": "notebook", "content": nb}, "table.ipynb")
    assert report is not None and report.redacted == 1
    assert BLOB not in nb["cells"][0]["outputs"][0]["text"]


def test_a_page_held_twice_in_one_bundle_is_scanned_once_and_redacted_in_both(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    scanned: list[int] = []
    original = Engine._scan_joined

    def counting(self: Engine, db: object, parts: list[bytes], *rest: object) -> None:
        scanned.extend(len(p) for p in parts)
        original(self, db, parts, *rest)  # type: ignore[arg-type]

    monkeypatch.setattr(Engine, "_scan_joined", counting)
    token = "ghp_Zq8kP3vT9xLm2RwY7nB4cJ6hF1sD5gA0eKuW"
    page = SCRIPT.decode()[:20_000] + f"<p>{token}</p>"
    bundle = {"text/html": page, "text/vnd.plotly.v1+html": page, "text/plain": "<Figure>"}
    output = {"output_type": "display_data", "metadata": {}, "data": bundle}
    cell = {"cell_type": "code", "id": "c", "metadata": {}, "source": "fig.show()",
            "outputs": [output]}
    nb = {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [cell]}
    report = GUARD.check({"type": "notebook", "content": nb}, "plot.ipynb")
    assert report is not None and report.redacted == 2
    data = nb["cells"][0]["outputs"][0]["data"]
    assert token not in data["text/html"] and token not in data["text/vnd.plotly.v1+html"]
    assert scanned.count(len(page)) == 1  # the page, once (its views are other lengths)


def test_repeated_segments_get_their_own_findings_and_near_twins_are_not_taken_for_them() -> None:
    token = b"ghp_Zq8kP3vT9xLm2RwY7nB4cJ6hF1sD5gA0eKuW"
    page = SCRIPT[:8_000] + b" " + token
    twin = SCRIPT[:8_000] + b" " + token.replace(b"Zq8k", b"Zq8x")  # same length
    clean = SCRIPT[: len(page)]  # same length, no token
    segments = [page, clean, page, twin, bytes(page)]
    kinds = [SegmentKind.TEXT, SegmentKind.TEXT, SegmentKind.TEXT, SegmentKind.TEXT,
             SegmentKind.CODE]
    found = GUARD.engine.scan(segments, kinds)
    assert [len(f) for f in found] == [1, 0, 1, 1, 1]
    assert found[0] == found[2] and found[0] is not found[2]
    assert found[3][0].fingerprint != found[0][0].fingerprint


@pytest.mark.parametrize("word", ["password", "token", "secret", "api key", "credential",
                                  "Authorization:", "key ="])
def test_a_segments_findings_do_not_depend_on_the_segment_before(word: str) -> None:
    """hyperscan reports the leftmost start of each match end: an anchor that may span
    whitespace and starts in the segment before (ending in a keyword) once hid the
    segment's own match. The guard skips unchanged cells, so a segment's findings must
    be the same whatever precedes it."""
    engine = Engine(rules.catalogue(), AllowList())
    tails = [b": api_token = 'Zq8vN3kLp2Xw9Rt5mYb7'", b"  secret = \"q8NvZ3kLp2Xw9Rt5mYb7Aa\"",
             b"'Zq8vN3kLp2Xw9Rt5mYb7'", b"Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"]
    for tail in tails:
        alone = [(f.detector, f.start, f.end) for f in engine.scan([tail])[0]]
        after = [(f.detector, f.start, f.end)
                 for f in engine.scan([f"# ask for the {word}".encode(), tail])[1]]
        assert after == alone, tail


def test_a_large_segment_scanned_in_a_buffer_of_its_own_has_its_findings_and_lines() -> None:
    """A segment of 64 KiB or more is scanned alone (not copied into the joined buffer):
    its findings, and those of the small segments around it, are what each has alone."""
    token = b"ghp_Zq8kP3vT9xLm2RwY7nB4cJ6hF1sD5gA0eKuW"
    big = b"token = '" + token + b"'\n" + SCRIPT[:70_000] + b"\nkey: " + token
    small = b"# ask for the password\nx = 'ghp_Zq8kP3vT9xLm2RwY7nB4cJ6hF1sD5gA0eKuX'"
    kinds = [SegmentKind.CODE, SegmentKind.TEXT, SegmentKind.CODE]
    found = GUARD.engine.scan([small, big, small], kinds)
    for segment, kind, got in zip([small, big, small], kinds, found, strict=True):
        alone = GUARD.engine.scan([segment], [kind])[0]
        assert [(f.detector, f.start, f.end, f.line) for f in got] == [
            (f.detector, f.start, f.end, f.line) for f in alone
        ]
    assert [(f.start, f.line) for f in found[1]] == [(9, 1), (len(big) - 40, big.count(b"\n") + 1)]
    assert len(found[0]) == len(found[2]) == 1


def test_a_table_with_a_credential_in_every_row_is_redacted_as_value_by_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Many values are placed in one hyperscan pass (a bytes.find each grew with the rows
    times the text: a 1 MB table took half a minute); the outcome is the one of a find
    per value, every row redacted in every output of the cell. Values holding a NUL byte
    (which hyperscan's literal API would cut short) are found too."""
    import copy
    import json

    from server_ext.scanner import documents

    rows = "".join(f"<tr><td>password</td><td>Vq{i:06d}&amp;x9Lp</td></tr>" for i in range(300))
    plain = "\n".join(f"password  Vq{i:06d}&x9Lp" for i in range(300))
    nuls = [f"\x00Zx8fQ2mZ7ab{i:02d}" for i in range(9)] + [f"Qz7f\x00Q2mZ7abQ{i:02d}" for i in range(9)]
    lines = "".join(f"password = '{v}'\n" for v in nuls)
    nb = {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [{
        "cell_type": "code", "id": "t", "metadata": {}, "source": "df", "execution_count": 1,
        "outputs": [{"output_type": "execute_result", "execution_count": 1, "metadata": {},
                     "data": {"text/html": f"<table>{rows}</table>", "text/plain": plain}}]},
        {"cell_type": "code", "id": "n", "metadata": {}, "source": "show()", "execution_count": 2,
         "outputs": [{"output_type": "stream", "name": "stdout", "text": lines},
                     {"output_type": "display_data", "metadata": {},
                      "data": {"text/plain": f"[{nuls[0]}] [{nuls[-1]}]"}}]}]}
    guard = SaveGuard(default_mode="redact")

    def redacted(find_work: int) -> str:
        monkeypatch.setattr(documents, "_FIND_WORK", find_work)
        model = {"type": "notebook", "content": copy.deepcopy(nb)}
        guard.check(model, "t.ipynb")
        return json.dumps(model["content"])

    by_pass = redacted(0)
    assert by_pass == redacted(10**18)
    assert "Vq000123" not in by_pass and by_pass.count("[REDACTED:") >= 600
    assert "Zx8fQ2mZ7ab00" not in by_pass and "Q2mZ7abQ08" not in by_pass


def _cell_with_table(source: str, cell_id: str, body: str) -> dict[str, object]:
    return {"cell_type": "code", "id": cell_id, "metadata": {}, "source": source,
            "execution_count": 1,
            "outputs": [{"output_type": "execute_result", "execution_count": 1, "metadata": {},
                         "data": {"text/html": body, "text/plain": "df"}}]}


def _drawing_cell(source: str, cell_id: str, svg: str) -> dict[str, object]:
    return {"cell_type": "code", "id": cell_id, "metadata": {}, "source": source,
            "execution_count": 1,
            "outputs": [{"output_type": "display_data", "metadata": {},
                         "data": {"image/svg+xml": svg, "text/plain": "<Figure>"}}]}


@pytest.mark.parametrize("rows", [120, 1400, 3000])
@pytest.mark.parametrize("shown", ["table", "drawing"])
def test_each_cell_finds_the_same_whether_scanned_alone_or_with_the_others(
    rows: int, shown: str
) -> None:
    """The unchanged-cells cache skips a cell that was clean: so a cell's findings must
    not depend on another cell, even where both show the same table or drawing (its
    views repeated in another cell, scanned once) and one cell's source holds the value
    the output shows. Small and large tables (views under and over 64 KiB, scanned
    joined or alone)."""
    from server_ext.scanner.documents import scan_notebook

    word = "correcthorsebatterystaple"  # a password of words: found in a source only
    if shown == "table":
        body = "<table><thead><tr><th></th><th>user</th><th>password</th></tr></thead>" + "".join(
            f"<tr><th>{i}</th><td>user{i}</td><td>{'n/a' if i else word}</td></tr>"
            for i in range(rows)
        ) + "</table>"
        first, second = (_cell_with_table(f'password = "{word}"\ndf', "a", body),
                         _cell_with_table("df", "b", body))
    else:
        svg = ('<svg xmlns="http://www.w3.org/2000/svg">' + "".join(
            f'<path d="M {i} {i} L {i + 5} {i + 7} Z"/>' for i in range(rows)
        ) + f"<text>password: {word}</text></svg>")
        first, second = (_drawing_cell(f'password = "{word}"\nplot(password)', "a", svg),
                         _drawing_cell("plot()", "b", svg))

    def located(cells: list[object], skip: object = None) -> set[tuple[str, str]]:
        nb = {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": cells}
        scan = scan_notebook(GUARD.engine, nb, 64, skip)  # type: ignore[arg-type]
        return {(str(loc.cell_id), loc.finding.detector) for loc in scan.located()}

    whole = located([first, second])
    assert ("a", "generic-keyword") in whole  # the password in cell a's source
    assert {f for f in whole if f[0] == "b"} == located([second])
    assert {f for f in whole if f[0] == "b"} == located([first, second], lambda i, c: i == 0)
    assert {f for f in whole if f[0] == "a"} == located([first])


def test_a_table_of_tokens_fingerprints_each_token_once_and_redacts_every_place(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each token of an HTML table is read in the HTML and in its views (the single-token
    cell, the row, the column under its header): it is fingerprinted and masked once a
    scan, and every place is still redacted with the same fingerprint."""
    import json
    import secrets
    import string

    rows = 300
    alphabet = string.ascii_letters + string.digits
    tokens = ["ghp_" + "".join(secrets.choice(alphabet) for _ in range(36)) for _ in range(rows)]
    html_table = "<table><tr><th>name</th><th>key</th></tr>" + "".join(
        f"<tr><td>k{i}</td><td>{t}</td></tr>" for i, t in enumerate(tokens)
    ) + "</table>"
    cell = {"cell_type": "code", "id": "c", "metadata": {}, "source": "df",
            "execution_count": 1,
            "outputs": [{"output_type": "execute_result", "execution_count": 1, "metadata": {},
                         "data": {"text/html": html_table, "text/plain": "df"}}]}
    model = {"type": "notebook",
             "content": {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [cell]}}
    guard = SaveGuard(default_mode="redact")
    fingerprinted: list[tuple[bytes, int]] = []
    real = guard.engine.fingerprint

    def counting(secret: bytes, public_prefix: int = 0) -> str:
        fingerprinted.append((secret, public_prefix))
        return real(secret, public_prefix)

    monkeypatch.setattr(guard.engine, "fingerprint", counting)
    report = guard.check(model, "table.ipynb")
    assert report is not None
    saved = json.dumps(model["content"])
    assert not any(t in saved for t in tokens)
    assert saved.count("[REDACTED:github-token]") == rows
    assert len(fingerprinted) == len(set(fingerprinted))
    assert {s for s, _ in fingerprinted} >= {t.encode() for t in tokens}
    assert len({loc.finding.fingerprint for loc in report.findings}) == rows


def _walked(nb: object, max_depth: int) -> object:
    from server_ext.scanner.notebook import NotebookError

    try:
        segments = walk(nb, max_depth)
    except NotebookError as e:
        return ("refused", str(e))
    return [(s.pointer, s.text, s.zone, s.kind, id(s._one[0]), s._one[1:], s.cell, s.cell_id)
            for s in segments]


@pytest.mark.parametrize("max_depth", [64, 7, 6, 5, 4])
def test_display_outputs_walk_to_the_segments_the_generic_walk_gives(
    monkeypatch: pytest.MonkeyPatch, max_depth: int
) -> None:
    """Display and result outputs skip the generic walk's stack: the same segments (text,
    place, kind, container, order) and the same refusals at the depth limit, for the
    common shapes and the odd ones (lines that are not all strings, JSON data, long keys,
    a traceback under data, metadata, keys nbformat does not define)."""
    from server_ext.scanner import notebook

    outputs = [
        {"output_type": "display_data", "metadata": {}, "data": {
            "text/plain": ["a line of text here\n", "and another line\n"],
            "image/png": "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwABBAEAwS2OUAAAAABJRU5ErkJggg==",
            "image/svg+xml": ["<svg>", "<text>hello world</text>", "</svg>"],
            "application/json": {"token": "Xk29aQ7LmP0vB3nR5tY8Wq2Z", "n": [1, 2, 3]},
            "text/html": ["<b>", 42, "</b> not all strings here"],
            "traceback": ["first frame of it", "second frame of it"],
            "application/x-a-very-long-custom-mime-type": "value of the custom type",
            "short": "",
        }},
        {"output_type": "execute_result", "execution_count": 3, "data": {
            "text/plain": "'Xk29aQ7LmP0vB3nR5tY8Wq2Z'"}, "metadata": {
            "a_very_long_metadata_key_name": {"nested": ["deep value number one"]}}},
        {"output_type": "error", "ename": "ValueError", "evalue": "a value went wrong here",
         "traceback": ["\x1b[0;31mValueError\x1b[0m  Traceback", "line two of the trace"]},
        {"output_type": "display_data", "data": [], "metadata": [], "extra_key_of_ours": "x" * 20},
        {"output_type": "display_data", "data": {"text/plain": {"deeper": {"still": {"more": "a deep string value"}}}}},
    ]
    cell = {"cell_type": "code", "id": "c1", "metadata": {}, "source": "show()",
            "execution_count": 1, "outputs": outputs}
    nb = {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [cell]}
    fast = _walked(nb, max_depth)
    monkeypatch.setattr(notebook, "_BUNDLE_DEPTH", 10**9)  # the generic walk only
    assert fast == _walked(nb, max_depth)


def _header_lines_by_regex(text: bytes) -> list[int]:
    """The lines the table reading looked at before the native pass: every line of at
    most 512 bytes that a case-folding regex finds a credential word on."""
    word = re.compile(rb"(?i)credential|token|key|secret|pass(?:word|wd|phrase)?|pwd|bearer|apikey")
    return [i for i, line in enumerate(text.split(b"\n"))
            if len(line) <= 512 and word.search(line)]


@pytest.mark.parametrize("limit", [10_000, 3])
def test_the_native_pass_finds_the_lines_a_regex_search_of_each_line_finds(limit: int) -> None:
    """A printed table's header is looked for only on the lines the credential-word pass
    reports: the same lines, in the same order, as a regex search of every line (words in
    any case, several on a line, at a line's start or end, inside other words, next to
    non-ASCII bytes and carriage returns, lines over 512 bytes), and the same again past
    the pass's limit, where lines are searched one by one."""
    rng = random.Random(13)
    pieces = [b"token", b"API_KEY", b"Password", b"passphrase", b"bearer", b"monkey", b"pwd",
              b"keys", b"secret", b"Credential", b"x", b"  ", b"|", b"0.5", b"\n", b"\n",
              b"\n\n", b"\r\n", b"tok", b"ke", b"y", b"passw", b"x" * 300, b"k\xc3\xa9y",
              b"\xe2\x84\xaaey", b"\xff", b"\x00"]
    for _ in range(3000):
        text = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 40)))
        lines = text.split(b"\n")
        ends = credential_word_ends(text, limit)
        if ends is None:  # past the limit: the lines are searched one by one
            assert len(credential_word_ends(text, 1 << 30) or ()) > limit
            got = list(_word_lines(lines))
        else:
            got = [i for i in _lines_of(text, ends) if len(lines[i]) <= 512]
        assert got == _header_lines_by_regex(text), text


def test_a_screen_drops_only_what_its_gate_drops() -> None:
    """A detector's ``screen`` (asked before the line is read) says no only where its
    ``validate`` says no, for every detector that has one, on values of every shape."""
    from server_ext.scanner.filters import Candidate

    screened = [d for d in rules.catalogue() if d.screen is not None]
    assert {d.id for d in screened} >= {"base64-high-entropy", "hex-high-entropy",
                                        "keyword-context", "quoted-line"}
    rng = random.Random(5)
    alphabets = ["0123456789abcdef", string.ascii_letters + string.digits,
                 string.ascii_lowercase + "_", string.ascii_uppercase + string.digits,
                 string.ascii_letters + string.digits + "+/=-_.:@"]
    for _ in range(4000):
        alphabet = rng.choice(alphabets)
        value = "".join(rng.choice(alphabet) for _ in range(rng.randint(12, 64))).encode()
        candidate = Candidate(secret=value, line=b'x = "' + value + b'"', previous_line=b"",
                              quoted=True)
        for d in screened:
            assert d.validate is not None and d.screen is not None
            if not d.screen(value):
                assert not d.validate(candidate), (d.id, value)


@pytest.mark.parametrize("noise", [3, 2000])
def test_a_printed_table_is_read_below_many_lines_that_name_credentials(noise: int) -> None:
    """Log lines that name tokens before a printed table: the table is still read, both
    when the words are few (one native pass) and when they are too many for it (2,000
    lines, read line by line)."""
    table = f"   service                  api_key\n0     qlab  {BLOB}\n"
    text = "".join(f"token {i} refreshed\n" for i in range(noise)) + table
    assert (noise > _MAX_WORDS) == (noise == 2000)
    assert f"api_key: {BLOB}".encode() in text_table_view(text.encode())
    cell = {"cell_type": "code", "id": "c", "metadata": {}, "source": "print(df)",
            "outputs": [{"output_type": "stream", "name": "stdout", "text": text}]}
    nb = {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [cell]}
    model = {"type": "notebook", "content": nb}
    GUARD.check(model, "tables.ipynb")
    assert BLOB not in str(model)


@pytest.mark.parametrize("line", ["token w{i}", "key ab", "token | w{i}"])
def test_lines_that_each_read_as_a_header_keep_the_table_view_linear(line: str) -> None:
    """``print("token", word)`` in a loop: every line names a credential and could head a
    table of the lines below it (20,000 tables of 200 rows: a view 200 times the text). A
    line read as a row is not read as a header again, and the view stays within twice its
    text: a printed table after them is still read."""
    noise = "".join(line.format(i=i) + "\n" for i in range(20_000))
    table = f"\n   service                  api_key\n0     qlab  {BLOB}\n"
    text = (noise + table).encode()
    view = text_table_view(text)
    assert len(view) <= 2 * len(text) + 64 * 1024
    assert f"api_key: {BLOB}".encode() in view


def test_a_dataframe_printed_right_below_another_is_read_with_its_own_header() -> None:
    """Two ``print(df)`` with nothing between them: the second header has no index, its
    rows do, so it ends the first table instead of being read as one of its rows."""
    text = (b"  user  token\n0  ann  t0k3n\n  service                  secret\n"
            b"0    qlab  " + BLOB.encode() + b"\n")
    assert b"secret: " + BLOB.encode() in text_table_view(text)


def test_a_row_with_an_empty_cell_does_not_end_the_printed_table() -> None:
    """pandas prints "" as blank: that row has one cell fewer, like a header, but its
    first cell is the index, not a column name."""
    text = (b"  user  token\n0  ann  t0k3n\n1        " + BLOB.encode() + b"\n"
            b"2  bob  " + BLOB[::-1].encode() + b"\n")
    view = text_table_view(text)
    assert b"token: " + BLOB.encode() in view and b"token: " + BLOB[::-1].encode() in view


def test_a_header_of_many_credential_columns_over_a_huge_row_is_cut_short() -> None:
    """A row's cells are repeated once per credential column that spans them: 85 columns
    over a 1 MB cell would be an 85 MB view; the view stops at its budget instead."""
    text = b"token " * 85 + b"\n" + b"x" * 1_000_000 + b" " + b"y " * 84 + b"\n"
    assert len(text_table_view(text)) <= 2 * len(text) + 64 * 1024


def test_a_quoted_token_after_thousands_of_quoted_names_is_found() -> None:
    """A minified script: a line of thousands of quoted strings, most of them out on the
    value alone (names, paths) before their line is read. The quoted token after them is
    still found, and a value that reads as random but is named as an id is still let
    through by the part of the check that reads the line."""
    names = ",".join(f'"{w}_{i}_handlerName"' for i, w in enumerate(["onClick", "layout"] * 1500))
    ids = 'var c={"sha256":"q8ZkP3vT9xLm2RwY7nB4cJ6hF1sD5gA0eKuWo"};'
    assert refused_detectors(f"var t=[{names}];{ids}\nvar k=\"{BLOB}\";\n") == [
        "base64-high-entropy"
    ]
    assert refused_detectors(f"var t=[{names}];{ids}\n") == []


def test_redacting_text_with_other_scripts_counts_characters_once_and_as_before() -> None:
    """Byte offsets become character offsets, widened to whole characters, counted on from
    one finding to the next: the result is that of counting from the start for each."""
    from server_ext.scanner.documents import redact_text
    from server_ext.scanner.engine import Finding

    rng = random.Random(13)
    for _ in range(300):
        text = "".join(rng.choice("ab é€😀\n") for _ in range(rng.randint(1, 80)))
        encoded = text.encode()
        cuts = sorted(rng.sample(range(len(encoded) + 1), min(len(encoded) + 1, 6)))
        findings = [Finding("d", a, b, 1, "f", encoded[a:b])
                    for a, b in zip(cuts[::2], cuts[1::2], strict=False) if a < b]
        expected = []
        for f in findings:
            start, end = f.start, f.end
            while start > 0 and encoded[start] & 0xC0 == 0x80:
                start -= 1
            while end < len(encoded) and encoded[end] & 0xC0 == 0x80:
                end += 1
            first = len(encoded[:start].decode())
            span = (first, first + len(encoded[start:end].decode()), "[REDACTED:d]")
            if not expected or span[0] >= expected[-1][1]:
                expected.append(span)
        assert redact_text(text, findings)[1] == expected
