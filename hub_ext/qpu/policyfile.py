"""The policy file: projects, tags, quotas, rate limits, tiers, reservations, sensitivity.

A TOML file (see ``docs/qpu.md`` for a full example) read at start-up and re-read when it
changes. Every key is checked: an unknown key, a wrong type or a reference to a backend
or project that does not exist is an error naming the key and how to fix it. A file that
fails the checks at start-up stops the gateway; one that fails on reload is ignored and
the previous policy stays in force (reported by ``/api/health``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..courses.catalog import load_catalog
from ..courses.model import Course, CourseError
from .projects import ROLES, IdentityProjects, Project, Registry

CLASSES = ("simulator", "hardware")
PERIODS = ("day", "month")
DIMENSIONS = ("jobs", "shots", "seconds")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")


class PolicyError(ValueError):
    """The policy file is invalid; the message names the key and the fix."""


@dataclass(frozen=True)
class Limits:
    jobs: int | None = None
    shots: int | None = None
    seconds: float | None = None

    def get(self, dimension: str) -> float | None:
        value: float | None = getattr(self, dimension)
        return value


@dataclass(frozen=True)
class Quota:
    """Limits of one subject (a user or a project) on one backend class."""

    day: Limits = field(default_factory=Limits)
    month: Limits = field(default_factory=Limits)
    soft: float = 0.8

    def limits(self, period: str) -> Limits:
        return self.day if period == "day" else self.month


@dataclass(frozen=True)
class RateLimit:
    rate: float
    burst: int
    max_delay: float


@dataclass(frozen=True)
class Reservation:
    backend: str
    project: str
    start: float
    end: float
    note: str = ""

    def active(self, now: float) -> bool:
        return self.start <= now < self.end


@dataclass(frozen=True)
class RunLimits:
    """Caps on one job's run: circuit width, the simulation's memory, wall-clock time.

    ``memory_mb`` binds jobs that are simulated here (Aer, emulated devices: they run in
    a sandbox process whose address space is capped at its start-up size plus this);
    ``seconds`` binds every run (a simulation is killed, a provider driver is cancelled).
    """

    max_qubits: int
    memory_mb: int
    seconds: float


#: Run limits when the policy gives none: small enough that one job cannot take a
#: shared host down (a 24-qubit statevector is 256 MiB), large enough for teaching.
DEFAULT_RUN_LIMITS = {
    "simulator": RunLimits(max_qubits=24, memory_mb=1024, seconds=120.0),
    "hardware": RunLimits(max_qubits=1000, memory_mb=1024, seconds=3600.0),
}
RUN_LIMIT_KEYS = ("max_qubits", "memory_mb", "seconds")


@dataclass(frozen=True)
class SensitivityRule:
    backends: tuple[str, ...]
    route_to: str | None = None

    def allows(self, backend: str) -> bool:
        return "*" in self.backends or backend in self.backends


@dataclass(frozen=True)
class Policy:
    projects: Registry
    purposes: tuple[str, ...]
    max_labels: int
    max_label_length: int
    tiers: Mapping[str, int]
    default_tier: str
    levels: tuple[str, ...]
    sensitivity: Mapping[str, SensitivityRule]
    user_quota: Mapping[str, Quota]
    project_quota: Mapping[str, Quota]
    user_overrides: Mapping[str, Mapping[str, Quota]]
    project_overrides: Mapping[str, Mapping[str, Quota]]
    rate_limits: Mapping[str, RateLimit]
    reservations: tuple[Reservation, ...]
    half_life: float
    digest: str
    #: by backend class, then per backend (a backend's entry is complete: the class's
    #: values with the backend's overrides applied)
    run_limits: Mapping[str, RunLimits] = field(
        default_factory=lambda: dict(DEFAULT_RUN_LIMITS)
    )
    backend_run_limits: Mapping[str, RunLimits] = field(default_factory=dict)
    #: per project (courses: ``qpu.per_student``), each member's own limits in it
    member_overrides: Mapping[str, Mapping[str, Quota]] = field(default_factory=dict)
    #: the course file each course project's budget comes from (for refusal messages)
    course_files: Mapping[str, str] = field(default_factory=dict)

    def run_limits_for(self, backend: str, backend_class: str) -> RunLimits:
        if backend in self.backend_run_limits:
            return self.backend_run_limits[backend]
        return self.run_limits.get(backend_class, DEFAULT_RUN_LIMITS["simulator"])

    def quota_for(self, kind: str, subject: str, backend_class: str) -> Quota:
        if kind == "member":  # subject: "<project>/<user>"
            project = subject.split("/", 1)[0]
            return self.member_overrides.get(project, {}).get(backend_class, Quota())
        overrides = self.user_overrides if kind == "user" else self.project_overrides
        defaults = self.user_quota if kind == "user" else self.project_quota
        by_class = overrides.get(subject, {})
        if backend_class in by_class:
            return by_class[backend_class]
        return defaults.get(backend_class, Quota())

    def level_rank(self, level: str) -> int:
        return self.levels.index(level)

    def reservation_at(self, backend: str, now: float) -> Reservation | None:
        for r in self.reservations:
            if r.backend == backend and r.active(now):
                return r
        return None

    def next_reservation(self, backend: str, now: float) -> Reservation | None:
        upcoming = [r for r in self.reservations if r.backend == backend and r.start > now]
        return min(upcoming, key=lambda r: r.start) if upcoming else None


# -- parsing ---------------------------------------------------------------------------------


def _table(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PolicyError(f"{where} must be a table, got {type(value).__name__}")
    return value


def _keys(table: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise PolicyError(
            f"{where}: unknown key(s) {unknown}; allowed: {', '.join(allowed)} "
            "(check the spelling against docs/qpu.md)"
        )


def _name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not NAME.fullmatch(value):
        raise PolicyError(
            f"{where}: {value!r} is not a valid name (1-64 letters, digits, '.', '_', '-')"
        )
    return value


def _str_list(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PolicyError(f"{where} must be a list of strings")
    return tuple(value)


def _number(value: Any, where: str, *, integer: bool = False, minimum: float = 0) -> Any:
    ok = isinstance(value, int) if integer else isinstance(value, int | float)
    if not ok or isinstance(value, bool) or not math.isfinite(value) or value < minimum:
        kind = "an integer" if integer else "a number"
        raise PolicyError(f"{where} must be {kind} >= {minimum}, got {value!r}")
    return value


def _time(value: Any, where: str) -> float:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise PolicyError(f"{where}: give a time zone, e.g. 2025-01-31T09:00:00Z")
        return value.timestamp()
    raise PolicyError(f"{where} must be a TOML date-time with a time zone, got {value!r}")


def _limits(value: Any, where: str) -> Limits:
    t = _table(value, where)
    _keys(t, DIMENSIONS, where)
    return Limits(
        jobs=_number(t["jobs"], f"{where}.jobs", integer=True) if "jobs" in t else None,
        shots=_number(t["shots"], f"{where}.shots", integer=True) if "shots" in t else None,
        seconds=float(_number(t["seconds"], f"{where}.seconds")) if "seconds" in t else None,
    )


def _quota(value: Any, where: str) -> Quota:
    t = _table(value, where)
    _keys(t, ("day", "month", "soft"), where)
    soft = float(_number(t.get("soft", 0.8), f"{where}.soft"))
    if soft > 1:
        raise PolicyError(f"{where}.soft is a fraction of the hard limit: between 0 and 1")
    return Quota(
        day=_limits(t.get("day", {}), f"{where}.day"),
        month=_limits(t.get("month", {}), f"{where}.month"),
        soft=soft,
    )


def _by_class(value: Any, where: str) -> dict[str, Quota]:
    t = _table(value, where)
    _keys(t, CLASSES, where)
    return {c: _quota(q, f"{where}.{c}") for c, q in t.items()}


def parse(
    text: str,
    backends: Mapping[str, str],
    source: str = "policy",
    courses: Mapping[str, Course] | None = None,
) -> Policy:
    """Parse and check a policy. ``backends`` maps each configured backend to its class;
    ``courses`` (hub_ext.courses) add each course's budget and term (``_add_courses``)."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise PolicyError(f"{source} is not valid TOML: {e}") from None
    _keys(
        doc,
        (
            "tags", "priorities", "sensitivity", "projects", "quotas", "rate_limits",
            "reservations", "fair_share", "run_limits", "identity",
        ),
        source,
    )

    def known_backend(name: Any, where: str) -> str:
        if name != "*" and name not in backends:
            raise PolicyError(
                f"{where}: unknown backend {name!r}; configured backends: "
                f"{', '.join(sorted(backends)) or 'none'} (QpuGateway.backends)"
            )
        return str(name)

    tags = _table(doc.get("tags", {}), "tags")
    _keys(tags, ("purposes", "max_labels", "max_label_length"), "tags")
    purposes = _str_list(tags.get("purposes", ["research"]), "tags.purposes")
    if not purposes:
        raise PolicyError("tags.purposes is empty: list the purposes a job may declare")

    prio = _table(doc.get("priorities", {}), "priorities")
    _keys(prio, ("tiers", "default"), "priorities")
    tiers_t = _table(prio.get("tiers", {"normal": 10}), "priorities.tiers")
    tiers = {
        _name(k, "priorities.tiers"): _number(v, f"priorities.tiers.{k}", integer=True)
        for k, v in tiers_t.items()
    }
    default_tier = prio.get("default", "normal")
    if default_tier not in tiers:
        raise PolicyError(
            f"priorities.default = {default_tier!r} is not one of the tiers {sorted(tiers)}"
        )

    sens = _table(doc.get("sensitivity", {}), "sensitivity")
    _keys(sens, ("levels", "rules"), "sensitivity")
    levels = _str_list(sens.get("levels", ["public", "internal", "confidential"]), "levels")
    if not levels or len(set(levels)) != len(levels):
        raise PolicyError("sensitivity.levels must list distinct levels, least sensitive first")
    rules: dict[str, SensitivityRule] = {}
    for level, rule in _table(sens.get("rules", {}), "sensitivity.rules").items():
        where = f"sensitivity.rules.{level}"
        if level not in levels:
            raise PolicyError(f"{where}: {level!r} is not in sensitivity.levels {list(levels)}")
        r = _table(rule, where)
        _keys(r, ("backends", "route_to"), where)
        allowed = tuple(
            known_backend(b, f"{where}.backends") for b in _str_list(r.get("backends", []), where)
        )
        route = r.get("route_to")
        if route is not None:
            known_backend(route, f"{where}.route_to")
            if route not in allowed and "*" not in allowed:
                raise PolicyError(f"{where}.route_to = {route!r} is not in its own backends")
        rules[level] = SensitivityRule(backends=allowed, route_to=route)
    for level in levels:
        rules.setdefault(level, SensitivityRule(backends=("*",)))

    identity = _identity(doc.get("identity", {}), known_backend, purposes, levels[0],
                         default_tier)
    projects: dict[str, Project] = {}
    for pname, ptable in _table(doc.get("projects", {}), "projects").items():
        where = f"projects.{pname}"
        _name(pname, where)
        p = _table(ptable, where)
        _keys(
            p,
            ("members", "groups", "backends", "sensitivity", "share", "max_tier", "purpose"),
            where,
        )
        members = _table(p.get("members", {}), f"{where}.members")
        groups = _table(p.get("groups", {}), f"{where}.groups")
        for who, role in [*members.items(), *groups.items()]:
            if role not in ROLES:
                raise PolicyError(f"{where}: role {role!r} of {who!r} must be one of {ROLES}")
        level = p.get("sensitivity", levels[0])
        if level not in levels:
            raise PolicyError(f"{where}.sensitivity = {level!r} is not in {list(levels)}")
        max_tier = p.get("max_tier", default_tier)
        if max_tier not in tiers:
            raise PolicyError(f"{where}.max_tier = {max_tier!r} is not one of {sorted(tiers)}")
        projects[pname] = Project(
            name=pname,
            members=dict(members),
            groups=dict(groups),
            # a course's entry that names no backends keeps the course's own
            backends=tuple(
                known_backend(b, f"{where}.backends")
                for b in _str_list(p.get("backends", []), f"{where}.backends")
            )
            if "backends" in p or not identity.is_course(pname)
            else identity.course_backends,
            sensitivity=level,
            share=float(_number(p.get("share", 1.0), f"{where}.share", minimum=1e-9)),
            max_tier=max_tier,
            purpose=_purpose(p.get("purpose", ""), f"{where}.purpose", purposes),
        )


    quotas = _table(doc.get("quotas", {}), "quotas")
    _keys(quotas, ("user", "project", "users", "projects"), "quotas")
    user_overrides = {
        _name(u, "quotas.users"): _by_class(q, f"quotas.users.{u}")
        for u, q in _table(quotas.get("users", {}), "quotas.users").items()
    }
    project_overrides: dict[str, dict[str, Quota]] = {}
    for pname, q in _table(quotas.get("projects", {}), "quotas.projects").items():
        if pname not in projects and not identity.is_course(pname):
            raise PolicyError(
                f"quotas.projects.{pname}: no such project in [projects] and not a course "
                "(identity.course_prefix)"
            )
        project_overrides[pname] = _by_class(q, f"quotas.projects.{pname}")

    rate_limits: dict[str, RateLimit] = {}
    for cls, rl in _table(doc.get("rate_limits", {}), "rate_limits").items():
        where = f"rate_limits.{cls}"
        if cls not in CLASSES:
            raise PolicyError(f"{where}: backend class must be one of {CLASSES}")
        r = _table(rl, where)
        _keys(r, ("rate", "burst", "max_delay"), where)
        rate_limits[cls] = RateLimit(
            rate=float(_number(r.get("rate"), f"{where}.rate", minimum=1e-6)),
            burst=_number(r.get("burst", 1), f"{where}.burst", integer=True, minimum=1),
            max_delay=float(_number(r.get("max_delay", 0), f"{where}.max_delay")),
        )

    reservations: list[Reservation] = []
    raw_res = doc.get("reservations", [])
    if not isinstance(raw_res, list):
        raise PolicyError("reservations must be an array of tables ([[reservations]])")
    for i, item in enumerate(raw_res):
        where = f"reservations[{i}]"
        r = _table(item, where)
        _keys(r, ("backend", "project", "start", "end", "note"), where)
        if r.get("project") not in projects and not (
            isinstance(r.get("project"), str) and identity.is_course(r["project"])
        ):
            raise PolicyError(
                f"{where}.project = {r.get('project')!r} is neither in [projects] nor a "
                "course (identity.course_prefix)"
            )
        res = Reservation(
            backend=known_backend(r.get("backend"), f"{where}.backend"),
            project=str(r["project"]),
            start=_time(r.get("start"), f"{where}.start"),
            end=_time(r.get("end"), f"{where}.end"),
            note=str(r.get("note", "")),
        )
        if res.backend == "*":
            raise PolicyError(f"{where}.backend: name one backend")
        if res.end <= res.start:
            raise PolicyError(f"{where}: end must be after start")
        for other in reservations:
            if other.backend == res.backend and other.start < res.end and res.start < other.end:
                raise PolicyError(f"{where} overlaps another reservation of {res.backend!r}")
        reservations.append(res)

    member_overrides, course_files = _add_courses(
        courses or {}, identity, projects, project_overrides, reservations, known_backend,
        backends, _by_class(quotas.get("project", {}), "quotas.project"), purposes, levels[0],
        default_tier,
    )

    fs = _table(doc.get("fair_share", {}), "fair_share")
    _keys(fs, ("half_life_hours",), "fair_share")
    half_life = float(_number(fs.get("half_life_hours", 168), "fair_share.half_life_hours",
                              minimum=1e-6)) * 3600

    class_limits, backend_limits = _run_limits(doc.get("run_limits", {}), backends)

    return Policy(
        projects=Registry(projects, identity),
        purposes=purposes,
        max_labels=_number(tags.get("max_labels", 16), "tags.max_labels", integer=True),
        max_label_length=_number(
            tags.get("max_label_length", 256), "tags.max_label_length", integer=True
        ),
        tiers=tiers,
        default_tier=default_tier,
        levels=levels,
        sensitivity=rules,
        user_quota=_by_class(quotas.get("user", {}), "quotas.user"),
        project_quota=_by_class(quotas.get("project", {}), "quotas.project"),
        user_overrides=user_overrides,
        project_overrides=project_overrides,
        rate_limits=rate_limits,
        reservations=tuple(reservations),
        half_life=half_life,
        # the courses' settings count: a changed course file is a new policy
        digest=hashlib.sha256(
            text.encode() + repr(sorted((courses or {}).items())).encode()
        ).hexdigest()[:16],
        run_limits=class_limits,
        backend_run_limits=backend_limits,
        member_overrides=member_overrides,
        course_files=course_files,
    )


