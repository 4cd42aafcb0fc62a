"""Switch a hub configuration to OpenID Connect login from ``QUSTODY_OIDC_*`` variables.

``jupyterhub_config.py`` calls :func:`configure_oidc`; when ``QUSTODY_OIDC_ISSUER`` is set
the hub uses :class:`hub_ext.identity.authenticator.QustodyAuthenticator` and bounded hub token
lifetimes. Without it the caller keeps its fallback login (the hub tests' shared password).
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from hub_ext.identity.authenticator import require_crypt_key
from hub_ext.identity.roles import BASE_SCOPES, EVERY_USER

DEFAULT_GROUP_ROLES = {
    "qustody-students": "student",
    "qustody-researchers": "researcher",
    "qustody-instructors": "instructor",
    "qustody-tas": "assistant",
    "qustody-observers": "observer",
    "qustody-admins": "admin",
    "qustody-auditors": "auditor",
}


def demo_crypt_key(state_dir: Path) -> str:
    """The demo's auth_state key: created once (0600) in the state directory."""
    path = state_dir / "jupyterhub_crypt_key"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return path.read_text().strip()


def configure_oidc(
    c: Any, environ: Mapping[str, str] | None = None, state_dir: str = ".demo"
) -> bool:
    """Configure ``c`` for OIDC when ``QUSTODY_OIDC_ISSUER`` is set; True if it did.

    Raises SystemExit with a clear message on a missing client secret or crypt key. In
    demo mode (``QUSTODY_DEMO_MODE=1``) a missing crypt key is generated in ``state_dir``.
    """
    env = os.environ if environ is None else environ
    issuer = env.get("QUSTODY_OIDC_ISSUER", "")
    if not issuer:
        return False
    demo = env.get("QUSTODY_DEMO_MODE", "") == "1"
    client_id = env.get("QUSTODY_OIDC_CLIENT_ID", "")
    secret = env.get("QUSTODY_OIDC_CLIENT_SECRET", "")
    if not client_id or not secret:
        raise SystemExit(
            "jupyterhub_config.py: QUSTODY_OIDC_ISSUER is set but QUSTODY_OIDC_CLIENT_ID or "
            "QUSTODY_OIDC_CLIENT_SECRET is missing: set both (from the provider's client "
            "registration)."
        )
    if demo and not os.environ.get("JUPYTERHUB_CRYPT_KEY"):
        os.environ["JUPYTERHUB_CRYPT_KEY"] = demo_crypt_key(Path(state_dir))
    try:
        require_crypt_key()
    except ValueError as e:
        raise SystemExit(f"jupyterhub_config.py: {e}") from None
    try:
        group_roles = json.loads(env.get("QUSTODY_OIDC_GROUP_ROLES", "") or "null")
    except ValueError:
        raise SystemExit(
            "jupyterhub_config.py: QUSTODY_OIDC_GROUP_ROLES must be a JSON object"
        ) from None
    a = c.QustodyAuthenticator
    c.JupyterHub.authenticator_class = "qustody"
    a.issuer = issuer
    a.client_id = client_id
    a.client_secret = secret
    a.group_roles = group_roles or DEFAULT_GROUP_ROLES
    if env.get("QUSTODY_OIDC_ACR_LEVELS"):
        a.acr_levels = env["QUSTODY_OIDC_ACR_LEVELS"].split()
    # bounded hub-side lifetimes: browser cookie and server OAuth tokens no longer than a
    # session; API tokens users create (CI robots) must expire within a week
    c.JupyterHub.cookie_max_age_days = 0.5
    c.JupyterHub.oauth_token_expires_in = 8 * 3600
    c.JupyterHub.token_expires_in_max_seconds = 7 * 86400
    c.JupyterHub.shutdown_on_logout = env.get("QUSTODY_SHUTDOWN_ON_LOGOUT", "1") == "1"
    return True


def hand_roles_to_authenticator(
    c: Any, admin_roles: Iterable[str] = ("qpu-operator", "course-admin")
) -> None:
    """Move the user roles of ``c.JupyterHub.load_roles`` to the authenticator (OIDC).

    Under OIDC the authenticator assigns every user role from IdP groups
    (``manage_roles``), and JupyterHub refuses ``load_roles`` that assign users. The
    scopes other components gave Qustody's roles there (the audit page's and the QPU
    gateway's custom scopes) go to ``QustodyAuthenticator.role_extra_scopes``; the roles
    in ``admin_roles`` (made for the hub's admins) go to its ``admin`` entry. Roles of
    services stay. Any other role that assigns users stops the hub with a message.
    """
    a = c.QustodyAuthenticator
    extra: dict[str, list[str]] = {
        k: list(v) for k, v in (a.role_extra_scopes if "role_extra_scopes" in a else {}).items()
    }
    admins = set(admin_roles)
    keep = []
    for role in c.JupyterHub.load_roles:
        name = role["name"]
        target = "admin" if name in admins else name if name in BASE_SCOPES else ""
        if not target:
            if role.get("users") or role.get("groups"):
                raise SystemExit(
                    f"jupyterhub_config.py: role {name!r} gives users a role in load_roles, "
                    "but under OIDC roles come from identity-provider groups: map a group to "
                    "it with c.QustodyAuthenticator.group_roles instead"
                )
            keep.append(role)
            continue
        extra[target] = sorted({*extra.get(target, []), *role.get("scopes", [])})
    # every user's scopes (the audit service's access, for their own alerts): the
    # authenticator writes the default user role at each login, so it must know them
    every = c.JupyterHub.extra_user_scopes if "extra_user_scopes" in c.JupyterHub else set()
    if every:
        extra[EVERY_USER] = sorted({*extra.get(EVERY_USER, []), *every})
    a.role_extra_scopes = extra
    c.JupyterHub.load_roles = keep
