"""Start-up costs every hub start pays: the audit log, and the QPU gateway's first answer.

Each figure is the median wall time of N fresh interpreters (``python -c ...``), so the
import cache of one run does not help the next. Printed next to two baselines from the
same run: a bare interpreter, and ``import jupyter_events`` (what loading the audit
schemas cost while they were checked with jupyter-events at start-up).

The QPU gateway figure is the time from ``python -m hub_ext.qpu`` (the demo's backends)
to its first HTTP answer: the hub starts its services one after the other and waits for
each to answer, so this is added to every hub start (and every hub test).

    python benchmarks/bench_startup.py [-n 15]

Targets: audit log and schemas loaded in <= 0.5 s (issue: one clear hub architecture);
the gateway answering in <= 2 s over a bare interpreter (make test under 20 minutes).
"""

from __future__ import annotations

import argparse
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import harness
import requests

CASES = {
    "bare interpreter": "pass",
    "import jupyter_events (old path)": "import jupyter_events",
    "audit log + all schemas": (
        "import hub_ext.audit.log\n"
        "from hub_ext.audit import schema\n"
        "for name in schema.names(): schema.get(name)"
    ),
}


def once(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, cwd=harness.ROOT)
    return time.perf_counter() - start


def gateway_answers(state: Path) -> tuple[float, float]:
    """Seconds from starting the gateway to its first HTTP answer (any status), and from
    SIGTERM right after that answer to its exit (a hub stop waits for it)."""
    from hub_ext.qpu.hub import DEMO_BACKENDS, DEMO_POLICY

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    state.mkdir(parents=True)
    config = state / "qpu_config.py"
    config.write_text(
        "c = get_config()  # noqa\n"
        f"c.QpuGateway.db_url = 'sqlite:///{state / 'qpu.sqlite'}'\n"
        f"c.QpuGateway.policy_file = {str(DEMO_POLICY)!r}\n"
        f"c.QpuGateway.backends = {DEMO_BACKENDS!r}\n"
        "c.QpuGateway.audit_log = False\n"
        "c.QpuGateway.hub_api_url = 'http://127.0.0.1:9/hub/api/'\n"
        f"c.QpuGateway.port = {port}\n"
    )
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "hub_ext.qpu", f"--config={config}"],
                               cwd=harness.ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                requests.get(f"http://127.0.0.1:{port}/", timeout=5)
                break
            except requests.ConnectionError:
                if process.poll() is not None:
                    raise SystemExit("the gateway exited before answering") from None
                time.sleep(0.02)
        answered = time.perf_counter()
        process.send_signal(signal.SIGTERM)
        process.wait(60)
        return answered - start, time.perf_counter() - answered
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=15, help="fresh interpreters per case")
    args = parser.parse_args()
    results: dict[str, float] = {}
    for label, code in CASES.items():
        once(code)  # warm the OS file cache
        results[label] = statistics.median(once(code) for _ in range(args.n))
    bare = results["bare interpreter"]
    for label, seconds in results.items():
        print(f"  {label:<34} {seconds * 1000:>7.0f} ms  (x{seconds / bare:.2f} of bare)")
    audit = results["audit log + all schemas"] - bare
    print(f"  audit log + schemas over a bare interpreter: {audit * 1000:.0f} ms (target <= 500)")
    with tempfile.TemporaryDirectory(prefix="qustody-bench-startup-") as tmp:
        runs = [gateway_answers(Path(tmp) / str(i)) for i in range(max(3, args.n // 3))]
    gateway = statistics.median(r[0] for r in runs)
    stop = statistics.median(r[1] for r in runs)
    print(f"  QPU gateway, start to first answer {gateway * 1000:>7.0f} ms  "
          f"(median of {len(runs)}; {(gateway - bare) * 1000:.0f} ms over a bare interpreter, "
          "target <= 2000)")
    print(f"  QPU gateway, SIGTERM to exit       {stop * 1000:>7.0f} ms  "
          "(right after its first answer)")


if __name__ == "__main__":
    main()
