"""A user server flooding the audit endpoint or secret delivery is slowed down, not the hub.

Against a real hub with local-process servers and its ``qustody`` service (which serves
both): per-token and per-address limits answer 429 with Retry-After and record nothing;
the limit is shared by both endpoints; spoofed address headers do not buy a new bucket;
writes wait in a bounded queue off the event loop (the service keeps answering while the
log is locked, and a full queue refuses with 503).
"""

from __future__ import annotations

import fcntl
import http.client
import json
import secrets
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from audit_hub import LOCAL_EXTRA, local_env, records, server_token
from hubtest import Hub, failed, launch_hub

EVENT = json.dumps(
    {"type": "save-refused", "data": {"path": "a.py", "detectors": ["github-token"], "findings": 1}}
)
pytestmark = pytest.mark.timeout(900)  # servers start slowly on a loaded machine
BURST = 5
IP_BURST = 40
LIMITS = f"""
c.Spawner.http_timeout = 300  # a loaded machine starts servers slowly
c.Spawner.start_timeout = 300
c.RequestLimits.per_token_burst = {BURST}
c.RequestLimits.per_token_rate = 0.01
c.RequestLimits.per_ip_burst = {IP_BURST}
c.RequestLimits.per_ip_rate = 0.01
c.RequestLimits.queue_size = 1
# the requests below come from 127.0.0.2 and .3 through the proxy on 127.0.0.1
c.RequestLimits.trusted_proxy_ips = ["127.0.0.1"]
from hub_ext.ratelimit import setup_limits
setup_limits(c)
# the qustody service's config again, with these limits
import os
from hub_ext.server_api.hub import server_api
from hub_ext.wiring import apply
apply(c, server_api(c, os.environ["QUSTODY_STATE_DIR"], profiles=list(c.SpawnPolicy.profiles)))
for service in c.JupyterHub.services:
    service["timeout"] = 300  # a loaded machine starts services slowly
"""


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest):
    base = tmp_path_factory.mktemp("rate-limits")
    started: list[Hub] = []
    hub = launch_hub(
        base / "hub",
        extra=LOCAL_EXTRA.format(home=base / "home") + LIMITS,
        env=local_env(),
        started=started,
        timeout=180,
    )
    try:
        for user in ("alice", "bob"):
            hub.start_server(user, timeout=300)  # a loaded machine compiles the scanner slowly
    except BaseException:
        hub.stop()
        print(hub.log()[-20000:])
        raise
    yield hub
    hub.stop()
    if failed(request):
        print(hub.log()[-20000:])


def call(
    hub: Hub, path: str, token: str | None, source: str, body: str = EVENT, **headers: str
) -> tuple[int, dict[str, str], dict]:
    """POST ``body`` to the qustody service through the proxy, from the loopback address
    ``source``."""
    url = urlsplit(hub.url)
    conn = http.client.HTTPConnection(
        url.hostname, url.port, timeout=60, source_address=(source, 0)
    )
    if token is not None:
        headers["Authorization"] = f"token {token}"
    headers["Content-Type"] = "application/json"
    try:
        conn.request("POST", f"/services/qustody/api/{path}", body=body, headers=headers)
        response = conn.getresponse()
        raw = response.read()
        return (
            response.status,
            {k.lower(): v for k, v in response.getheaders()},
            json.loads(raw) if raw else {},
        )
    finally:
        conn.close()


def test_one_tokens_flood_gets_429_and_records_nothing_more(hub):
    alice, bob = server_token(hub, "alice"), server_token(hub, "bob")
    before = len(records(hub, "save-refused"))
    # the server's start-up claim was charged to its address; the token's bucket is full
    codes = [call(hub, "audit/events", alice, "127.0.0.2")[0] for _ in range(BURST)]
    assert codes == [201] * BURST
    status, headers, body = call(hub, "audit/events", alice, "127.0.0.2")
    assert status == 429, body
    assert int(headers["retry-after"]) >= 1
    assert "Too many requests from this token" in body["message"]
    assert "Retry after" in body["message"]
    # one limiter for both endpoints: alice's refresh is refused as well, before any lookup
    status, headers, body = call(hub, "secrets/refresh", alice, "127.0.0.2", body="{}")
    assert status == 429 and "retry-after" in headers, body
    assert len(records(hub, "save-refused")) == before + BURST
    # another server's token is not affected
    assert call(hub, "audit/events", bob, "127.0.0.2")[0] == 201
    assert alice not in hub.log()


