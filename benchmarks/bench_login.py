"""OIDC login round trip and refresh overhead, through the real provider and a real hub.

1. Login: N browser-less logins (fresh client each): GET /hub/oauth_login → provider
   login form → POST → code exchange, ID-token verification, policy → hub cookie.
   p50/p95 of the whole round trip.
2. Refresh overhead: one hub with ``auth_refresh_age = 1``; M pairs of cookie requests to
   /hub/api/user, the first after the refresh age passed (refresh-token grant, ID-token
   check, auth_state save), the second right after (no refresh). Same hub, same run.

    python benchmarks/bench_login.py [-n 50] [-m 30]

Needs Node 20 and `make idp-deps proxy-deps`.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import tempfile
import time
from pathlib import Path

import harness  # noqa: F401 - puts tests/ and its harness folders on sys.path
import requests
from harness import pct
from hubtest import launch_hub
from identity.idp import login, start_idp


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=50, help="logins")
    parser.add_argument("-m", type=int, default=30, help="request pairs for refresh overhead")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="qustody-bench-login-"))
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
    extra = """
c.Authenticator.auth_refresh_age = 1
c.QustodyAuthenticator.sweep_interval = 0
"""
    hub = launch_hub(work / "hub", extra=extra, env=env)
    # launch_hub sets log_level DEBUG: the figures include the hub's debug logging
    try:
        idp.add_client("bench", env["QUSTODY_OIDC_CLIENT_SECRET"], f"{hub.url}hub/oauth_callback")
        login(requests.Session(), hub.url, "rita", password)  # warm-up
        logins: list[float] = []
        for _ in range(args.n):
            with requests.Session() as session:
                t0 = time.perf_counter()
                response = login(session, hub.url, "rita", password)
                logins.append(time.perf_counter() - t0)
                assert response.status_code == 200 and session.cookies.get("jupyterhub-hub-login")

        session = requests.Session()
        login(session, hub.url, "rita", password)
        refreshed: list[float] = []
        plain: list[float] = []
        for _ in range(args.m):
            time.sleep(1.2)
            for bucket in (refreshed, plain):
                t0 = time.perf_counter()
                assert session.get(f"{hub.url}hub/api/user", timeout=30).status_code == 200
                bucket.append(time.perf_counter() - t0)
        refreshes = hub.log().count("Refreshing auth for rita")
    finally:
        hub.stop()
        idp.stop()

    ms = 1000
    print(
        f"login round trip over {args.n} logins: p50 {pct(logins, 50) * ms:.1f} ms, "
        f"p95 {pct(logins, 95) * ms:.1f} ms, max {max(logins) * ms:.1f} ms"
    )
    r50, p50 = statistics.median(refreshed), statistics.median(plain)
    print(
        f"request with refresh  ({args.m}): p50 {r50 * ms:.1f} ms, p95 {pct(refreshed, 95) * ms:.1f} ms"
    )
    print(
        f"request without refresh ({args.m}): p50 {p50 * ms:.1f} ms, p95 {pct(plain, 95) * ms:.1f} ms"
    )
    print(
        f"refresh overhead per refreshed request: +{(r50 - p50) * ms:.1f} ms (x{r50 / p50:.2f}); "
        f"hub logged {refreshes} refreshes"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
