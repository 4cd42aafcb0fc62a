"""A real HTTP server answering JupyterHub's ``GET /hub/api/user`` for fixed tokens.

It stands in for the hub until the hub harness (tests/hub/conftest.py) is used for the
gateway's scope tests: the gateway resolves tokens over HTTP exactly as it does against
a real hub (``Authorization: token <token>`` -> the token owner's model with ``name``,
``kind``, ``groups`` and the token's expanded ``scopes``; 403 for an unknown token).
"""

from __future__ import annotations

import json
import secrets
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class FakeHub:
    users: dict[str, dict[str, Any]] = field(default_factory=dict)  # token -> model
    requests: int = 0

    def add(self, name: str, scopes: list[str], groups: list[str] | None = None,
            kind: str = "user") -> str:
        token = secrets.token_hex(16)
        self.users[token] = {"kind": kind, "name": name, "groups": groups or [],
                             "scopes": sorted(scopes), "admin": False, "server": None}
        return token

    def start(self) -> str:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hub.requests += 1
                scheme, _, token = self.headers.get("Authorization", "").partition(" ")
                model = hub.users.get(token) if scheme.lower() in ("token", "bearer") else None
                if self.path.rstrip("/") != "/hub/api/user" or model is None:
                    self.send_response(403 if self.path.rstrip("/") == "/hub/api/user" else 404)
                    self.send_header("Content-Type", "application/json")
                    self.end_headers()
                    self.wfile.write(json.dumps({"status": 403, "message": "no"}).encode())
                    return
                body = json.dumps({**model, "token_id": "a1", "session_id": None}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return f"http://127.0.0.1:{self.server.server_address[1]}/hub/api"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