def test_made_up_tokens_are_limited_per_address_and_headers_do_not_change_it(hub):
    source = "127.0.0.4"
    codes = [
        call(hub, "audit/events", secrets.token_hex(16), source)[0] for _ in range(IP_BURST + 1)
    ]
    assert set(codes[:IP_BURST]) <= {401, 403} and codes[IP_BURST] == 429, codes
    # a new address in the headers does not give a new bucket: the proxy's entry counts
    for spoof in ({"X-Real-Ip": "10.1.2.3"}, {"X-Forwarded-For": "10.1.2.4"}):
        status, _, body = call(hub, "secrets/refresh", secrets.token_hex(16), source, **spoof)
        assert status == 429 and "address 127.0.0.4" in body["message"], body
    # other addresses (and their valid tokens) still get through
    assert call(hub, "audit/events", server_token(hub, "bob"), "127.0.0.3")[0] == 201


def test_writes_wait_off_the_event_loop_and_a_full_queue_refuses(hub):
    """Hold the audit log's writer lock: the write waits in its thread while the service
    keeps answering; the queue (size 1) is then full, so the next event is refused with 503."""
    bob = server_token(hub, "bob")
    before = len(records(hub, "save-refused"))
    head = open(hub.dir / "audit" / "audit.head", "rb")  # noqa: SIM115
    fcntl.flock(head, fcntl.LOCK_EX)
    result: list[int] = []
    try:
        waiting = threading.Thread(
            target=lambda: result.append(call(hub, "audit/events", bob, "127.0.0.5")[0])
        )
        waiting.start()

        def writer_waits_for_the_lock() -> bool:
            tasks = Path(f"/proc/{service_pid(hub)}/task")
            return any(
                (t / "wchan").read_text() == "locks_lock_inode_wait" for t in tasks.iterdir()
            )

        hub.wait_for(writer_waits_for_the_lock, timeout=60, what="the write thread in flock")
        # the event loop is free while the write waits
        health = requests.get(hub.url + "services/qustody/api/health", timeout=30)
        assert health.status_code == 200, health.text
        status, headers, body = call(hub, "audit/events", bob, "127.0.0.5")
        assert status == 503 and headers["retry-after"] == "1", body
        assert "nothing was recorded" in body["message"]
        assert not result, "the held write finished while the log was locked"
    finally:
        fcntl.flock(head, fcntl.LOCK_UN)
        head.close()
    waiting.join(timeout=60)
    assert result == [201]
    assert len(records(hub, "save-refused")) == before + 1


def service_pid(hub: Hub) -> int:
    """The pid of this hub's qustody service (hub_ext.server_api)."""
    config = str(hub.dir / "server_api" / "config.py")
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"--config={config}".encode() in cmdline:
                return int(proc.name)
    raise AssertionError("the qustody service is not running")


def test_bad_limits_stop_the_hub_with_a_message(tmp_path):
    from hubtest import HubError

    for setting, message in (
        ("c.RequestLimits.per_token_rate = 0", "per_token_rate must be a positive number"),
        ("c.RequestLimits.queue_size = 0", "queue_size must be at least 1"),
        ("c.RequestLimits.login_rate = -2", "login_rate must be a positive number"),
        ("c.RequestLimits.login_burst = 0", "login_burst must be at least 1"),
        ("c.RequestLimits.trusted_proxy_ips = ['proxy']", "trusted_proxy_ips[0] is not an IP"),
    ):
        with pytest.raises(HubError) as e:
            launch_hub(
                tmp_path / setting.split()[0].split(".")[-1],
                extra=setting + "\nfrom hub_ext.ratelimit import setup_limits\nsetup_limits(c)",
                env=local_env(),
            )
        assert message in str(e.value)
