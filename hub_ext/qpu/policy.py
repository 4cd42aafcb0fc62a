"""Pure policy decisions: no database, no clock of their own.

The store calls these inside its transactions with the rows it locked, so a decision is
always taken on current, locked data. Reason codes are ``STATE:REASON`` strings that
users see (``QUEUED:FAIR_SHARE``, ``REJECTED:PROJECT_QUOTA``, ...); docs/qpu.md lists them.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import Refused
from .policyfile import DIMENSIONS, PERIODS, Policy, Quota, RateLimit, RunLimits
from .projects import Project

UNITS = {"jobs": "jobs", "shots": "shots", "seconds": "backend-seconds"}


@dataclass(frozen=True)
class Request:
    """What a job asks of the quotas: one job, its shots and estimated backend-seconds."""

    jobs: int
    shots: int
    seconds: float

    def get(self, dimension: str) -> float:
        value: float = getattr(self, dimension)
        return value


def period_keys(now: float) -> dict[str, str]:
    t = dt.datetime.fromtimestamp(now, dt.UTC)
    return {"day": t.strftime("%Y-%m-%d"), "month": t.strftime("%Y-%m")}


def _period_bounds(period: str, now: float) -> tuple[dt.datetime, dt.datetime]:
    t = dt.datetime.fromtimestamp(now, dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return t, t + dt.timedelta(days=1)
    first = t.replace(day=1)
    return first, (first + dt.timedelta(days=32)).replace(day=1)


def period_end(period: str, now: float) -> str:
    return _period_bounds(period, now)[1].strftime("%Y-%m-%dT%H:%MZ")


def period_left(period: str, now: float) -> float:
    """The share of the quota period ``now`` falls in that is still to run (0-1)."""
    start, end = _period_bounds(period, now)
    total = (end - start).total_seconds()
    return round(min(1.0, max(0.0, (end.timestamp() - now) / total)), 4)


def usage_key(kind: str, subject: str, backend_class: str, period: str, when: str) -> str:
    return f"{kind}:{subject}:{backend_class}:{period}:{when}"


@dataclass
class QuotaCheck:
    warnings: list[dict[str, Any]] = field(default_factory=list)


def check_quota(
    policy: Policy,
    kind: str,
    subject: str,
    backend_class: str,
    used: Mapping[str, Mapping[str, float]],
    request: Request,
    now: float,
    out: QuotaCheck,
) -> None:
    """Raise ``Refused`` if ``request`` on top of ``used`` (period -> dimension -> amount)
    passes a hard limit; add a warning to ``out`` for each soft limit it passes."""
    quota: Quota = policy.quota_for(kind, subject, backend_class)
    code = {"user": "USER_QUOTA", "member": "MEMBER_QUOTA"}.get(kind, "PROJECT_QUOTA")
    project = subject.split("/", 1)[0] if kind != "user" else ""
    course_file = policy.course_files.get(project)
    for period in PERIODS:
        limits = quota.limits(period)
        for dim in DIMENSIONS:
            limit = limits.get(dim)
            if limit is None:
                continue
            have = used.get(period, {}).get(dim, 0)
            after = have + request.get(dim)
            where = f"quotas.{kind}s.{subject}.{backend_class}.{period}.{dim}"
            who = f"{kind} {subject!r}"
            if course_file and kind == "member":
                who = f"your per-student budget in {project!r}"
                where = f"qpu.per_student.{period}.{dim} in {course_file}"
            elif course_file:
                who = f"course {project!r} (all its students together)"
                where = f"qpu.total.{period}.{dim} in {course_file}"
            if after > limit:
                raise Refused(
                    429,
                    code,
                    f"REJECTED:{code}: {who} has used {_fmt(have)} of "
                    f"{_fmt(limit)} {UNITS[dim]} this {period} on {backend_class} backends and "
                    f"this job needs {_fmt(request.get(dim))}. Wait until the {period} ends "
                    f"({period_end(period, now)}), make the job smaller, or ask an admin to "
                    f"raise {where}.",
                    kind=kind,
                    subject=subject,
                    period=period,
                    dimension=dim,
                    limit=limit,
                    used=have,
                    requested=request.get(dim),
                )
            if after > quota.soft * limit:
                out.warnings.append(
                    {
                        "code": f"WARN:{code}_SOFT",
                        "message": f"{who} is past {round(quota.soft * 100)}% of "
                        f"its {period} {UNITS[dim]} on {backend_class} backends "
                        f"({_fmt(after)} of {_fmt(limit)})",
                        "period": period,
                        "dimension": dim,
                        "limit": limit,
                        "used": after,
                    }
                )


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:.2f}"


def remaining(
    policy: Policy,
    kind: str,
    subject: str,
    backend_class: str,
    used: Mapping[str, Mapping[str, float]],
) -> dict[str, Any]:
    quota = policy.quota_for(kind, subject, backend_class)
    out: dict[str, Any] = {}
    for period in PERIODS:
        limits = quota.limits(period)
        out[period] = {
            dim: {
                "limit": limits.get(dim),
                "used": used.get(period, {}).get(dim, 0),
                "remaining": None
                if limits.get(dim) is None
                else max(0, (limits.get(dim) or 0) - used.get(period, {}).get(dim, 0)),
            }
            for dim in DIMENSIONS
        }
    out["soft"] = quota.soft
    return out


def rate_decision(limit: RateLimit | None, tat: float | None, now: float) -> tuple[float, float]:
    """GCRA token bucket. Returns (new arrival time to store, not_before for the job).

    ``not_before > now`` means the job waits (QUEUED:RATE_LIMIT); a wait longer than
    ``max_delay`` is refused."""
    if limit is None:
        return (tat or now), now
    interval = 1.0 / limit.rate
    tolerance = (limit.burst - 1) * interval
    current = max(tat if tat is not None else now, now)
    wait = current - now - tolerance
    if wait > limit.max_delay:
        retry = wait - limit.max_delay
        raise Refused(
            429,
            "RATE_LIMIT",
            f"REJECTED:RATE_LIMIT: more than {limit.burst} jobs in a burst or {limit.rate:g} "
            f"jobs/s sustained, and the queue for the rate limit is full (jobs may wait at "
            f"most {limit.max_delay:g} s). Retry in {math.ceil(retry)} s or submit fewer, "
            f"larger jobs.",
            retry_after=math.ceil(retry),
            rate=limit.rate,
            burst=limit.burst,
        )
    return current + interval, now + max(0.0, wait)


def run_limits_key(policy: Policy, backend: str, backend_class: str) -> str:
    """The policy key an admin raises: the backend's own entry, else its class's."""
    if backend in policy.backend_run_limits:
        return f"run_limits.backends.{backend}"
    return f"run_limits.{backend_class}"


def check_run_limits(
    policy: Policy, backend: str, backend_class: str, width: int, est_seconds: float
) -> RunLimits:
    """Refuse at admission what the run limits would stop anyway: a circuit wider than
    ``max_qubits`` (a statevector doubles with each qubit) or a job whose estimated
    backend-seconds exceed ``seconds``. Returns the limits the run is held to."""
    limits = policy.run_limits_for(backend, backend_class)
    key = run_limits_key(policy, backend, backend_class)
    if width > limits.max_qubits:
        raise Refused(
            422, "WIDTH_LIMIT",
            f"REJECTED:WIDTH_LIMIT: a circuit has {width} qubits; jobs on {backend!r} may use "
            f"at most {limits.max_qubits} ({key}.max_qubits). Use fewer qubits, a "
            "matrix-product-state backend, or ask an admin.",
            width=width, limit=limits.max_qubits,
        )
    if est_seconds > limits.seconds:
        raise Refused(
            422, "TIME_LIMIT",
            f"REJECTED:TIME_LIMIT: the job is estimated at {_fmt(est_seconds)} backend-seconds;"
            f" runs on {backend!r} may take at most {_fmt(limits.seconds)} s "
            f"({key}.seconds). Use fewer shots, circuits or gates per job, or fewer qubits.",
            estimate=est_seconds, limit=limits.seconds,
        )
    return limits


def check_tier(policy: Policy, project: Project, tier: str | None) -> tuple[str, int]:
    name = tier or policy.default_tier
    if name not in policy.tiers:
        raise Refused(
            422, "UNKNOWN_TIER",
            f"REJECTED:UNKNOWN_TIER: priority {name!r} is not a tier; tiers: "
            f"{', '.join(sorted(policy.tiers))}",
        )
    if policy.tiers[name] > policy.tiers[project.max_tier]:
        raise Refused(
            403, "TIER_NOT_ALLOWED",
            f"REJECTED:TIER_NOT_ALLOWED: project {project.name!r} may use priority up to "
            f"{project.max_tier!r}; ask an admin to raise projects.{project.name}.max_tier",
        )
    return name, policy.tiers[name]


def route_sensitivity(
    policy: Policy, project: Project, level: str | None, backend: str
) -> tuple[str, str, bool]:
    """Return (level, backend to use, rerouted?). Refuses a level below the project's."""
    chosen = level or project.sensitivity
    if chosen not in policy.levels:
        raise Refused(
            422, "UNKNOWN_SENSITIVITY",
            f"REJECTED:UNKNOWN_SENSITIVITY: {chosen!r} is not a level; levels: "
            f"{', '.join(policy.levels)}",
        )
    if policy.level_rank(chosen) < policy.level_rank(project.sensitivity):
        raise Refused(
            422, "SENSITIVITY_TOO_LOW",
            f"REJECTED:SENSITIVITY_TOO_LOW: project {project.name!r} is {project.sensitivity!r};"
            f" its jobs cannot be declared {chosen!r}",
        )
    rule = policy.sensitivity[chosen]
    if rule.allows(backend):
        return chosen, backend, False
    if rule.route_to:
        return chosen, rule.route_to, True
    raise Refused(
        403, "SENSITIVITY",
        f"REJECTED:SENSITIVITY: {chosen!r} jobs may run only on "
        f"{', '.join(rule.backends) or 'no backend'}; choose one of those",
    )


