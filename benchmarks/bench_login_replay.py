"""Cost of unauthenticated login traffic, through the real provider and a real hub.

1. Login page: N visits to /hub/oauth_login (the redirect to the provider); p50/p95 and
   how many discovery requests reached the provider (cached for ``discovery_ttl``).
2. Replayed callback: one captured callback (URL + state cookie) replayed R times;
   p50/p95 and the provider requests and ``login-refused`` records it caused. Baseline
   from the same run: K fresh callbacks (code exchange, ID-token check, policy, binding).

    python benchmarks/bench_login_replay.py [-n 200] [-r 500] [-k 20]

Needs Node 20 and `make idp-deps proxy-deps`.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import requests
from harness import pct

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "hub"))

from hubtest import launch_hub  # noqa: E402
from identity.idp import captured_callback, send_callback, start_idp  # noqa: E402


def timed(call: Callable[..., object], *args: object, **kwargs: object) -> float:
    t0 = time.perf_counter()
    call(*args, **kwargs)
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=200, help="login page visits")
    parser.add_argument("-r", type=int, default=500, help="replays of one callback")
    parser.add_argument("-k", type=int, default=20, help="fresh callbacks (baseline)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="qustody-bench-replay-"))
    password = secrets.token_urlsafe(12)
    idp = start_idp(
        {"rita": {"password": password, "groups": ["qustody-researchers"], "amr": ["pwd", "otp"]}},
        workdir=work / "idp",
    )
    env = {
        "QUSTODY_OIDC_ISSUER": idp.issuer,
        "QUSTODY_OIDC_CLIENT_ID": "bench",
        "QUSTODY_OIDC_CLIENT_SECRET": secrets.token_hex(24),
        "JUPYTERHUB_CRYPT_KEY": secrets.token_hex(32),
        "QUSTODY_SPAWNER": "local",
    }
    hub = launch_hub(
        work / "hub", extra="c.QustodyAuthenticator.sweep_interval = 0\n", env=env, timeout=180
    )
    try:
        idp.add_client("bench", env["QUSTODY_OIDC_CLIENT_SECRET"], f"{hub.url}hub/oauth_callback")
        page = f"{hub.url}hub/oauth_login"
        before = idp.served()
        visits = [
            timed(requests.get, page, allow_redirects=False, timeout=30) for _ in range(args.n)
        ]
        discovery = idp.served().get("/.well-known/openid-configuration", 0) - before.get(
            "/.well-known/openid-configuration", 0
        )

        fresh: list[float] = []
        url, cookie = "", ""
        for _ in range(args.k):
            url, cookie = captured_callback(requests.Session(), hub.url, "rita", password)
            fresh.append(timed(send_callback, url, cookie))
        before = idp.served()
        replays = [timed(send_callback, url, cookie) for _ in range(args.r)]
        after = idp.served()
        provider_requests = sum(after.values()) - sum(before.values())
        log = hub.dir / "audit" / "audit.jsonl"
        records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        refused = sum(1 for r in records if r["data"].get("reason") == "state-replayed")
    finally:
        hub.stop()
        idp.stop()

    ms = 1000
    print(
        f"login page over {args.n} visits: p50 {pct(visits, 50) * ms:.1f} ms, "
        f"p95 {pct(visits, 95) * ms:.1f} ms; discovery requests to the provider: {discovery}"
    )
    print(
        f"fresh callback (baseline, {args.k}): p50 {pct(fresh, 50) * ms:.1f} ms, "
        f"p95 {pct(fresh, 95) * ms:.1f} ms"
    )
    print(
        f"replayed callback ({args.r}): p50 {pct(replays, 50) * ms:.1f} ms, "
        f"p95 {pct(replays, 95) * ms:.1f} ms; provider requests {provider_requests}, "
        f"state-replayed records {refused}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
