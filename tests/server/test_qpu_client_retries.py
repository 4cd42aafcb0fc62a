"""Which gateway requests the kernel's client asks again, and which never.

A submission is sent again only with its Idempotency-Key (the same one each time), which
makes the gateway answer a repeat with the job the first attempt made: the end-to-end case,
against a real gateway, is tests/qpu/test_idempotency.py.

The real case (a gateway worker killed under a long-polling ``job.result()``) is
tests/hub/test_service_crash.py. The cases here need answers a real proxy gives only by
chance: this module's **stand-in** is a scripted HTTP server that answers each request
with the next reply of its script, and counts the requests.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from server_ext import qpu
from server_ext.qpu import GatewayClient, GatewayError

PROXY_503 = (503, "text/html", b"<!DOCTYPE HTML><html><title>503</title></html>")
GATEWAY_BUSY = (503, "application/json",
                json.dumps({"error": "PARSE_BUSY", "message": "retry shortly"}).encode())
OK = (200, "application/json", json.dumps({"state": "DONE"}).encode())


class ScriptedGateway:
    """Stand-in: replies from ``script`` in order (the last one repeats)."""

    def __init__(self) -> None:
        self.script: list[tuple[int, str, bytes]] = [OK]
        self.requests: list[str] = []
        self.keys: list[str | None] = []  # the Idempotency-Key of each request
        #: seconds before answering, per request in order (then none)
        self.delays: list[float] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                outer.requests.append(self.command)
                outer.keys.append(self.headers.get("Idempotency-Key"))
                if outer.delays:
                    time.sleep(outer.delays.pop(0))
                status, kind, body = outer.script.pop(0) if len(outer.script) > 1 \
                    else outer.script[0]
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _reply

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/services/qpu/"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def gateway(monkeypatch: pytest.MonkeyPatch) -> Iterator[ScriptedGateway]:
    monkeypatch.setattr(qpu, "READ_RETRY_DELAYS", (0.01, 0.01, 0.01))
    monkeypatch.setattr(qpu, "SUBMIT_RETRY_DELAYS", (0.01, 0.01))
    stand_in = ScriptedGateway()
    yield stand_in
    stand_in.close()


def test_a_read_the_proxy_could_not_deliver_is_asked_again(gateway: ScriptedGateway) -> None:
    gateway.script = [PROXY_503, PROXY_503, OK]
    assert GatewayClient(gateway.url, "t").call("GET", "api/jobs/x") == {"state": "DONE"}
    assert gateway.requests == ["GET"] * 3


def test_a_read_gives_up_after_its_retries_with_the_status(gateway: ScriptedGateway) -> None:
    gateway.script = [PROXY_503]
    with pytest.raises(GatewayError) as e:
        GatewayClient(gateway.url, "t").call("GET", "api/jobs/x")
    assert e.value.status == 503
    assert gateway.requests == ["GET"] * 4


def test_a_submission_is_never_sent_twice(gateway: ScriptedGateway) -> None:
    gateway.script = [PROXY_503, OK]
    with pytest.raises(GatewayError) as e:
        GatewayClient(gateway.url, "t").call("POST", "api/jobs", json_body={})
    assert e.value.status == 503
    assert gateway.requests == ["POST"]


def test_a_keyed_submission_the_proxy_could_not_deliver_is_sent_again_with_its_key(
    gateway: ScriptedGateway,
) -> None:
    gateway.script = [PROXY_503, PROXY_503, OK]
    client = GatewayClient(gateway.url, "t")
    assert client.call("POST", "api/jobs", json_body={}, idempotency_key="k-1") == {
        "state": "DONE"}
    assert gateway.requests == ["POST"] * 3
    assert gateway.keys == ["k-1"] * 3


def test_a_keyed_submission_gives_up_after_three_attempts(gateway: ScriptedGateway) -> None:
    gateway.script = [PROXY_503]
    with pytest.raises(GatewayError) as e:
        GatewayClient(gateway.url, "t").call("POST", "api/jobs", json_body={},
                                             idempotency_key="k-2")
    assert e.value.status == 503
    assert gateway.requests == ["POST"] * 3


def test_a_keyed_submission_whose_answer_timed_out_is_sent_again(
    gateway: ScriptedGateway,
) -> None:
    gateway.delays = [1.0]  # the first answer comes after the client gave up on it
    client = GatewayClient(gateway.url, "t", timeout=0.3)
    assert client.call("POST", "api/jobs", json_body={}, idempotency_key="k-3") == {
        "state": "DONE"}
    assert gateway.keys == ["k-3", "k-3"]


def test_a_keyed_submission_is_not_repeated_after_the_gateways_own_refusal(
    gateway: ScriptedGateway,
) -> None:
    gateway.script = [GATEWAY_BUSY, OK]
    with pytest.raises(GatewayError) as e:
        GatewayClient(gateway.url, "t").call("POST", "api/jobs", json_body={},
                                             idempotency_key="k-4")
    assert (e.value.status, e.value.code) == (503, "PARSE_BUSY")
    assert gateway.requests == ["POST"]


def test_the_gateways_own_refusal_is_not_repeated(gateway: ScriptedGateway) -> None:
    gateway.script = [GATEWAY_BUSY, OK]
    with pytest.raises(GatewayError) as e:
        GatewayClient(gateway.url, "t").call("GET", "api/jobs/x")
    assert (e.value.status, e.value.code) == (503, "PARSE_BUSY")
    assert gateway.requests == ["GET"]


def test_a_read_from_a_gateway_that_is_down_is_asked_again_then_explained(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ports import free_port

    monkeypatch.setattr(qpu, "READ_RETRY_DELAYS", (0.01, 0.01, 0.01))
    client = GatewayClient(f"http://127.0.0.1:{free_port()}/", "t")
    attempts = []
    send = client.session.request

    def counted(*args: object, **kwargs: object) -> object:
        attempts.append(args[0])
        return send(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(client.session, "request", counted)
    with pytest.raises(GatewayError) as e:
        client.call("GET", "api/jobs/x")
    assert e.value.code == "UNREACHABLE" and "cannot reach the QPU gateway" in str(e.value)
    assert attempts == ["GET"] * 4
    with pytest.raises(GatewayError):
        client.call("POST", "api/jobs", json_body={})
    assert attempts == ["GET"] * 4 + ["POST"]
    monkeypatch.setattr(qpu, "SUBMIT_RETRY_DELAYS", (0.01, 0.01))
    with pytest.raises(GatewayError) as e:
        client.call("POST", "api/jobs", json_body={}, idempotency_key="k-5")
    assert attempts == ["GET"] * 4 + ["POST"] * 4
    assert "may have been admitted" in e.value.message and "k-5" in e.value.message
