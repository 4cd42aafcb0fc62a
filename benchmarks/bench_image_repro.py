"""Is the single-user image reproducible? Two uncached builds from the same inputs.

    DOCKER_HOST=unix:///tmp/qustody-docker/docker.sock .venv/bin/python benchmarks/bench_image_repro.py

Runs ``images/build.py repro --json``: one qustody wheel and one revision label for both
builds, ``--no-cache``, and then a comparison of the two images (images/repro.py): their
ids, the diff id of every layer, the configuration fields that differ, and for a layer
that differs, which files differ and how. Prints the figures and the SBOM and
vulnerability-report summaries of the build directory; asserts nothing (a measurement,
like every benchmark here). Needs the Docker engine (``make dockerd``); takes about
three minutes on two cores.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build" / "image"


def main() -> int:
    done = subprocess.run(
        [sys.executable, str(ROOT / "images" / "build.py"), "repro", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, check=False,
    )
    if done.returncode != 0:
        print(f"image repro: the builds failed (exit {done.returncode}); run "
              "`python images/build.py repro` for the builder's output")
        return 0
    report = json.loads(done.stdout)
    one, two = report["ids"]
    print("== single-user image: two uncached builds from the same inputs ==")
    print(f"build 1: {one}  {report['build_seconds'][0]:.0f} s")
    print(f"build 2: {two}  {report['build_seconds'][1]:.0f} s")
    print(f"same image id: {'yes' if report['same_id'] else 'NO'}")
    layers = report["layers"]
    differing = [layer for layer in layers if not layer["same"]]
    print(f"layers: {len(layers)}, differing: {len(differing)}")
    for layer in differing:
        print(f"  layer {layer['index']} ({layer.get('created_by', '')[:60]}):")
        diff = layer.get("differences", {})
        for attr, found in diff.get("differ", {}).items():
            print(f"    {attr} differs in {found['count']} files, e.g. "
                  + ", ".join(found["examples"][:3]))
        for side in ("only_in_first", "only_in_second"):
            if diff.get(side):
                print(f"    {side.replace('_', ' ')}: " + ", ".join(diff[side][:5]))
    fields = report["config_differences"]
    print(f"configuration fields that differ: {len(fields)}")
    for line in fields[:10]:
        print(f"  {line}")
    for name in ("sbom-image.cdx.json", "sbom-wheel.cdx.json"):
        path = BUILD / name
        if path.exists():
            count = len(json.loads(path.read_text()).get("components", []))
            print(f"{name}: {count} components")
    report_file = BUILD / "vulnerabilities.txt"
    if report_file.exists():
        summary = next((line for line in report_file.read_text().splitlines()
                        if line.startswith("summary: ")), "summary: (none)")
        print(f"vulnerabilities.txt {summary}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
