"""The JupyterLab extension's cost: its JavaScript (gzipped) and JupyterLab's load time
with and without it.

    .venv/bin/python benchmarks/bench_labext.py [--rounds 10]

Starts two real JupyterLab servers (same Python, same settings), one with
``@qustody/jupyterlab`` on its labextensions path, and loads ``/lab`` in headless
Chromium alternately, each load in a fresh browser context (cold cache), timing
navigation start to ``app.restored``. Prints the median of each and their ratio; the goal
in issue 16 is at most 50 KB gzipped and at most 5 % added load time. Nothing here
asserts a figure.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
BUILT = ROOT / "labextension" / "prebuilt" / "@qustody" / "jupyterlab"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def lab(tmp: Path, with_extension: bool) -> Iterator[str]:
    share = tmp / "share"
    (share / "labextensions" / "@qustody").mkdir(parents=True)
    if with_extension:
        (share / "labextensions" / "@qustody" / "jupyterlab").symlink_to(BUILT)
    (tmp / "notebooks").mkdir()
    port, token = free_port(), secrets.token_hex(16)
    env = {
        **os.environ,
        "HOME": str(tmp),
        "PYTHONPATH": str(ROOT),
        "JUPYTER_PATH": str(share),
        "JUPYTER_CONFIG_DIR": str(tmp / "config"),
        "JUPYTER_DATA_DIR": str(tmp / "data"),
        "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"),
        "QUSTODY_STARTED_AT": str(int(time.time())),
        "QUSTODY_MAX_AGE_SECONDS": "36000",
    }
    with (tmp / "lab.log").open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1",
             f"--port={port}", f"--IdentityProvider.token={token}",
             f"--ServerApp.root_dir={tmp / 'notebooks'}", "--LabApp.news_url=",
             "--LabApp.expose_app_in_browser=True", "--allow-root"],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}/"
        try:
            for _ in range(240):
                try:
                    if requests.get(url + "api/status", params={"token": token}, timeout=5).ok:
                        break
                except requests.ConnectionError:
                    time.sleep(0.5)
            else:
                raise SystemExit(f"jupyter lab did not start: {(tmp / 'lab.log').read_text()}")
            yield f"{url}lab?token={token}"
        finally:
            proc.terminate()
            proc.wait(30)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=10)
    args = p.parse_args()
    subprocess.run([sys.executable, str(ROOT / "labextension" / "build.py")], check=True)
    js = sorted((BUILT / "static").glob("*.js"))
    raw = sum(f.stat().st_size for f in js)
    gz = sum(len(gzip.compress(f.read_bytes(), 9)) for f in js)
    print(
        f"JavaScript: {len(js)} files, {raw / 1024:.1f} KB, {gz / 1024:.1f} KB gzipped (goal <= 50 KB)"
    )
    with (
        tempfile.TemporaryDirectory() as t,
        lab(Path(t) / "with", True) as with_url,
        lab(Path(t) / "without", False) as without_url,
    ):
        driver = ROOT / "tests" / "ui" / "lab_load.mjs"
        # one warm-up round each (server-side caches, Python imports), not counted
        opts = {"urls": [without_url, with_url], "rounds": 1}
        subprocess.run(["node", str(driver), json.dumps(opts)], check=True, capture_output=True)
        opts["rounds"] = args.rounds
        done = subprocess.run(
            ["node", str(driver), json.dumps(opts)], check=True, capture_output=True, text=True
        )
        times = json.loads(done.stdout.strip().splitlines()[-1])
    base = statistics.median(times[without_url])
    ext = statistics.median(times[with_url])
    print(f"JupyterLab load to app.restored, median of {args.rounds} cold loads (Chromium):")
    print(
        f"  without the extension: {base:.0f} ms   {sorted(round(x) for x in times[without_url])}"
    )
    print(f"  with the extension:    {ext:.0f} ms   {sorted(round(x) for x in times[with_url])}")
    print(f"  ratio: {ext / base:.3f} ({(ext / base - 1) * 100:+.1f} %; goal <= +5 %)")


if __name__ == "__main__":
    main()
