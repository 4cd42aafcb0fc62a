"""The ``qustody`` service in a hub: the fragment ``server_api(c, state_dir, ...)`` for
``hub_ext.wiring.apply`` in jupyterhub_config.py.

It holds:

- the hub-managed service ``qustody`` (``python -m hub_ext.server_api``) on 127.0.0.1,
  with a config written to ``<state>/server_api/config.py`` at each hub start from the
  hub's ``AuditLog``, ``RequestLimits``, ``SecretBroker``, ``SecretClassPolicy`` and
  ``VaultBroker`` settings (plain values only: a setting that is not one stops the hub);
- the ticket key (``<state>/server_api/ticket.key``, 0600, created when missing), which
  the hub signs claim tickets with (``SecretBroker.ticket_key_file``) and the service
  checks them with (a new key: delete the file and restart the hub);
- the custom scope ``custom:qustody:server``: every user holds it on their own servers
  (``JupyterHub.extra_user_scopes``) and every server token carries it for its own
  server (``Spawner.server_token_scopes``, ``!server``), which is how the service knows
  which server calls;
- the service's role: read users' names, groups, roles, servers and auth state, read
  groups' roles, stop servers (a demoted user's), and nothing else;
- ``QUSTODY_API_URL`` in the spawner's environment: the service behind the hub's proxy.

It reads the settings above from ``c``, so call it after them.
"""

from __future__ import annotations

import ast
import os
import secrets
import sys
from pathlib import Path
from typing import Any

from ..secrets.delivery import checked_settings
from ..wiring import Fragment
from .base import SERVER_SCOPE

SERVICE = "qustody"
#: The hub's settings the service reads (copied into its config file).
SECTIONS = ("AuditLog", "RequestLimits", "SecretBroker", "SecretClassPolicy", "VaultBroker")
SERVICE_SCOPES = [
    "list:users", "read:users:name", "read:users:groups", "read:roles:users",
    "read:servers", "delete:servers", "admin:auth_state",
    "read:groups:name", "read:roles:groups",
]


def _from_hub_environment(name: str) -> Any:
    """A service environment value JupyterHub computes when it starts the service."""
    return lambda _spawner: os.environ.get(name, "")


def internal_url(fragment: Fragment) -> str:
    """The service on loopback, for the hub's other services (the QPU gateway): not
    through the public proxy."""
    return f"{fragment.services[0]['url']}/services/{SERVICE}/"


def _settings_text(c: Any) -> str:
    lines = []
    for section in SECTIONS:
        if section not in c:
            continue
        for key, value in c[section].items():
            text = repr(value)
            try:
                same = ast.literal_eval(text) == value
            except (ValueError, SyntaxError):
                same = False
            if not same:
                raise ValueError(
                    f"c.{section}.{key} is not a plain value (text, number, list, dict), so "
                    "the qustody service cannot be given it; set it as one")
            lines.append(f"c.{section}.{key} = {text}\n")
    return "".join(lines)


def server_api(
    c: Any,
    state_dir: str | os.PathLike[str],
    *,
    profiles: list[str] | None = None,
    courses_dir: str = "",
    port: int | None = None,
    auth_refresh_age: float | None = None,
) -> Fragment:
    """The service, its scopes and role, the ticket key, and the servers' environment.

    ``profiles``: the spawn policy's profile names (the class policy must name only
    these); ``courses_dir``: the hub's course files (shared course secrets, terms);
    ``port``: default ``QUSTODY_API_PORT`` or 8084; ``auth_refresh_age``: default the
    hub's ``Authenticator.auth_refresh_age`` (how fresh roles must be to get secrets).
    A bad secrets setting stops the hub here."""
    broker, _ = checked_settings(c, profiles)  # raises on a bad setting
    state = Path(state_dir).resolve()
    folder = state / "server_api"
    key_file = folder / "ticket.key"
    config = folder / "config.py"
    port = port or int(os.environ.get("QUSTODY_API_PORT", "8084"))
    if auth_refresh_age is None:
        auth_refresh_age = 300.0  # JupyterHub's default
        for section in ("QustodyAuthenticator", "Authenticator"):
            if section in c and "auth_refresh_age" in c[section]:
                auth_refresh_age = float(c[section].auth_refresh_age)
                break
    # the freshness of roles is known from Qustody's own authenticator's auth state only
    if "qustody" not in str(c.JupyterHub.get("authenticator_class", "")).lower():
        auth_refresh_age = 0.0
    text = "# Written by hub_ext.server_api.hub at every hub start; edit the hub config.\n"
    text += "c = get_config()  # noqa: F821\n"
    text += _settings_text(c)
    text += "c.AuditLog.create_key_file = False  # the hub made (or was given) the key\n"
    text += f"c.ServerApi.ticket_key_file = {str(key_file)!r}\n"
    text += f"c.ServerApi.courses_dir = {str(courses_dir or '')!r}\n"
    text += f"c.ServerApi.roles_max_age = {float(auth_refresh_age)!r}\n"
    service = {
        "name": SERVICE,
        "display": False,
        "url": f"http://127.0.0.1:{port}",
        "command": [sys.executable, "-m", "hub_ext.server_api", f"--config={config}"],
        "cwd": str(folder),
        "environment": {"QUSTODY_STATE_DIR": str(state),
                        # a master key given to the hub in its environment is the service's,
                        # read when the service starts (so never a value in the config)
                        **({broker.master_key_env: _from_hub_environment(broker.master_key_env)}
                           if os.environ.get(broker.master_key_env) else {})},
    }
    role = {"name": "qustody-service", "description": "The qustody service's own rights",
            "scopes": SERVICE_SCOPES, "services": [SERVICE]}
    public = str(c.JupyterHub.get("bind_url") or "http://127.0.0.1:8000").rstrip("/")
    return Fragment(
        "the qustody service (hub_ext.server_api)",
        services=[service],
        roles=[role],
        custom_scopes={SERVER_SCOPE: {
            "description": "Be one's own server to the qustody service (server tokens)"}},
        server_token_scopes=[f"{SERVER_SCOPE}!server"],
        environment={"QUSTODY_API_URL": f"{public}/services/{SERVICE}/"},
        settings={"SecretBroker.ticket_key_file": str(key_file),
                  "JupyterHub.extra_user_scopes": {f"{SERVER_SCOPE}!user"}},
        files={config: text, **({} if key_file.exists() else
                                 {key_file: secrets.token_hex(32) + "\n"})},
    )


__all__ = ["SERVICE", "internal_url", "server_api"]
