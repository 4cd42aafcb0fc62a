"""Start-up cost of the audit log: what every hub, gateway and audit-service start pays.

Each figure is the median wall time of N fresh interpreters (``python -c ...``), so the
import cache of one run does not help the next. Printed next to two baselines from the
same run: a bare interpreter, and ``import jupyter_events`` (what loading the audit
schemas cost while they were checked with jupyter-events at start-up).

    python benchmarks/bench_startup.py [-n 15]

Target (issue: one clear hub architecture): audit log and schemas loaded in <= 0.5 s.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

import harness

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


if __name__ == "__main__":
    main()
