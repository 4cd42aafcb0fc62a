"""A course file: one TOML file per course, checked key by key.

Every error names the file, the key and the fix. What a file may hold (docs/courses.md):

- ``id`` (the IdP course group, e.g. ``course-101``) and ``title``;
- ``[term]``: ``start``, ``end`` (TOML date-times with a time zone), ``grace_days`` after
  the end while students may still start servers and submit, ``retention_days`` after
  that while the course's files are kept;
- ``[roster]``: ``group``, the IdP group whose members are the course's (their roles
  come from the IdP: instructor, assistant, observer, student), and optionally ``csv``,
  ``<id>.roster.csv`` beside the file: more members by user name, each with their role in
  this course (hub_ext.courses.roster);
- ``[profile]``: ``name``, the hub profile (``SpawnPolicy.profiles``) the course's
  instructors may start their students' servers with;
- ``[materials]``: ``volume``, a Docker volume mounted read-only into the servers of the
  course's students, instructors and TAs; optionally ``assignments_volume``, the staff's
  own volume (never mounted for students) that assignments are released from;
- ``[[assignments]]``: ``name``, ``release`` and ``due``; the files are
  ``assignments/<name>/`` in ``assignments_volume``, else in ``volume`` (where students
  can read them before their release; hub_ext.courses.assignments releases them);
- ``[secrets]``: ``names`` of the course's shared secrets (namespace ``course:<id>``,
  values stored with ``qustody secrets put``), delivered to the members ``to`` names
  (students, instructors, assistants) while the term is open;
- ``[qpu]``: the course's QPU budget: ``backends``, ``purpose``, ``per_student`` and
  ``total`` limits by period (``day``, ``month``) and dimension (``jobs``, ``shots``,
  ``seconds``), and ``[[qpu.reservations]]`` (lab hours).

This module knows nothing of the hub or the gateway; each reads what it enforces.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import sys
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..volumes import VOLUME

#: What a course id may look like: an IdP course group name (hub_ext.identity.policy).
COURSE_ID = re.compile(r"^[a-z0-9][a-z0-9\-_.]{0,60}[a-z0-9]$")
BACKEND = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
PERIODS = ("day", "month")
DIMENSIONS = ("jobs", "shots", "seconds")
#: A course file is a page of settings; anything larger is a mistake (or an attack).
MAX_BYTES = 256 * 1024
DAY = 86400.0

KEYS = ("id", "title", "term", "roster", "profile", "materials", "assignments", "qpu",
        "secrets")
#: What a course file cannot hold yet: named, so the error says so.
NOT_YET: tuple[str, ...] = ()
#: A secret's name as the store and ``get_secret`` know it (hub_ext.secrets.model.NAME).
SECRET_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
#: Who of a course's members its shared secrets may go to (their hub groups' suffixes).
SECRET_MEMBERS = ("students", "instructors", "assistants")
#: A hub user name as the course tools accept it (also a path part in collected archives).
USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9@._\-]{0,254}")
#: An assignment's name: also a directory name in the materials and in students' homes.
ASSIGNMENT = re.compile(r"[a-z0-9][a-z0-9_\-]{0,40}")


def materials_ok(prefix: str, volume: str) -> bool:
    """Whether ``volume`` may be a course's materials: it has the hub's materials prefix
    (``SpawnPolicy.materials_volume_prefix``), so a course file cannot name a user's home."""
    return bool(prefix) and volume.startswith(prefix) and volume != prefix


class CourseError(ValueError):
    """A course file is invalid; the message names the file, the key and the fix."""


@dataclass(frozen=True)
class Term:
    start: float
    end: float
    grace_days: float = 7.0
    retention_days: float = 180.0

    @property
    def closes(self) -> float:
        """When servers and submissions stop: the end plus the grace."""
        return self.end + self.grace_days * DAY

    @property
    def expires(self) -> float:
        """When the course's kept files may be deleted."""
        return self.closes + self.retention_days * DAY

    def state(self, now: float) -> str:
        """``upcoming``, ``active``, ``grace`` (ended, still open), ``closed`` or
        ``expired`` (past retention)."""
        if now < self.start:
            return "upcoming"
        if now < self.end:
            return "active"
        if now < self.closes:
            return "grace"
        return "closed" if now < self.expires else "expired"

    def is_open(self, now: float) -> bool:
        """Whether students may start servers and submit: from the start until it closes.
        (Before the start, too: instructors and students prepare.)"""
        return now < self.closes


