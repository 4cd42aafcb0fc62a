"""The JupyterLab extension in Debian's Chromium, against a real JupyterLab server with the
Qustody server extension and the prebuilt extension installed (as the wheel installs it),
started with the single-user image's locked-down Lab settings.

A refused save shows one findings dialog (never stacked, no "File Save Error") whose link
leads to the cell and whose "not a secret" action produces a notebook that saves; a save
with a key in an output says which cell was redacted and shows what is on disk; the
session clock counts down to the maximum age and warns at 2 minutes; no news prompt and
no request leaves 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import secrets
import shutil
import string
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from ports import free_port
from qtest import code_cell, notebook, stream
from waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
UI = ROOT / "tests" / "ui"
LABEXT = ROOT / "labextension"
GITHUB_TOKEN = "ghp_" + "".join(random.Random("lab").choices(string.ascii_letters, k=36))
MAX_AGE = 3600
LEFT = 115  # seconds left when the server starts: under the 2-minute warning


# notebooks with a kernel, so JupyterLab does not open its "Select Kernel" dialog first
LEAK = notebook(
    code_cell("import os\n", cell_id="intro"),
    code_cell(f"x = 1\nGITHUB = '{GITHUB_TOKEN}'", cell_id="gh-cell"),
    code_cell("print(1)\n", cell_id="tail"),
)
OUTPUTS = notebook(
    code_cell("print(os.environ['GH'])\n", [stream(f"{GITHUB_TOKEN}\n")], cell_id="printed")
)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """Maximum age first: LEFT seconds to go when the server starts."""
    env = {
        "QUSTODY_STARTED_AT": str(int(time.time()) - MAX_AGE + LEFT),
        "QUSTODY_MAX_AGE_SECONDS": str(MAX_AGE),
    }
    with _running_lab(tmp_path_factory.mktemp("lab"), env) as running:
        yield running


@contextlib.contextmanager
def _running_lab(tmp: Path, limits: dict[str, str]) -> Iterator[dict]:
    subprocess.run([sys.executable, str(LABEXT / "build.py")], check=True, timeout=900)
    share = tmp / "share"
    (share / "labextensions" / "@qustody").mkdir(parents=True)
    (share / "labextensions" / "@qustody" / "jupyterlab").symlink_to(
        LABEXT / "prebuilt" / "@qustody" / "jupyterlab"
    )
    # the image's settings, where the image puts them (images/Dockerfile)
    config = tmp / "config"
    config.mkdir()
    shutil.copy(ROOT / "images" / "jupyter_lab_config.json", config / "jupyter_lab_config.json")
    settings = tmp / "app-settings"
    settings.mkdir()
    shutil.copy(ROOT / "images" / "overrides.json", settings / "overrides.json")
    notebooks = tmp / "notebooks"
    notebooks.mkdir()
    (notebooks / "leak.ipynb").write_text(json.dumps(LEAK))
    (notebooks / "outputs.ipynb").write_text(json.dumps(OUTPUTS))
    port, token = free_port(), secrets.token_hex(16)
    env = {
        **os.environ,
        "HOME": str(tmp),
        "PYTHONPATH": str(ROOT),
        "JUPYTER_PATH": str(share),
        "JUPYTER_CONFIG_DIR": str(config),
        "JUPYTER_DATA_DIR": str(tmp / "data"),
        "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"),
        **limits,
    }
    log = (tmp / "lab.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1",
            f"--port={port}", f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={notebooks}", f"--LabApp.app_settings_dir={settings}",
            "--LabApp.expose_app_in_browser=True", "--allow-root",
        ],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/"

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"jupyter lab exited: {(tmp / 'lab.log').read_text()[-3000:]}")
        try:
            return requests.get(url + "api/status", params={"token": token}, timeout=5).ok
        except requests.ConnectionError:
            return False

    try:
        wait_for(up, 120, what="jupyter lab to answer")
        yield {"url": url, "token": token, "dir": notebooks, "log": tmp / "lab.log"}
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


def drive(lab: dict, tmp_path: Path, **opts: str) -> dict:
    node = shutil.which("node")
    if node is None or not (UI / "node_modules" / "playwright-core").exists():
        pytest.fail("playwright-core is not installed: run `make ui-deps`")
    if not Path("/usr/bin/chromium").exists():
        pytest.fail("Chromium is not installed: run `make system-deps` (as root)")
    args = {
        "lab": lab["url"],
        "token": lab["token"],
        "notebook": "leak.ipynb",
        "screenshot": str(tmp_path / "refused-save.png"),
        "userDataDir": str(tmp_path / "chromium-profile"),
        **opts,
    }
    done = subprocess.run(
        [node, str(UI / "labextension.mjs"), json.dumps(args)],
        cwd=UI, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    out = dict(json.loads(done.stdout.strip().splitlines()[-1]))
    assert "failure" not in out, (
        f"{out['failure']}\nconsole: {out['console'][-20:]}\n{out.get('failureDialogs')}\n"
        + lab["log"].read_text()[-3000:]
    )
    return out


def test_refused_save_dialog_clock_and_locked_down_lab(lab, tmp_path):
    out = drive(lab, tmp_path)

    # the session clock: max age, under two minutes left, and the warning said so
    assert re.fullmatch(r"Session [01]:\d\d left \(max age\)", out["clock"]), out["clock"]
    assert 0 <= out["clockSeconds"] <= LEFT
    assert "stops in less than 2 minutes" in out["warning"] and "hard limit" in out["warning"]

    # one findings dialog for two racing saves, and not JupyterLab's generic one
    assert out["dialogCount"] == 1
    assert out["saveErrorDialogs"] == 0
    assert out["savingStatus"] == "Saving failed"  # the status bar is not left at "started"
    assert out["dialogTitle"].startswith("Not saved")
    assert out["findings"] == [
        {
            "cell": "1",
            "where": "cell 2, line 2",
            "rule": "github-token",
            "masked": "ghp_********" + GITHUB_TOKEN[-3:],
        }
    ]
    # the value itself is nowhere in the dialog; the refused file kept its old content
    assert GITHUB_TOKEN[6:] not in out["dialogText"]
    assert out["diskAtRefusal"][2] == "print(1)\n"

    # the link led to the cell
    assert out["highlighted"] == [1]
    assert out["activeCell"] == 1

    # "not a secret" marked the line, and the notebook then saved
    assert out["notSecretLabel"] == "Marked: save again"
    assert out["sourceAfter"] == f"x = 1\nGITHUB = '{GITHUB_TOKEN}'  # pragma: allowlist secret"
    assert out["savedAfterPragma"] is True
    assert out["dialogsAtEnd"] == 0
    saved = json.loads((lab["dir"] / "leak.ipynb").read_text())
    assert "".join(saved["cells"][2]["source"]) == "print('edited')\n"

    # a redacted output: said in a notification, and the view reloaded from disk
    assert GITHUB_TOKEN in out["outputBefore"]
    assert out["redactedNotice"].startswith(
        "Saved with 1 credential redacted in cell 1 (github-token)"
    )
    assert GITHUB_TOKEN not in out["outputAfter"] and "REDACTED" in out["outputAfter"]
    assert out["sourceAfterRedaction"] == "print('again')\n"
    on_disk = (lab["dir"] / "outputs.ipynb").read_text()
    assert GITHUB_TOKEN not in on_disk and "print('again')" in on_disk

    # the secrets panel, on a server that holds none
    assert out["secretsNote"].startswith("No secrets were delivered to this server.")
    assert out["secretsRefresh"]["status"] == 502, out["secretsRefresh"]  # not 403: XSRF ok
    assert "not started by a hub" in out["secretsRefresh"]["body"]["message"]
    assert "not started by a hub" in out["secretsRefreshNotice"]

    # locked down: no news prompt, and every request stayed on this machine
    assert out["newsPrompt"] == 0
    outside = [u for u in out["requests"] if not u.startswith("http://127.0.0.1:")]
    assert outside == [], outside
    assert out["errors"] == []


def test_keep_working_resets_the_idle_clock(tmp_path):
    """Idle cull first: the 2-minute warning offers "keep working", which counts as
    activity; the clock goes back to the full idle time."""
    env = {"QUSTODY_IDLE_TIMEOUT_SECONDS": "110", "QUSTODY_STARTED_AT": str(int(time.time()))}
    env["QUSTODY_MAX_AGE_SECONDS"] = str(MAX_AGE)
    with _running_lab(tmp_path / "lab", env) as running:
        out = drive(running, tmp_path, flow="idle")
    assert re.fullmatch(r"Session [01]:\d\d left \(if idle\)", out["clock"]), out["clock"]
    assert "any activity resets the idle timer" in out["warning"]
    assert out["keepAlive"]["method"] == "POST" and out["keepAlive"]["status"] == 200
    assert out["keepAlive"]["body"]["idle"]["idle_seconds"] <= 1
    # the clock shows the answer: the full idle time again
    assert out["clockAfterSeconds"] >= 105, out["clockAfter"]
