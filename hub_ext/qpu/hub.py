"""The QPU gateway in a hub: the fragment ``qpu_gateway(c, state_dir)`` for
``hub_ext.wiring.apply`` in jupyterhub_config.py.

It holds:

- the hub-managed service ``qpu`` running ``python -m hub_ext.qpu`` on 127.0.0.1, with its
  database and a generated config in ``<state>/qpu/`` (the hub's ``c.AuditLog`` path and
  key, the policy file, the backends; an operator's file can be loaded after it);
- the custom scopes ``custom:qpu:submit``, ``custom:qpu:read-all`` and
  ``custom:qpu:admin`` with their descriptions;
- the scopes to roles: ``submit`` (and access to the service) to the roles named in
  ``submit_roles`` (Qustody's ``student``, ``researcher`` and ``instructor``), ``admin``
  and ``submit`` to the role ``qpu-operator`` given to the hub's admin users,
  ``read-all`` to the ``auditor`` role;
- server-token scopes: ``custom:qpu:submit`` and ``access:services!service=qpu`` on top of
  the server role's, so the kernel's token can submit (the hub gives a server token only
  the subset its user holds);
- ``QUSTODY_QPU_URL`` in the spawner's environment: the gateway behind the hub's proxy;
- ``QpuGateway.credentials``: provider credentials read from the hub's secret broker
  (``SecretStoreCredentials``, secret_source.py; ``qustody secrets qpu`` manages them):
  with the embedded store, asked of the hub's ``qustody`` service (``credentials_url``),
  which answers them to the gateway's own token, so the gateway never holds the master
  key.

It reads ``c.AuditLog`` and the ``SecretBroker`` settings, so call it after them.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from ..wiring import Fragment
from .auth import SCOPE_ADMIN, SCOPE_READ_ALL, SCOPE_SUBMIT, SCOPES
from .secret_source import gateway_config_lines

SERVICE = "qpu"
DEMO_POLICY = Path(__file__).with_name("demo_policy.toml")
DEMO_BACKENDS: dict[str, Any] = {
    "aer_simulator": {"driver": "aer", "lanes": 2, "max_shots": 100_000},
    "fake_5q": {"driver": "emulated", "num_qubits": 5, "seed": 7, "max_shots": 20_000},
}


def gateway_config(state: Path, c: Any, policy: Path, backends: dict[str, Any],
                   courses_dir: str = "", extra_config: str = "", workers: int = 2,
                   credentials_url: str = "") -> str:
    """The text of ``<state>/qpu/qpu_config.py``: the gateway's settings from the hub's."""
    d = state / SERVICE
    audit = c.AuditLog
    settings = {
        "QpuGateway.db_url": f"sqlite:///{d / 'qpu.sqlite'}",
        "QpuGateway.policy_file": str(policy),
        # the hub's courses (hub_ext.courses.hub): their budgets and terms
        "QpuGateway.courses_dir": courses_dir,
        "QpuGateway.backends": backends,
        "QpuGateway.ip": "127.0.0.1",
        # a crashed worker costs the requests it held, not a refusal of every submission
        # until the hub's 30 s poll restarts the service (hub_ext/supervisor.py)
        "QpuGateway.workers": workers,
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
    text += gateway_config_lines(c, credentials_url)
    if extra_config:
        text += f"load_subconfig({extra_config!r})  # noqa: F821 - the operator's settings\n"
    return text


def qpu_gateway(
    c: Any,
    state_dir: str | os.PathLike[str],
    *,
    courses_dir: str,
    port: int | None = None,
    submit_roles: tuple[str, ...] = ("student", "researcher", "instructor"),
    policy_file: str | None = None,
    backends: dict[str, Any] | None = None,
    workers: int | None = None,
    credentials_url: str = "",
) -> Fragment:
    """The gateway's service, scopes, roles, server-token scopes and environment.

    ``port`` defaults to ``QUSTODY_QPU_PORT`` or 8765; ``policy_file`` to
    ``QUSTODY_QPU_POLICY`` or a copy of the demo policy in the state dir (written once).
    ``courses_dir``: the hub's courses (their QPU budgets and terms; empty: none). An operator's
    gateway config file (``QUSTODY_QPU_CONFIG``) is loaded after the generated settings.
    ``workers``: gateway processes on its port (``QpuGateway.workers``; default
    ``QUSTODY_QPU_WORKERS`` or 2); with 2 or more the crash of one leaves the others
    serving while it is restarted. ``credentials_url``: the hub's ``qustody`` service
    on loopback (``hub_ext.server_api.hub.internal_url(api)``), which answers provider
    credentials from the embedded store.
    """
    if workers is None:
        text = os.environ.get("QUSTODY_QPU_WORKERS", "2")
        if not text.isdigit():
            raise ValueError(f"QUSTODY_QPU_WORKERS={text[:20]!r}: give the number of gateway "
                             "processes, 1 to 64 (default 2)")
        workers = int(text)
    if not 1 <= workers <= 64:
        raise ValueError(f"qpu_gateway(workers={workers}): the gateway runs 1 to 64 processes")
    state = Path(state_dir).resolve()
    port = port or int(os.environ.get("QUSTODY_QPU_PORT", "8765"))
    files: dict[Path, str] = {}
    policy = policy_file or os.environ.get("QUSTODY_QPU_POLICY", "")
    if not policy:
        policy = str(state / SERVICE / "policy.toml")
        if not os.path.exists(policy):  # the demo's policy, for the admin to edit
            files[Path(policy)] = DEMO_POLICY.read_text()
    config = state / SERVICE / "qpu_config.py"
    files[config] = gateway_config(state, c, Path(policy), backends or DEMO_BACKENDS,
                                   courses_dir, os.environ.get("QUSTODY_QPU_CONFIG", ""), workers,
                                   credentials_url)
    service = {
        "name": SERVICE,
        "display": False,
        "url": f"http://127.0.0.1:{port}",
        "command": [sys.executable, "-m", "hub_ext.qpu", f"--config={config}"],
        "cwd": str(state / SERVICE),
        # the workers' metrics, summed at each scrape (hub_ext/qpu/metrics.py)
        "environment": {"PROMETHEUS_MULTIPROC_DIR": str(state / SERVICE / "metrics")},
    }
    access = f"access:services!service={SERVICE}"
    admins = sorted(c.Authenticator.admin_users) if "admin_users" in c.Authenticator else []
    roles = [
        # a server token gets only the scopes its user holds: the role must grant both
        *({"name": name, "scopes": [SCOPE_SUBMIT, access]} for name in submit_roles),
        # admins have servers too: they also submit, as any user (their server token
        # cannot operate: the server-token scopes hold submit only)
        {"name": "qpu-operator", "description": "Operate the QPU gateway (break-glass actions)",
         "scopes": [SCOPE_ADMIN, SCOPE_SUBMIT, access], "users": admins},
        {"name": "auditor", "description": "Read audit records and every QPU job",
         "scopes": [SCOPE_READ_ALL]},
    ]
    public = str(c.JupyterHub.bind_url or "http://127.0.0.1:8000").rstrip("/")
    return Fragment(
        "the QPU gateway (hub_ext.qpu.hub)",
        services=[service],
        roles=roles,
        custom_scopes={name: {"description": text} for name, text in SCOPES.items()},
        server_token_scopes=[SCOPE_SUBMIT, access],
        environment={"QUSTODY_QPU_URL": gateway_url(public)},
        files=files,
    )


def gateway_url(public_url: str) -> str:
    """Where servers and pages reach the gateway: behind the hub's public proxy."""
    return f"{public_url.rstrip('/')}/services/{SERVICE}/"


__all__ = ["gateway_config", "gateway_url", "qpu_gateway"]
