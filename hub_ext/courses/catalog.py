"""The course catalog: every ``<id>.toml`` in one directory, read and checked together.

A catalog either loads whole or not at all (fail closed): one bad file, a file whose name
is not its id, or two files for one course is an error naming the file. Readers that
reload (the gateway, the hub) keep the last good catalog when a new one fails.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .model import Course, CourseError, parse_course, read_course_bytes
from .roster import SUFFIX as ROSTER_SUFFIX
from .roster import with_roster

SUFFIX = ".toml"
#: More files than any hub has courses: a directory filled by mistake is refused.
MAX_FILES = 2000


@dataclass(frozen=True)
class Catalog:
    courses: Mapping[str, Course] = field(default_factory=dict)
    digest: str = "none"

    def get(self, course_id: str) -> Course | None:
        return self.courses.get(course_id)

    def closed_for(self, groups: list[str] | tuple[str, ...], now: float) -> list[Course]:
        """The courses among ``groups`` whose term has closed."""
        return [c for g in groups if (c := self.courses.get(g)) and not c.term.is_open(now)]


def course_files(directory: Path) -> list[Path]:
    try:
        names = sorted(p for p in directory.iterdir() if p.name.endswith(SUFFIX))
    except FileNotFoundError:
        raise CourseError(f"{directory}: the courses directory does not exist; create it "
                          "(an empty directory means no course files)") from None
    except OSError as e:
        raise CourseError(f"{directory}: cannot list the courses directory: {e.strerror}") \
            from None
    if len(names) > MAX_FILES:
        raise CourseError(f"{directory}: {len(names)} course files, more than {MAX_FILES}")
    return [p for p in names if not p.name.startswith(".")]


def stamp(directory: Path) -> tuple[Any, ...]:
    """Changes when a file (or a CSV roster) is added, removed or rewritten (stat only)."""
    try:
        files = course_files(directory)
        rosters = directory.glob("*" + ROSTER_SUFFIX)
        files += sorted(p for p in rosters if not p.name.startswith("."))
    except (CourseError, OSError):
        return ("unreadable",)
    out = []
    for p in files:
        try:
            st = p.stat()
        except OSError:
            continue
        out.append((p.name, st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(out)


def load_catalog(directory: Path) -> Catalog:
    courses: dict[str, Course] = {}
    digest = hashlib.sha256()
    for path in course_files(directory):
        data = read_course_bytes(path)  # read once: what is parsed is what is hashed
        course = parse_course(data, str(path))
        check_name(path, course)
        course, roster = with_roster(course, directory)
        courses[course.id] = course
        digest.update(path.name.encode() + b"\0" + data + b"\0" + roster + b"\0")
    return Catalog(courses, digest.hexdigest()[:16] if courses else "none")


def check_name(path: Path, course: Course) -> None:
    if path.name != course.id + SUFFIX:
        raise CourseError(f"{path}: id: the file of course {course.id!r} must be named "
                          f"{course.id}{SUFFIX}; rename it")


def changes(old: Course | None, new: Course | None) -> list[str]:
    """What applying ``new`` over ``old`` changes, one line per setting."""
    if old is None and new is None:
        return []
    if old is None:
        assert new is not None
        listed = [f"{k} = {v!r}" for k, v in new.settings().items()
                  if v not in ("", None, []) and not k.startswith("roster.members.")]
        return ["new course", *listed] + (
            [f"roster.members: {len(new.members)} from {new.roster_csv}"] if new.members else []
        )
    if new is None:
        return [f"course {old.id} removed"]
    before, after = old.settings(), new.settings()
    out = []
    for key in sorted(set(before) | set(after)):
        if before.get(key) != after.get(key):
            out.append(f"{key}: {before.get(key, '(unset)')!r} -> {after.get(key, '(unset)')!r}")
    return out


def write_atomically(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` in one step: readers see the old file or the new, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
