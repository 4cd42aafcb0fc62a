"""Run code in a real kernel of a user's running server, through the hub's proxy.

Starts a kernel with the jupyter-server REST API (``POST {server}api/kernels``), sends one
``execute_request`` over the kernel's websocket (JSON messages, Jupyter protocol 5.3) and
returns what the code printed; an error in the kernel raises with its traceback.
"""

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
    """``server_url``: e.g. ``http://127.0.0.1:8000/user/alice/`` (ends with '/')."""
    auth = {"Authorization": f"token {token}"}
    r = requests.post(server_url + "api/kernels", json={"name": "python3"}, headers=auth,
                      timeout=60)
    assert r.status_code == 201, r.text
    kernel = r.json()["id"]
    try:
        return asyncio.run(asyncio.wait_for(_execute(server_url, kernel, auth, code), timeout))
    finally:
        requests.delete(server_url + f"api/kernels/{kernel}", headers=auth, timeout=60)


async def _execute(server_url: str, kernel: str, auth: dict[str, str], code: str) -> str:
    ws_url = server_url.replace("http", "ws", 1) + f"api/kernels/{kernel}/channels"
    ws = await websocket_connect(HTTPRequest(ws_url, headers=auth))
    msg_id = uuid.uuid4().hex
    ws.write_message(json.dumps({
        "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "test",
                   "session": uuid.uuid4().hex, "version": "5.3",
                   "date": datetime.now(UTC).isoformat()},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": code, "silent": False, "store_history": False,
                    "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
    }))
    out: list[str] = []
    try:
        while True:
            raw = await ws.read_message()
            if raw is None:
                raise AssertionError("the kernel's websocket closed")
            msg = json.loads(raw)
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                out.append(content["text"])
            elif kind == "error":
                trace = ANSI.sub("", "\n".join(content["traceback"]))
                raise AssertionError(f"the kernel raised:\n{trace}")
            elif kind == "status" and content["execution_state"] == "idle":
                return "".join(out)
    finally:
        ws.close()
