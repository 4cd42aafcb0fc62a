"""``qustody course``: check course files, apply them to the hub's courses directory, and
report each course's term.

``apply`` validates the file together with every course already in the directory, shows
what changes (``--dry-run`` stops there) and replaces the file in one step; the hub and the
QPU gateway pick it up on their next reload, without a restart.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from .catalog import (
    SUFFIX,
    Catalog,
    changes,
    check_name,
    course_files,
    load_catalog,
    write_atomically,
)
from .model import Course, CourseError, load_course, parse_course, read_course_bytes, stamp

ENV_DIR = "QUSTODY_COURSES_DIR"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="qustody course",
        description="Course workspaces: one TOML file per course (docs/courses.md).",
    )
    sub = p.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="check course files; print what each one sets")
    check.add_argument("files", nargs="+", type=Path)
    for name, text in (
        ("apply", "check a course file and put it in the courses directory (no hub restart)"),
        ("status", "each course's term: upcoming, active, grace, closed or expired"),
    ):
        sp = sub.add_parser(name, help=text, description=text)
        sp.add_argument(
            "--dir", type=Path, default=os.environ.get(ENV_DIR) or None,
            help=f"the hub's courses directory (default: ${ENV_DIR}; the demo's is "
            "<demo dir>/courses)",
        )
        if name == "apply":
            sp.add_argument("files", nargs="+", type=Path)
            sp.add_argument("--dry-run", action="store_true",
                            help="print what would change and write nothing")
        else:
            sp.add_argument("--at", help="report as at this time (ISO 8601 with a zone), "
                            "e.g. to see what happens at the term's end")
            sp.add_argument("--json", action="store_true", help="one JSON object per course")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "check":
            for path in args.files:
                course, _ = _read(path)
                print(f"{path}: OK, course {course.id} ({course.title})")
                for key, value in course.settings().items():
                    print(f"  {key} = {value!r}")
            return 0
        if args.dir is None:
            raise CourseError(f"no courses directory: give --dir or set ${ENV_DIR}")
        if args.command == "apply":
            return _apply(args.dir, args.files, args.dry_run)
        return _status(load_catalog(args.dir), _at(args.at), args.json)
    except CourseError as e:
        print(f"qustody course: {e}", file=sys.stderr)
        return 1


def _read(path: Path) -> tuple[Course, bytes]:
    """A course file checked: the course and the very bytes that were checked."""
    data = read_course_bytes(path)
    return parse_course(data, str(path)), data


def _apply(directory: Path, files: list[Path], dry_run: bool) -> int:
    planned: list[tuple[Course, bytes]] = []
    for path in files:
        course, data = _read(path)
        if any(c.id == course.id for c, _ in planned):
            raise CourseError(f"{path}: course {course.id} is given twice")
        planned.append((course, data))
    replacing = {course.id + SUFFIX for course, _ in planned}
    for path in course_files(directory):  # the courses that stay must stay valid
        if path.name not in replacing:
            check_name(path, load_course(path))
    changed: list[tuple[Course, bytes]] = []
    for course, data in planned:
        target = directory / (course.id + SUFFIX)
        if not target.exists():
            lines = changes(None, course)
        else:
            try:
                lines = changes(load_course(target), course)
            except CourseError as e:  # the file being fixed
                lines = [f"replaces an invalid file ({e})"]
        if not lines:
            print(f"{course.id}: no change")
            continue
        changed.append((course, data))
        print(f"{course.id}:")
        for line in lines:
            print(f"  {line}")
    if dry_run:
        print(f"dry run: {len(changed)} course(s) would change; nothing was written")
        return 0
    for course, data in changed:
        try:
            write_atomically(directory / (course.id + SUFFIX), data)
        except OSError as e:
            raise CourseError(f"{directory}: cannot write {course.id}{SUFFIX}: {e.strerror}") \
                from None
    print(f"applied: {len(changed)} course(s) changed in {directory} (the hub and the QPU "
          "gateway reload them within their reload interval; the gateway's /api/health says "
          "if it refused them)")
    return 0


def _at(value: str | None) -> float:
    if value is None:
        return time.time()
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise CourseError(f"--at {value!r}: give an ISO 8601 time such as "
                          "2027-02-01T00:00:00Z") from None
    if when.tzinfo is None:
        raise CourseError(f"--at {value!r}: give a time zone, e.g. {value}Z")
    return when.timestamp()


def _status(catalog: Catalog, now: float, as_json: bool) -> int:
    if not catalog.courses and not as_json:
        print("no courses")
    for course in catalog.courses.values():
        t = course.term
        row = {
            "id": course.id,
            "title": course.title,
            "state": t.state(now),
            "start": stamp(t.start),
            "end": stamp(t.end),
            "closes": stamp(t.closes),
            "expires": stamp(t.expires),
            "profile": course.profile or None,
            "qpu_backends": list(course.budget.backends) if course.budget else [],
        }
        if as_json:
            print(json.dumps(row))
            continue
        print(f"{course.id}  {row['state']:<8}  {course.title}")
        print(f"  term {row['start']} .. {row['end']}; servers and QPU jobs until "
              f"{row['closes']}; files kept until {row['expires']}")
        if course.budget:
            print(f"  QPU: {', '.join(course.budget.backends)}"
                  + _limits_text("per student", course.budget.per_student)
                  + _limits_text("course total", course.budget.total))
    return 0


def _limits_text(label: str, limits: Mapping[str, Mapping[str, float]]) -> str:
    parts = [f"{amount:,.0f} {dim}/{period}" for period, dims in sorted(limits.items())
             for dim, amount in sorted(dims.items())]
    return f"; {label} {', '.join(parts)}" if parts else ""
