"""Run one of tests/ui's playwright-core scripts in Debian's headless Chromium.

Each script takes one JSON argument and prints one JSON line with what the page showed;
``drive`` fails the test with the install step when node, playwright-core or Chromium
is missing (never skips), and with the script's stderr when it fails.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

UI = Path(__file__).resolve().parent / "ui"


def drive(script: str, args: dict[str, Any], timeout: float = 180) -> dict[str, Any]:
    node = shutil.which("node")
    if node is None or not (UI / "node_modules" / "playwright-core").exists():
        pytest.fail("playwright-core is not installed: run `make ui-deps`")
    if not Path("/usr/bin/chromium").exists():
        pytest.fail("Chromium is not installed: run `make system-deps` (as root)")
    done = subprocess.run(
        [node, str(UI / script), json.dumps(args)],
        cwd=UI,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))
