"""``qustody scan`` as CI jobs and pre-commit hooks run it: a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from qtest import GITHUB_TOKEN, code_cell, notebook, stream


def qustody(*args: str, cwd=None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server_ext.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


@pytest.fixture
def tree(tmp_path):
    (tmp_path / "clean.py").write_text("import os\ntoken = os.environ['TOKEN']\n")
    (tmp_path / "leak.env").write_text(f"GH_TOKEN={GITHUB_TOKEN}\n")
    nb = notebook(code_cell("print(t)", [stream(f"{GITHUB_TOKEN}\n")], cell_id="c1"))
    (tmp_path / "nb.ipynb").write_text(json.dumps(nb))
    (tmp_path / "node_modules").mkdir()
    (tmp_path / "node_modules" / "ignored.js").write_text(f"'{GITHUB_TOKEN}'")
    return tmp_path


def test_text_report_and_exit_status(tree):
    result = qustody("scan", str(tree))
    assert result.returncode == 1
    assert "leak.env: line 1: github-token ghp_…" in result.stdout
    assert "nb.ipynb: cell 0 (id 'c1'), outputs/0/text, line 1: github-token" in result.stdout
    assert "ignored.js" not in result.stdout
    assert "2 finding(s) in 3 file(s) scanned, 0 error(s)" in result.stdout
    assert GITHUB_TOKEN not in result.stdout + result.stderr


def test_clean_files_exit_zero(tree):
    result = qustody("scan", str(tree / "clean.py"))
    assert result.returncode == 0, result.stdout
    assert "0 finding(s)" in result.stdout


def test_json_report(tree):
    result = qustody("scan", "--format", "json", str(tree))
    doc = json.loads(result.stdout)
    assert result.returncode == 1
    assert sorted((f["path"].rsplit("/", 1)[-1], f["detector"]) for f in doc["findings"]) == [
        ("leak.env", "github-token"),
        ("nb.ipynb", "github-token"),
    ]
    nb_finding = next(f for f in doc["findings"] if f["path"].endswith("nb.ipynb"))
    assert nb_finding["pointer"] == "/cells/0/outputs/0/text"
    assert nb_finding["zone"] == "output"
    assert GITHUB_TOKEN not in result.stdout


def test_sarif_report(tree, tmp_path):
    out = tmp_path / "report.sarif"
    result = qustody("scan", "--format", "sarif", "-o", str(out), str(tree))
    assert result.returncode == 1
    doc = json.loads(out.read_text())
    assert doc["version"] == "2.1.0"
    run = doc["runs"][0]
    assert run["tool"]["driver"]["name"] == "qustody"
    rule_ids = {r["id"] for r in run["tool"]["driver"]["rules"]}
    assert {r["ruleId"] for r in run["results"]} == {"github-token"} <= rule_ids
    env_result = next(
        r
        for r in run["results"]
        if r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"].endswith("leak.env")
    )
    assert env_result["locations"][0]["physicalLocation"]["region"]["startLine"] == 1
    assert GITHUB_TOKEN not in out.read_text()


def test_unreadable_and_invalid_inputs_are_errors_not_skips(tmp_path):
    (tmp_path / "broken.ipynb").write_text("{not json")
    (tmp_path / "big.txt").write_text("a" * 2048)
    result = qustody("scan", "--max-size", "1024", str(tmp_path), str(tmp_path / "missing.txt"))
    assert result.returncode == 2
    assert "broken.ipynb: ERROR not a valid notebook" in result.stdout
    assert "big.txt: ERROR 2,048 bytes is over --max-size 1,024; not scanned" in result.stdout
    assert "missing.txt: ERROR No such file or directory" in result.stdout


def test_detector_switches(tree):
    listed = qustody("scan", "--list-detectors")
    assert listed.returncode == 0
    assert "off public-ip" in listed.stdout
    assert "on  github-token" in listed.stdout
    # Without its format detector the token is still caught as a secret-named assignment.
    result = qustody("scan", "--disable", "github-token", str(tree / "leak.env"))
    assert result.returncode == 1
    assert "generic-keyword" in result.stdout and "github-token" not in result.stdout
    # ... and as a value next to a credential word (GH_TOKEN=); with all three off, clean.
    off = ("github-token", "generic-keyword", "keyword-context")
    result = qustody("scan", *(a for d in off for a in ("--disable", d)), str(tree / "leak.env"))
    assert result.returncode == 0
    bad = qustody("scan", "--disable", "nope", str(tree))
    assert bad.returncode == 2 and "unknown detector ids ['nope']" in bad.stderr


def test_usage():
    assert qustody().returncode == 2
    helped = qustody("--help")
    assert helped.returncode == 0 and "scan" in helped.stdout
    scan_help = qustody("scan", "--help")
    assert scan_help.returncode == 0 and "Exit status: 0 clean, 1 findings" in scan_help.stdout
    assert qustody("frobnicate").returncode == 2
    assert qustody("scan").returncode == 2


def test_scan_does_not_need_jupyter_server(tree):
    code = (
        "import sys; sys.modules['jupyter_server'] = None; sys.modules['jupyterhub'] = None\n"
        "from server_ext.cli import main; raise SystemExit(main(['scan', sys.argv[1]]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(tree / "leak.env")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr


# --- --baseline: adopt in CI on a repository that already has findings -----------------------


def test_baseline_reports_only_new_findings(tree, tmp_path_factory):
    base = tmp_path_factory.mktemp("ci") / "qustody-baseline.json"
    recorded = qustody("scan", "--write-baseline", str(base), str(tree))
    assert recorded.returncode == 0, recorded.stderr
    assert "2 finding(s) recorded" in recorded.stdout
    text = base.read_text()
    assert GITHUB_TOKEN not in text and GITHUB_TOKEN[4:12] not in text

    # The same tree on a later run (another process, so another fingerprint key unless the
    # baseline's is used): nothing new, exit 0.
    again = qustody("scan", "--baseline", str(base), str(tree))
    assert again.returncode == 0, again.stdout
    assert "0 finding(s) in 3 file(s)" in again.stdout

    # A new credential in a new file, and a second one in a known file, are reported.
    other = "ghp_" + "Qz7" * 12
    (tree / "new.py").write_text(f"token = '{other}'\n")
    (tree / "leak.env").write_text(f"GH_TOKEN={GITHUB_TOKEN}\nOTHER={other}\n")
    later = qustody("scan", "--baseline", str(base), "--format", "json", str(tree))
    assert later.returncode == 1
    found = sorted(
        (f["path"].rsplit("/", 1)[-1], f["line"]) for f in json.loads(later.stdout)["findings"]
    )
    assert found == [("leak.env", 2), ("new.py", 1)]
    assert other not in later.stdout


def test_baseline_with_a_key_from_the_environment(tree, tmp_path_factory):
    base = tmp_path_factory.mktemp("ci") / "base.json"
    env = {"QUSTODY_FP_KEY": "ci-secret-key"}
    first = qustody_env(
        env,
        "scan",
        "--fingerprint-key-env",
        "QUSTODY_FP_KEY",
        "--write-baseline",
        str(base),
        str(tree),
    )
    assert first.returncode == 0, first.stderr
    assert json.loads(base.read_text())["key"] is None  # the key stays in CI's secrets
    # Without the key the baseline cannot be used: an error, not every finding accepted.
    keyless = qustody("scan", "--baseline", str(base), str(tree))
    assert keyless.returncode == 2
    assert "--fingerprint-key-env" in keyless.stderr
    keyed = qustody_env(
        env, "scan", "--fingerprint-key-env", "QUSTODY_FP_KEY", "--baseline", str(base), str(tree)
    )
    assert keyed.returncode == 0, keyed.stdout


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (None, "does not exist; record one with --write-baseline"),
        ("not json", "cannot be read"),
        ('{"version": 99, "findings": []}', "not a qustody baseline of version 1"),
        ('{"version": 1, "key": "zz", "findings": []}', "damaged"),
    ],
)
def test_bad_baseline_is_an_error_not_a_pass(tree, tmp_path_factory, content, says):
    base = tmp_path_factory.mktemp("ci") / "base.json"
    if content is not None:
        base.write_text(content)
    result = qustody("scan", "--baseline", str(base), str(tree))
    assert result.returncode == 2
    assert says in result.stderr
    assert result.stdout == ""


def qustody_env(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server_ext.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )


def test_a_notebook_that_repeats_a_key_is_scanned_as_its_text(tmp_path):
    """A parser keeps the last of two ``source`` keys; the file (and git) keeps both."""
    text = ('{"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [{"cell_type": '
            '"code", "id": "a", "metadata": {}, "execution_count": null, "outputs": [], '
            f'"source": "tok = \'{GITHUB_TOKEN}\'", "source": "x = 1"}}]}}')
    (tmp_path / "dup.ipynb").write_text(text)
    result = qustody("scan", str(tmp_path / "dup.ipynb"))
    assert result.returncode == 1, result.stdout
    assert "dup.ipynb: line 1: github-token" in result.stdout


def test_a_notebook_that_repeats_a_harmless_key_is_still_read_as_a_notebook(tmp_path):
    """A repeated key elsewhere (kernelspec) does not cost the notebook's own views: a
    printed DataFrame's key column is found from the parsed form, besides the text."""
    nb = notebook(code_cell("print(df)", [stream(
        f"   service                  api_key\n0     qlab  {GITHUB_TOKEN[4:28]}\n")]))
    text = json.dumps(nb).replace('"metadata": {}', '"metadata": {"language": "python", '
                                  '"language": "python"}', 1)
    (tmp_path / "twice.ipynb").write_text(text)
    result = qustody("scan", str(tmp_path / "twice.ipynb"))
    assert result.returncode == 1, result.stdout
    assert "generic-keyword" in result.stdout
