"""Save latency through a real jupyter-server with the guard on and off.

    .venv/bin/python benchmarks/bench_save.py [--size-mb 2] [--runs 40]
    .venv/bin/python benchmarks/bench_save.py --real 30 [--runs 9] [--guard-share]

Starts two servers on 127.0.0.1 (the guard installed as on any Qustody server,
and plain jupyter-server with the extension disabled) and PUTs the same notebook to
each, interleaved, in three ways, since the guard does not scan a cell it found clean
in the last save of the same notebook (``SaveGuard.unchanged_cells_cache``):

- ``first``: every save goes to a new path (content the server has never read: all is
  scanned; a "Save As", a copy, a script's PUT);
- ``open``: a notebook written to disk is opened (GET, as JupyterLab does, untimed), and
  its first save, 50 ms later, has one cell edited (the guard scanned what the GET served);
- ``edit``: the notebook is saved again with one cell's source changed each time (a
  save or an autosave while working: that cell is scanned);
- ``same``: the notebook is saved again unchanged (an autosave with nothing new).

It prints median and p95 latency and the on/off ratio of each. With ``--real N`` it
saves the N largest real notebooks of the guard corpus (``python
benchmarks/real_notebooks.py`` builds it) instead, each ``--runs`` times per way, and
prints each notebook's on/off ratio of medians and their median: the figure issue 13
states for "held-out large notebooks". With ``--guard-share`` it also times a third
server, Qustody's own with ``SaveGuard.enabled = False``, and prints what the check alone
adds: the rest of Qustody's server (its body parser, watcher, contents manager) is not
the guard's cost, nor its saving.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from notebooks import generate

PLAIN = {
    "ServerApp": {
        "jpserver_extensions": {"server_ext": False},
        "contents_manager_class": "jupyter_server.services.contents.largefilemanager.AsyncLargeFileManager",
    }
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


#: Qustody's server with the check switched off: the same parser, watcher and contents
#: manager, so that "on" against it is what the guard's check alone costs.
GUARD_OFF = {"SaveGuard": {"enabled": False}}


class Server:
    def __init__(self, name: str, guard: bool, workdir: Path,
                 config: dict[str, Any] | None = None) -> None:
        self.name = name
        self.port = free_port()
        self.token = secrets.token_hex(16)
        root = self.root = workdir / name
        root.mkdir()
        args = [
            sys.executable,
            "-m",
            "jupyter_server",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={self.port}",
            f"--IdentityProvider.token={self.token}",
            "--ServerApp.open_browser=False",
            f"--ServerApp.root_dir={root}",
            "--ServerApp.log_level=WARN",
        ]
        if os.geteuid() == 0:
            args.append("--allow-root")
        if not guard or config:
            path = workdir / f"{name}.json"
            path.write_text(json.dumps(config or PLAIN))
            args.append(f"--config={path}")
        env = {**os.environ, "JUPYTER_CONFIG_DIR": str(workdir / f"{name}-config")}
        self.proc = subprocess.Popen(
            args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.base = f"http://127.0.0.1:{self.port}/api/contents/"
        self.url = f"{self.base}bench.ipynb"
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"token {self.token}"
        for _ in range(300):
            try:
                if self.session.get(f"http://127.0.0.1:{self.port}/api/status", timeout=1).ok:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{name} server did not start")

    def guarded(self) -> bool:
        return self.session.get(f"http://127.0.0.1:{self.port}/qustody/api/guard", timeout=5).ok

    def checking(self) -> bool:
        """Whether Qustody's guard on this server checks saves (``SaveGuard.enabled``)."""
        response = self.session.get(f"http://127.0.0.1:{self.port}/qustody/api/guard", timeout=5)
        response.raise_for_status()
        return bool(response.json()["enabled"])

    def accepts(self, body: bytes) -> bool:
        """Whether this server saves ``body`` (the guard refuses a notebook holding a key)."""
        response = self.session.put(self.url, data=body, timeout=120)
        if response.status_code == 422:
            return False
        response.raise_for_status()
        return True

    def open(self, name: str) -> dict[str, Any]:
        """GET a notebook with its content, as JupyterLab opens one."""
        response = self.session.get(self.base + name, timeout=120)
        response.raise_for_status()
        content: dict[str, Any] = response.json()["content"]
        return content

    def save(self, body: bytes, name: str = "bench.ipynb") -> float:
        start = time.perf_counter()
        response = self.session.put(self.base + name, data=body, timeout=120)
        elapsed = time.perf_counter() - start
        response.raise_for_status()
        return elapsed

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


