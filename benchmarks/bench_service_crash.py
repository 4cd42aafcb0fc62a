"""What the crash of one process of a hub-managed service costs its users (issue 17).

A real hub (the repository's jupyterhub_config.py, local-process servers) serves the QPU
gateway and the auditor page. Client threads keep submitting jobs to the gateway, or
reading the auditor page, through the hub's proxy; one process is killed with SIGKILL in
the middle of the stream. Printed per case: requests refused and the span of time during
which they were (from the first refused request's start to the last one's end), and for
the gateway the jobs accepted and how many of them ended DONE (none may be lost).

Cases, in one run:

- ``gateway, 1 process`` (the baseline: ``QpuGateway.workers = 1``, as before this
  change): the gateway process is killed; the hub restarts the service when its poll of
  services (every 30 s) notices.
- ``gateway, 2 workers`` (the default): one worker is killed.
- ``audit page, worker`` (the default): the page's worker is killed.
- ``audit page, supervisor``: the supervisor is killed; its worker stops with it and the
  hub restarts the service as for the baseline.

Usage: ``.venv/bin/python benchmarks/bench_service_crash.py [--seconds 8] [--threads 3]``
(about 3 minutes).
"""

from __future__ import annotations

import argparse
import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import harness  # noqa: F401 - puts tests/ and its harness folders on sys.path
import requests
from audit_hub import LOCAL_EXTRA, local_env
from hubtest import Hub, free_port, launch_hub
from service_procs import bell_qpy, children, service_process

from hub_ext.qpu.hub import DEMO_POLICY

#: the demo policy with room for a stream of jobs: no rate limit or quota in the way
POLICY_EXTRA_LIMITS = """
[quotas.user.simulator]
day = { jobs = 1000000, shots = 1000000000 }
[rate_limits.simulator]
rate = 100000.0
burst = 100000
max_delay = 60
"""


def bench_policy() -> str:
    text = DEMO_POLICY.read_text()
    cut = text.index("[quotas.user.simulator]")
    return text[:cut] + POLICY_EXTRA_LIMITS


