"""``python -m server_ext.guard_db [DIRECTORY]``: store the guard's compiled databases.

The image build runs it, so that servers load the default rules' databases instead of
compiling them at every start (server_ext/scanner/compiled.py).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .guard import SaveGuard
from .scanner.compiled import STORE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m server_ext.guard_db",
        description="Compile the credential guard's databases for its default settings and "
        "store them in DIRECTORY, where servers of this Python environment load them "
        "instead of compiling them when they start.",
    )
    parser.add_argument("directory", type=Path, nargs="?", default=STORE,
                        help=f"where to write them (default: {STORE})")
    args = parser.parse_args(argv)
    for path in SaveGuard().engine.store_databases(args.directory):
        print(f"stored {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