@dataclass(frozen=True)
class Reservation:
    backend: str
    start: float
    end: float
    note: str = ""


@dataclass(frozen=True)
class Assignment:
    name: str
    release: float
    due: float


@dataclass(frozen=True)
class Budget:
    """The course's QPU budget; limits are period -> dimension -> amount."""

    backends: tuple[str, ...] = ()
    purpose: str = ""
    per_student: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    total: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    reservations: tuple[Reservation, ...] = ()


@dataclass(frozen=True)
class Course:
    id: str
    title: str
    term: Term
    group: str
    profile: str = ""
    budget: Budget | None = None
    source: str = ""
    materials: str = ""  # a Docker volume, mounted read-only
    #: the staff's volume assignments are released from (students never see it), or none
    assignments_volume: str = ""
    assignments: tuple[Assignment, ...] = ()
    roster_csv: str = ""  # ``<id>.roster.csv`` beside the course file, or none
    #: names of the ``course:<id>`` secrets its members receive while the term is open
    secrets: tuple[str, ...] = ()
    secrets_to: tuple[str, ...] = SECRET_MEMBERS
    #: user name -> role in this course, from the CSV roster (filled by the catalog)
    members: Mapping[str, str] = field(default_factory=dict)

    def assignment(self, name: str) -> Assignment | None:
        return next((a for a in self.assignments if a.name == name), None)

    @property
    def assignments_from(self) -> str:
        """The volume whose ``assignments/<name>/`` is released."""
        return self.assignments_volume or self.materials

    def settings(self) -> dict[str, Any]:
        """Flat ``key: value`` view (what ``qustody course apply --dry-run`` compares)."""
        out: dict[str, Any] = {
            "title": self.title,
            "term.start": stamp(self.term.start),
            "term.end": stamp(self.term.end),
            "term.grace_days": self.term.grace_days,
            "term.retention_days": self.term.retention_days,
            "roster.group": self.group,
            "roster.csv": self.roster_csv,
            "profile.name": self.profile,
            "materials.volume": self.materials,
            "materials.assignments_volume": self.assignments_volume,
            "secrets.names": list(self.secrets),
            "secrets.to": list(self.secrets_to) if self.secrets else [],
        }
        for user, role in sorted(self.members.items()):
            out[f"roster.members.{user}"] = role
        for i, a in enumerate(self.assignments):
            out[f"assignments[{i}]"] = f"{a.name} released {stamp(a.release)} due {stamp(a.due)}"
        b = self.budget
        if b is not None:
            out["qpu.backends"] = list(b.backends)
            out["qpu.purpose"] = b.purpose
            for part, limits in (("per_student", b.per_student), ("total", b.total)):
                for period, dims in sorted(limits.items()):
                    for dim, amount in sorted(dims.items()):
                        out[f"qpu.{part}.{period}.{dim}"] = amount
            for i, r in enumerate(b.reservations):
                out[f"qpu.reservations[{i}]"] = (
                    f"{r.backend} {stamp(r.start)}..{stamp(r.end)} {r.note}".rstrip()
                )
        return out


