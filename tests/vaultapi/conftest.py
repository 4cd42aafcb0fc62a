"""A Vault for the broker tests: the Vault-API test server (always), and a real
``vault server -dev`` when a ``vault`` binary is on PATH (the same tests run on both).

Both are provisioned the same way through the HTTP API with the root token: KV v2 at
``secret/``, JWT auth at ``jwt/`` trusting the test's RSA key, a role ``qustody-user``
whose token may read ``secret/qustody/user/<its user>/*``, and an AppRole ``qustody-hub``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import hvac
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop
from vaultapi import AUDIENCE, State, Vault, make_app, public_pem


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve_api(key: rsa.RSAPrivateKey) -> Iterator[Vault]:
    state = State(jwt_public_key=key.public_key(), audience=AUDIENCE)
    state.approle["qustody-hub"] = {
        "role_id": "role-" + os.urandom(4).hex(),
        "policies": ["qustody-hub"],
        "acl": [("sys/leases/revoke", {"update"})],
        "ttl": 600,
    }
    port = free_port()
    ready = threading.Event()
    holder: dict[str, Any] = {}

    def run() -> None:
        asyncio.set_event_loop(asyncio.new_event_loop())
        server = HTTPServer(make_app(state))
        server.listen(port, "127.0.0.1")
        holder["loop"], holder["server"] = IOLoop.current(), server
        ready.set()
        IOLoop.current().start()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    ready.wait(10)
    yield Vault("api", f"http://127.0.0.1:{port}", state.root, key, state)

    def stop() -> None:
        holder["server"].stop()
        holder["loop"].stop()

    holder["loop"].add_callback(stop)
    thread.join(10)
    holder["loop"].close(all_fds=True)


def _serve_dev(key: rsa.RSAPrivateKey, tmp: Any) -> Iterator[Vault]:
    port = free_port()
    root = "root-" + os.urandom(6).hex()
    log = open(tmp / "vault.log", "wb")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen(
        [
            "vault",
            "server",
            "-dev",
            f"-dev-root-token-id={root}",
            f"-dev-listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "HOME": str(tmp)},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if requests.get(url + "/v1/sys/health", timeout=1).status_code == 200:
                break
        except requests.RequestException:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError(
                f"vault server -dev did not start: {(tmp / 'vault.log').read_text()}"
            )
        time.sleep(0.2)
    client = hvac.Client(url=url, token=root)
    client.sys.enable_auth_method("jwt", path="jwt")
    client.write_data(  # hvac's generic write, JSON body
        "auth/jwt/config", data={"jwt_validation_pubkeys": [public_pem(key)]}
    )
    accessor = client.sys.list_auth_methods()["data"]["jwt/"]["accessor"]
    name = f"{{{{identity.entity.aliases.{accessor}.name}}}}"
    client.sys.create_or_update_policy(
        "qustody-user",
        f'path "secret/data/qustody/user/{name}/*" {{ capabilities = ["read"] }}\n'
        f'path "secret/metadata/qustody/user/{name}" {{ capabilities = ["list"] }}\n'
        f'path "secret/metadata/qustody/user/{name}/*" {{ capabilities = ["list", "read"] }}\n',
    )
    client.write_data(
        "auth/jwt/role/qustody-user",
        data={
            "role_type": "jwt",
            "user_claim": "preferred_username",
            "bound_audiences": [AUDIENCE],
            "token_policies": ["qustody-user"],
            "token_ttl": "5m",
        },
    )
    client.sys.enable_auth_method("approle", path="approle")
    client.sys.create_or_update_policy(
        "qustody-hub", 'path "sys/leases/revoke" { capabilities = ["update"] }\n'
    )
    client.write_data("auth/approle/role/qustody-hub", data={"token_policies": ["qustody-hub"]})
    try:
        yield Vault("dev", url, root, key)
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


@pytest.fixture(params=["api", "dev"])
def vault(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Vault]:
    """A provisioned Vault: the test server, or a real dev server when one is installed."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if request.param == "api":
        yield from _serve_api(key)
    else:
        if shutil.which("vault") is None:
            pytest.skip("vault binary not on PATH")
        yield from _serve_dev(key, tmp_path)
