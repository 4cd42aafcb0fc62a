"""A STAND-IN for the one case the real OpenBao cannot produce: a secret read that
returns a lease.

KV v2 never leases its reads (``lease_id`` is always empty), yet ``VaultBroker.release``
must revoke, with the hub's own token, any lease a read returned (dynamic engines mounted
where an operator points ``kv_mount`` do lease). This proxy forwards every request to a
real OpenBao unchanged, except that it adds a made-up ``lease_id`` to each successful KV v2
data read. ``sys/leases/revoke`` calls are forwarded too (so the real server still checks
the caller's token and policy) and recorded with the token that made them.
"""

from __future__ import annotations

import json
import secrets
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests

FORWARDED = ("X-Vault-Token", "X-Vault-Request", "X-Vault-Wrap-TTL", "Content-Type")


@dataclass
class Revocation:
    lease_id: str
    token: str
    status: int  # the real server's answer


@dataclass
class LeasingProxy:
    upstream: str
    issued: list[str] = field(default_factory=list)
    revoked: list[Revocation] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> LeasingProxy:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k in FORWARDED}
                r = requests.request(
                    self.command, proxy.upstream + self.path, data=body, headers=headers,
                    timeout=30,
                )
                content = r.content
                path = self.path.split("?")[0]
                if path == "/v1/sys/leases/revoke":
                    lease = json.loads(body or b"{}").get("lease_id", "")
                    token = self.headers.get("X-Vault-Token", "")
                    proxy.revoked.append(Revocation(lease, token, r.status_code))
                elif self.command == "GET" and "/data/" in path and r.status_code == 200:
                    reply = r.json()
                    reply["lease_id"] = f"{path[4:]}/{secrets.token_hex(8)}"
                    proxy.issued.append(reply["lease_id"])
                    content = json.dumps(reply).encode()
                self.send_response(r.status_code)
                self.send_header("Content-Type", r.headers.get("Content-Type", "application/json"))
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = do_PUT = do_DELETE = do_LIST = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
