"""The image's launcher pauses the garbage collector for a server's start; the server
extension resumes it (images/singleuser.py, server_ext.app.resume_collector)."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from server_ext.app import resume_collector

LAUNCHER = Path(__file__).resolve().parents[2] / "images" / "singleuser.py"


def test_a_collector_the_launcher_paused_is_resumed_with_the_start_frozen(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("QUSTODY_GC_PAUSED", "1")
    gc.disable()
    try:
        frozen = resume_collector()
        assert gc.isenabled()
        # the count as it was when frozen; objects die (other threads) before it is read again
        assert frozen is not None and frozen > 1000 and gc.get_freeze_count() > 1000
        assert "QUSTODY_GC_PAUSED" not in os.environ  # kernels started later never see it
    finally:
        gc.unfreeze()
        gc.enable()


def test_a_collector_paused_by_anything_else_is_left_alone() -> None:
    assert "QUSTODY_GC_PAUSED" not in os.environ
    gc.disable()
    try:
        assert resume_collector() is None
        assert not gc.isenabled() and gc.get_freeze_count() == 0
    finally:
        gc.enable()


def test_the_launcher_imports_and_runs_jupyterhub_singleuser_with_the_collector_paused(
    tmp_path: Path,
) -> None:
    # A stand-in for jupyterhub.singleuser (what it does at start is not the point here):
    # it records the collector's state while it is imported and when main() runs.
    package = tmp_path / "jupyterhub"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "singleuser.py").write_text(
        "import gc, json, os, sys, threading\n"
        "imported_paused = not gc.isenabled()\n"
        "def main():\n"
        "    timers = [t for t in threading.enumerate() if isinstance(t, threading.Timer)]\n"
        "    print(json.dumps({'imported_paused': imported_paused,\n"
        "                      'paused': not gc.isenabled(),\n"
        "                      'variable': os.environ.get('QUSTODY_GC_PAUSED'),\n"
        "                      'argv': sys.argv,\n"
        "                      'fallback': [t.daemon and t.is_alive() for t in timers]}))\n"
        "    return 3\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    env.pop("QUSTODY_GC_PAUSED", None)
    out = subprocess.run(
        [sys.executable, str(LAUNCHER), "--ServerApp.port=8888", "--debug"],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert out.returncode == 3, out.stderr  # main()'s status is the process's
    seen = json.loads(out.stdout)
    assert seen == {
        "imported_paused": True,
        "paused": True,
        "variable": "1",
        "argv": ["jupyterhub-singleuser", "--ServerApp.port=8888", "--debug"],
        "fallback": [True],
    }


def test_the_launchers_fallback_resumes_only_a_collector_still_paused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    launcher: dict[str, object] = {}
    source = LAUNCHER.read_text().split("gc.disable()\n", 1)[0]  # the definitions only
    exec(compile(source, str(LAUNCHER), "exec"), launcher)
    resume = launcher["_resume_if_still_paused"]
    assert callable(resume)
    gc.disable()
    try:
        monkeypatch.delenv("QUSTODY_GC_PAUSED", raising=False)
        resume()  # the extension already resumed it (and something paused it since)
        assert not gc.isenabled()
        monkeypatch.setenv("QUSTODY_GC_PAUSED", "1")
        resume()  # the extension never ran
        assert gc.isenabled() and "QUSTODY_GC_PAUSED" not in os.environ
    finally:
        gc.enable()