def _course_quota(
    limits: Mapping[str, Mapping[str, float]],
    classes: Iterable[str],
    defaults: Mapping[str, Quota],
) -> dict[str, Quota]:
    """A course file's limits on each backend class the course uses (each class counts
    apart, as every quota here does); a dimension the file leaves out keeps the policy's
    default for projects (``[quotas.project]``)."""

    def merged(base: Quota, period: str) -> Limits:
        dims, b = limits.get(period, {}), base.limits(period)
        return Limits(
            jobs=int(dims["jobs"]) if "jobs" in dims else b.jobs,
            shots=int(dims["shots"]) if "shots" in dims else b.shots,
            seconds=float(dims["seconds"]) if "seconds" in dims else b.seconds,
        )

    out = {}
    for c in sorted(set(classes)):
        base = defaults.get(c, Quota())
        out[c] = Quota(day=merged(base, "day"), month=merged(base, "month"), soft=base.soft)
    return out


def _add_courses(
    courses: Mapping[str, Course],
    identity: IdentityProjects,
    projects: dict[str, Project],
    project_overrides: dict[str, dict[str, Quota]],
    reservations: list[Reservation],
    known_backend: Any,
    backend_classes: Mapping[str, str],
    project_quota: Mapping[str, Quota],
    purposes: Sequence[str],
    level: str,
    tier: str,
) -> tuple[dict[str, dict[str, Quota]], dict[str, str]]:
    """Each course file's term and budget: a course project open until its term closes,
    its backends and purpose, its total (``project`` quota) and per-student (``member``
    quota) limits and its reservations. A course's budget lives in one place: a policy
    file that also sets it is refused."""
    member_overrides: dict[str, dict[str, Quota]] = {}
    course_files: dict[str, str] = {}
    for cid, course in sorted(courses.items()):
        where = f"{course.source or cid}: "
        if not identity.is_course(cid):
            raise PolicyError(
                f"{where}id: {cid!r} is not a course of the gateway: set identity.course_prefix "
                "in the policy file to the hub's course group prefix (e.g. \"course-\")"
            )
        if cid in projects or cid in project_overrides:
            raise PolicyError(
                f"{where}the policy file also has [projects.{cid}] or [quotas.projects.{cid}]; "
                "keep the course's budget in its course file only"
            )
        budget = course.budget
        backends = identity.course_backends
        purpose = ""
        if budget is not None:
            backends = tuple(known_backend(b, f"{where}qpu.backends") for b in budget.backends)
            purpose = _purpose(budget.purpose, f"{where}qpu.purpose", purposes)
            classes = {backend_classes[b] for b in backends}
            project_overrides[cid] = _course_quota(budget.total, classes, project_quota)
            if any(budget.per_student.values()):
                member_overrides[cid] = _course_quota(budget.per_student, classes, {})
            for r in budget.reservations:
                res = Reservation(backend=r.backend, project=cid, start=r.start, end=r.end,
                                  note=r.note or course.title)
                for other in reservations:
                    if (other.backend == res.backend and other.start < res.end
                            and res.start < other.end):
                        raise PolicyError(
                            f"{where}a reservation of {res.backend!r} overlaps one of "
                            f"project {other.project!r}"
                        )
                reservations.append(res)
        projects[cid] = Project(name=cid, backends=backends, sensitivity=level, max_tier=tier,
                                purpose=purpose, open_until=course.term.closes)
        course_files[cid] = Path(course.source).name if course.source else f"{cid}.toml"
    return member_overrides, course_files


