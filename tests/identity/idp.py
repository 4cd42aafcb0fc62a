"""Start the test OpenID provider (tests/idp/provider.mjs) and drive its login form.

Used by the identity tests, ``benchmarks/bench_login.py`` and ``hub_ext.demo``'s test.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, field
from html import unescape
from pathlib import Path
from typing import Any

import requests

from hub_ext.demo.provider_process import ProviderError, ProviderProcess, start_provider

IdpError = ProviderError


@dataclass
class Idp:
    """A running provider: ``issuer`` is its URL; ``admin`` calls its control API."""

    provider: ProviderProcess
    session: requests.Session = field(default_factory=requests.Session)

    @property
    def issuer(self) -> str:
        return self.provider.issuer

    def admin(self, path: str, body: dict[str, Any] | None = None) -> Any:
        response = self.session.post(
            f"{self.issuer}/admin/{path}",
            json=body or {},
            headers={"Authorization": f"Bearer {self.provider.admin_token}"},
            timeout=10,
        )
        response.raise_for_status()
        return response.json()

    def set_user(self, name: str, **changes: Any) -> None:
        self.admin(f"users/{name}", changes)

    def revoke(self, name: str) -> int:
        return int(self.admin(f"users/{name}/revoke")["removed"])

    def served(self) -> dict[str, int]:
        """How many requests the provider served, per path (its control API excluded)."""
        return {str(k): int(v) for k, v in self.admin("requests").items()}

    def rotate_keys(self) -> str:
        """A new signing key signs from now on; the old one stays published."""
        return str(self.admin("rotate-keys")["kid"])

    def add_client(self, client_id: str, client_secret: str, redirect_uri: str) -> None:
        self.admin(
            "clients",
            {
                "client_id": client_id,
                "client_secret": client_secret,
                "redirect_uris": [redirect_uri],
            },
        )

    def log(self) -> str:
        return self.provider.log_path.read_text(errors="replace")

    def stop(self) -> None:
        self.session.close()
        self.provider.stop()


def start_idp(
    users: dict[str, dict[str, Any]],
    clients: list[dict[str, Any]] | None = None,
    ttl: dict[str, int] | None = None,
    workdir: Path | None = None,
) -> Idp:
    """Start the provider on a random 127.0.0.1 port with ``users``."""
    workdir = Path(workdir or tempfile.mkdtemp(prefix="qustody-idp-"))
    return Idp(start_provider(users, workdir, clients=clients, ttl=ttl))


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


def captured_callback(
    session: requests.Session, hub_url: str, username: str, password: str
) -> tuple[str, str]:
    """Sign in at the provider but stop before the hub: the callback URL and the state
    cookie a browser would send (what an attacker who captured them could replay)."""
    form = session.get(f"{hub_url}hub/oauth_login", timeout=30)
    match = _FORM.search(form.text)
    if match is None:
        raise IdpError(f"no login form at the provider: HTTP {form.status_code}")
    action = requests.compat.urljoin(form.url, unescape(match.group(1)))
    response = session.post(
        action,
        data={"username": username, "password": password},
        allow_redirects=False,
        timeout=30,
    )
    while not response.headers.get("Location", "").startswith(f"{hub_url}hub/oauth_callback"):
        if not response.is_redirect:
            raise IdpError(f"the provider did not redirect to the hub: HTTP {response.status_code}")
        location = requests.compat.urljoin(response.url, response.headers["Location"])
        response = session.get(location, allow_redirects=False, timeout=30)
    return response.headers["Location"], session.cookies["oauthenticator-state"]


def send_callback(url: str, state_cookie: str) -> requests.Response:
    """The hub's OAuth callback as a (possibly replaying) client sends it."""
    return requests.get(
        url, cookies={"oauthenticator-state": state_cookie}, allow_redirects=False, timeout=30
    )
