"""The image's launcher pauses the garbage collector for a server's start; the server
extension resumes it (images/singleuser.py, server_ext.app.resume_collector)."""

from __future__ import annotations

import gc
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
        assert frozen is not None and frozen == gc.get_freeze_count() > 0
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


def test_the_launcher_runs_jupyterhub_singleuser_with_the_collector_paused() -> None:
    # jupyterhub-singleuser's main, replaced by a probe: the collector is still paused
    # when the launcher calls it, the variable is set for the extension, argv[0] is its own
    probe = (
        "import gc, os, runpy, sys\n"
        "import jupyterhub.singleuser as su\n"
        "def main():\n"
        "    print('paused' if not gc.isenabled() else 'running', os.environ['QUSTODY_GC_PAUSED'],"
        " sys.argv[0])\n"
        "    return 0\n"
        "su.main = main\n"
        f"sys.argv = [{str(LAUNCHER)!r}]\n"
        f"runpy.run_path({str(LAUNCHER)!r}, run_name='__main__')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["paused", "1", "jupyterhub-singleuser"]