def _purpose(value: Any, where: str, purposes: Sequence[str]) -> str:
    if value != "" and value not in purposes:
        raise PolicyError(f"{where} = {value!r} is not one of tags.purposes {list(purposes)}")
    return str(value)


def _identity(
    value: Any, known_backend: Any, purposes: Sequence[str], level: str, tier: str
) -> IdentityProjects:
    """``[identity]``: course groups as projects, and personal sandboxes."""
    t = _table(value, "identity")
    _keys(
        t,
        ("course_prefix", "course_backends", "course_purpose", "personal_backends",
         "personal_purpose", "personal_share"),
        "identity",
    )
    prefix = t.get("course_prefix", "")
    if not isinstance(prefix, str) or ":" in prefix:
        raise PolicyError(
            "identity.course_prefix must be a string without ':' (the hub's course group "
            "prefix, e.g. \"course-\"; \"\" turns course projects off)"
        )

    def backends(key: str) -> tuple[str, ...]:
        return tuple(
            known_backend(b, f"identity.{key}")
            for b in _str_list(t.get(key, []), f"identity.{key}")
        )

    return IdentityProjects(
        course_prefix=prefix,
        course_backends=backends("course_backends"),
        course_purpose=_purpose(t.get("course_purpose", ""), "identity.course_purpose",
                                purposes),
        personal_backends=backends("personal_backends"),
        personal_purpose=_purpose(t.get("personal_purpose", ""), "identity.personal_purpose",
                                  purposes),
        personal_share=float(_number(t.get("personal_share", 0.1), "identity.personal_share",
                                     minimum=1e-9)),
        sensitivity=level,
        max_tier=tier,
    )


