"""Login and spawn latency of other users while one user server floods the hub.

One real hub (the reference configuration, OIDC through the real provider, local-process
servers) and one run:

1. ``mallory`` logs in and starts her server; its hub token and the URL of the hub's
   ``qustody`` service are read from the server process, as code in her kernel could.
2. Rounds alternate an idle phase and a flood phase (so drift of a shared machine falls
   on both alike). In each phase other users log in (full OIDC round trip, fresh
   client) and start and stop a server (POST → ready). During a flood phase a separate
   process sends 10,000 requests with mallory's server token to the qustody service, as
   her server would: audit events and secret refreshes, alternating, on 64 keep-alive
   connections, each sending its next request as soon as the last is answered. The
   measurements repeat until the flood is over (at most ``--max-sets`` times).
3. Prints p50/p95 of login and spawn, idle vs flood, the ratio, and what the flood got
   (status counts, requests a second).

    python benchmarks/bench_flood.py [--rounds 3] [--logins 10] [--spawns 2]

Needs Node 20 and ``make idp-deps proxy-deps``. Runs from a fresh checkout (puts tests/
on sys.path itself). Loopback only. Target: flood within 20 % of idle.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import secrets
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import requests
from harness import pct

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "hub"))

from hubtest import Hub, launch_hub  # noqa: E402
from identity.idp import login, start_idp  # noqa: E402

FLOOD = 10_000
EVENT = json.dumps(
    {"type": "save-refused", "data": {"path": "x.py", "detectors": ["github-token"], "findings": 1}}
)
EXTRA = """
c.JupyterHub.log_level = "INFO"
c.Spawner.http_timeout = 300
c.Spawner.start_timeout = 300
"""
USERS = ["mallory", *(f"user{i}" for i in range(8))]


def flood(
    api_url: str, token: str, total: int, connections: int, out: multiprocessing.Queue
) -> None:
    """Send ``total`` requests (audit event, secret refresh, alternating) to the service
    on ``connections`` keep-alive connections; put (status counts, seconds) on ``out``."""
    url = urlsplit(api_url)
    base = url.path.rstrip("/")
    counts: Counter[str] = Counter()
    lock = threading.Lock()
    left = [total]

    def worker() -> None:
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
        mine: Counter[str] = Counter()
        i = 0
        while True:
            with lock:
                if left[0] <= 0:
                    break
                left[0] -= 1
            path, body = (
                (f"{base}/api/audit/events", EVENT)
                if i % 2 == 0
                else (f"{base}/api/secrets/refresh", "{}")
            )
            i += 1
            try:
                conn.request(
                    "POST",
                    path,
                    body=body,
                    headers={"Authorization": f"token {token}", "Content-Type": "application/json"},
                )
                response = conn.getresponse()
                response.read()
                mine[str(response.status)] += 1
            except (OSError, http.client.HTTPException) as e:
                mine[type(e).__name__] += 1
                conn.close()
                conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
        conn.close()
        with lock:
            counts.update(mine)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put((dict(counts), time.perf_counter() - t0))


class Flood:
    """One flood of ``FLOOD`` requests in a child process (``done`` once it is over)."""

    def __init__(self, api_url: str, token: str, connections: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.queue: multiprocessing.Queue = ctx.Queue()
        self.proc = ctx.Process(target=flood, args=(api_url, token, FLOOD, connections, self.queue))
        self.result: tuple[dict[str, int], float] | None = None

    def __enter__(self) -> Flood:
        self.proc.start()
        time.sleep(1.0)  # the flood is under way before the measurements start
        return self

    def done(self) -> bool:
        return not self.proc.is_alive()

    def __exit__(self, *exc: object) -> None:
        self.result = self.queue.get(timeout=1800)
        self.proc.join(timeout=60)


def server_env(hub: Hub, user: str) -> dict[str, str]:
    """Environment of ``user``'s running local-process server (hub token and API URL)."""
    code, body = hub.api("GET", f"/users/{user}")
    assert code == 200, body
    pid = body["servers"][""]["state"]["pid"]
    items = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(i.decode().split("=", 1) for i in items if b"=" in i)


def spawn_time(hub: Hub, user: str, timeout: float = 600) -> float:
    t0 = time.perf_counter()
    code, body = hub.api("POST", f"/users/{user}/server", {}, timeout=timeout)
    if code not in (201, 202):
        raise RuntimeError(f"spawn of {user}: {code} {body}")
    while True:
        code, model = hub.api("GET", f"/users/{user}", timeout=60)
        if code == 200 and model["servers"].get("", {}).get("ready"):
            elapsed = time.perf_counter() - t0
            break
        if time.perf_counter() - t0 > timeout:
            raise RuntimeError(f"{user}'s server not ready after {timeout} s")
        time.sleep(0.1)
    hub.api("DELETE", f"/users/{user}/server", timeout=120)
    deadline = time.monotonic() + 120
    while hub.api("GET", f"/users/{user}")[1]["servers"]:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{user}'s server did not stop")
        time.sleep(0.2)
    return elapsed


