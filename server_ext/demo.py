"""``make demo`` for the server extension: JupyterLab with the guard on 127.0.0.1.

Prints the URL (with a fresh token) and leaves a notebook that shows the guard at work.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import sys
from pathlib import Path


def free_port(preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise RuntimeError("no free port on 127.0.0.1")


def tour_notebook() -> dict[str, object]:
    # Built at run time so that the repository holds no key-shaped string.
    fake = "ghp_" + secrets.token_hex(18)
    return {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
        "cells": [
            {
                "cell_type": "markdown",
                "id": "intro",
                "metadata": {},
                "source": (
                    "# The Qustody credential guard\n\n"
                    "1. Uncomment the line below and save (Ctrl-S): the save is refused, and the "
                    "message names the cell, line and kind of key, never the key.\n"
                    "2. Run the second cell and save: the save succeeds, and the printed key is "
                    "replaced by `[REDACTED:github-token]` in the file on disk.\n"
                ),
            },
            {
                "cell_type": "code",
                "id": "source",
                "metadata": {},
                "execution_count": None,
                "outputs": [],
                "source": f'# token = "{fake}"  # (a made-up key)',
            },
            {
                "cell_type": "code",
                "id": "output",
                "metadata": {},
                "execution_count": None,
                "outputs": [],
                "source": f'print("ghp_" + "{fake[4:]}")',
            },
        ],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Start JupyterLab with the Qustody guard on 127.0.0.1.")
    p.add_argument("--root", default=".demo", help="directory served (created if missing)")
    p.add_argument(
        "--port", type=int, default=8888, help="preferred port; a free one is used if taken"
    )
    args = p.parse_args(argv)
    root = Path(args.root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    tour = root / "qustody-guard-tour.ipynb"
    if not tour.exists():
        tour.write_text(json.dumps(tour_notebook(), indent=1))
    port = free_port(args.port)
    token = secrets.token_hex(16)
    print(f"\n  Qustody demo (credential guard on): http://127.0.0.1:{port}/lab?token={token}")
    print(f"  Serving {root}; open qustody-guard-tour.ipynb. Stop with Ctrl-C.\n", flush=True)
    argv_lab = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        "--ServerApp.open_browser=False",
        f"--ServerApp.root_dir={root}",
    ]
    if os.geteuid() == 0:
        argv_lab.append("--allow-root")  # CI and fresh machines run make as root
    os.execv(sys.executable, argv_lab)  # noqa: S606 - fixed argv, no shell


if __name__ == "__main__":
    raise SystemExit(main())
