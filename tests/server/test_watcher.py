"""Files written outside the contents API (by a kernel, a terminal, ``git pull``) are scanned
by the watcher of a real jupyter-server: findings reported and audited, notebook outputs
redacted in place, sources left as they are, nothing deleted."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from qtest import GITHUB_TOKEN, IBM_QUANTUM_TOKEN, code_cell, notebook, stream
from test_audit_report import Endpoint, under_hub  # noqa: F401 - a fixture
from waiting import wait_for

from server_ext.app import QustodyApp


@pytest.fixture
def jp_server_config() -> dict[str, Any]:
    return {
        "ServerApp": {"jpserver_extensions": {"server_ext": True}},
        "FileWatcher": {"debounce_ms": 100, "max_file_size": 64 * 1024},
    }


@pytest.fixture
def watching(jp_serverapp: Any) -> Any:
    """The server's watcher; ``start_watching`` starts it."""
    apps = jp_serverapp.extension_manager.extension_apps["server_ext"]
    [ext] = [a for a in apps if isinstance(a, QustodyApp)]
    return ext.watcher


async def start_watching(serverapp: Any) -> None:
    """Run the extensions' start step, which jupyter-server runs once its event loop is up
    (pytest-jupyter's server skips it), and let inotify set up its watches."""
    await serverapp.extension_manager.start_all_extensions()
    await asyncio.sleep(0.5)


async def reports_for(api: Any, path: str, timeout: float = 30) -> list[dict[str, Any]]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        code, body = await api.call("GET", "qustody", "api", "watcher")
        assert code == 200, body
        found = [r for r in body["reports"] if r["path"] == path]
        if found or asyncio.get_running_loop().time() > deadline:
            return found
        await asyncio.sleep(0.1)


async def test_notebook_written_by_a_kernel_has_its_outputs_redacted(
    api, jp_root_dir, watching, server_logs, jp_serverapp
):
    await start_watching(jp_serverapp)
    nb = notebook(
        code_cell(f"GH = '{GITHUB_TOKEN}'\nconnect(GH)", cell_id="src"),
        code_cell(
            "connect()",
            [stream(f"connecting with credential {IBM_QUANTUM_TOKEN}\n")],
            cell_id="out",
        ),
    )
    (jp_root_dir / "results").mkdir()
    (jp_root_dir / "results" / "run.ipynb").write_text(json.dumps(nb))

    [report] = await reports_for(api, "results/run.ipynb")
    assert report["action"] == "outputs-redacted"
    assert report["redacted"] == 1
    zones = sorted((f["zone"], f["cell_id"], f["detector"]) for f in report["findings"])
    assert zones == [("output", "out", "keyword-context"), ("source", "src", "github-token")]

    on_disk = json.loads((jp_root_dir / "results" / "run.ipynb").read_text())
    # The output is redacted in place; the source is the user's: reported, not rewritten.
    assert on_disk["cells"][1]["outputs"][0]["text"] == (
        "connecting with credential [REDACTED:keyword-context]\n"
    )
    assert on_disk["cells"][0]["source"] == nb["cells"][0]["source"]
    _, body = await api.call("GET", "qustody", "api", "watcher")
    shown = json.dumps(body) + server_logs.text
    assert GITHUB_TOKEN[4:] not in shown and IBM_QUANTUM_TOKEN[:-3] not in shown
    # The redaction is the guard's own write: it is not reported a second time.
    await asyncio.sleep(1)
    assert len(await reports_for(api, "results/run.ipynb")) == 1


async def test_env_file_from_a_terminal_is_reported_not_changed(
    api, jp_root_dir, watching, jp_serverapp
):
    await start_watching(jp_serverapp)
    text = f"GH_TOKEN={GITHUB_TOKEN}\n"
    (jp_root_dir / ".env").write_text(text)
    [report] = await reports_for(api, ".env")
    assert report["action"] == "reported"
    assert [f["detector"] for f in report["findings"]] == ["github-token"]
    assert report["findings"][0]["masked"] == "ghp_********" + GITHUB_TOKEN[-3:]
    assert (jp_root_dir / ".env").read_text() == text  # nothing deleted or rewritten


async def test_contents_api_saves_are_not_scanned_twice(api, jp_root_dir, watching, jp_serverapp):
    await start_watching(jp_serverapp)
    nb = notebook(code_cell("show()", [stream(f"token: {IBM_QUANTUM_TOKEN}\n")]))
    code, body = await api.save_notebook("saved.ipynb", nb)
    assert code in (200, 201), body
    assert body["qustody"]["redacted"] == 1
    # A later file written directly is reported: by then the save's events were handled.
    (jp_root_dir / "zz-later.env").write_text(f"TOKEN={GITHUB_TOKEN}\n")
    assert await reports_for(api, "zz-later.env")
    assert await reports_for(api, "saved.ipynb", timeout=0) == []


async def test_large_file_is_reported_as_not_checked(api, jp_root_dir, watching, jp_serverapp):
    await start_watching(jp_serverapp)
    (jp_root_dir / "dump.csv").write_text("x,y\n" * 40_000)
    [report] = await reports_for(api, "dump.csv")
    assert report["action"] == "not-checked"
    assert "FileWatcher.max_file_size" in report["reason"]


