"""``qustody audit``: verify, query and export the audit log (read-only review tools).

Where the log and key are: ``--log``/``--key-file``, or the ``AuditLog`` section of
the hub's config file (``--config jupyterhub_config.py``), or the environment
(``QUSTODY_AUDIT_LOG``, ``QUSTODY_AUDIT_KEY_FILE``).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from . import clock
from .keys import load_key_file
from .query import REF, Filter, Hit, Stats, query

TABLE_FIELDS_SKIPPED = ("user", "actor")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="qustody audit",
        description="Review the Qustody audit log: verify its hash chain and MACs, query it, "
        "export it for a SIEM. Nothing here writes to the log (except verify --record).",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(sp: argparse.ArgumentParser, key: bool) -> None:
        where = sp.add_mutually_exclusive_group()
        where.add_argument("--log", metavar="PATH", help="the live log file (e.g. .../audit.jsonl)")
        where.add_argument(
            "--db", metavar="URL", help="the log's PostgreSQL database (AuditLog.db_url)"
        )
        sp.add_argument(
            "--config", metavar="FILE", help="read AuditLog.path/key_file from a hub config file"
        )
        if key:
            sp.add_argument(
                "--key-file",
                action="append",
                default=[],
                metavar="FILE",
                help="MAC key file; repeat to add keys used before a key change (the first is "
                "the current key)",
            )

    def filters(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--user", action="append", default=[], help="the event's user or actor")
        sp.add_argument("--type", action="append", default=[], help="event type (see `types`)")
        sp.add_argument("--since", help="from this time (ISO 8601; UTC unless an offset is given)")
        sp.add_argument("--until", help="before this time")
        sp.add_argument("--project", action="append", default=[], help="QPU project")
        sp.add_argument("--job", action="append", default=[], help="QPU job id")
        sp.add_argument(
            "--ref", action="append", default=[],
            help="the reference a user was shown with a refused save (12 hex digits)",
        )

    v = sub.add_parser(
        "verify",
        help="check the whole chain and every MAC; name the first bad record",
        description="Check every record's MAC, sequence and link to the record before it, "
        "the sealed head (truncation) and the checkpoints.",
        epilog="Exit status: 0 verified, 1 verification failed, 2 could not run.",
    )
    common(v, key=True)
    v.add_argument(
        "--quick",
        action="store_true",
        help="check the checkpoints and the records after the last one only",
    )
    v.add_argument(
        "--jobs", type=int, default=os.cpu_count() or 1, help="processes (default: CPU count)"
    )
    v.add_argument(
        "--allow-pruned",
        action="store_true",
        help="accept a log whose oldest files were deleted by retention",
    )
    v.add_argument("--deep", action="store_true", help="also check every event against its schema")
    v.add_argument("--format", choices=("text", "json"), default="text")
    v.add_argument(
        "--record",
        action="store_true",
        help="append an audit-verified event with the result (needs write access and the key)",
    )
    v.add_argument("--actor", default=None, help="who ran it, for --record (default: login name)")

    q = sub.add_parser(
        "query",
        help="filter records by user, type, time, project or job",
        description="Print matching records, oldest first. Filters of different kinds "
        "combine with AND; repeating one kind means OR. Does not verify: run verify.",
    )
    common(q, key=False)
    filters(q)
    q.add_argument("--limit", type=int, default=None, help="stop after this many records")
    q.add_argument(
        "--format",
        choices=("table", "json"),
        default="table",
        help="table for people; json prints the stored records (JSON lines)",
    )

    e = sub.add_parser(
        "export",
        help="write records as JSON lines for a SIEM",
        description="Write records in the documented SIEM format (qustody-audit/1): one JSON "
        "object per line with @timestamp, seq, type, schema, origin, user, actor, event, "
        "redacted and integrity (hash, prev, kid, mac).",
        epilog="Ship incrementally: --after-seq <the last seq the SIEM has>.",
    )
    common(e, key=True)
    filters(e)
    e.add_argument("--after-seq", type=int, default=None, help="only records after this seq")
    e.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    e.add_argument(
        "--verify",
        action="store_true",
        help="verify the whole log first and export nothing if it fails (needs the key)",
    )

    sub.add_parser("types", help="list the event types and their schemas' versions")
    return p


class UsageError(Exception):
    pass


@dataclass
class Where:
    """The log to read: a file log or a database, and the verifying keys."""

    path: Path | None
    db: str | None
    keys: list[bytes]
    key_files: list[str]


def _locations(args: argparse.Namespace, need_key: bool) -> Where:
    log_path, db = args.log or "", args.db or ""
    key_files: list[str] = list(getattr(args, "key_file", []) or [])
    if args.config:
        configured_path, configured_db, configured_key = _from_config(args.config)
        if not (log_path or db):
            log_path, db = configured_path, configured_db
        if not key_files and configured_key:
            key_files = [configured_key]
    if not (log_path or db):
        log_path = os.environ.get("QUSTODY_AUDIT_LOG", "")
        db = "" if log_path else os.environ.get("QUSTODY_AUDIT_DB", "")
    if not key_files and os.environ.get("QUSTODY_AUDIT_KEY_FILE"):
        key_files = [os.environ["QUSTODY_AUDIT_KEY_FILE"]]
    if not (log_path or db):
        raise UsageError(
            "which log? give --log PATH, --db URL, --config FILE or set QUSTODY_AUDIT_LOG"
        )
    keys: list[bytes] = []
    if need_key:
        if not key_files:
            raise UsageError(
                "verification needs the MAC key: give --key-file FILE, --config FILE or set "
                "QUSTODY_AUDIT_KEY_FILE"
            )
        try:
            keys = [load_key_file(k) for k in key_files]
        except ValueError as err:
            raise UsageError(str(err)) from None
    return Where(Path(log_path) if log_path else None, db or None, keys, key_files)


def _load_config(path: str) -> Any:
    from traitlets.config.loader import ConfigFileNotFound, PyFileConfigLoader

    where = Path(path)
    try:
        return PyFileConfigLoader(where.name, str(where.parent or ".")).load_config()
    except ConfigFileNotFound:
        raise UsageError(f"config file {path} not found") from None


def _from_config(path: str) -> tuple[str, str, str]:
    section = _load_config(path).get("AuditLog", {})
    return (
        str(section.get("path", "")),
        str(section.get("db_url", "")),
        str(section.get("key_file", "")),
    )


def _filter(args: argparse.Namespace) -> Filter:
    if args.type:
        from . import schema

        unknown = sorted(set(args.type) - set(schema.names()))
        if unknown:
            raise UsageError(f"unknown event types {unknown}; see `qustody audit types`")
    try:
        since = clock.stamp(clock.parse(args.since)) if args.since else None
        until = clock.stamp(clock.parse(args.until)) if args.until else None
    except ValueError as err:
        raise UsageError(str(err)) from None
    return Filter(
        users=frozenset(args.user),
        types=frozenset(args.type),
        since=since,
        until=until,
        projects=frozenset(args.project),
        jobs=frozenset(args.job),
        after_seq=getattr(args, "after_seq", None),
        refs=frozenset(_refs(args.ref)),
    )


def _refs(values: Sequence[str]) -> list[str]:
    refs = [v.strip().lower() for v in values]
    bad = [v for v in refs if not REF.fullmatch(v)]
    if bad:
        raise UsageError(f"--ref {bad[0][:40]!r}: a reference is 12 hex digits, e.g. 3f9a0c12b7e4")
    return refs


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "types":
            return _types()
        if args.command == "verify":
            return _verify(args)
        if args.command == "query":
            return _query(args)
        return _export(args)
    except UsageError as err:
        print(f"qustody audit {args.command}: {err}", file=sys.stderr)
        return 2


def _types() -> int:
    from . import schema

    for t in schema.event_types().values():
        print(f"{t.name:<24} v{t.version}  {t.origin:<11} {t.title}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from .verify import verify, verify_db

    where = _locations(args, need_key=True)
    if args.jobs < 1:
        raise UsageError("--jobs must be at least 1")
    if where.db:
        if args.quick or args.allow_pruned:
            raise UsageError("--quick and --allow-pruned apply to file logs, not --db")
        report = verify_db(where.db, where.keys, deep=args.deep)
    else:
        assert where.path is not None
        report = verify(
            where.path,
            where.keys,
            quick=args.quick,
            jobs=args.jobs,
            allow_pruned=args.allow_pruned,
            deep=args.deep,
        )
    if args.format == "json":
        print(json.dumps(report.public(), indent=2))
    else:
        print(report.summary())
        for warning in report.warnings:
            print(f"warning: {warning}")
    if args.record:
        _record(args, where, report)
    return 0 if report.ok else 1


def _record(args: argparse.Namespace, where: Where, report: Any) -> None:
    from .errors import AuditError
    from .log import AuditLog

    # with --config, write with the hub's settings (rotation, checkpoints, key source)
    settings: dict[str, Any] = {"config": _load_config(args.config)} if args.config else {}
    settings["path"] = str(where.path) if where.path else ""
    settings["db_url"] = where.db or ""
    if args.key_file:  # the first key given is the current one
        settings["key_file"] = args.key_file[0]
    elif not args.config:
        settings["key_file"] = where.key_files[0]
    actor = args.actor or getpass.getuser() or "cli"
    try:
        audit = AuditLog(**settings)
        recorded = audit.record_verification(report, actor)
        audit.close()
    except (AuditError, ValueError) as err:
        print(f"qustody audit verify: result not recorded: {err}", file=sys.stderr)
        return
    if recorded is not None:
        print(f"recorded as seq {recorded.seq}", file=sys.stderr)


def _hits(where: Where, flt: Filter, limit: int | None, stats: Stats) -> Iterator[Hit]:
    if where.db:
        from .pg_store import query_db

        return query_db(where.db, flt, limit=limit)
    assert where.path is not None
    return query(where.path, flt, limit=limit, stats=stats)


def _query(args: argparse.Namespace) -> int:
    where = _locations(args, need_key=False)
    flt = _filter(args)
    stats = Stats()
    hits = _hits(where, flt, args.limit, stats)
    out = sys.stdout
    if args.format == "json":
        for hit in hits:
            out.write(hit.line.decode("ascii", "replace"))
            out.write("\n")
    else:
        _table(out, hits)
    if stats.damaged:
        print(
            f"warning: {stats.damaged} damaged line(s) skipped; run `qustody audit verify`",
            file=sys.stderr,
        )
    return 0


def _table(out: TextIO, hits: Any) -> None:
    out.write(f"{'time (UTC)':<20} {'seq':>8}  {'type':<22} {'user':<16} {'actor':<14} details\n")
    count = 0
    for hit in hits:
        record: dict[str, Any] = hit.record if isinstance(hit, Hit) else hit
        data = record.get("data") or {}
        details = " ".join(
            f"{k}={_short(v)}" for k, v in data.items() if k not in TABLE_FIELDS_SKIPPED
        )
        if record.get("origin") == "user-server":
            details = "[user-side] " + details
        if record.get("redacted"):
            details += " [redacted]"
        out.write(
            f"{_printable(str(record.get('ts', '')))[:19]:<20} {record.get('seq', ''):>8}  "
            f"{_printable(str(record.get('type', ''))):<22} "
            f"{_printable(str(data.get('user', '-'))):<16} "
            f"{_printable(str(data.get('actor', '-'))):<14} {details[:160]}\n"
        )
        count += 1
    out.write(f"({count} record(s))\n")


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    text = _printable(text)
    return text if len(text) <= 48 else text[:45] + "..."


#: C0 and C1 control characters (and DEL): a user's server reports paths, and an escape
#: sequence in one would move the auditor's cursor, erase the lines above it, or set
#: their clipboard (OSC 52) when the table is printed to a terminal.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _printable(text: str) -> str:
    """``text`` with each control character written as its escape (``\\x1b``)."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def _export(args: argparse.Namespace) -> int:
    from .export import export_hits

    where = _locations(args, need_key=args.verify)
    flt = _filter(args)
    if args.verify:
        from .verify import verify, verify_db

        if where.db:
            report = verify_db(where.db, where.keys)
        else:
            assert where.path is not None
            report = verify(where.path, where.keys, jobs=os.cpu_count() or 1)
        if not report.ok:
            print(f"qustody audit export: nothing exported: {report.summary()}", file=sys.stderr)
            return 1
    stats = Stats()
    hits = _hits(where, flt, None, stats)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            count = export_hits(hits, f)
    else:
        count = export_hits(hits, sys.stdout)
    print(f"{count} record(s) exported", file=sys.stderr)
    if stats.damaged:
        print(f"warning: {stats.damaged} damaged line(s) skipped", file=sys.stderr)
    return 0
