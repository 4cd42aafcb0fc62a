"""`make demo`'s launcher: provider + hub, printed logins work (and the MFA-less one is refused)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from identity.idp import login

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def test_demo_prints_working_oidc_logins(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QUSTODY_", "JUPYTERHUB_"))}
    env.update(QUSTODY_SPAWNER="local", PATH=f"{Path(sys.executable).parent}:{env['PATH']}")
    env["QUSTODY_IMAGE_DIGEST"] = ""
    out = tmp_path / "demo.out"
    with out.open("w") as sink:
        demo = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hub_ext.demo",
                "--state",
                str(tmp_path / "state"),
                "--port",
                "0",
            ],
            cwd=ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 90
        url = ""
        while time.monotonic() < deadline and demo.poll() is None:
            text = out.read_text()
            match = re.search(r"Qustody demo: (http://127\.0\.0\.1:\d+/)", text)
            if match and "Stop with Ctrl-C" in text:
                url = match.group(1)
                try:
                    if requests.get(url + "hub/login", timeout=2).status_code == 200:
                        break
                except requests.RequestException:
                    pass
            time.sleep(0.5)
        text = out.read_text()
        assert url, text[-3000:]
        passwords = dict(re.findall(r"^\s{4}(\w+)\s+(\S+)\s{2,}", text, re.M))
        assert set(passwords) >= {"rita", "nomfa", "ivan", "ada", "audrey"}
        assert login(requests.Session(), url, "rita", passwords["rita"]).status_code == 200
        refused = login(requests.Session(), url, "nomfa", passwords["nomfa"])
        assert refused.status_code == 403 and "Multi-factor" in refused.text
        key = tmp_path / "state" / "jupyterhub_crypt_key"
        assert key.stat().st_mode & 0o777 == 0o600
    finally:
        os.killpg(demo.pid, signal.SIGINT)
        try:
            demo.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()
    assert "Traceback" not in out.read_text()
    # Ctrl-C stops everything the demo started: nothing answers on its port any more
    port = int(url.rstrip("/").rsplit(":", 1)[1])
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0, "the demo's proxy outlived it"
