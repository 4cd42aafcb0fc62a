"""Start the test OpenID provider (tests/idp/provider.mjs) and drive its login form.

Used by the identity tests, ``benchmarks/bench_login.py`` and ``hub_ext.demo``'s test.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from html import unescape
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[2]
IDP_DIR = ROOT / "tests" / "idp"


class IdpError(Exception):
    """The provider did not start; the message holds its output."""


@dataclass
class Idp:
    """A running provider: ``issuer`` is its URL; ``admin`` calls its control API."""

    issuer: str
    admin_token: str
    process: subprocess.Popen[str]
    log_path: Path
    session: requests.Session = field(default_factory=requests.Session)

    def admin(self, path: str, body: dict[str, Any] | None = None) -> Any:
        response = self.session.post(
            f"{self.issuer}/admin/{path}",
            json=body or {},
            headers={"Authorization": f"Bearer {self.admin_token}"},
            timeout=10,
        )
        response.raise_for_status()
        return response.json()

    def set_user(self, name: str, **changes: Any) -> None:
        self.admin(f"users/{name}", changes)

    def revoke(self, name: str) -> int:
        return int(self.admin(f"users/{name}/revoke")["removed"])

    def add_client(self, client_id: str, client_secret: str, redirect_uri: str) -> None:
        self.admin(
            "clients",
            {"client_id": client_id, "client_secret": client_secret, "redirect_uris": [redirect_uri]},
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.session.close()
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
        raise IdpError("node is not installed: the test provider needs Node.js 20")
    if not (IDP_DIR / "node_modules" / "oidc-provider").is_dir():
        raise IdpError("oidc-provider is not installed: run `make idp-deps`")
    return path


def start_idp(
    users: dict[str, dict[str, Any]],
    clients: list[dict[str, Any]] | None = None,
    ttl: dict[str, int] | None = None,
    workdir: Path | None = None,
    timeout: float = 30,
) -> Idp:
    """Start the provider on a random 127.0.0.1 port with ``users``; returns once it listens."""
    workdir = Path(workdir or tempfile.mkdtemp(prefix="qustody-idp-"))
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
    fd = os.open(config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(config, f)
    log_path = workdir / "idp.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [node(), str(IDP_DIR / "provider.mjs"), str(config_path)],
            cwd=IDP_DIR,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    line = process.stdout.readline()
    if not line.startswith("READY ") or time.monotonic() > deadline:
        process.kill()
        raise IdpError(f"provider did not start: {line!r}\n{log_path.read_text()}")
    return Idp(issuer=line.split()[1], admin_token=admin_token, process=process, log_path=log_path)


_FORM = re.compile(r'<form[^>]*action="([^"]+)"', re.I)


def login(
    session: requests.Session, hub_url: str, username: str, password: str, next_url: str = ""
) -> requests.Response:
    """The browser's part of a login: hub → provider login form → POST → back to the hub.

    Returns the final response (the hub's page, or its refusal page).
    """
    start = f"{hub_url}hub/oauth_login" + (f"?next={next_url}" if next_url else "")
    page = session.get(start, timeout=30)
    match = _FORM.search(page.text)
    if match is None:
        return page  # the hub answered without the provider (e.g. provider down)
    action = requests.compat.urljoin(page.url, unescape(match.group(1)))
    return session.post(action, data={"username": username, "password": password}, timeout=30)
