"""Run code in a real kernel of a user's server, through the proxy (REST + websocket)."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from datetime import UTC, datetime

import requests
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def run_in_kernel(server_url: str, token: str, code: str, timeout: float = 300) -> str:
    """Start a kernel in the server at ``server_url``, run ``code``, shut the kernel down."""
    kernel = Kernel(server_url, token)
    try:
        return kernel.run(code, timeout)
    finally:
        kernel.shutdown()


class Kernel:
    """A kernel started with ``POST {server}/api/kernels``; ``run(code)`` returns its output."""

    def __init__(self, server_url: str, token: str) -> None:
        self.server_url = server_url.rstrip("/") + "/"
        self.headers = {"Authorization": f"token {token}"}
        r = requests.post(
            self.server_url + "api/kernels", json={}, headers=self.headers, timeout=60
        )
        assert r.status_code == 201, r.text
        self.id = r.json()["id"]

    def run(self, code: str, timeout: float = 60) -> str:
        """stdout + stderr of ``code``; AssertionError (with the traceback) on an exception."""
        return asyncio.run(asyncio.wait_for(self._run(code, timeout), timeout))

    async def _run(self, code: str, timeout: float) -> str:
        ws_url = self.server_url.replace("http", "ws", 1) + f"api/kernels/{self.id}/channels"
        # the server answers the websocket once the kernel is up: on a loaded machine that
        # can take longer than tornado's 20 s default; ``timeout`` bounds the whole run
        conn = await websocket_connect(HTTPRequest(
            ws_url, headers=self.headers, connect_timeout=timeout, request_timeout=timeout))
        msg_id = uuid.uuid4().hex
        conn.write_message(
            json.dumps(
                {
                    "header": {
                        "msg_id": msg_id,
                        "msg_type": "execute_request",
                        "username": "test",
                        "session": uuid.uuid4().hex,
                        "date": datetime.now(UTC).isoformat(),
                        "version": "5.3",
                    },
                    "parent_header": {},
                    "metadata": {},
                    "content": {
                        "code": code,
                        "silent": False,
                        "store_history": False,
                        "user_expressions": {},
                        "allow_stdin": False,
                        "stop_on_error": True,
                    },
                    "channel": "shell",
                    "buffers": [],
                }
            )
        )
        out: list[str] = []
        error = ""
        try:
            while True:
                raw = await conn.read_message()
                assert raw is not None, "kernel websocket closed"
                msg = json.loads(raw)
                if msg.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                kind = msg["header"]["msg_type"]
                if kind == "stream":
                    out.append(msg["content"]["text"])
                elif kind == "error":
                    error = ANSI.sub("", "\n".join(msg["content"]["traceback"]))
                elif kind == "status" and msg["content"]["execution_state"] == "idle":
                    break
        finally:
            conn.close()
            # wait for the close handshake, so the socket is closed before the loop ends
            try:
                while await asyncio.wait_for(conn.read_message(), 5) is not None:
                    pass
            except TimeoutError:
                pass
        if error:
            raise AssertionError(f"kernel error:\n{error}\noutput so far:\n{''.join(out)}")
        return "".join(out)

    def shutdown(self) -> None:
        requests.delete(
            self.server_url + f"api/kernels/{self.id}", headers=self.headers, timeout=30
        )
