"""Secrets for code running in a kernel: the documented API.

In a notebook::

    from server_ext.secrets import get_secret, list_secrets, refresh
    token = get_secret("QISKIT_IBM_TOKEN")   # str; KeyError if this server has none
    list_secrets()                           # names available
    refresh()                                # re-fetch: rotated values, revoked ones gone

Values come from the files the server extension writes on the container's tmpfs
(``$QUSTODY_SECRETS_DIR``, readable only by the user), so reading one needs no network
and no token. ``refresh`` asks this server to fetch current values from the hub
(authenticated with the server's hub API token the kernel inherits). Printing a value
is safe to the extent that the save guard redacts it (and its base64, hex, URL and
JSON forms) from saved outputs; do not write values to other files.

Imports nothing from jupyter-server, so it loads fast in any kernel.
"""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path

from .kernel_errors import QustodyRefusal

DIR_ENV = "QUSTODY_SECRETS_DIR"


class SecretNotFound(KeyError, QustodyRefusal):
    """No secret of that name on this server (a ``KeyError``, so ``except KeyError`` works)."""

    code = "NO_SUCH_SECRET"
    kind = "Secrets"

    def __init__(self, message: str, code: str = "NO_SUCH_SECRET") -> None:
        super().__init__(message)
        self.code = code

    def __str__(self) -> str:  # KeyError would show the repr of the message
        return str(self.args[0]) if self.args else ""


def _directory() -> Path:
    d = os.environ.get(DIR_ENV)
    if not d:
        raise RuntimeError(
            "no Qustody secrets here: this kernel was not started by a Qustody server "
            f"({DIR_ENV} is not set)"
        )
    return Path(d)


def list_secrets() -> list[str]:
    """Names of the secrets this server holds."""
    d = _directory()
    if not d.is_dir():
        return []
    return sorted(p.name for p in d.iterdir() if not p.name.startswith("."))


def get_secret(name: str) -> str:
    """The current value of secret ``name``; KeyError (naming what exists) if absent."""
    if not name or "/" in name or name.startswith("."):
        raise SecretNotFound(f"{name!r} is not a secret name", code="BAD_SECRET_NAME")
    try:
        return (_directory() / name).read_text(encoding="utf-8")
    except FileNotFoundError:
        available = ", ".join(list_secrets()) or "none"
        raise SecretNotFound(
            f"no secret {name!r} on this server (available: {available}); "
            "ask an admin to grant it, then refresh() or restart the server"
        ) from None


def refresh(timeout: float = 30) -> list[str]:
    """Fetch current values from the hub through this server; returns the names."""
    base = os.environ.get("QUSTODY_SERVER_URL") or os.environ.get("JUPYTERHUB_SERVICE_URL")
    token = os.environ.get("QUSTODY_SERVER_TOKEN") or os.environ.get("JUPYTERHUB_API_TOKEN")
    if not base or not token:
        raise RuntimeError("refresh() needs a server started by JupyterHub")
    request = urllib.request.Request(  # noqa: S310 - this server's own URL
        base.rstrip("/") + "/qustody/api/secrets/refresh",
        data=b"{}",
        headers={"Authorization": f"token {token}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
        body = json.loads(response.read())
    return [str(s["name"]) for s in body.get("secrets", [])]