# -- ordering ---------------------------------------------------------------------------------


@dataclass
class Queued:
    """The fields of a waiting job that ordering needs."""

    id: str
    project: str
    owner: str
    priority: int
    submitted_at: float
    not_before: float
    est_seconds: float
    state: str


@dataclass
class Placement:
    id: str
    state: str
    reason: str
    position: int | None
    estimated_start: float | None


def decayed(value: float, updated_at: float, now: float, half_life: float) -> float:
    return float(value * 0.5 ** (max(0.0, now - updated_at) / half_life))


def order(
    policy: Policy,
    backend: str,
    waiting: Sequence[Queued],
    fair: Mapping[str, float],
    paused_backend: bool,
    paused_projects: Iterable[str],
    running_left: Sequence[float],
    lanes: int,
    now: float,
) -> list[Placement]:
    """Place every waiting job of one backend: the first eligible one starts next.

    Order: priority tier (high first), then fair share (the project whose decayed usage
    per share is lowest first), then submission time. A job is not eligible while its
    backend or project is paused (HELD), while another project holds a reservation of the
    backend (QUEUED:RESERVATION; also when the job would overrun into the next window), or
    while its rate-limit slot has not come (QUEUED:RATE_LIMIT).
    """
    paused = set(paused_projects)
    reservation = policy.reservation_at(backend, now)
    upcoming = policy.next_reservation(backend, now)

    def share_of(project: str) -> float:
        p = policy.projects.find(project)
        return fair.get(project, 0.0) / (p.share if p else 1.0)

    def key(q: Queued) -> tuple[int, float, float, str]:
        return (-q.priority, share_of(q.project), q.submitted_at, q.id)

    ranked = sorted(waiting, key=key)
    out: list[Placement] = []
    # Lanes become free at these times (estimated); each eligible job takes the earliest.
    free_at = sorted([now + s for s in running_left] + [now] * max(0, lanes - len(running_left)))
    free_at = free_at[:lanes] if free_at else [now]
    ahead: Queued | None = None
    position = 0
    for q in ranked:
        blocker = None
        if paused_backend:
            blocker = ("HELD", "BACKEND_PAUSED")
        elif q.project in paused:
            blocker = ("HELD", "PROJECT_PAUSED")
        elif (reservation and reservation.project != q.project) or (
            upcoming
            and upcoming.project != q.project
            and now + q.est_seconds > upcoming.start
        ):
            blocker = ("QUEUED", "RESERVATION")
        elif q.not_before > now:
            blocker = ("QUEUED", "RATE_LIMIT")
        position += 1
        if blocker:
            # The earliest it could start, when that is known (a pause has no end).
            est: float | None = None
            if blocker[1] == "RATE_LIMIT":
                est = max(free_at[0], q.not_before)
            elif blocker[1] == "RESERVATION":
                est = (reservation or upcoming).end  # type: ignore[union-attr]
            out.append(Placement(q.id, blocker[0], blocker[1], position, est))
            continue
        start = max(free_at[0], q.not_before)
        if start <= now:
            reason = "READY"
        elif ahead is not None and ahead.priority > q.priority:
            reason = "PRIORITY"
        elif (
            ahead is not None
            and ahead.project != q.project
            and share_of(ahead.project) < share_of(q.project)
        ):
            reason = "FAIR_SHARE"
        else:
            reason = "BACKEND_BUSY"
        out.append(Placement(q.id, "QUEUED", reason, position, start))
        free_at[0] = start + q.est_seconds
        free_at.sort()
        ahead = q
    return out