def stamp(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- checks ----------------------------------------------------------------------------------


class _Checker:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, message: str) -> CourseError:
        return CourseError(f"{self.source}: {key}: {message}")

    def table(self, value: Any, key: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(key, f"must be a table ([{key}]), got {_kind(value)}")
        return value

    def keys(self, table: Mapping[str, Any], allowed: Sequence[str], key: str) -> None:
        for k in table:
            if k in NOT_YET and key == "(top level)":
                raise self.fail(
                    k, f"course files cannot hold {k} in this version; remove the key "
                    "(docs/courses.md lists what a course file holds)",
                )
        unknown = sorted(set(table) - set(allowed))
        if unknown:
            raise self.fail(
                key, f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(allowed)} "
                "(check the spelling against docs/courses.md)",
            )

    def text(self, value: Any, key: str, *, pattern: re.Pattern[str] | None = None,
             limit: int = 200, example: str = "") -> str:
        if not isinstance(value, str) or not value.strip() or len(value) > limit:
            raise self.fail(key, f"must be a non-empty string of at most {limit} characters"
                            + (f", e.g. {example!r}" if example else "")
                            + f"; got {_shown(value)}")
        if pattern is not None and not pattern.fullmatch(value):
            raise self.fail(key, f"{_shown(value)} is not a valid name"
                            + (f"; write it like {example!r}" if example else ""))
        return value

    def time(self, value: Any, key: str) -> float:
        if isinstance(value, dt.datetime) and value.tzinfo is not None:
            if not 1970 <= value.year <= 2999:
                raise self.fail(key, f"{value.isoformat()} is not a plausible date (years "
                                "1970 to 2999)")
            return value.timestamp()
        if isinstance(value, dt.datetime):
            raise self.fail(key, "give a time zone, e.g. 2027-01-31T23:59:00Z")
        if isinstance(value, dt.date):
            raise self.fail(key, f"give a time and a time zone, e.g. {value}T00:00:00Z")
        raise self.fail(key, f"must be a TOML date-time such as 2027-01-31T23:59:00Z, got "
                        f"{_shown(value)}")

    def number(self, value: Any, key: str, *, integer: bool = False,
               maximum: float = 1e12) -> float:
        ok = isinstance(value, int) if integer else isinstance(value, int | float)
        # the range test alone: it refuses NaN and infinities, and never turns a huge
        # integer into a float (math.isfinite(10**400) raises OverflowError)
        if not ok or isinstance(value, bool) or not 0 <= value <= maximum:
            kind = "a whole number" if integer else "a number"
            raise self.fail(key, f"must be {kind} from 0 to {maximum:g}, got {_shown(value)}")
        return float(value) if not integer else int(value)

    def limits(self, value: Any, key: str) -> dict[str, dict[str, float]]:
        t = self.table(value, key)
        self.keys(t, PERIODS, key)
        out: dict[str, dict[str, float]] = {}
        for period, dims in t.items():
            where = f"{key}.{period}"
            d = self.table(dims, where)
            self.keys(d, DIMENSIONS, where)
            out[period] = {
                dim: self.number(v, f"{where}.{dim}", integer=dim != "seconds")
                for dim, v in d.items()
            }
        return out


