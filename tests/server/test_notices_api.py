"""/qustody/api/notices (the JupyterLab security notices' source) when the audit service
cannot be asked: a clear status and message, never a traceback and never the token. The
notices through a real hub, its audit service and Chromium are tested in
tests/hub/test_audit_alerts.py."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from ports import free_port
from tornado.httpclient import HTTPClientError


async def _error(jp_fetch) -> tuple[int, dict]:
    with pytest.raises(HTTPClientError) as e:
        await jp_fetch("qustody", "api", "notices")
    assert e.value.response is not None
    return e.value.code, json.loads(e.value.response.body)


async def test_outside_a_hub_lab_is_told_there_is_no_audit_service(jp_fetch, monkeypatch):
    monkeypatch.delenv("QUSTODY_AUDIT_URL", raising=False)
    code, body = await _error(jp_fetch)
    assert code == 503 and body["error"] == "NO_AUDIT"
    assert "no audit service" in body["message"]


async def test_an_unreachable_audit_service_is_a_502_without_the_token(jp_fetch, monkeypatch):
    monkeypatch.setenv("QUSTODY_AUDIT_URL", f"http://127.0.0.1:{free_port()}/services/audit/")
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "server-token")
    code, body = await _error(jp_fetch)
    assert code == 502 and body["error"] == "UNREACHABLE"
    assert "server-token" not in json.dumps(body)


class _NotTheService(BaseHTTPRequestHandler):
    """Something else at the configured URL (a stand-in: a misconfigured URL)."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(b"<html>not the audit service</html>")

    def log_message(self, *args: object) -> None:
        pass


async def test_a_wrong_url_says_which_setting_to_check(jp_fetch, monkeypatch):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NotTheService)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("QUSTODY_AUDIT_URL", f"http://127.0.0.1:{server.server_address[1]}/")
        monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "server-token")
        code, body = await _error(jp_fetch)
        assert code == 502 and body["error"] == "BAD_ANSWER"
        assert "QUSTODY_AUDIT_URL" in body["message"]
    finally:
        server.shutdown()
        server.server_close()
