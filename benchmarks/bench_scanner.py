"""Scanner throughput against detect-secrets, and the pathological-input figures.

    .venv/bin/python benchmarks/bench_scanner.py [--sizes 1,10,50] [--baseline-max 10]
    .venv/bin/python benchmarks/bench_scanner.py --crafted

Prints MB/s of ``scan_notebook`` (walk + encode + scan + confirm) on generated
notebooks of 1/10/50 MB, the same bytes through detect-secrets' default plugins
(on a file, as its CLI does) and the speed ratio, and the time to scan 1 MB
pathological lines, and outputs crafted to make the check's views and redaction do
more than linear work, against plain outputs of the same size. Single thread: figures
are per core.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from notebooks import generate

from server_ext.scanner import rules
from server_ext.scanner.documents import scan_notebook
from server_ext.scanner.engine import Engine, SegmentKind

MB = 1_000_000


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) if repeat > 2 else statistics.median(times)


def detect_secrets_seconds(text: str) -> float:
    from detect_secrets import SecretsCollection
    from detect_secrets.settings import default_settings

    with tempfile.NamedTemporaryFile("w", suffix=".ipynb", delete=False) as f:
        f.write(text)
    try:
        with default_settings():
            collection = SecretsCollection()
            start = time.perf_counter()
            collection.scan_file(f.name)
            return time.perf_counter() - start
    finally:
        Path(f.name).unlink()


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--sizes", default="1,10,50", help="notebook sizes in MB")
    p.add_argument(
        "--baseline-max",
        type=float,
        default=10,
        help="largest size (MB) also run through detect-secrets",
    )
    p.add_argument("--crafted", action="store_true",
                   help="only the crafted outputs (against plain ones of the same size)")
    args = p.parse_args()
    if args.crafted:
        crafted_outputs()
        return
    engine = Engine([d for d in rules.ALL if d.id in rules.DEFAULT_IDS])
    print(f"detectors: {len(engine.detectors)}")
    print(
        f"{'size':>8} {'text MB':>8} {'qustody MB/s':>13} {'detect-secrets MB/s':>20} {'ratio':>8}"
    )
    for size in [float(s) for s in args.sizes.split(",")]:
        for share, label in ((0.0, "text"), (0.3, "mixed")):
            nb = generate(int(size * MB), image_share=share)
            text = json.dumps(nb, indent=1)
            n = len(text.encode()) / MB
            ours = best_of(lambda nb=nb: scan_notebook(engine, nb), 5 if size <= 10 else 3)
            found = sum(len(f) for f in scan_notebook(engine, nb).findings)
            row = f"{size:>6.0f}MB {label:>5} {n:>5.1f} {n / ours:>13.1f}"
            if size <= args.baseline_max:
                theirs = detect_secrets_seconds(text)
                row += f" {n / theirs:>20.2f} {theirs / ours:>7.0f}x"
            print(row + (f"   (findings: {found})" if found else ""), flush=True)
    print("\npathological 1 MB lines (scan_one, TEXT):")
    cases = {
        "spaces": b" " * MB,
        "'password=' repeated": b"password=" * (MB // 9),
        "quote + letters": b'"' + b"a" * MB,
        "base64 run": b"QUJD" * (MB // 4),
        "private-key headers": b"-----BEGIN PRIVATE KEY-----" * (MB // 27),
        "long line of digits": b"1234567890" * (MB // 10),
    }
    for name, data in cases.items():
        seconds = best_of(lambda data=data: engine.scan_one(data, SegmentKind.TEXT), 3)
        print(f"  {name:<24} {seconds * 1000:8.1f} ms")
    crafted_outputs()


def _notebook(outputs: list[dict]) -> dict:
    cell = {"cell_type": "code", "id": "c", "metadata": {}, "execution_count": 1,
            "source": "run()", "outputs": outputs}
    return {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [cell]}


def _stream(text: str) -> dict:
    return {"output_type": "stream", "name": "stdout", "text": text}


def crafted_outputs() -> None:
    """Outputs built to make the check's views or redaction do more than linear work, at
    half and full size: linear work doubles (ratio 2), quadratic work quadruples. A plain
    output of the full size, checked in the same run, gives the scale."""
    from server_ext.guard import SaveGuard

    guard = SaveGuard()
    token = "q8ZkP3vT9xLm2RwY7nB4cJ6hF1sD5gA0eKuW"
    cases: dict[str, tuple[int, Any]] = {
        "'token word' lines": (20_000, lambda n: [
            _stream("".join(f"token w{i}\n" for i in range(n)))]),
        "lines of ghp&#95;<token>": (8000, lambda n: [{
            "output_type": "display_data", "metadata": {},
            "data": {"text/html": "<pre>" + "".join(f"line {i} ghp&#95;{token}\n"
                                                      for i in range(n)) + "</pre>"}}]),
        "chunks with a token each": (16_000, lambda n: [
            _stream(f"t ghp_{token}\n") for _ in range(n)]),
        "tokens after an 'é'": (40_000, lambda n: [_stream("é" + f"ghp_{token} " * n)]),
    }

    def seconds(outputs: list[dict], repeat: int) -> float:
        body = json.dumps(outputs)
        return best_of(lambda: guard.check(
            {"type": "notebook", "content": _notebook(json.loads(body))}, "crafted.ipynb"),
            repeat)

    print("\ncrafted outputs (SaveGuard.check at half and full size; plain: ordinary printed "
          "text of the full size):")
    for name, (n, build) in cases.items():
        full = build(n)
        size = len(json.dumps(full))
        half_s, full_s = seconds(build(n // 2), 3), seconds(full, 3)
        plain = [_stream("".join(f"step {i}: loss 0.{i % 997:03d}\n" for i in range(size // 20)))]
        plain_s = seconds(plain, 3)
        print(f"  {n:>6,} {name:<26} {size / MB:5.2f} MB  half {half_s * 1000:7.1f} ms  full "
              f"{full_s * 1000:7.1f} ms  full/half {full_s / half_s:4.2f}  "
              f"plain {plain_s * 1000:5.1f} ms")


if __name__ == "__main__":
    main()
