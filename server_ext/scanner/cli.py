"""``qustody scan PATH...``: the guard's detectors for files on disk, CI and pre-commit.

Exit status: 0 no findings, 1 findings, 2 something could not be scanned (never
skipped silently: a file too large or not a valid notebook is an error).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from .._version import __version__
from . import baseline, rules
from .documents import Located, scan_file, scan_notebook_file
from .engine import Engine
from .fingerprint import Fingerprinter
from .notebook import NotebookError

SKIP_DIRS = frozenset(
    {".git", ".hg", ".svn", "node_modules", "__pycache__", ".venv", ".tox", ".mypy_cache"}
)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="qustody scan",
        description="Find credentials in notebooks and text files with the detectors of the "
        "Qustody save guard. Findings show the detector and a fingerprint, never the value.",
        epilog="Exit status: 0 clean, 1 findings, 2 a file could not be scanned. "
        "Mark a false positive with '# pragma: allowlist secret' on its line.",
    )
    p.add_argument("paths", nargs="*", metavar="PATH", help="files or directories (recursed)")
    p.add_argument(
        "--format", choices=("text", "json", "sarif"), default="text", help="report format"
    )
    p.add_argument("-o", "--output", metavar="FILE", help="write the report here instead of stdout")
    p.add_argument(
        "--disable", action="append", default=[], metavar="ID", help="switch a detector off"
    )
    p.add_argument(
        "--enable",
        action="append",
        default=[],
        metavar="ID",
        help="switch on an off-by-default detector",
    )
    p.add_argument(
        "--max-size",
        type=int,
        default=100 * 1024 * 1024,
        metavar="BYTES",
        help="largest file scanned",
    )
    record = p.add_mutually_exclusive_group()
    record.add_argument(
        "--baseline",
        metavar="FILE",
        help="report only findings not recorded in FILE (for repositories with old findings)",
    )
    record.add_argument(
        "--write-baseline",
        metavar="FILE",
        help="record every current finding in FILE (fingerprints only) and exit 0",
    )
    p.add_argument("--list-detectors", action="store_true", help="print the detector ids and exit")
    p.add_argument(
        "--fingerprint-key-env",
        metavar="VAR",
        help="environment variable holding a key for stable fingerprints (default: random per run)",
    )
    p.add_argument("--version", action="version", version=f"qustody {__version__}")
    return p


def iter_files(paths: Sequence[str]) -> Iterator[Path]:
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
                for name in sorted(files):
                    yield Path(root) / name
        else:
            yield path


def scan_path(engine: Engine, path: Path, max_size: int) -> list[Located]:
    """Findings in one file; raises OSError/ValueError when it cannot be scanned."""
    size = path.stat().st_size
    if size > max_size:
        raise ValueError(f"{size:,} bytes is over --max-size {max_size:,}; not scanned")
    data = path.read_bytes()
    if path.suffix == ".ipynb":
        try:
            return scan_notebook_file(engine, str(path), data, 256)
        except NotebookError as e:
            raise ValueError(f"not a valid notebook: {e}") from None
        except (ValueError, RecursionError) as e:
            raise ValueError(f"not a valid notebook: {type(e).__name__}") from None
    return scan_file(engine, str(path), data)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    unknown = sorted(set(args.disable + args.enable) - set(rules.BY_ID))
    if unknown:
        print(
            f"qustody scan: unknown detector ids {unknown}; see --list-detectors", file=sys.stderr
        )
        return 2
    wanted = (set(rules.DEFAULT_IDS) | set(args.enable)) - set(args.disable)
    if args.list_detectors:
        for d in rules.ALL:
            state = "on " if d.id in wanted else "off"
            print(f"{state} {d.id:<34} {d.title}")
        return 0
    if not args.paths:
        print("qustody scan: give at least one PATH (see --help)", file=sys.stderr)
        return 2
    key = os.environ.get(args.fingerprint_key_env, "").encode() if args.fingerprint_key_env else b""
    if args.fingerprint_key_env and not key:
        print(f"qustody scan: ${args.fingerprint_key_env} is empty or unset", file=sys.stderr)
        return 2
    known: baseline.Baseline | None = None
    if args.baseline:
        try:
            known = baseline.load(args.baseline)
        except baseline.BaselineError as e:
            print(f"qustody scan: {e}", file=sys.stderr)
            return 2
        if known.key is None and not key:
            print(
                f"qustody scan: baseline {args.baseline} was written with --fingerprint-key-env;"
                " give the same option",
                file=sys.stderr,
            )
            return 2
        key = key or (known.key or b"")
    elif args.write_baseline and not key:
        key = baseline.new_key()  # kept in the baseline file for later runs
    engine = Engine(
        [d for d in rules.ALL if d.id in wanted], fingerprinter=Fingerprinter(key or None)
    )
    results: list[tuple[str, list[Located]]] = []
    errors: list[tuple[str, str]] = []
    for path in iter_files(args.paths):
        try:
            results.append((str(path), scan_path(engine, path, args.max_size)))
        except (OSError, ValueError) as e:
            errors.append(
                (str(path), str(e) if isinstance(e, ValueError) else e.strerror or type(e).__name__)
            )
    if args.write_baseline:
        if errors:
            for where, message in errors:
                print(f"{where}: ERROR {message}", file=sys.stderr)
            print(
                "qustody scan: baseline not written: some files could not be scanned",
                file=sys.stderr,
            )
            return 2
        written_key = None if args.fingerprint_key_env else key
        count = baseline.write(args.write_baseline, written_key, results)
        print(f"{count} finding(s) recorded in {args.write_baseline}")
        return 0
    if known is not None:
        results = [
            (name, [loc for loc in found if not known.known(name, loc)]) for name, found in results
        ]
    out: TextIO = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout  # noqa: SIM115
    try:
        {"text": write_text, "json": write_json, "sarif": write_sarif}[args.format](
            out, results, errors, engine
        )
    finally:
        if args.output:
            out.close()
    if errors:
        return 2
    return 1 if any(found for _, found in results) else 0


def write_text(
    out: TextIO, results: list[tuple[str, list[Located]]], errors: list[tuple[str, str]], _e: Engine
) -> None:
    total = 0
    for path, found in results:
        for loc in found:
            out.write(f"{path}: {loc.describe()}\n")
            total += 1
    for path, message in errors:
        out.write(f"{path}: ERROR {message}\n")
    out.write(f"{total} finding(s) in {len(results)} file(s) scanned, {len(errors)} error(s)\n")


def write_json(
    out: TextIO, results: list[tuple[str, list[Located]]], errors: list[tuple[str, str]], _e: Engine
) -> None:
    doc = {
        "version": __version__,
        "findings": [{"path": path, **loc.public()} for path, found in results for loc in found],
        "errors": [{"path": path, "error": message} for path, message in errors],
        "scanned": len(results),
    }
    json.dump(doc, out, indent=2)
    out.write("\n")


def write_sarif(
    out: TextIO,
    results: list[tuple[str, list[Located]]],
    errors: list[tuple[str, str]],
    engine: Engine,
) -> None:
    sarif_results: list[dict[str, Any]] = []
    for path, found in results:
        for loc in found:
            location: dict[str, Any] = {
                "physicalLocation": {"artifactLocation": {"uri": Path(path).as_posix()}},
            }
            if loc.cell is None:
                location["physicalLocation"]["region"] = {"startLine": loc.finding.line}
            else:
                location["logicalLocations"] = [
                    {"fullyQualifiedName": loc.pointer, "kind": "notebook-cell"}
                ]
            sarif_results.append(
                {
                    "ruleId": loc.finding.detector,
                    "level": "error",
                    "message": {"text": f"Credential found: {loc.describe()}"},
                    "locations": [location],
                    "partialFingerprints": {"qustody/v1": loc.finding.fingerprint},
                }
            )
    doc = {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "qustody",
                        "version": __version__,
                        "rules": [
                            {"id": d.id, "shortDescription": {"text": d.title}}
                            for d in engine.detectors
                        ],
                    }
                },
                "results": sarif_results,
                "invocations": [
                    {
                        "executionSuccessful": not errors,
                        "toolExecutionNotifications": [
                            {"level": "error", "message": {"text": f"{path}: {message}"}}
                            for path, message in errors
                        ],
                    }
                ],
            }
        ],
    }
    json.dump(doc, out, indent=2)
    out.write("\n")