def _run_limit_values(value: Any, where: str, base: RunLimits) -> RunLimits:
    t = _table(value, where)
    _keys(t, RUN_LIMIT_KEYS, where)
    return RunLimits(
        max_qubits=_number(t.get("max_qubits", base.max_qubits), f"{where}.max_qubits",
                           integer=True, minimum=1),
        memory_mb=_number(t.get("memory_mb", base.memory_mb), f"{where}.memory_mb",
                          integer=True, minimum=16),
        seconds=float(_number(t.get("seconds", base.seconds), f"{where}.seconds",
                              minimum=0.1)),
    )


def _run_limits(
    value: Any, backends: Mapping[str, str]
) -> tuple[dict[str, RunLimits], dict[str, RunLimits]]:
    """``[run_limits.simulator]``, ``[run_limits.hardware]`` and
    ``[run_limits.backends.NAME]`` (overrides on top of the backend's class)."""
    t = _table(value, "run_limits")
    _keys(t, (*CLASSES, "backends"), "run_limits")
    by_class = {
        c: _run_limit_values(t.get(c, {}), f"run_limits.{c}", DEFAULT_RUN_LIMITS[c])
        for c in CLASSES
    }
    by_backend: dict[str, RunLimits] = {}
    for name, entry in _table(t.get("backends", {}), "run_limits.backends").items():
        where = f"run_limits.backends.{name}"
        if name not in backends:
            raise PolicyError(
                f"{where}: unknown backend {name!r}; configured backends: "
                f"{', '.join(sorted(backends)) or 'none'} (QpuGateway.backends)"
            )
        by_backend[name] = _run_limit_values(entry, where, by_class[backends[name]])
    return by_class, by_backend


def read_policy(path: Path) -> str:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
        raise PolicyError(f"cannot read the policy file {path}: {reason}") from None


def load(
    path: Path, backends: Mapping[str, str], courses_dir: Path | None = None
) -> Policy:
    courses: Mapping[str, Course] = {}
    if courses_dir is not None:
        try:
            courses = load_catalog(courses_dir).courses
        except CourseError as e:
            raise PolicyError(str(e)) from None
    return parse(read_policy(path), backends, source=str(path), courses=courses)
