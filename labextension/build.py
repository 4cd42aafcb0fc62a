"""Build the prebuilt JupyterLab extension, only when its inputs changed.

    python labextension/build.py           # npm ci + tsc + jupyter-builder, or "up to date"
    python labextension/build.py --check   # exit 1 (saying why) unless the build is current

The output is ``labextension/prebuilt/@qustody/jupyterlab`` (package.json and static/),
which the wheel ships as ``share/jupyter/labextensions/@qustody/jupyterlab``. Inputs are
the committed sources and lockfile; their sha256 is kept next to the output, so the
Makefile, the hatch build hook and images/build.py all rebuild exactly when needed.
Needs Node 20 with npm (npm registry only) and the ``jupyterlab`` Python package, which
provides ``jupyter-builder``. Standard library only.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
NAME = "@qustody/jupyterlab"
OUTPUT = HERE / "prebuilt" / NAME
STAMP = HERE / "prebuilt" / ".inputs-sha256"
NPM_STAMP = HERE / "node_modules" / ".qustody-lock-sha256"
INPUT_GLOBS = ("package.json", "package-lock.json", "tsconfig.json", "src/*.ts", "style/*")


def inputs_sha256() -> str:
    digest = hashlib.sha256()
    files = sorted({p for pattern in INPUT_GLOBS for p in HERE.glob(pattern) if p.is_file()})
    for path in files:
        digest.update(path.relative_to(HERE).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def is_current() -> bool:
    return (
        (OUTPUT / "package.json").is_file()
        and (OUTPUT / "static").is_dir()
        and STAMP.is_file()
        and STAMP.read_text().strip() == inputs_sha256()
    )


def jupyter_builder() -> str | None:
    """``jupyter-builder`` next to this Python (a venv) or on PATH."""
    beside = Path(sys.executable).with_name("jupyter-builder")
    return str(beside) if beside.exists() else shutil.which("jupyter-builder")


def build() -> None:
    npm = shutil.which("npm")
    builder = jupyter_builder()
    if npm is None or builder is None:
        missing = "npm (Node 20: apt-get install nodejs npm)" if npm is None else "jupyterlab"
        raise SystemExit(
            f"cannot build the JupyterLab extension: {missing} is not installed. "
            "Install it, then run `make labext`."
        )
    lock = hashlib.sha256((HERE / "package-lock.json").read_bytes()).hexdigest()
    if not NPM_STAMP.is_file() or NPM_STAMP.read_text().strip() != lock:
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=HERE, check=True)  # noqa: S603
        NPM_STAMP.write_text(lock + "\n")
    sha = inputs_sha256()
    shutil.rmtree(HERE / "lib", ignore_errors=True)
    (HERE / "tsconfig.tsbuildinfo").unlink(missing_ok=True)
    shutil.rmtree(HERE / "prebuilt", ignore_errors=True)
    subprocess.run([npm, "run", "build:lib"], cwd=HERE, check=True)  # noqa: S603
    subprocess.run([builder, "build", "."], cwd=HERE, check=True)  # noqa: S603
    STAMP.write_text(sha + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only say whether it is current")
    args = parser.parse_args(argv)
    if is_current():
        print(f"[labext] {NAME} is up to date", file=sys.stderr)
        return 0
    if args.check:
        print(f"[labext] {NAME} is not built from the current sources", file=sys.stderr)
        return 1
    build()
    print(f"[labext] built {OUTPUT.relative_to(HERE.parent)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
