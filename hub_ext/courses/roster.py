"""A course's CSV roster: more members than its IdP group, each with a role in the course.

``<id>.roster.csv`` beside the course file (``[roster] csv = "<id>.roster.csv"``)::

    username,role
    sam,student
    tina,assistant
    # comments and blank lines are skipped
    otto,observer

Roles: ``student``, ``instructor``, ``assistant`` (a TA) and ``observer``. A listed user
joins the course as if in its IdP group; a staff role holds for this course only. The
roster adds nothing to who may sign in (that still takes a role from an IdP group), and it
is the course's, kept by whoever may write the hub's courses directory (an admin).
"""

from __future__ import annotations

import csv
import io
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path

from .model import USER_NAME, Course, CourseError

ROLES = ("student", "instructor", "assistant", "observer")
MAX_BYTES = 2 * 1024 * 1024
MAX_ROWS = 50_000
SUFFIX = ".roster.csv"


def parse_roster(data: bytes, source: str) -> dict[str, str]:
    """``{user: role}``; CourseError naming the line and the fix."""
    if len(data) > MAX_BYTES:
        raise CourseError(f"{source}: {len(data):,} bytes; a roster is at most {MAX_BYTES:,}")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise CourseError(f"{source}: not UTF-8 text (byte {e.start}); save it as UTF-8") \
            from None
    members: dict[str, str] = {}
    header_seen = False
    for number, row in enumerate(_rows(text, source), start=1):
        cells = [cell.strip() for cell in row]
        if not cells or cells == [""] or cells[0].startswith("#"):
            continue
        if not header_seen:
            if [cell.lower() for cell in cells] != ["username", "role"]:
                raise CourseError(f"{source}: line {number}: the first line must be the "
                                  "header 'username,role'")
            header_seen = True
            continue
        if len(cells) != 2:
            raise CourseError(f"{source}: line {number}: {len(cells)} fields; each line is "
                              "'username,role'")
        user, role = cells
        if not USER_NAME.fullmatch(user):
            raise CourseError(f"{source}: line {number}: {user[:64]!r} is not a hub user name")
        if user != user.lower():  # the hub lowercases names: this line would never match
            raise CourseError(f"{source}: line {number}: {user[:64]!r}: hub user names are "
                              f"lowercase; write {user.lower()[:64]!r}")
        if role not in ROLES:
            raise CourseError(f"{source}: line {number}: role {role[:32]!r}; use one of "
                              f"{', '.join(ROLES)}")
        if user in members:
            raise CourseError(f"{source}: line {number}: {user} is listed twice; keep one line")
        if len(members) >= MAX_ROWS:
            raise CourseError(f"{source}: more than {MAX_ROWS:,} members")
        members[user] = role
    if not header_seen:
        raise CourseError(f"{source}: empty; the first line must be the header 'username,role'")
    return members


def _rows(text: str, source: str) -> Iterator[list[str]]:
    """The CSV's rows; CourseError naming a line csv cannot read (a field over csv's
    128 KiB limit)."""
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        yield from reader
    except csv.Error as e:
        raise CourseError(f"{source}: line {reader.line_num}: not a CSV line ({e}); each "
                          "line is 'username,role'") from None


def read_roster_bytes(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size > MAX_BYTES:
                raise CourseError(f"{path}: larger than {MAX_BYTES:,} bytes; a roster is at "
                                  "most that")
            return f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise CourseError(f"{path}: roster.csv names this file, which does not exist; put "
                          "the roster beside the course file") from None
    except OSError as e:
        raise CourseError(f"{path}: cannot read the roster: {e.strerror}") from None


def with_roster(course: Course, directory: Path) -> tuple[Course, bytes]:
    """The course with its CSV roster read from ``directory`` (and the roster's bytes)."""
    if not course.roster_csv:
        return course, b""
    path = directory / course.roster_csv
    data = read_roster_bytes(path)
    return replace(course, members=parse_roster(data, str(path))), data


def roster_lookup(current: Callable[[], Mapping[str, Course]]) -> Callable[[str], dict[str, str]]:
    """``(username) -> {course: role}`` over the courses ``current()`` returns (the hub's
    live catalog), indexed once per catalog."""
    lock = threading.Lock()
    cache: dict[str, object] = {"key": None, "index": {}}

    def lookup(username: str) -> dict[str, str]:
        courses = current()
        with lock:
            if cache["key"] is not courses:
                index: dict[str, dict[str, str]] = {}
                for course in courses.values():
                    for user, role in course.members.items():
                        index.setdefault(user, {})[course.id] = role
                cache["key"], cache["index"] = courses, index
            found = cache["index"]
        assert isinstance(found, dict)
        return dict(found.get(username, {}))

    return lookup
