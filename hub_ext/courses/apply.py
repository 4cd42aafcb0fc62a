"""Applying course files to the hub's courses directory: one plan-then-write for both ways
in, ``qustody course apply FILE`` (cli.py) and the courses API (``PUT
/services/courses/api/admin/courses/<id>``, web.py).

A plan checks each new course (and its CSV roster), refuses a course given twice, checks
that the courses staying in the directory are still valid, and lists what each new file
changes (``catalog.changes``). Writing replaces the roster first and then the course file,
each in one step, so the hub and the gateway (which reload the directory) see the old
course or the new one, never half. Nothing here restarts anything.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .catalog import SUFFIX, changes, check_name, course_files, write_atomically
from .model import Course, CourseError, load_course, parse_course
from .roster import parse_roster, with_roster


@dataclass(frozen=True)
class Change:
    """One course as given, and what it changes (no lines: nothing)."""

    course: Course
    data: bytes  # the course file's bytes, as checked
    roster: bytes  # its CSV roster's bytes (b"" without one)
    lines: tuple[str, ...]
    previous: bytes | None  # the file it replaces (None: a new course)
    previous_roster: bytes | None  # the roster file it replaces (None: none there)

    @property
    def digests(self) -> tuple[str | None, str]:
        """sha256 of the file before and after (the audit record's digests)."""
        def of(data: bytes) -> str:
            return "sha256:" + hashlib.sha256(data).hexdigest()

        return (None if self.previous is None else of(self.previous)), of(self.data)


def course_from_bytes(data: bytes, roster: bytes | None, source: str) -> tuple[Course, bytes]:
    """A course file sent as bytes (the API), with its roster's bytes when it names one;
    CourseError naming the key, the line or the missing part."""
    course = parse_course(data, source)
    if course.roster_csv:
        if roster is None:
            raise CourseError(f"{source}: roster.csv: the course names {course.roster_csv!r}; "
                              "send its CSV (username,role) as \"roster\"")
        return replace(course, members=parse_roster(roster, course.roster_csv)), roster
    if roster:
        raise CourseError(f"{source}: a roster was sent but the course names none; add "
                          f'csv = "{course.id}.roster.csv" under [roster], or send no roster')
    return course, b""


def read_course(path: Path) -> tuple[Course, bytes, bytes]:
    """A course file on disk with its CSV roster beside it: the course and the very bytes
    of the file and of the roster that were checked."""
    from .model import read_course_bytes

    data = read_course_bytes(path)
    course, roster = with_roster(parse_course(data, str(path)), path.parent)
    return course, data, roster


def plan(directory: Path, given: list[tuple[Course, bytes, bytes]]) -> list[Change]:
    """What applying ``given`` to ``directory`` changes, course by course."""
    seen: set[str] = set()
    for course, _, _ in given:
        if course.id in seen:
            raise CourseError(f"course {course.id} is given twice")
        seen.add(course.id)
    replacing = {course_id + SUFFIX for course_id in seen}
    for path in course_files(directory):  # the courses that stay must stay valid
        if path.name not in replacing:
            check_name(path, with_roster(load_course(path), directory)[0])
    out = []
    for course, data, roster in given:
        target = directory / (course.id + SUFFIX)
        previous: bytes | None = None
        if not target.exists():
            lines = changes(None, course)
        else:
            previous = target.read_bytes()
            try:
                lines = changes(with_roster(load_course(target), directory)[0], course)
            except CourseError as e:  # the file being fixed
                lines = [f"replaces an invalid file ({e})"]
        roster_path = directory / course.roster_csv if course.roster_csv else None
        previous_roster = roster_path.read_bytes() \
            if roster_path is not None and roster_path.exists() else None
        out.append(Change(course, data, roster, tuple(lines), previous, previous_roster))
    return out


def write(directory: Path, change: Change) -> None:
    """Put one changed course in place (its roster first: the course file then finds it)."""
    try:
        if change.course.roster_csv:
            write_atomically(directory / change.course.roster_csv, change.roster)
        write_atomically(directory / (change.course.id + SUFFIX), change.data)
    except OSError as e:
        raise CourseError(f"cannot write {change.course.id}{SUFFIX} in the courses directory: "
                          f"{e.strerror}") from None


def undo(directory: Path, change: Change) -> None:
    """Put back what ``write`` replaced (the audit record could not be written): the course
    file first, then its roster."""
    for path, before in (
        (directory / (change.course.id + SUFFIX), change.previous),
        *([(directory / change.course.roster_csv, change.previous_roster)]
          if change.course.roster_csv else []),
    ):
        if before is None:
            path.unlink(missing_ok=True)
        else:
            write_atomically(path, before)


__all__ = ["Change", "course_from_bytes", "plan", "read_course", "undo", "write"]


_KEY = re.compile(r"[A-Za-z0-9_.\-\[\]]{1,128}")


def changed_keys(lines: tuple[str, ...]) -> list[str]:
    """The settings a change names (``profile.name: 'a' -> 'b'`` gives ``profile.name``),
    never their values."""
    keys = []
    for line in lines:
        head = re.split(r"[:= ]", line, maxsplit=1)[0]
        if line == "new course":
            keys.append("new-course")
        elif line.startswith("replaces an invalid file"):
            keys.append("replaces-invalid-file")
        elif _KEY.fullmatch(head):
            keys.append(head)
    return keys[:256]


def policy_record(change: Change, actor: str, via: str, ip: str | None = None) -> dict[str, Any]:
    """The ``policy-changed`` audit record of an applied course change."""
    before, after = change.digests
    return {
        "actor": actor,
        "policy": f"courses.{change.course.id}",
        "changed_keys": changed_keys(change.lines),
        "new_digest": after,
        "summary": f"course {change.course.id}: {len(change.lines)} change(s) through "
                   f"{via}"[:512],
        **({"previous_digest": before} if before else {}),
        **({"ip": ip} if ip else {}),
    }


def apply_audited(directory: Path, change: Change, audit: Any, record: dict[str, Any]) -> None:
    """Write the course, then its audit record; undo the write if the record fails (the
    audit error is raised): no course changes unrecorded."""
    write(directory, change)
    try:
        audit.emit("policy-changed", record)
    except BaseException:
        undo(directory, change)
        raise