REAL = Path(__file__).resolve().parent / "out" / "real_notebooks"


def largest_real(n: int) -> list[tuple[str, bytes]]:
    """Request bodies of the ``n`` largest nbformat-4 notebooks of the real corpus."""
    found = []
    for path in sorted(REAL.rglob("*.ipynb"), key=lambda p: p.stat().st_size, reverse=True):
        try:
            nb = json.loads(path.read_bytes())
        except (ValueError, UnicodeDecodeError):
            continue
        if isinstance(nb, dict) and isinstance(nb.get("cells"), list) and nb.get("nbformat") == 4:
            body = {"type": "notebook", "format": "json", "content": nb}
            found.append((path.name, json.dumps(body).encode()))
        if len(found) == n:
            break
    if not found:
        raise SystemExit(f"no notebooks in {REAL}: run python benchmarks/real_notebooks.py")
    return found


WAYS = ("first", "open", "edit", "same")
_FRESH = itertools.count()  # a path never saved before, on either server


def saves(nb: dict[str, Any], way: str, runs: int) -> list[tuple[str, bytes]]:
    """(path, request body) of each timed save of ``nb`` in ``way``; built before timing."""
    def body(content: dict[str, Any]) -> bytes:
        return json.dumps({"type": "notebook", "format": "json", "content": content}).encode()

    if way == "first":
        return [(f"first-{next(_FRESH)}.ipynb", body(nb)) for _ in range(runs)]
    if way == "same":
        return [("bench.ipynb", body(nb))] * runs
    out = []
    current = nb
    for k in range(runs):  # each save changes one cell of the save before
        data = edited(current, k)
        current = json.loads(data)["content"]
        out.append(("bench.ipynb", data))
    return out


Servers = dict[str, Server]  # "on", "off" and maybe "check-off"


def in_turn(servers: Servers, k: int) -> list[tuple[str, Server]]:
    """Every server, the first of them changing from one save to the next: a save that
    follows another server's save (its client, its disk writes) is not always the same one."""
    order = list(servers.items())
    k %= len(order)
    return order[k:] + order[:k]


def edited(nb: dict[str, Any], k: int) -> bytes:
    """The request body of a save of ``nb`` with one cell's source changed."""
    cells = list(nb["cells"])
    if cells:
        i = k % len(cells)
        source = cells[i].get("source", "")
        line = f"\n# edit {k}\n"
        source = [*source, line] if isinstance(source, list) else source + line
        cells[i] = dict(cells[i], source=source)
    body = {"type": "notebook", "format": "json", "content": dict(nb, cells=cells)}
    return json.dumps(body).encode()


def timed_opened(servers: Servers, nb: dict[str, Any], runs: int) -> dict[str, list[float]]:
    """The first save after opening: the file is on disk, each server serves it (GET),
    and 50 ms later (more for a large notebook) its save with one cell edited is timed. The files are written first,
    and the guarded server's watcher has checked them before the first GET."""
    times: dict[str, list[float]] = {key: [] for key in servers}
    text = json.dumps(nb, indent=1)
    names = [f"opened-{next(_FRESH)}.ipynb" for _ in range(runs)]
    for name in names:
        for server in servers.values():
            (server.root / name).write_text(text)
    # FileWatcher.debounce_ms is 0.8 s, and it reads each new file at 50 MB/s or more
    time.sleep(1.0 + runs * len(text) / 50e6)
    for k, name in enumerate(names):
        served = {key: server.open(name) for key, server in servers.items()}
        time.sleep(0.05 + len(text) / 100e6)  # the guard scans what it served meanwhile
        for key, server in in_turn(servers, k):
            times[key].append(server.save(edited(served[key], k), name))
    return times


def timed(servers: Servers, nb: dict[str, Any], way: str, runs: int) -> dict[str, list[float]]:
    """Save times of each server, interleaved, after one untimed save of ``nb``."""
    if way == "open":
        return timed_opened(servers, nb, runs)
    plan = saves(nb, way, runs)
    times: dict[str, list[float]] = {key: [] for key in servers}
    for server in servers.values():
        server.save(saves(nb, "same", 1)[0][1])  # bench.ipynb exists, and was checked
    for k, (name, body) in enumerate(plan):
        for key, server in in_turn(servers, k):
            times[key].append(server.save(body, name))
    return times


