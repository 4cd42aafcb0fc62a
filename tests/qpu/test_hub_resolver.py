"""The gateway asks the hub who a token is (HubAuth) and fails closed when it cannot.

A real hub answers 200 or 403 (tests/qpu/test_through_hub.py); the other answers here (a
proxy's 401, a hub error, a hub that hangs or is gone) come from a hand-written stand-in
HTTP server on 127.0.0.1, since a real hub cannot be made to give them.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from hub_ext.qpu.auth import HubResolver, HubUnavailable

MODEL = {"name": "alice", "kind": "user", "groups": ["chem"],
         "scopes": ["custom:qpu:submit!user=alice"]}


class _StandInHub(BaseHTTPRequestHandler):
    answer = (200, MODEL)
    delay = 0.0
    calls = 0

    def do_GET(self) -> None:
        type(self).calls += 1
        time.sleep(type(self).delay)
        status, body = type(self).answer
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def hub():
    _StandInHub.answer, _StandInHub.delay, _StandInHub.calls = (200, MODEL), 0.0, 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StandInHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hub/api"
    server.shutdown()
    server.server_close()


async def test_a_known_token_is_its_owner_with_groups_and_scopes(hub):
    identity = await HubResolver(hub, cache_seconds=0).resolve("t1")
    assert identity is not None
    assert (identity.name, identity.groups) == ("alice", ("chem",))
    assert identity.has("custom:qpu:submit")


@pytest.mark.parametrize("status", [401, 403, 404])
async def test_a_token_the_hub_refuses_is_nobody_not_an_outage(hub, status):
    _StandInHub.answer = (status, {"status": status, "message": "no"})
    assert await HubResolver(hub, cache_seconds=0).resolve("t2") is None


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_a_hub_error_fails_closed(hub, status):
    _StandInHub.answer = (status, {"status": status})
    with pytest.raises(HubUnavailable):
        await HubResolver(hub, cache_seconds=0).resolve("t3")


async def test_a_hub_that_hangs_or_is_gone_fails_closed_in_time(hub):
    _StandInHub.delay = 3.0
    started = time.monotonic()
    with pytest.raises(HubUnavailable, match="no answer"):
        await HubResolver(hub, cache_seconds=0, timeout=0.5).resolve("t4")
    assert time.monotonic() - started < 2.5
    with pytest.raises(HubUnavailable):
        await HubResolver("http://127.0.0.1:9/hub/api", cache_seconds=0).resolve("t5")


async def test_answers_are_cached_for_the_configured_seconds_only(hub):
    resolver = HubResolver(hub, cache_seconds=1)
    await resolver.resolve("t6")
    await resolver.resolve("t6")
    assert _StandInHub.calls == 1
    time.sleep(1.2)
    await resolver.resolve("t6")
    assert _StandInHub.calls == 2
    uncached = HubResolver(hub, cache_seconds=0)
    await uncached.resolve("t7")
    await uncached.resolve("t7")
    assert _StandInHub.calls == 4
