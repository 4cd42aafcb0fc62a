"""``qustody course``: check course files, apply them to the hub's courses directory, and
report each course's term.

``apply`` validates the file together with every course already in the directory, shows
what changes (``--dry-run`` stops there) and replaces the file in one step; the hub and the
QPU gateway pick it up on their next reload, without a restart.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..audit.errors import AuditError
from .apply import apply_audited, plan, policy_record, read_course, write
from .catalog import (
    Catalog,
    load_catalog,
)
from .model import (
    USER_NAME,
    Assignment,
    Course,
    CourseError,
    stamp,
)
from .term import Journal, JournalError, status_lines
from .term import plan as term_plan

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
        ("release", "copy an assignment from the course's materials into students' homes"),
        ("collect", "snapshot students' work on an assignment into an archive for instructors"),
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
            sp.add_argument("--actor", default=os.environ.get("USER", "admin"),
                            help="who applies it, for the audit log (default: $USER)")
            sp.add_argument("--audit-log", default=os.environ.get("QUSTODY_AUDIT_LOG", ""),
                            help="the hub's audit log: each change is recorded there as "
                            "policy-changed, or undone (default: $QUSTODY_AUDIT_LOG)")
            sp.add_argument("--audit-key-file",
                            default=os.environ.get("QUSTODY_AUDIT_KEY_FILE", ""),
                            help="its key file (default: $QUSTODY_AUDIT_KEY_FILE)")
        elif name in ("release", "collect"):
            sp.add_argument("course")
            sp.add_argument("assignment")
            sp.add_argument("--student", action="append", required=True, dest="students",
                            help="a student's hub name (repeat for each)")
            sp.add_argument("--image", default=os.environ.get("QUSTODY_IMAGE_DIGEST", ""),
                            help="the servers' image, by digest (default: "
                            "$QUSTODY_IMAGE_DIGEST); no container is ever started")
            sp.add_argument("--home-volume-template",
                            default=os.environ.get("QUSTODY_HOME_VOLUME_TEMPLATE")
                            or "qustody-home-{username}",
                            help="SpawnPolicy.home_volume_template of the hub (default: "
                            "$QUSTODY_HOME_VOLUME_TEMPLATE or qustody-home-{username})")
            sp.add_argument("--run-as", default="1000:1000",
                            help="SpawnPolicy.run_as of the hub: released files' owner")
            sp.add_argument("--archive", type=Path, default=None,
                            help="where collected archives go (default: <dir>/archive)")
            sp.add_argument("--actor", default=os.environ.get("USER", "admin"),
                            help="who does it, for the audit log (default: $USER)")
            sp.add_argument("--audit-log", default=os.environ.get("QUSTODY_AUDIT_LOG", ""),
                            help="the hub's audit log (default: $QUSTODY_AUDIT_LOG)")
            sp.add_argument("--audit-key-file",
                            default=os.environ.get("QUSTODY_AUDIT_KEY_FILE", ""),
                            help="its key file (default: $QUSTODY_AUDIT_KEY_FILE)")
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
                course, _, _ = read_course(path)
                print(f"{path}: OK, course {course.id} ({course.title})")
                for key, value in course.settings().items():
                    print(f"  {key} = {value!r}")
            return 0
        if args.dir is None:
            raise CourseError(f"no courses directory: give --dir or set ${ENV_DIR}")
        if args.command == "apply":
            return _apply(args)
        if args.command in ("release", "collect"):
            return _assignment(args)
        return _status(load_catalog(args.dir), _at(args.at), args.json, Journal(args.dir))
    except CourseError as e:
        print(f"qustody course: {e}", file=sys.stderr)
        return 1


def _apply(args: argparse.Namespace) -> int:
    directory, dry_run = args.dir, args.dry_run
    changed = []
    for change in plan(directory, [read_course(path) for path in args.files]):
        if not change.lines:
            print(f"{change.course.id}: no change")
            continue
        changed.append(change)
        print(f"{change.course.id}:")
        for line in change.lines:
            print(f"  {line}")
    if dry_run:
        print(f"dry run: {len(changed)} course(s) would change; nothing was written")
        return 0
    audit = _audit_log(args) if changed else None
    try:
        for change in changed:
            if audit is None:
                write(directory, change)
                continue
            try:
                apply_audited(directory, change, audit,
                              policy_record(change, args.actor, "qustody course apply"))
            except (AuditError, ValueError) as e:
                raise CourseError(f"{change.course.id}: not applied: the audit record could "
                                  f"not be written ({e}), so the change was undone") from None
    finally:
        if audit is not None:
            audit.close()
    print(f"applied: {len(changed)} course(s) changed in {directory} (the hub and the QPU "
          "gateway reload them within their reload interval; the gateway's /api/health says "
          "if it refused them)")
    return 0


def _audit_log(args: argparse.Namespace) -> Any:
    """The audit log ``apply`` records its changes in; None (said on stderr) without one."""
    if not (args.audit_log and args.audit_key_file):
        print("qustody course: warning: no --audit-log/--audit-key-file (or $QUSTODY_AUDIT_LOG"
              " and $QUSTODY_AUDIT_KEY_FILE): this change is not recorded in the hub's audit "
              "log; the courses API (PUT /services/courses/api/admin/courses/<id>) records "
              "every change", file=sys.stderr)
        return None
    from ..audit.log import AuditLog

    try:
        return AuditLog(path=args.audit_log, key_file=args.audit_key_file)
    except (ValueError, OSError) as e:
        raise CourseError(f"the audit log cannot be opened, so nothing was applied: {e}") \
            from None


def _assignment(args: argparse.Namespace) -> int:
    """``release`` or ``collect``: every one is audited, or it does not happen."""
    from .assignments import Volumes

    course = load_catalog(args.dir).get(args.course)
    if course is None:
        raise CourseError(f"no course {args.course!r} in {args.dir}")
    assignment = course.assignment(args.assignment)
    if assignment is None:
        names = ", ".join(a.name for a in course.assignments) or "none"
        raise CourseError(f"{course.id} has no assignment {args.assignment!r} (its "
                          f"assignments: {names})")
    if not args.image.startswith("sha256:") and "@sha256:" not in args.image:
        raise CourseError("give --image (or $QUSTODY_IMAGE_DIGEST): the servers' image by "
                          "digest, as `make image` prints it")
    if not (args.audit_log and args.audit_key_file):
        raise CourseError("give --audit-log and --audit-key-file (or $QUSTODY_AUDIT_LOG and "
                          "$QUSTODY_AUDIT_KEY_FILE): every release and collect is audited")
    bad = [s for s in args.students if not USER_NAME.fullmatch(s)]
    if bad:
        raise CourseError(f"--student {bad[0][:64]!r} is not a hub user name")
    if not 0 < len(args.actor) <= 256:
        raise CourseError("--actor: say who does it (the audit log records it)")
    try:
        uid, gid = (int(x) for x in args.run_as.split(":"))
    except ValueError:
        raise CourseError(f"--run-as {args.run_as!r}: give uid:gid, e.g. 1000:1000") from None
    from ..volumes import HOME_MOUNT, home_template_error, home_volume_name, materials_overlap_error

    template = args.home_volume_template
    error = home_template_error(template) or materials_overlap_error(
        template, Volumes.materials_prefix)
    if error is not None:
        raise CourseError(f"--home-volume-template {template[:80]!r} {error}")
    import docker

    from ..audit.log import AuditLog

    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as e:
        raise CourseError(f"cannot reach the Docker engine (DOCKER_HOST): {e}") from None
    try:
        audit = AuditLog(path=args.audit_log, key_file=args.audit_key_file)
    except (ValueError, OSError) as e:
        raise CourseError(f"the audit log cannot be opened, so nothing was done: {e}") from None
    volumes = Volumes(client, args.image, HOME_MOUNT,
                      functools.partial(home_volume_name, args.home_volume_template), uid, gid)
    try:
        return _run_assignment(args, audit, volumes, course, assignment)
    except docker.errors.DockerException as e:
        raise CourseError(f"the Docker engine refused: {e}") from None
    finally:
        audit.close()


def _run_assignment(args: argparse.Namespace, audit: Any, volumes: Any, course: Course,
                    assignment: Assignment) -> int:
    from .assignments import collect, release

    if args.command == "release":
        if not any(volumes.has_volume(volumes.home_volume(s)) for s in args.students):
            # release makes a missing home (a student who never started a server), but
            # none at all more often means a template that is not the hub's
            print(f"warning: none of these students has a home volume yet (named by "
                  f"--home-volume-template {args.home_volume_template!r}); if their servers "
                  "have started before, give the hub's SpawnPolicy.home_volume_template",
                  file=sys.stderr)
        report = release(volumes, course, assignment, args.students)
        audit.emit("assignment-released", {
            "actor": args.actor, "course": course.id, "assignment": assignment.name,
            **report.figures(),
        })
        for student in sorted(report.written):
            print(f"{student}: {report.written[student]} file(s) written, "
                  f"{report.kept[student]} kept (already there)")
        for student, why in sorted(report.problems.items()):
            print(f"{student}: NOT released: {why}", file=sys.stderr)
        return 1 if report.problems else 0
    done = collect(volumes, course, assignment, args.students,
                   args.archive or args.dir / "archive")
    audit.emit("assignment-collected", {
        "actor": args.actor, "course": course.id, "assignment": assignment.name,
        **done.figures(),
    })
    for student, entry in sorted(done.manifest["students"].items()):
        late = " LATE" if entry.get("late") else ""
        flagged = f", {len(entry.get('findings', []))} credential finding(s)" \
            if entry.get("findings") else ""
        print(f"{student}: {entry['status']}, {len(entry['files'])} file(s){late}{flagged}")
    print(f"archive: {done.archive} (manifest sha256 {done.manifest_sha256})")
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


def _status(catalog: Catalog, now: float, as_json: bool, journal: Journal) -> int:
    if not catalog.courses and not as_json:
        print("no courses")
    for course in catalog.courses.values():
        try:
            steps = journal.read(course)
        except JournalError as e:  # said for this course; the others are still shown
            print(f"qustody course: {course.id}: {e}", file=sys.stderr)
            steps = {}
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
            "steps": {step.name: steps.get(step.name, {"state": "pending",
                                                      "due": stamp(step.due)})
                      for step in term_plan(course)},
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
        print("  steps (the courses service takes them when due):")
        for line in status_lines(course, steps, now):
            print(f"    {line}")
    return 0


def _limits_text(label: str, limits: Mapping[str, Mapping[str, float]]) -> str:
    parts = [f"{amount:,.0f} {dim}/{period}" for period, dims in sorted(limits.items())
             for dim, amount in sorted(dims.items())]
    return f"; {label} {', '.join(parts)}" if parts else ""
