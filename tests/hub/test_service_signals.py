"""The hub stops its managed services with SIGINT. A service started by a parent that
ignores SIGINT (a CI runner, a pytest-xdist worker, nohup) inherits that, and Python then
never raises KeyboardInterrupt: every hub stop waited out JupyterHub's interrupt timeout
per service, and a hub killed meanwhile left them running. Each stops at once now."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ports import free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("module", ["hub_ext.courses.web", "hub_ext.audit.web",
                                    "hub_ext.server_api"])
def test_a_service_started_with_sigint_ignored_stops_on_sigint(module, tmp_path):
    key = tmp_path / "audit.key"
    key.write_text(secrets.token_hex(32))
    key.chmod(0o600)
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "JUPYTERHUB_SERVICE_URL": f"http://127.0.0.1:{port}",
        "JUPYTERHUB_SERVICE_NAME": "svc",
        "JUPYTERHUB_SERVICE_PREFIX": "/services/svc/",
        "JUPYTERHUB_API_TOKEN": secrets.token_hex(16),
        "JUPYTERHUB_CLIENT_ID": "service-svc",
        "JUPYTERHUB_API_URL": "http://127.0.0.1:9/hub/api",
        "QUSTODY_COURSES_DIR": str(tmp_path),
        "QUSTODY_AUDIT_LOG": str(tmp_path / "audit" / "audit.jsonl"),
        "QUSTODY_AUDIT_KEY_FILE": str(key),
        "QUSTODY_AUDIT_VERIFY_SECONDS": "0",
    }
    log = (tmp_path / "service.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", module], env=env, stdout=log, stderr=subprocess.STDOUT,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert proc.poll() is None, (tmp_path / "service.log").read_text()
            time.sleep(0.1)
        else:
            raise AssertionError(f"{module} did not listen")
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=8)
        assert time.monotonic() - started < 5, "stopped only after waiting"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