def _kind(value: Any) -> str:
    names: dict[type, str] = {dict: "a table", list: "a list", str: "a string"}
    return names.get(type(value), type(value).__name__)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def parse_course(data: bytes | str, source: str = "course") -> Course:
    """Parse and check one course file; raise ``CourseError`` naming the key and the fix."""
    if isinstance(data, bytes):
        if len(data) > MAX_BYTES:
            raise CourseError(f"{source}: the file is {len(data):,} bytes; a course file is "
                              f"at most {MAX_BYTES:,}")
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise CourseError(f"{source}: not UTF-8 text (byte {e.start}); save the file as "
                              "UTF-8") from None
    try:
        doc = tomllib.loads(data)
    except tomllib.TOMLDecodeError as e:
        raise CourseError(f"{source}: not valid TOML: {e}") from None
    except ValueError:  # tomllib's int() of a number past Python's digit limit
        raise CourseError(f"{source}: not valid TOML: a number of more than "
                          f"{sys.get_int_max_str_digits():,} digits") from None
    c = _Checker(source)
    c.keys(doc, KEYS, "(top level)")
    for required in ("id", "title", "term", "roster"):
        if required not in doc:
            raise c.fail(required, "missing; docs/courses.md has a complete example")
    course_id = c.text(doc["id"], "id", pattern=COURSE_ID, limit=62, example="course-101")
    title = c.text(doc["title"], "title", example="Introduction to Quantum Computing")

    t = c.table(doc["term"], "term")
    c.keys(t, ("start", "end", "grace_days", "retention_days"), "term")
    for required in ("start", "end"):
        if required not in t:
            raise c.fail(f"term.{required}", "missing: when the term starts and ends")
    term = Term(
        start=c.time(t["start"], "term.start"),
        end=c.time(t["end"], "term.end"),
        grace_days=float(c.number(t.get("grace_days", 7), "term.grace_days", maximum=365)),
        retention_days=float(
            c.number(t.get("retention_days", 180), "term.retention_days", maximum=3650)
        ),
    )
    if term.end <= term.start:
        raise c.fail("term.end", f"{stamp(term.end)} is not after term.start "
                     f"({stamp(term.start)}); fix the dates")

    r = c.table(doc["roster"], "roster")
    c.keys(r, ("group", "csv"), "roster")
    if "group" not in r:
        raise c.fail("roster.group", f"missing: the IdP group of the course, e.g. {course_id!r}")
    group = c.text(r["group"], "roster.group", pattern=COURSE_ID, limit=62, example=course_id)
    if group != course_id:
        raise c.fail("roster.group", f"{group!r} is not the course id {course_id!r}: the "
                     "course is its IdP group; rename the file's id or the group")

    roster_csv = ""
    if "csv" in r:
        roster_csv = c.text(r["csv"], "roster.csv", limit=80, example=f"{course_id}.roster.csv")
        if roster_csv != f"{course_id}.roster.csv":
            raise c.fail("roster.csv", f"{roster_csv!r}: name the roster "
                         f"'{course_id}.roster.csv' and keep it beside the course file")

    profile = ""
    if "profile" in doc:
        p = c.table(doc["profile"], "profile")
        c.keys(p, ("name",), "profile")
        if "name" not in p:
            raise c.fail("profile.name", "missing: a hub profile name, e.g. 'student'")
        profile = c.text(p["name"], "profile.name", limit=64, example="student")

    materials, staff = _materials(c, doc["materials"], course_id) \
        if "materials" in doc else ("", "")
    assignments = _assignments(c, doc.get("assignments", []), materials)
    budget = _budget(c, doc["qpu"]) if "qpu" in doc else None
    names, to = _secrets(c, doc["secrets"]) if "secrets" in doc else ((), SECRET_MEMBERS)
    return Course(course_id, title, term, group, profile, budget, source, materials,
                  assignments_volume=staff, assignments=assignments, roster_csv=roster_csv,
                  secrets=names, secrets_to=to)


def _materials(c: _Checker, value: Any, course_id: str) -> tuple[str, str]:
    """``[materials]``: ``volume`` (students, instructors and TAs see it) and, optionally,
    ``assignments_volume`` (staff only: unreleased assignments and solutions)."""
    m = c.table(value, "materials")
    c.keys(m, ("volume", "assignments_volume"), "materials")
    if "volume" not in m:
        raise c.fail("materials.volume", "missing: the Docker volume that holds them")
    volume = c.text(m["volume"], "materials.volume", pattern=VOLUME, limit=128,
                    example=f"qustody-materials-{course_id}")
    if "assignments_volume" not in m:
        return volume, ""
    example = f"qustody-materials-{course_id}-staff"
    staff = c.text(m["assignments_volume"], "materials.assignments_volume", pattern=VOLUME,
                   limit=128, example=example)
    if staff == volume:
        # the point of it is that students never see it
        raise c.fail("materials.assignments_volume", f"{staff!r} is materials.volume, which "
                     f"students can read; name a volume of its own, e.g. {example!r}")
    return volume, staff


