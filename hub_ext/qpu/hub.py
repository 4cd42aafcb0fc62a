"""Register the QPU gateway with a hub: ``qpu_service(c, state_dir)`` in jupyterhub_config.py.

It adds, to the hub's config ``c``:

- the hub-managed service ``qpu`` running ``python -m hub_ext.qpu`` on 127.0.0.1, with its
  database and a generated config in ``<state>/qpu/`` (the hub's ``c.AuditLog`` path and
  key, the policy file, the backends; an operator's file can be loaded after it);
- the custom scopes ``custom:qpu:submit``, ``custom:qpu:read-all`` and
  ``custom:qpu:admin`` with their descriptions;
- the scopes to roles: ``submit`` (and access to the service) to the roles named in
  ``submit_roles`` (Qustody's ``student``, ``researcher`` and ``instructor``), ``admin``
  and ``submit`` to the role ``qpu-operator`` given to the hub's admin users,
  ``read-all`` to the ``auditor`` role (created if absent);
- ``Spawner.server_token_scopes``: the server role's scopes plus ``custom:qpu:submit``
  and ``access:services!service=qpu``, so the kernel's token can submit (the hub gives a
  server token only the subset its user holds);
- ``QUSTODY_QPU_URL`` in ``Spawner.environment``: the gateway behind the hub's proxy;
- ``QpuGateway.credentials``: provider credentials read from the hub's secret broker
  (``SecretStoreCredentials``, secret_source.py; ``qustody secrets qpu`` manages them):
  with the embedded store, the hub's endpoint that answers them to the gateway's own
  token (hub_credentials.py), so the gateway never holds the master key.

Call it after ``c.JupyterHub.services`` and ``c.JupyterHub.load_roles`` are set and after
``hub_audit(c)`` (which creates the demo's audit key) and the ``SecretBroker`` settings.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

from .auth import SCOPE_ADMIN, SCOPE_READ_ALL, SCOPE_SUBMIT, SCOPES
from .secret_source import gateway_config_lines, hub_reader_settings

SERVICE = "qpu"
DEMO_POLICY = Path(__file__).with_name("demo_policy.toml")
DEMO_BACKENDS: dict[str, Any] = {
    "aer_simulator": {"driver": "aer", "lanes": 2, "max_shots": 100_000},
    "fake_5q": {"driver": "emulated", "num_qubits": 5, "seed": 7, "max_shots": 20_000},
}


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else []


def _add_scopes(roles: list[dict[str, Any]], name: str, scopes: list[str],
                **members: list[str]) -> None:
    for role in roles:
        if role.get("name") == name:
            role["scopes"] = [*role.get("scopes", []), *(s for s in scopes
                                                         if s not in role.get("scopes", []))]
            for key, names in members.items():
                role[key] = sorted({*role.get(key, []), *names})
            return
    roles.append({"name": name, "scopes": list(scopes), **members})


def gateway_config(state: Path, c: Any, policy: Path, backends: dict[str, Any],
                   extra_config: str = "") -> Path:
    """Write ``<state>/qpu/qpu_config.py``: the gateway's settings from the hub's."""
    d = state / SERVICE
    d.mkdir(parents=True, exist_ok=True)
    audit = c.AuditLog
    settings = {
        "QpuGateway.db_url": f"sqlite:///{d / 'qpu.sqlite'}",
        "QpuGateway.policy_file": str(policy),
        # the hub's courses (hub_ext.courses.hub): their budgets and terms
        "QpuGateway.courses_dir": str(c.SpawnPolicy.get("courses_dir", "")),
        "QpuGateway.backends": backends,
        "QpuGateway.ip": "127.0.0.1",
        "AuditLog.path": str(audit.get("path", "")),
        "AuditLog.db_url": str(audit.get("db_url", "")),
        # the hub created (or was given) the key; the gateway never makes a new one
        "AuditLog.key_file": str(audit.get("key_file", "")),
        "AuditLog.create_key_file": False,
    }
    text = "# Written by hub_ext.qpu.hub at every hub start; edit the hub config instead.\n"
    text += "c = get_config()  # noqa: F821\n"
    text += "".join(f"c.{k} = {v!r}\n" for k, v in settings.items() if v != "")
    # provider credentials from the hub's secret broker (paths and settings, no value)
    text += gateway_config_lines(c)
    if extra_config:
        text += f"load_subconfig({extra_config!r})  # noqa: F821 - the operator's settings\n"
    path = d / "qpu_config.py"
    path.write_text(text)
    path.chmod(0o600)
    return path


def qpu_service(
    c: Any,
    state_dir: str | os.PathLike[str],
    *,
    port: int | None = None,
    submit_roles: tuple[str, ...] = ("student", "researcher", "instructor"),
    policy_file: str | None = None,
    backends: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Add the gateway service, its scopes and roles to ``c``; returns the service entry.

    ``port`` defaults to ``QUSTODY_QPU_PORT`` or 8765; ``policy_file`` to
    ``QUSTODY_QPU_POLICY`` or a copy of the demo policy in the state dir. An operator's
    gateway config file (``QUSTODY_QPU_CONFIG``) is loaded after the generated settings.
    """
    state = Path(state_dir).resolve()
    port = port or int(os.environ.get("QUSTODY_QPU_PORT", "8765"))
    policy = policy_file or os.environ.get("QUSTODY_QPU_POLICY", "")
    if not policy:
        policy = str(state / SERVICE / "policy.toml")
        if not os.path.exists(policy):
            (state / SERVICE).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(DEMO_POLICY, policy)
    config = gateway_config(state, c, Path(policy), backends or DEMO_BACKENDS,
                            os.environ.get("QUSTODY_QPU_CONFIG", ""))
    service = {
        "name": SERVICE,
        "display": False,
        "url": f"http://127.0.0.1:{port}",
        "command": [sys.executable, "-m", "hub_ext.qpu", f"--config={config}"],
        "cwd": str(state / SERVICE),
    }
    c.JupyterHub.services = [*_list(c.JupyterHub.services), service]
    reader = hub_reader_settings(c)
    if reader is not None:  # the embedded store: the hub reads it for the gateway
        from .hub_credentials import install

        install(c, reader, SERVICE)
    custom = c.JupyterHub.custom_scopes if isinstance(c.JupyterHub.custom_scopes, dict) else {}
    c.JupyterHub.custom_scopes = {
        **custom, **{name: {"description": text} for name, text in SCOPES.items()},
    }
    roles = _list(c.JupyterHub.load_roles)
    access = f"access:services!service={SERVICE}"
    for name in submit_roles:
        # a server token gets only the scopes its user holds: the role must grant both
        _add_scopes(roles, name, [SCOPE_SUBMIT, access])
    admins = sorted(c.Authenticator.admin_users) if "admin_users" in c.Authenticator else []
    # admins have servers too: they also submit, as any user (their server token cannot
    # operate: server_token_scopes below holds submit only)
    _add_scopes(roles, "qpu-operator", [SCOPE_ADMIN, SCOPE_SUBMIT, access], users=admins)
    _add_scopes(roles, "auditor", [SCOPE_READ_ALL])
    for role in roles:
        if role["name"] == "qpu-operator":
            role.setdefault("description", "Operate the QPU gateway (break-glass actions)")
        if role["name"] == "auditor":
            role.setdefault("description", "Read audit records and every QPU job")
    c.JupyterHub.load_roles = roles
    c.Spawner.server_token_scopes = [
        *server_role_scopes(), SCOPE_SUBMIT, access,
    ]
    env = c.Spawner.environment if isinstance(c.Spawner.environment, dict) else {}
    public = str(c.JupyterHub.bind_url or "http://127.0.0.1:8000").rstrip("/")
    c.Spawner.environment = {**env, "QUSTODY_QPU_URL": f"{public}/services/{SERVICE}/"}
    return service


def server_role_scopes() -> list[str]:
    """The scopes JupyterHub gives a server token by default (its ``server`` role)."""
    from jupyterhub.roles import get_default_roles

    return list(next(r["scopes"] for r in get_default_roles() if r["name"] == "server"))


__all__ = ["gateway_config", "qpu_service", "server_role_scopes"]
