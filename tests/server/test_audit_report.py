"""The server reports refused saves and redactions to the hub's audit endpoint, in the background."""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from ports import free_port
from qtest import AWS_KEY_ID, GITHUB_TOKEN, code_cell, notebook, stream

from server_ext import audit_report

TOKEN = "server-own-token-0123456789abcdef"


class Endpoint:
    """A real HTTP server on 127.0.0.1 standing in for the hub's audit endpoint."""

    def __init__(self, status: int = 201, delay: float = 0.0) -> None:
        self.requests: list[dict[str, Any]] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                time.sleep(delay)
                endpoint.requests.append(
                    {"path": self.path, "auth": self.headers["Authorization"], "body": body}
                )
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"message": "refused by the test"}')

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/services/qustody/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self, count: int, timeout: float = 20) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.requests) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return [json.loads(r["body"]) for r in self.requests]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def under_hub(monkeypatch: pytest.MonkeyPatch):
    """Factory: point the server at an endpoint (as the hub's spawner would)."""

    def at(url: str) -> None:
        monkeypatch.setenv("QUSTODY_API_URL", url)
        monkeypatch.setenv("JUPYTERHUB_API_TOKEN", TOKEN)
        audit_report.reset()

    yield at
    audit_report.reset()


async def test_refused_save_and_redacted_outputs_are_reported(api, under_hub):
    endpoint = Endpoint()
    under_hub(endpoint.url)
    code, refusal = await api.save_text("keys.py", f'token = "{GITHUB_TOKEN}"\n')
    assert code == 422, refusal
    nb = notebook(code_cell("print(k)", outputs=[stream(f"{AWS_KEY_ID}\n{GITHUB_TOKEN}\n")]))
    code, body = await api.save_notebook("run.ipynb", nb)
    assert code in (200, 201), body
    events = endpoint.events(2)
    endpoint.close()
    # the user is shown the reference the audit record carries: random, 12 hex digits
    assert re.fullmatch(r"[0-9a-f]{12}", refusal["audit_ref"]), refusal
    assert events == [
        {
            "type": "save-refused",
            "data": {
                "path": "keys.py",
                "detectors": ["github-token"],
                "findings": 1,
                "ref": refusal["audit_ref"],
            },
        },
        {
            "type": "outputs-redacted",
            "data": {
                "path": "run.ipynb",
                "detectors": ["aws-access-key-id", "github-token"],
                "redacted": 2,
                "mode": "block",
            },
        },
    ]
    for r in endpoint.requests:
        assert r["path"] == "/services/qustody/api/audit/events"
        assert r["auth"] == f"token {TOKEN}"
        assert GITHUB_TOKEN.encode() not in r["body"] and AWS_KEY_ID.encode() not in r["body"]


async def test_clean_saves_report_nothing_and_nothing_is_sent_outside_a_hub(
    api, under_hub, monkeypatch
):
    endpoint = Endpoint()
    under_hub(endpoint.url)
    code, _ = await api.save_text("clean.py", "x = 1\n")
    assert code in (200, 201)
    monkeypatch.delenv("QUSTODY_API_URL")
    audit_report.reset()
    code, refusal = await api.save_text("keys.py", f'token = "{GITHUB_TOKEN}"\n')
    assert code == 422
    assert "audit_ref" not in refusal  # no record: no reference that leads nowhere
    time.sleep(0.5)
    endpoint.close()
    assert endpoint.requests == []
    assert audit_report.reporter(None) is None


async def test_a_slow_hub_does_not_slow_the_save(api, under_hub):
    endpoint = Endpoint(delay=3.0)
    under_hub(endpoint.url)
    started = time.monotonic()
    code, _ = await api.save_text("keys.py", f'token = "{GITHUB_TOKEN}"\n')
    took = time.monotonic() - started
    assert code == 422
    # the save answered while the endpoint was still holding the event
    assert endpoint.requests == [] and took < 3.0
    assert len(endpoint.events(1)) == 1
    endpoint.close()


async def test_unreachable_or_refusing_hub_drops_and_logs(api, under_hub, server_logs):
    port = free_port()  # a port nobody listens on
    under_hub(f"http://127.0.0.1:{port}/services/qustody/")
    code, refusal = await api.save_text("keys.py", f'token = "{GITHUB_TOKEN}"\n')
    assert code == 422
    sink = audit_report.reporter(None)
    assert sink is not None
    deadline = time.monotonic() + 20
    while sink.dropped < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sink.dropped == 1
    # the reference the user was shown is in the log, so the lost record can be traced
    ref = refusal["audit_ref"]
    assert (
        f"save-refused for keys.py (reference {ref}, shown to the user) not sent to the hub "
        "(URLError)" in server_logs.text
    )

    endpoint = Endpoint(status=403)
    under_hub(endpoint.url)
    code, _ = await api.save_text("keys2.py", f'token = "{GITHUB_TOKEN}"\n')
    assert code == 422
    endpoint.events(1)
    sink = audit_report.reporter(None)
    assert sink is not None
    deadline = time.monotonic() + 20
    while sink.dropped < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    endpoint.close()
    assert "the hub answered 403: refused by the test" in server_logs.text
    assert GITHUB_TOKEN not in server_logs.text


def test_a_full_queue_drops_without_blocking():
    import logging

    class Log(logging.Logger):
        def __init__(self) -> None:
            super().__init__("test")
            self.lines: list[str] = []

        def warning(self, msg: object, *args: object, **kwargs: Any) -> None:
            self.lines.append(str(msg) % args)

    log = Log()
    endpoint = Endpoint(delay=1.0)
    sink = audit_report.AuditReporter(endpoint.url, TOKEN, log)
    started = time.monotonic()
    queued = [
        sink.report("save-refused", {"path": f"f{i}", "detectors": [], "findings": 0})
        for i in range(audit_report.QUEUE_SIZE + 10)
    ]
    assert time.monotonic() - started < 1.0
    assert sink.dropped >= 9
    assert queued.count(False) == sink.dropped  # the caller knows: no reference is shown
    assert any("the report queue is full" in line for line in log.lines)
    endpoint.close()
