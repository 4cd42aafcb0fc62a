"""A refused save answers with structured findings (for the JupyterLab extension), and no
part of the response reveals more of a credential than a public prefix and 3 characters."""

from __future__ import annotations

import random
import string

GITHUB_TOKEN = "ghp_" + "".join(random.Random("gh").choices(string.ascii_letters, k=36))
PASSWORD = "Tr0ub4dor&3xq"  # a short password: the mask shows none of it
IBM_TOKEN = "".join(random.Random("ibm").choices("0123456789abcdef", k=128))


def notebook(*cells):
    return {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": list(cells)}


def code_cell(source, cell_id, outputs=()):
    return {
        "cell_type": "code",
        "id": cell_id,
        "metadata": {},
        "execution_count": None,
        "source": source,
        "outputs": list(outputs),
    }


def pieces(value: str, n: int = 6) -> set[str]:
    """Every run of ``n`` characters of ``value`` past its public prefix."""
    return {value[i : i + n] for i in range(4, len(value) - n + 1)}


async def test_refusal_body_has_structured_findings(api, jp_root_dir, server_logs):
    nb = notebook(
        code_cell("import os\n", "intro"),
        code_cell(f"x = 1\nGITHUB = '{GITHUB_TOKEN}'\n", "gh-cell"),
        code_cell(
            f'password = "{PASSWORD}"\nQiskitRuntimeService(token="{IBM_TOKEN}")\n',
            "mixed",
            [{"output_type": "stream", "name": "stdout", "text": f"token: {IBM_TOKEN}\n"}],
        ),
    )
    status, body = await api.save_notebook("leak.ipynb", nb)
    assert status == 422
    assert body["message"].startswith("Save refused: leak.ipynb contains 3 credentials")
    found = {(f["cell"], f["line"]): f for f in body["findings"]}
    assert sorted(found) == [(1, 2), (2, 1), (2, 2)]
    gh = found[(1, 2)]
    assert gh["cell_id"] == "gh-cell"
    assert gh["detector"] == "github-token"
    assert gh["zone"] == "source"
    assert gh["pointer"] == "/cells/1/source"
    assert gh["masked"] == "ghp_********" + GITHUB_TOKEN[-3:]
    assert gh["fingerprint"].startswith("ghp_…")
    assert found[(2, 1)]["detector"] == "generic-keyword"
    assert found[(2, 1)]["masked"] == "********"  # 13 characters: nothing of its own shown
    assert found[(2, 2)]["detector"] == "ibm-quantum-token"
    assert found[(2, 2)]["masked"] == "********" + IBM_TOKEN[-3:]
    # where each value sits on its line, so the editor can replace exactly it
    assert (gh["column"], gh["length"]) == (len("GITHUB = '"), len(GITHUB_TOKEN))
    assert (found[(2, 1)]["column"], found[(2, 1)]["length"]) == (12, len(PASSWORD))
    assert found[(2, 2)]["column"] == len('QiskitRuntimeService(token="')
    # Only the refused sources are findings; the output would have been redacted.
    assert all(f["zone"] == "source" for f in body["findings"])
    assert not (jp_root_dir / "leak.ipynb").exists()

    # No piece of any value anywhere: body, headers-free JSON text, server log.
    text = str(body) + server_logs.text
    for value in (GITHUB_TOKEN, PASSWORD, IBM_TOKEN):
        assert value not in text
        assert not [p for p in pieces(value) if p in text]


async def test_saved_response_reports_redactions_with_masked_values(api, jp_root_dir):
    nb = notebook(
        code_cell(
            "connect()\n",
            "out",
            [{"output_type": "stream", "name": "stdout", "text": f"credential {IBM_TOKEN}\n"}],
        )
    )
    status, body = await api.save_notebook("out.ipynb", nb)
    assert status in (200, 201)
    report = body["qustody"]
    assert report["redacted"] == 1
    [finding] = report["findings"]
    assert finding["cell"] == 0 and finding["cell_id"] == "out"
    assert finding["zone"] == "output"
    assert finding["masked"] == "********" + IBM_TOKEN[-3:]
    on_disk = (jp_root_dir / "out.ipynb").read_text()
    assert IBM_TOKEN not in on_disk and not [p for p in pieces(IBM_TOKEN) if p in on_disk]
    assert not [p for p in pieces(IBM_TOKEN) if p in str(body)]


async def test_finding_columns_count_characters_not_bytes(api):
    """Columns are in characters as an editor counts them: a line with accents and an
    emoji before the key still points at the key."""
    line = f"clé = 'é🔑' ; jeton = '{GITHUB_TOKEN}'"
    status, body = await api.save_notebook("accents.ipynb", notebook(code_cell(line, "a")))
    assert status == 422
    (finding,) = body["findings"]
    start, length = finding["column"], finding["length"]
    assert list(line)[start : start + length] == list(GITHUB_TOKEN)
    assert start == line.index(GITHUB_TOKEN)  # Python counts code points, as JS's Array.from
