"""Where the test suite's CPU goes: each component's CPU seconds while a command runs.

    python benchmarks/bench_suite_cpu.py                  # runs `make test`
    python benchmarks/bench_suite_cpu.py -- .venv/bin/pytest tests/hub/test_metrics.py

On 2 cores the suite is CPU-bound (a fourth xdist worker made it slower, not faster), so
its time falls only with the CPU its processes use. This runs the command and reads
``/proc`` twice a second: every process's CPU time (user + system) is kept as last seen
and summed by component (JupyterHub, each Qustody service, the single-user servers, the
proxy, the IdP, Chromium, dockerd, the pytest workers that run in-process tests; ``make
test`` also lints, type-checks and builds the lab extension and the image first). It
prints them next to the machine's busy CPU over the same run, the baseline they add up
to. A process already running counts what it used during the run; each process loses
what it used after its last sample, and one that lives less than an interval may be
missed, so the sum falls somewhat short of the baseline.

Linux only. Not part of ``make test``: it runs the whole suite itself.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TICK = os.sysconf("SC_CLK_TCK")

#: (pattern in the command line, component); the first that matches names the process
COMPONENTS = (
    (r"exec\(eval\(sys\.stdin", "pytest workers (in-process tests)"),
    (r"bin/pytest", "pytest"),
    (r"jupyterhub-singleuser|/opt/qustody/bin/singleuser", "single-user servers"),
    (r"bin/jupyterhub -f|bin/jupyterhub$", "JupyterHub"),
    (r"multiprocessing\.forkserver.*hub_ext\.qpu", "QPU gateway sandboxes and parsers"),
    (r"-m hub_ext\.qpu", "QPU gateway"),
    (r"-m hub_ext\.server_api", "qustody API service"),
    (r"-m hub_ext\.courses", "courses service"),
    (r"-m hub_ext\.audit", "auditor page"),
    (r"-m hub_ext\.culling", "culler"),
    (r"hub_ext\.demo", "make demo"),
    (r"configurable-http-proxy", "proxy"),
    (r"tests/idp|oidc-provider", "OIDC provider"),
    (r"chrom", "Chromium"),
    (r"ipykernel", "kernels"),
    (r"dockerd|containerd|runc|docker-proxy|docker-untar", "Docker engine"),
    (r"images/build\.py|pip |pip_audit|compileall", "image build"),
    (r"postgres", "PostgreSQL"),
    (r"\bbao\b", "OpenBao"),
    (r"prometheus", "Prometheus"),
    (r"server_ext\.cli|-m server_ext", "qustody CLI"),
    (r"\bnode\b|npm|eslint|tsc", "node (other)"),
    (r"python", "python (other)"),
)
_COMPILED = [(re.compile(p), name) for p, name in COMPONENTS]


def component(cmdline: str) -> str:
    for pattern, name in _COMPILED:
        if pattern.search(cmdline):
            return name
    return "other" if cmdline else "no command line (kernel threads, zombies)"


def busy_ticks() -> int:
    """user + nice + system + irq + softirq: not idle or iowait, nor steal (another
    machine's) or guest (already in user)."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq = (
            int(v) for v in f.readline().split()[1:8])
    return user + nice + system + irq + softirq


class Sampler(threading.Thread):
    """Every process's CPU ticks, last seen, keyed by (pid, start time)."""

    def __init__(self, interval: float) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        #: (pid, start time) -> [command line, ticks last seen, samples]
        self.seen: dict[tuple[str, str], list] = {}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/stat") as f:
                    stat = f.read()
                fields = stat[stat.rindex(")") + 2 :].split()
                ticks = int(fields[11]) + int(fields[12])
                key = (pid, fields[19])
                known = self.seen.setdefault(key, ["", ticks, 0])
                known[1] = max(known[1], ticks)
                known[2] += 1
                if known[2] <= 3:  # a process seen between fork and exec shows its parent's
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
                    known[0] = cmdline or known[0]  # a zombie's is empty
            except (OSError, ValueError, IndexError):
                continue  # gone between listing and reading


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--interval", type=float, default=0.5, help="seconds between samples")
    p.add_argument("command", nargs="*", default=["make", "test"],
                   help="the command to measure (after --); default: make test")
    args = p.parse_args()
    if not Path("/proc/stat").exists():
        raise SystemExit("bench_suite_cpu: needs Linux's /proc")
    sampler = Sampler(args.interval)
    start_ticks, start = busy_ticks(), time.monotonic()
    sampler.sample()
    # processes already running count what they use from here; others from their start
    before = {key: known[1] for key, known in sampler.seen.items()}
    sampler.start()
    print(f"running {' '.join(args.command)} (output follows; figures at the end)", flush=True)
    code = subprocess.call(args.command, cwd=ROOT)
    sampler.done.set()
    sampler.join()
    sampler.sample()
    wall, busy = time.monotonic() - start, (busy_ticks() - start_ticks) / TICK
    busy = max(busy, 1 / TICK)  # a short command on an idle machine
    by: collections.Counter[str] = collections.Counter()
    count: collections.Counter[str] = collections.Counter()
    for key, (cmdline, ticks, _samples) in sampler.seen.items():
        used = ticks - before.get(key, 0)
        if key[0] == str(os.getpid()) or used <= 0:
            continue  # the sampler itself, and what stayed idle through the run
        name = component(cmdline)
        by[name] += used / TICK
        count[name] += 1
    print(f"\n{' '.join(args.command)} exited {code} after {wall:.0f} s; the machine was busy "
          f"{busy:.0f} CPU-s ({busy / wall / os.cpu_count():.0%} of {os.cpu_count()} cores)")
    print(f"  {'CPU-s':>8} {'share':>6} {'processes':>9}  component")
    for name, seconds in by.most_common():
        print(f"  {seconds:8.1f} {seconds / busy:6.1%} {count[name]:9d}  {name}")
    print(f"  {sum(by.values()):8.1f} {sum(by.values()) / busy:6.1%}            sampled in all")
    sys.exit(code if code >= 0 else 128 - code)  # killed by signal N: 128 + N, as a shell


if __name__ == "__main__":
    main()