@dataclass
class Stream:
    """Requests made by client threads until ``stop``: (start, end, status, job id)."""

    done: list[tuple[float, float, int, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self, threads: int, request: Callable[[], tuple[int, str]]) -> list[threading.Thread]:
        def loop() -> None:
            while not self.stop.is_set():
                start = time.monotonic()
                try:
                    status, job = request()
                except requests.RequestException:
                    status, job = 0, ""
                with self.lock:
                    self.done.append((start, time.monotonic(), status, job))

        workers = [threading.Thread(target=loop, daemon=True) for _ in range(threads)]
        for t in workers:
            t.start()
        return workers

    def refusals(self, ok: int) -> tuple[int, float]:
        bad = [(s, e) for s, e, status, _ in self.done if status != ok]
        if not bad:
            return 0, 0.0
        return len(bad), max(e for _, e in bad) - min(s for s, _ in bad)


def start_hub(base: Path, workers: int) -> Hub:
    base.mkdir(parents=True)
    policy = base / "policy.toml"
    policy.write_text(bench_policy())
    print(f"starting a hub (gateway workers: {workers}) ...", flush=True)
    return launch_hub(
        base / "hub",
        extra=LOCAL_EXTRA.format(home=base / "home"),
        env={**local_env(), "QUSTODY_QPU_PORT": str(free_port()),
             "QUSTODY_QPU_POLICY": str(policy), "QUSTODY_QPU_WORKERS": str(workers)},
        timeout=240,
    )


def wait_ready(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{what} did not answer within {timeout:.0f} s")


def crash_run(hub: Hub, victim: Callable[[], int], request: Callable[[], tuple[int, str]],
              ok: int, seconds: float, threads: int, healthy: Callable[[], bool]) -> Stream:
    """Stream for ``seconds``, kill ``victim()``, then stream until the service has
    answered ``ok`` for ``seconds`` again (at most 60 s)."""
    stream = Stream()
    clients = stream.run(threads, request)
    time.sleep(seconds)
    os.kill(victim(), signal.SIGKILL)
    killed = time.monotonic()
    while time.monotonic() - killed < 60:
        time.sleep(0.5)
        with stream.lock:
            recent = [st for s, _, st, _ in stream.done if s > time.monotonic() - seconds]
            bad_after = [s for s, _, st, _ in stream.done if st != ok]
        if bad_after and recent and all(st == ok for st in recent) \
                and time.monotonic() - max(bad_after) > seconds:
            break
        if not bad_after and time.monotonic() - killed > seconds:
            break
    stream.stop.set()
    for t in clients:
        t.join(timeout=120)
    wait_ready(healthy, 120, "the service after the crash")
    return stream


def gateway_case(base: Path, workers: int, seconds: float, threads: int) -> dict[str, object]:
    hub = start_hub(base, workers)
    try:
        token = hub.user_token("alice")
        url = f"{hub.url}services/qpu/api/jobs"
        headers = {"Authorization": f"token {token}"}
        job = {"backend": "aer_simulator", "circuits": [{"qpy": bell_qpy()}], "shots": 16,
               "tags": {"purpose": "testing"}}

        def submit() -> tuple[int, str]:
            r = requests.post(url, json=job, headers=headers, timeout=60)
            return r.status_code, (r.json().get("job_id", "") if r.status_code == 201 else "")

        wait_ready(lambda: submit()[0] == 201, 120, "the gateway")
        supervisor = service_process(hub, "hub_ext.qpu")

        def victim() -> int:
            return children(supervisor)[0] if workers > 1 else supervisor

        stream = crash_run(hub, victim, submit, 201, seconds, threads,
                           lambda: submit()[0] == 201)
        accepted = [j for _, _, st, j in stream.done if st == 201]
        print(f"  {len(accepted)} jobs accepted; waiting for them to finish ...", flush=True)
        states: dict[str, str] = {}
        deadline = time.monotonic() + 600
        pending = list(accepted)
        while pending and time.monotonic() < deadline:
            still = []
            for job_id in pending:
                r = requests.get(f"{url}/{job_id}", headers=headers, timeout=60)
                state = r.json().get("state", "") if r.status_code == 200 else "?"
                if state in ("DONE", "FAILED", "CANCELLED", "REJECTED"):
                    states[job_id] = state
                else:
                    still.append(job_id)
            pending = still
            if pending:
                time.sleep(1)
        refused, span = stream.refusals(201)
        return {"case": f"gateway, {workers} {'worker' if workers == 1 else 'workers'}"
                        f"{' (baseline)' if workers == 1 else ''}",
                "requests": len(stream.done), "refused": refused, "span": span,
                "accepted": len(accepted),
                "done": sum(1 for s in states.values() if s == "DONE"),
                "lost": len(accepted) - sum(1 for s in states.values() if s == "DONE")}
    finally:
        hub.stop()


def audit_cases(base: Path, seconds: float, threads: int) -> list[dict[str, object]]:
    hub = start_hub(base, 2)
    try:
        headers = {"Authorization": f"token {hub.user_token('auditor')}"}
        url = f"{hub.url}services/audit/api/verify"

        def read() -> tuple[int, str]:
            return requests.get(url, headers=headers, timeout=60).status_code, ""

        wait_ready(lambda: read()[0] == 200, 120, "the auditor page")
        out = []
        for what in ("worker", "supervisor"):
            supervisor = service_process(hub, "hub_ext.audit.web")

            def victim(s: int = supervisor, w: str = what) -> int:
                return children(s)[0] if w == "worker" else s

            stream = crash_run(hub, victim, read, 200, seconds, threads,
                               lambda: read()[0] == 200)
            refused, span = stream.refusals(200)
            out.append({"case": f"audit page, {what} killed", "requests": len(stream.done),
                        "refused": refused, "span": span})
        return out
    finally:
        hub.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0,
                        help="stream this long before the kill, and after recovery")
    parser.add_argument("--threads", type=int, default=3, help="client threads")
    args = parser.parse_args()
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="bench-crash-") as tmp:
        rows.append(gateway_case(Path(tmp) / "one", 1, args.seconds, args.threads))
        rows.append(gateway_case(Path(tmp) / "two", 2, args.seconds, args.threads))
        rows.extend(audit_cases(Path(tmp) / "audit", args.seconds, args.threads))
    print(f"\n{'case':34} {'requests':>9} {'refused':>8} {'refused for':>12} "
          f"{'accepted':>9} {'DONE':>6} {'lost':>5}")
    for row in rows:
        print(f"{row['case']!s:34} {row['requests']!s:>9} {row['refused']!s:>8} "
              f"{row['span']:>10.2f} s {row.get('accepted', '-')!s:>9} "
              f"{row.get('done', '-')!s:>6} {row.get('lost', '-')!s:>5}")
    base = rows[0]["span"]
    two = rows[1]["span"]
    if isinstance(base, float) and isinstance(two, float) and base > 0:
        print(f"\ngateway: refusals after a crash, 2 workers against 1 process: "
              f"{two:.2f} s / {base:.2f} s = {two / base:.3f}")


if __name__ == "__main__":
    main()
