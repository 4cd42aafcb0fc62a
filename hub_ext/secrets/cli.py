"""``qustody secrets``: manage the embedded store (put, list, rotate, revoke, grant, migrate).

Values are read from standard input or ``--file`` and are never printed, echoed or
logged. ``qustody secrets qpu ...`` manages the QPU gateway's provider credentials
(provider.py). The store is ``--db`` (default ``$QUSTODY_SECRETS_DB`` or
``$QUSTODY_STATE_DIR/secrets.sqlite``) and the master key ``--key-file`` (default
``$QUSTODY_STATE_DIR/secrets.key``) or ``$QUSTODY_SECRETS_MASTER_KEY``. Vault users
manage their secrets with Vault's own tools.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import provider
from .embedded import EmbeddedStore, migrate
from .masterkey import load_master_key
from .model import MAX_VALUE_BYTES, SecretError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="qustody secrets",
        description="Manage the secrets Qustody delivers to users' servers (embedded store).",
    )
    state = os.environ.get("QUSTODY_STATE_DIR", ".demo")
    p.add_argument(
        "--db",
        default=os.environ.get("QUSTODY_SECRETS_DB", os.path.join(state, "secrets.sqlite")),
        help="the store (SecretBroker.db_path)",
    )
    p.add_argument(
        "--key-file",
        default=os.path.join(state, "secrets.key"),
        help="master key file (SecretBroker.master_key_file); QUSTODY_SECRETS_MASTER_KEY wins",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def value_source(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--file", help="read the value from this file (default: standard input, not echoed)"
        )

    put = sub.add_parser("put", help="store a new secret or a new version of one")
    put.add_argument("namespace", help="user:<name>, project:<name> or course:<name>")
    put.add_argument("name", help="the name users see, e.g. QISKIT_IBM_TOKEN")
    put.add_argument("--class", dest="cls", required=True, help="e.g. sandbox, dev, prod, hardware")
    value_source(put)
    ls = sub.add_parser("list", help="names, classes, versions (never values)")
    ls.add_argument("namespace", nargs="?", help="only this namespace")
    rot = sub.add_parser("rotate", help="a new value for an existing secret")
    rot.add_argument("namespace")
    rot.add_argument("name")
    value_source(rot)
    rev = sub.add_parser("revoke", help="stop serving a secret now and wipe its values")
    rev.add_argument("namespace")
    rev.add_argument("name")
    gr = sub.add_parser("grant", help="give users the secrets of a project or course")
    gr.add_argument("namespace", help="project:<name> or course:<name>")
    gr.add_argument("users", nargs="+", help="hub user names")
    gr.add_argument("--remove", action="store_true", help="take the grant away instead")
    sub.add_parser(
        "migrate",
        help="convert a store written before class binding and row MACs (format 1); once, "
        "with the hub stopped, after backing the file up",
    )
    qpu_parser(sub)
    return p


def qpu_parser(sub: Any) -> None:
    qpu = sub.add_parser(
        "qpu",
        help="provider credentials of the QPU gateway's backends (service:qpu)",
        description="""Provider credentials the QPU gateway hands to a backend's driver
        (self.credentials()). One entry per gateway backend, holding field=value lines;
        users never receive them. Values come from standard input or --file, never the
        command line, and are never printed.""",
    )
    qsub = qpu.add_subparsers(dest="qpu_command", required=True, metavar="ACTION")
    put = qsub.add_parser(
        "put",
        help="set a backend's credentials (a new version; the gateway reads it at the next job)",
        description="""Without --field the input is field=value lines (e.g. token=...,
        instance=...) and replaces every field; with --field NAME the input is that one
        field's value, merged into the existing fields.""",
    )
    put.add_argument("backend", help="the gateway backend name (QpuGateway.backends key)")
    put.add_argument("--field", help="set only this field; the input is its raw value")
    put.add_argument("--file", help="read the input from this file (default: standard input)")
    ls = qsub.add_parser(
        "list", help="backends with credentials: field names, versions (never values)"
    )
    ls.add_argument("backend", nargs="?", help="only this backend")
    rm = qsub.add_parser("delete", help="stop serving a backend's credentials now and wipe them")
    rm.add_argument("backend")
    rm.add_argument("--field", help="remove only this field")


def read_value(path: str | None) -> bytes:
    if path:
        try:
            with open(path, "rb") as f:
                return f.read(MAX_VALUE_BYTES + 2)
        except OSError as e:
            raise SecretError(f"cannot read {path}: {e.strerror}") from None
    if sys.stdin.isatty():
        return getpass.getpass("value (not echoed): ").encode()
    return sys.stdin.buffer.read(MAX_VALUE_BYTES + 2)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "migrate":
            key = load_master_key(args.key_file, "QUSTODY_SECRETS_MASTER_KEY", create=False)
            print(f"migrated {args.db}: {migrate(args.db, key)} values re-sealed, rows signed")
            return 0
        key = load_master_key(
            args.key_file, "QUSTODY_SECRETS_MASTER_KEY", create=not Path(args.db).exists()
        )
        store = EmbeddedStore(args.db, key)
        try:
            return _run(store, args)
        finally:
            store.close()
    except SecretError as e:
        print(f"qustody secrets: {e}", file=sys.stderr)
        return 2


def _run(store: EmbeddedStore, args: argparse.Namespace) -> int:
    if args.command == "qpu":
        if args.qpu_command == "put":
            print(provider.put(store, args.backend, read_value(args.file), args.field))
        elif args.qpu_command == "delete":
            print(provider.delete(store, args.backend, args.field))
        else:
            print("\n".join(provider.listing(store, args.backend)))
    elif args.command in ("put", "rotate") and args.namespace.startswith("service:"):
        raise SecretError(
            f"{args.namespace} belongs to a hub service: use `qustody secrets qpu put` for "
            "the QPU gateway's provider credentials"
        )
    elif args.command == "put":
        version = store.put(args.namespace, args.name, args.cls, read_value(args.file))
        print(f"{args.namespace}/{args.name}: version {version} stored (class {args.cls})")
    elif args.command == "rotate":
        version = store.rotate(args.namespace, args.name, read_value(args.file))
        print(f"{args.namespace}/{args.name}: rotated to version {version}")
    elif args.command == "revoke":
        store.revoke(args.namespace, args.name)
        print(f"{args.namespace}/{args.name}: revoked (no longer served; values wiped)")
    elif args.command == "grant":
        store.grant(args.namespace, args.users, revoke=args.remove)
        verb = "no longer granted to" if args.remove else "granted to"
        print(f"{args.namespace}: {verb} {', '.join(args.users)}")
    else:
        rows = store.entries(args.namespace)
        print(f"{'namespace':<24} {'name':<32} {'class':<12} {'version':>7}  state    updated")
        for r in rows:
            state = "revoked" if r.revoked else "active"
            when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(r.updated))
            print(f"{r.namespace!s:<24} {r.name:<32} {r.cls:<12} {r.version:>7}  {state:<8} {when}")
        for ns, user in store.grants():
            print(f"grant: {ns} -> {user}")
    return 0