def login_time(hub: Hub, user: str, password: str) -> float:
    with requests.Session() as session:
        t0 = time.perf_counter()
        response = login(session, hub.url, user, password)
        elapsed = time.perf_counter() - t0
        if response.status_code != 200 or not session.cookies.get("jupyterhub-hub-login"):
            raise RuntimeError(f"login of {user}: {response.status_code}")
    return elapsed


def measure(hub: Hub, password: str, logins: int, spawners: list[str]) -> tuple[list, list]:
    login_s = [login_time(hub, f"user{i % 8}", password) for i in range(logins)]
    spawn_s = [spawn_time(hub, user) for user in spawners]
    return login_s, spawn_s


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="idle+flood rounds")
    parser.add_argument("--logins", type=int, default=10, help="logins per phase")
    parser.add_argument("--spawns", type=int, default=2, help="spawns per phase")
    parser.add_argument("--connections", type=int, default=64, help="flood connections")
    parser.add_argument(
        "--max-sets", type=int, default=20, help="measurement sets per flood phase at most"
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="qustody-bench-flood-"))
    password = secrets.token_urlsafe(12)
    idp = start_idp(
        {
            u: {"password": password, "groups": ["qustody-researchers"], "amr": ["pwd", "otp"]}
            for u in USERS
        },
        workdir=work / "idp",
    )
    env = {
        "QUSTODY_OIDC_ISSUER": idp.issuer,
        "QUSTODY_OIDC_CLIENT_ID": "bench",
        "QUSTODY_OIDC_CLIENT_SECRET": secrets.token_hex(24),
        "JUPYTERHUB_CRYPT_KEY": secrets.token_hex(32),
        "QUSTODY_SPAWNER": "local",
        "QUSTODY_IMAGE_DIGEST": "",
    }
    # INFO, not the harness's DEBUG: the figures should not be the cost of debug logging
    hub = launch_hub(work / "hub", extra=EXTRA, env=env, timeout=300)
    idle: tuple[list[float], list[float]] = ([], [])
    flooded: tuple[list[float], list[float]] = ([], [])
    floods: list[tuple[dict[str, int], float]] = []
    try:
        idp.add_client("bench", env["QUSTODY_OIDC_CLIENT_SECRET"], f"{hub.url}hub/oauth_callback")
        for user in USERS:  # first logins create the users and their roles
            login_time(hub, user, password)
        hub.start_server("mallory", timeout=600)
        server = server_env(hub, "mallory")
        # what the server calls: the hub's qustody service, behind the hub's proxy
        token, api_url = server["JUPYTERHUB_API_TOKEN"], server["QUSTODY_API_URL"]
        spawners = [f"user{i}" for i in range(args.spawns)]
        spawn_time(hub, spawners[0])  # warm-up
        for r in range(args.rounds):
            for phase in ("idle", "flood"):
                logins: list[float] = []
                spawns: list[float] = []
                if phase == "idle":
                    logins, spawns = measure(hub, password, args.logins, spawners)
                    target = idle
                else:
                    with Flood(api_url, token, args.connections) as f:
                        # measure for as long as the flood lasts (at least one full set)
                        for _ in range(args.max_sets):
                            more = measure(hub, password, args.logins, spawners)
                            logins += more[0]
                            spawns += more[1]
                            if f.done():
                                break
                    assert f.result is not None
                    floods.append(f.result)
                    target = flooded
                target[0].extend(logins)
                target[1].extend(spawns)
                print(
                    f"round {r + 1} {phase:5}: login p50 {statistics.median(logins) * 1000:.0f} ms, "
                    f"spawn p50 {statistics.median(spawns):.2f} s ({len(logins)} logins, "
                    f"{len(spawns)} spawns)",
                    flush=True,
                )
    finally:
        hub.stop()
        idp.stop()

    total: Counter[str] = Counter()
    for counts, _ in floods:
        total.update(counts)
    sent = sum(total.values())
    seconds = sum(s for _, s in floods)
    print(
        f"\nflood: {len(floods)} x {FLOOD} requests with one server's token, "
        f"{args.connections} connections, {sent / seconds:.0f} req/s; statuses {dict(total)}"
    )
    print(f"{'':14} {'idle p50':>9} {'flood p50':>9} {'ratio':>6} {'idle p95':>9} {'flood p95':>9}")
    for name, i, f, scale in (
        ("login (ms)", idle[0], flooded[0], 1000),
        ("spawn (s)", idle[1], flooded[1], 1),
    ):
        ratio = statistics.median(f) / statistics.median(i)
        print(
            f"{name:14} {statistics.median(i) * scale:9.1f} {statistics.median(f) * scale:9.1f} "
            f"{ratio:6.2f} {pct(i, 95) * scale:9.1f} {pct(f, 95) * scale:9.1f}"
        )
    print(f"({len(idle[0])} logins and {len(idle[1])} spawns per condition; target ratio <= 1.20)")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