def start_servers(workdir: Path, guard_share: bool) -> Servers:
    servers = {"on": Server("guard-on", True, workdir), "off": Server("guard-off", False, workdir)}
    if guard_share:
        servers["check-off"] = Server("qustody-check-off", True, workdir, GUARD_OFF)
    assert servers["on"].checking() and not servers["off"].guarded(), (
        "server configuration is not what the benchmark assumes"
    )
    if guard_share:
        assert not servers["check-off"].checking(), "the check-off server checks saves"
    return servers


def real(n: int, runs: int, guard_share: bool = False) -> None:
    bodies = largest_real(n)
    ratios: dict[str, list[float]] = {way: [] for way in WAYS}
    shares: dict[str, list[float]] = {way: [] for way in WAYS}
    with tempfile.TemporaryDirectory() as tmp:
        servers = start_servers(Path(tmp), guard_share)
        on = servers["on"]
        try:
            print(f"{len(bodies)} largest real notebooks, {runs} saves each to each server, "
                  "per way; on/off ratio of medians")
            print(f"  {'notebook':44} {'size':>8}  {'off first':>9}  "
                  + "  ".join(f"{way:>6}" for way in WAYS))
            for name, body in bodies:
                if not on.accepts(body):
                    print(f"  {name[:44]:44} refused by the guard: not timed")
                    continue
                nb = json.loads(body)["content"]
                row = []
                plain_first = 0.0
                for way in WAYS:
                    times = timed(servers, nb, way, runs)
                    median = {key: statistics.median(values) for key, values in times.items()}
                    ratios[way].append(median["on"] / median["off"])
                    if guard_share:
                        shares[way].append(median["on"] / median["check-off"])
                    row.append(f"{100 * (median['on'] / median['off'] - 1):+5.1f}%")
                    if way == "first":
                        plain_first = median["off"]
                print(f"  {name[:44]:44} {len(body) / 1e6:5.2f} MB  {plain_first * 1000:6.1f} ms  "
                      + "  ".join(f"{r:>6}" for r in row), flush=True)
        finally:
            for server in servers.values():
                server.stop()
    for way in WAYS:
        ratio = statistics.median(ratios[way])
        print(f"  {way:>5}: guard adds {100 * (ratio - 1):+.1f}% to the median notebook's "
              f"median save (ratio {ratio:.3f}; per notebook {100 * (min(ratios[way]) - 1):+.1f}%"
              f" to {100 * (max(ratios[way]) - 1):+.1f}%)")
    if guard_share:
        print("  The check alone: Qustody's server against itself with SaveGuard.enabled = False")
        for way in WAYS:
            share = statistics.median(shares[way])
            print(f"  {way:>5}: the check adds {100 * (share - 1):+.1f}% (ratio {share:.3f})")


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--size-mb", type=float, default=2.0)
    p.add_argument("--runs", type=int, default=40)
    p.add_argument("--real", type=int, metavar="N",
                   help="save the N largest real notebooks instead of a generated one")
    p.add_argument("--guard-share", action="store_true",
                   help="also time Qustody's server with the check off (SaveGuard.enabled = "
                   "False): what the check alone adds, apart from the rest of the server "
                   "(its body parser, watcher, contents manager)")
    args = p.parse_args()
    if args.guard_share and not args.real:
        p.error("--guard-share goes with --real N")
    if args.real:
        real(args.real, args.runs, args.guard_share)
        return
    nb = generate(int(args.size_mb * 1_000_000), image_share=0.3)
    size = len(json.dumps({"type": "notebook", "format": "json", "content": nb}))
    with tempfile.TemporaryDirectory() as tmp:
        servers = start_servers(Path(tmp), guard_share=False)
        try:
            for server in servers.values():
                for _ in range(3):
                    server.save(saves(nb, "same", 1)[0][1])
            results = {way: timed(servers, nb, way, args.runs) for way in WAYS}
        finally:
            for server in servers.values():
                server.stop()
    print(f"notebook: {size / 1e6:.2f} MB request body, {args.runs} saves each per way, "
          "interleaved")
    for way, times in results.items():
        for key in ("off", "on"):
            print(f"  {way:>5}  guard {key:<3}  median {statistics.median(times[key]) * 1000:7.1f} ms"
                  f"   p95 {p95(times[key]) * 1000:7.1f} ms")
        ratio = statistics.median(times["on"]) / statistics.median(times["off"])
        print(f"  {way:>5}  guard adds {100 * (ratio - 1):+.1f}% to the median save "
              f"(ratio {ratio:.3f})")

if __name__ == "__main__":
    main()
