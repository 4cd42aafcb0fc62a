"""/qustody/api/qpu (the JupyterLab QPU panel's source) when the gateway cannot be asked:
a clear status and message, never a traceback. The panel against a real hub and gateway
is tested in tests/qpu/test_through_hub.py."""

from __future__ import annotations

import json

import pytest
from ports import free_port
from tornado.httpclient import HTTPClientError


async def _error(jp_fetch, *path: str, method: str = "GET") -> tuple[int, dict]:
    with pytest.raises(HTTPClientError) as e:
        await jp_fetch(*path, method=method, **({"body": b""} if method == "POST" else {}))
    assert e.value.response is not None
    return e.value.code, json.loads(e.value.response.body)


async def test_outside_a_hub_the_panel_is_told_there_is_no_gateway(jp_fetch, monkeypatch):
    monkeypatch.delenv("QUSTODY_QPU_URL", raising=False)
    code, body = await _error(jp_fetch, "qustody", "api", "qpu")
    assert code == 503 and body["error"] == "NO_GATEWAY"
    assert "no QPU gateway" in body["message"]


async def test_an_unreachable_gateway_is_a_502_that_says_so(jp_fetch, monkeypatch):
    monkeypatch.setenv("QUSTODY_QPU_URL", f"http://127.0.0.1:{free_port()}/services/qpu/")
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "server-token")
    code, body = await _error(jp_fetch, "qustody", "api", "qpu")
    assert code == 502 and body["error"] == "UNREACHABLE"
    assert "server-token" not in json.dumps(body)
    code, body = await _error(jp_fetch, "qustody", "api", "qpu", "jobs", "a" * 32, "cancel",
                              method="POST")
    assert code == 502 and body["error"] == "UNREACHABLE"


async def test_only_a_job_id_can_be_cancelled(jp_fetch):
    with pytest.raises(HTTPClientError) as e:
        await jp_fetch("qustody", "api", "qpu", "jobs", "..%2F..%2Fadmin", "cancel",
                       method="POST", body=b"")
    assert e.value.code == 404
