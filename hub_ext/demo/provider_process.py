"""Run the repository's OpenID provider (``tests/idp/provider.mjs``, npm oidc-provider).

For the demo and the tests only: a real provider on a random 127.0.0.1 port with users
from a JSON file written 0600 (it holds their passwords and the control-API token).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
IDP_DIR = ROOT / "tests" / "idp"


class ProviderError(Exception):
    """The provider could not start; the message says why and how to fix it."""


@dataclass
class ProviderProcess:
    issuer: str
    admin_token: str
    process: subprocess.Popen[str]
    log_path: Path

    def stop(self) -> None:
        if self.process.stdout is not None:
            self.process.stdout.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def node() -> str:
    path = shutil.which("node")
    if path is None:
        raise ProviderError(
            "node is not installed: install Node.js 20 (`make idp-deps` as root does)"
        )
    if not (IDP_DIR / "node_modules" / "oidc-provider").is_dir():
        raise ProviderError("oidc-provider is not installed: run `make idp-deps`")
    return path


def start_provider(
    users: dict[str, dict[str, Any]],
    workdir: Path,
    clients: list[dict[str, Any]] | None = None,
    ttl: dict[str, int] | None = None,
    timeout: float = 30,
) -> ProviderProcess:
    """Start the provider; returns once it prints its ready line."""
    workdir.mkdir(parents=True, exist_ok=True)
    admin_token = secrets.token_hex(32)
    config = {
        "host": "127.0.0.1",
        "port": 0,
        "admin_token": admin_token,
        "users": users,
        "clients": clients or [],
        "ttl": ttl or {},
    }
    config_path = workdir / "idp.json"
    config_path.unlink(missing_ok=True)
    fd = os.open(config_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(config, f)
    log_path = workdir / "idp.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(  # noqa: S603 - fixed argv
            [node(), str(IDP_DIR / "provider.mjs"), str(config_path)],
            cwd=IDP_DIR,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
    assert process.stdout is not None
    started = time.monotonic()
    line = process.stdout.readline()
    if not line.startswith("READY ") or time.monotonic() - started > timeout:
        ProviderProcess("", admin_token, process, log_path).stop()
        raise ProviderError(f"the OpenID provider did not start:\n{log_path.read_text()[-2000:]}")
    return ProviderProcess(line.split()[1], admin_token, process, log_path)