async def test_ignored_directories_are_not_scanned(api, jp_root_dir, watching, jp_serverapp):
    await start_watching(jp_serverapp)
    (jp_root_dir / ".git").mkdir()
    (jp_root_dir / ".git" / "config").write_text(f"token = {GITHUB_TOKEN}\n")
    (jp_root_dir / "zz-marker.env").write_text(f"TOKEN={GITHUB_TOKEN}\n")
    assert await reports_for(api, "zz-marker.env")
    assert await reports_for(api, ".git/config", timeout=0) == []


async def test_findings_are_audited(api, jp_root_dir, watching, under_hub, jp_serverapp):  # noqa: F811
    await start_watching(jp_serverapp)
    endpoint = Endpoint()
    under_hub(endpoint.url)
    (jp_root_dir / "keys.py").write_text(f"TOKEN = '{GITHUB_TOKEN}'\n")
    assert await reports_for(api, "keys.py")
    events = await asyncio.to_thread(endpoint.events, 1)
    endpoint.close()
    assert events == [
        {
            "type": "file-finding",
            "data": {
                "path": "keys.py",
                "action": "reported",
                "detectors": ["github-token"],
                "findings": 1,
                "redacted": 0,
            },
        }
    ]


async def test_a_notebook_with_a_lone_surrogate_is_redacted_and_watching_goes_on(
    api, jp_root_dir, watching, jp_serverapp
):
    # "\ud800" is valid JSON but has no UTF-8 form: rewriting the notebook once stopped the
    # watcher for good, so every file written after it went unchecked.
    await start_watching(jp_serverapp)
    nb = notebook(
        code_cell("show()", [stream(f"token: {IBM_QUANTUM_TOKEN}\n"), stream("odd \ud800\n")])
    )
    (jp_root_dir / "odd.ipynb").write_text(json.dumps(nb))  # ASCII: the surrogate escaped
    [report] = await reports_for(api, "odd.ipynb")
    assert report["action"] == "outputs-redacted"
    on_disk = (jp_root_dir / "odd.ipynb").read_text()
    assert IBM_QUANTUM_TOKEN not in on_disk
    assert json.loads(on_disk)["cells"][0]["outputs"][-1]["text"] == "odd \ud800\n"

    (jp_root_dir / "after.env").write_text(f"GH_TOKEN={GITHUB_TOKEN}\n")
    [later] = await reports_for(api, "after.env")
    assert later["action"] == "reported"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_server_whose_watcher_is_busy_exits_on_the_spawners_signal(
    tmp_path: Path, sig: signal.Signals
) -> None:
    # JupyterHub's local spawner stops a server with SIGINT, then SIGTERM. A watcher thread
    # still blocked in inotify once kept the process alive after its loop had ended, so a
    # culled or revoked server stayed up until SIGKILL, 60 s later.
    root, env = tmp_path / "root", dict(os.environ)
    root.mkdir()
    for name in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR"):
        env[name] = str(tmp_path / name.lower())
    log = (tmp_path / "server.log").open("w+")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyter_server",
            "--ServerApp.jpserver_extensions={'server_ext': True}",
            f"--ServerApp.root_dir={root}",
            "--ServerApp.port=0",
            "--ServerApp.ip=127.0.0.1",
            "--ServerApp.open_browser=False",
            "--FileWatcher.debounce_ms=50",
            "--allow-root",
        ],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        # as the spawner starts it: SIGINT at its default (a pytest-xdist worker ignores
        # SIGINT, and jupyter_server installs no handler of its own without a terminal)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        wait_for(lambda: "is running at" in Path(log.name).read_text(), 60, what="the server")
        written = [0]

        def found() -> bool:
            # "is running" can come before inotify watches the root: write again until seen
            if "credential(s) in keys.env" in Path(log.name).read_text():
                return True
            written[0] += 1
            (root / "keys.env").write_text(f"GH_TOKEN={GITHUB_TOKEN}\n# {written[0]}\n")
            return False

        wait_for(found, 60, interval=1, what="the watcher's finding")
        server.send_signal(sig)
        assert server.wait(timeout=20) is not None
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        log.close()


async def test_a_notebook_written_with_a_repeated_key_is_reported_from_its_text(
    api, jp_root_dir, watching, jp_serverapp
):
    await start_watching(jp_serverapp)
    text = ('{"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [{"cell_type": '
            '"code", "id": "a", "metadata": {}, "execution_count": null, "outputs": [], '
            f'"source": "tok = \'{GITHUB_TOKEN}\'", "source": "x = 1"}}]}}')
    (jp_root_dir / "dup.ipynb").write_text(text)
    [report] = await reports_for(api, "dup.ipynb")
    assert report["action"] == "reported"
    assert [f["detector"] for f in report["findings"]] == ["github-token"]
    assert (jp_root_dir / "dup.ipynb").read_text() == text  # reported, never rewritten
