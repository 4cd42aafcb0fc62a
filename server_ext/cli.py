"""``qustody``: one command, subcommands from both halves of the product.

Subcommands are imported only when used, so ``qustody scan`` works where only the
scanner is installed (a CI job, a pre-commit hook).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "scan": (
        "server_ext.scanner.cli",
        "Scan notebooks and files for credentials (exit 1 on findings).",
    ),
    "audit": ("hub_ext.audit.cli", "Verify, query and export the audit log (read-only review)."),
    "course": (
        "hub_ext.courses.cli",
        "Check and apply course files; report each course's term (no hub restart).",
    ),
    "secrets": (
        "hub_ext.secrets.cli",
        "Manage the secrets delivered to users' servers (values never printed).",
    ),
}

USAGE = "usage: qustody <command> [options]   (qustody <command> --help for details)"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help", "help"}:
        print(USAGE)
        print("\nQustody: secure multi-user notebooks for quantum research.\n\ncommands:")
        for name, (_, text) in SUBCOMMANDS.items():
            print(f"  {name:<10} {text}")
        return 0 if args else 2
    if args[0] in {"--version", "version"}:
        from ._version import __version__

        print(f"qustody {__version__}")
        return 0
    entry = SUBCOMMANDS.get(args[0])
    if entry is None:
        print(f"qustody: unknown command {args[0]!r}\n{USAGE}", file=sys.stderr)
        return 2
    try:
        module = importlib.import_module(entry[0])
    except ImportError as e:
        print(
            f"qustody {args[0]}: needs a part of Qustody that is not installed ({e.name}).",
            file=sys.stderr,
        )
        return 2
    result: int = module.main(args[1:])
    return result


if __name__ == "__main__":
    raise SystemExit(main())