def _secrets(c: _Checker, value: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``[secrets]``: ``names`` of the course's own secrets (namespace ``course:<id>``,
    stored with ``qustody secrets put``; never a value here) and ``to`` whom of its
    members they go (default: students, instructors and assistants)."""
    t = c.table(value, "secrets")
    c.keys(t, ("names", "to"), "secrets")
    names = t.get("names")
    if not isinstance(names, list) or not 0 < len(names) <= 64:
        raise c.fail("secrets.names", "must list 1 to 64 secret names, e.g. "
                     "['IBM_QUANTUM_TOKEN'] (the values are stored with `qustody secrets put "
                     "course:<id> NAME ...`, never in this file)")
    for i, name in enumerate(names):
        c.text(name, f"secrets.names[{i}]", pattern=SECRET_NAME, limit=128,
               example="IBM_QUANTUM_TOKEN")
    to = t.get("to", list(SECRET_MEMBERS))
    if not isinstance(to, list) or not to or any(k not in SECRET_MEMBERS for k in to):
        raise c.fail("secrets.to", f"must list some of {list(SECRET_MEMBERS)}; got "
                     f"{_shown(to)}")
    return tuple(dict.fromkeys(names)), tuple(dict.fromkeys(to))


def _assignments(c: _Checker, value: Any, materials: str) -> tuple[Assignment, ...]:
    if not isinstance(value, list):
        raise c.fail("assignments", "must be an array of tables ([[assignments]])")
    if value and not materials:
        raise c.fail("assignments", "need [materials] volume: an assignment's files are "
                     "assignments/<name>/ in the course's materials")
    out: list[Assignment] = []
    for i, item in enumerate(value):
        where = f"assignments[{i}]"
        t = c.table(item, where)
        c.keys(t, ("name", "release", "due"), where)
        for required in ("name", "release", "due"):
            if required not in t:
                raise c.fail(f"{where}.{required}", "missing")
        a = Assignment(
            name=c.text(t["name"], f"{where}.name", pattern=ASSIGNMENT, limit=41, example="hw1"),
            release=c.time(t["release"], f"{where}.release"),
            due=c.time(t["due"], f"{where}.due"),
        )
        if a.due <= a.release:
            raise c.fail(f"{where}.due", "must be after its release")
        if any(o.name == a.name for o in out):
            raise c.fail(f"{where}.name", f"{a.name!r} is used twice; names must differ")
        out.append(a)
    return tuple(out)


def _budget(c: _Checker, value: Any) -> Budget:
    q = c.table(value, "qpu")
    c.keys(q, ("backends", "purpose", "per_student", "total", "reservations"), "qpu")
    backends = q.get("backends", [])
    if not isinstance(backends, list) or not backends:
        raise c.fail("qpu.backends", "must list the backends the course may use, e.g. "
                     "[\"aer_simulator\"]")
    names = tuple(c.text(b, "qpu.backends", pattern=BACKEND, limit=64, example="aer_simulator")
                  for b in backends)
    purpose = c.text(q["purpose"], "qpu.purpose", limit=64) if "purpose" in q else ""
    raw = q.get("reservations", [])
    if not isinstance(raw, list):
        raise c.fail("qpu.reservations", "must be an array of tables ([[qpu.reservations]])")
    reservations: list[Reservation] = []
    for i, item in enumerate(raw):
        where = f"qpu.reservations[{i}]"
        res_t = c.table(item, where)
        c.keys(res_t, ("backend", "start", "end", "note"), where)
        for required in ("backend", "start", "end"):
            if required not in res_t:
                raise c.fail(f"{where}.{required}", "missing")
        res = Reservation(
            backend=c.text(res_t["backend"], f"{where}.backend", pattern=BACKEND, limit=64),
            start=c.time(res_t["start"], f"{where}.start"),
            end=c.time(res_t["end"], f"{where}.end"),
            note=c.text(res_t["note"], f"{where}.note") if "note" in res_t else "",
        )
        if res.backend not in names:
            raise c.fail(f"{where}.backend", f"{res.backend!r} is not in qpu.backends "
                         f"{list(names)}")
        if res.end <= res.start:
            raise c.fail(f"{where}.end", "must be after its start")
        for j, other in enumerate(reservations):
            if other.backend == res.backend and other.start < res.end and res.start < other.end:
                raise c.fail(where, f"overlaps qpu.reservations[{j}] on {res.backend!r}")
        reservations.append(res)
    return Budget(
        backends=names,
        purpose=purpose,
        per_student=c.limits(q.get("per_student", {}), "qpu.per_student"),
        total=c.limits(q.get("total", {}), "qpu.total"),
        reservations=tuple(reservations),
    )


def read_course_bytes(path: Path) -> bytes:
    """A course file's bytes (at most ``MAX_BYTES``); CourseError if unreadable or larger."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > MAX_BYTES:
                raise CourseError(f"{path}: the file is {size:,} bytes; a course file is at "
                                  f"most {MAX_BYTES:,}")
            return f.read(MAX_BYTES + 1)
    except OSError as e:
        raise CourseError(f"{path}: cannot read the course file: {e.strerror}") from None


def load_course(path: Path) -> Course:
    return parse_course(read_course_bytes(path), str(path))
