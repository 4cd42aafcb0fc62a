"""Cost of secret delivery at spawn, and of known-value redaction in the save guard.

    .venv/bin/python benchmarks/bench_secrets.py [--runs 30] [--size-mb 2]

1. Delivery, for N = 1, 10, 100 secrets, each run end to end in this process with the
   real components: the hub issues a claim ticket, redeems it (burns it, reads and
   decrypts the N secrets from the embedded SQLite store, applies the class policy,
   encodes the JSON answer), and the server applies the answer (decodes it, writes the
   files on a tmpfs when /dev/shm exists, and rebuilds the guard's scanner with the N
   values and their encodings). The loopback HTTP round trip is not included.
2. Guard: the same generated notebook (default 2 MB) checked by a SaveGuard with no
   known values and by one with 100 delivered values, interleaved; ratio of medians.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

from harness import pct
from traitlets.config import Config

sys.path.insert(0, str(Path(__file__).resolve().parent))
from notebooks import generate

from hub_ext.secrets.delivery import SecretDelivery
from hub_ext.secrets.tickets import TicketSigner
from server_ext.guard import SaveGuard
from server_ext.secret_store import SecretClient


def delivery(n: int, runs: int, workdir: Path) -> dict[str, list[float]]:
    state = workdir / f"state{n}"
    state.mkdir()
    c = Config()
    c.SecretBroker.db_path = str(state / "secrets.sqlite")
    c.SecretBroker.master_key_file = str(state / "secrets.key")
    c.SecretBroker.create_master_key = True
    c.SecretClassPolicy.profile_classes = {"researcher": ["dev"]}
    c.SecretClassPolicy.role_classes = {"researcher": ["dev"]}
    key = secrets.token_bytes(32)
    hub = SecretDelivery(c, ["researcher"], ticket_key=key)
    signer = TicketSigner(key)
    store = hub.broker
    for i in range(n):
        store.put("user:bench", f"SECRET_{i:03d}", "dev", secrets.token_urlsafe(30).encode())  # type: ignore[attr-defined]
    shm = Path("/dev/shm")
    files = (shm if shm.is_dir() else workdir) / f"qustody-bench-{os.getpid()}-{n}"
    times: dict[str, list[float]] = {"hub": [], "server": [], "total": []}
    for _ in range(runs):
        guard = SaveGuard()
        client = SecretClient(config=Config({"SecretClient": {"files_dir": str(files)}}))
        client.on_values.append(guard.set_known_values)
        token = secrets.token_hex(16)
        t0 = time.perf_counter()
        text, _ = signer.issue("bench", "", token, "researcher", ("researcher",))
        ticket, found = hub.redeem(text, "bench", "", token, None, ("researcher",))
        answer = json.dumps({"broker": "embedded", "secrets": [s.delivered() for s in found]})
        t1 = time.perf_counter()
        client._apply(json.loads(answer))
        t2 = time.perf_counter()
        assert len(found) == n and ticket.profile == "researcher"
        times["hub"].append(t1 - t0)
        times["server"].append(t2 - t1)
        times["total"].append(t2 - t0)
    for f in files.iterdir():
        f.unlink()
    files.rmdir()
    return times


def guard_overhead(size_mb: float, runs: int) -> tuple[list[float], list[float], int]:
    nb = generate(int(size_mb * 1024 * 1024))
    size = len(json.dumps(nb))
    plain = SaveGuard()
    known = SaveGuard()
    known.set_known_values([secrets.token_urlsafe(30) for _ in range(100)])
    a: list[float] = []
    b: list[float] = []
    for _ in range(runs):
        for guard, out in ((plain, a), (known, b)):
            model = {"type": "notebook", "content": copy.deepcopy(nb)}
            t = time.perf_counter()
            guard.check(model, "bench.ipynb")
            out.append(time.perf_counter() - t)
    return a, b, size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--size-mb", type=float, default=2.0)
    args = ap.parse_args()
    ms = 1000.0
    print(f"secret delivery per spawn ({args.runs} runs each; ms)")
    print(
        f"{'N':>4} {'hub p50':>9} {'hub p95':>9} {'server p50':>11} {'server p95':>11} "
        f"{'total p50':>10} {'total p95':>10}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for n in (1, 10, 100):
            t = delivery(n, args.runs, Path(tmp))
            print(
                f"{n:>4} {statistics.median(t['hub']) * ms:>9.2f} {pct(t['hub'], 95) * ms:>9.2f} "
                f"{statistics.median(t['server']) * ms:>11.2f} {pct(t['server'], 95) * ms:>11.2f} "
                f"{statistics.median(t['total']) * ms:>10.2f} {pct(t['total'], 95) * ms:>10.2f}"
            )
    plain, known, size = guard_overhead(args.size_mb, args.runs)
    p, k = statistics.median(plain), statistics.median(known)
    print(f"\nguard check of a {size / 1e6:.2f} MB notebook ({args.runs} runs each, interleaved)")
    print(f"  no known values     p50 {p * ms:8.2f} ms   p95 {pct(plain, 95) * ms:8.2f} ms")
    print(f"  100 known values    p50 {k * ms:8.2f} ms   p95 {pct(known, 95) * ms:8.2f} ms")
    print(f"  ratio (p50)         {k / p:.2f}x")


if __name__ == "__main__":
    main()
