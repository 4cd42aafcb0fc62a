"""Persistence and the transactions that must be atomic: admission, dispatch, settlement.

Every decision that depends on shared counters takes the database's locks, never a
process lock, so several gateway replicas on one PostgreSQL database stay correct:

- SQLite: every transaction starts with ``BEGIN IMMEDIATE`` (one writer at a time),
  in WAL mode; ``synchronous`` is configurable (``FULL`` by default: a job acknowledged
  survives power loss, not only a crash).
- PostgreSQL: admission upserts and then ``SELECT ... FOR UPDATE`` the quota and rate
  rows it touches, in sorted key order (no deadlock between admissions); dispatch locks
  the backend's row in ``qpu_dispatch_locks``.

Admissions are processed in batches (group commit): each one in its own savepoint, all
committed together before any is acknowledged.

A submission with an ``Idempotency-Key`` claims (owner, key) in ``qpu_idempotency`` at
the start of its batch's transaction, before any quota row is locked; the row names the
job the batch then writes, so a crash leaves both or neither. A key already held (by an
earlier submission, or by a replica's transaction that commits while this one waits on
the key's unique index) is not admitted again: the ticket gets the earlier job's answer
(``Admitted.replayed``), or ``IDEMPOTENCY_KEY_REUSED`` when its request differs.
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    and_,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.pool import NullPool

from . import models as m
from .admission_io import AdmissionIO, CoreIO, Pair, Row, SqliteIO, key_records, replay_facts
from .errors import GatewayError, Refused
from .policy import (
    Queued,
    QuotaCheck,
    Request,
    check_quota,
    decayed,
    period_keys,
    rate_decision,
    usage_key,
)
from .policyfile import PERIODS, Policy
from .sqlite_writers import WriterQueue

WAITING = tuple(m.WAITING_STATES)
#: How long an Idempotency-Key is remembered by default (``QpuGateway.idempotency_seconds``).
KEY_SECONDS = 24 * 3600.0


#: Failures whose run time is charged like a cancelled run's: the job overran the limits
#: the policy sets for it (its own doing). Other failures are refunded whole.
CHARGED_FAILURES = frozenset({"TIME_LIMIT", "MEMORY_LIMIT"})


class StoreError(Exception):
    """The database could not complete the operation; nothing was changed."""


@dataclass
class Ticket:
    """An admission request that passed validation and the database-free policy checks."""

    owner: str
    project: str
    backend: str
    requested_backend: str
    backend_class: str
    tier: str
    priority: int
    sensitivity: str
    n_circuits: int
    shots: int
    est_seconds: float
    tags: dict[str, Any]
    provenance: dict[str, Any]
    circuits: bytes
    options: dict[str, Any]
    decisions: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    #: the client's ``Idempotency-Key`` (scoped to ``owner``), if it sent one
    idempotency_key: str | None = None
    #: SHA-256 of the request (``submission.fingerprint``): a repeated key must match it
    fingerprint: str = ""


@dataclass
class Admitted:
    job_id: str
    state: str
    reason: str
    warnings: list[dict[str, Any]]
    refused: Refused | None = None
    ignored: list[str] = field(default_factory=list)
    #: the answer of an earlier submission with the same Idempotency-Key (nothing admitted)
    replayed: bool = False


@dataclass
class _KeyPlan:
    """What admission does with a keyed ticket: admit it under the key it claimed
    (``job_id``), answer ``outcome`` (the earlier job's, or a refusal), or repeat the
    answer of the batch's ``leader`` ticket with the same key and request."""

    job_id: str = ""
    outcome: Admitted | Exception | None = None
    leader: int | None = None


@dataclass
class Claimed:
    job_id: str
    backend: str
    shots: int
    circuits: bytes
    options: dict[str, Any]
    attempt: int


def _now() -> float:
    return time.time()


class Store:
    def __init__(
        self,
        url: str,
        *,
        sqlite_synchronous: str = "FULL",
        pool_size: int = 5,
        echo: bool = False,
        key_seconds: float = KEY_SECONDS,
    ) -> None:
        self.url = url
        self.key_seconds = key_seconds
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            self.engine: Engine = _sqlite_engine(url, sqlite_synchronous, "BEGIN IMMEDIATE", echo)
            database = self.engine.url.database
            self.writers: WriterQueue | None = (
                WriterQueue(Path(database)) if database and database != ":memory:" else None
            )
            # Reads take no write lock (WAL readers never block the writer).
            self.read_engine: Engine = _sqlite_engine(url, sqlite_synchronous, "BEGIN", echo)
        else:
            kwargs: dict[str, Any] = {"echo": echo, "pool_pre_ping": True}
            if pool_size > 0:
                kwargs.update(pool_size=pool_size, max_overflow=pool_size)
            else:
                kwargs["poolclass"] = NullPool
            self.engine = create_engine(url, **kwargs)
            self.read_engine = self.engine
            self.writers = None

    # -- schema --------------------------------------------------------------------------------

    def create(self, backends: Iterable[str]) -> None:
        m.metadata.create_all(self.engine)
        with self.engine.begin() as conn:
            version = conn.execute(
                select(m.meta.c.value).where(m.meta.c.key == "schema_version")
            ).scalar()
            if version is None:
                conn.execute(
                    insert(m.meta).values(key="schema_version", value=str(m.SCHEMA_VERSION))
                )
            elif int(version) != m.SCHEMA_VERSION:
                raise StoreError(
                    f"the database has QPU schema version {version}, this gateway needs "
                    f"{m.SCHEMA_VERSION}; upgrade the gateway or restore a matching database"
                )
            locks = [{"backend": b, "seq": 0} for b in backends]
            self._upsert_ignore(conn, m.dispatch_locks, locks,
                                "backend")

    def dispose(self) -> None:
        self.engine.dispose()
        self.read_engine.dispose()
        if self.writers is not None:
            self.writers.close()

    def _upsert_ignore(
        self, conn: Connection, table: Any, rows: list[dict[str, Any]], key: str
    ) -> None:
        if not rows:
            return
        if self.is_sqlite:
            conn.execute(sqlite.insert(table).on_conflict_do_nothing(index_elements=[key]), rows)
        else:
            conn.execute(
                postgresql.insert(table).on_conflict_do_nothing(index_elements=[key]), rows
            )

    def _lock(self, stmt: Any) -> Any:
        return stmt if self.is_sqlite else stmt.with_for_update()

    def _turn(self) -> AbstractContextManager[None]:
        return self.writers.turn() if self.writers is not None else nullcontext()

    def transaction(self, fn: Any, *args: Any, attempts: int = 5) -> Any:
        """Run ``fn(conn, *args)`` in one transaction, retried on lock conflicts."""
        last: Exception | None = None
        for i in range(attempts):
            try:
                with self._turn(), self.engine.begin() as conn:
                    return fn(conn, *args)
            except (OperationalError, DBAPIError) as e:
                if not _retryable(e):
                    raise StoreError(f"database error: {type(e.orig).__name__}") from e
                last = e
                time.sleep(0.01 * (2**i))
        raise StoreError("database busy: the operation was retried and gave up") from last

    # -- admission --------------------------------------------------------------------------

    def admit_many(self, tickets: Sequence[Ticket], policy: Policy) -> list[Admitted | Exception]:
        """Admit a batch in one transaction (group commit), each ticket atomically.

        The transaction locks every quota and rate row the batch touches (sorted, so
        admissions never deadlock), decides ticket by ticket in order on those locked
        values, then writes all jobs, decisions and new counter values at once. Nothing is
        acknowledged before the commit."""

        def run(conn: Connection, batch: Sequence[Ticket]) -> list[Admitted | Exception]:
            return self._admit_batch(conn, batch, policy, _now())

        try:
            result: list[Admitted | Exception] = self.transaction(run, tickets)
            return result
        except StoreError:
            if len(tickets) == 1:
                raise
        singles: list[Admitted | Exception] = []
        for ticket in tickets:
            try:
                singles.extend(self.transaction(run, [ticket]))
            except StoreError as e:
                singles.append(e)
        return singles

    def _admit_batch(
        self, conn: Connection, batch: Sequence[Ticket], policy: Policy, now: float
    ) -> list[Admitted | Exception]:
        io: AdmissionIO = SqliteIO(conn) if self.is_sqlite else CoreIO(conn)
        try:
            return self._decide_batch(io, batch, policy, now)
        finally:
            # Closed here, in the thread that holds the connection: a cursor left to the
            # garbage collector is reset later in whatever thread runs the collection,
            # possibly while another thread is using the same (pooled) connection.
            io.close()

    def _decide_batch(
        self, io: AdmissionIO, batch: Sequence[Ticket], policy: Policy, now: float
    ) -> list[Admitted | Exception]:
        # Keys first: a batch waiting on another replica's key holds no quota row yet.
        plans = self._plan_keys(io, batch, now)
        control_keys = sorted({
            k for t in batch
            for k in (f"user:{t.owner}", f"backend:{t.backend}", f"project:{t.project}")
        })
        controls = io.controls(control_keys)
        rate_keys = sorted({
            f"{t.owner}:{t.backend_class}" for t in batch if t.backend_class in policy.rate_limits
        })
        rates = io.locked_rows(m.rate, rate_keys, {"tat": 0.0})
        periods = period_keys(now)

        def subjects(t: Ticket) -> list[tuple[str, str]]:
            """Whose usage a job counts against: its owner's, its project's and, where the
            project limits each member (a course's per-student budget), the member's."""
            out = [("user", t.owner), ("project", t.project)]
            if t.project in policy.member_overrides:
                out.append(("member", f"{t.project}/{t.owner}"))
            return out

        def keys_of(t: Ticket) -> dict[tuple[str, str], str]:
            return {
                (kind, period): usage_key(kind, subject, t.backend_class, period, periods[period])
                for kind, subject in subjects(t)
                for period in PERIODS
            }

        ticket_keys = [keys_of(t) for t in batch]
        usage_keys = sorted({k for tk in ticket_keys for k in tk.values()})
        usage = io.locked_rows(m.usage, usage_keys, {"jobs": 0, "shots": 0, "seconds": 0.0})
        changed_usage: set[str] = set()
        changed_rates: set[str] = set()
        job_rows: list[dict[str, Any]] = []
        data_rows: list[dict[str, Any]] = []
        decision_rows: list[dict[str, Any]] = []
        out: list[Admitted | Exception | None] = []

        def record(job: dict[str, Any], decisions: list[tuple[str, dict[str, Any]]]) -> None:
            job_rows.append(job)
            decision_rows.extend(
                {"job_id": job["id"], "at": now, "code": c, "detail": d} for c, d in decisions
            )

        for t, keys, plan in zip(batch, ticket_keys, plans, strict=True):
            if plan is not None and not plan.job_id:
                out.append(plan.outcome)  # a repeated key: nothing admitted
                continue
            job_id = plan.job_id if plan is not None else uuid.uuid4().hex
            decisions = list(t.decisions)
            if controls.get(f"user:{t.owner}"):
                out.append(Refused(
                    403, "USER_REVOKED",
                    f"REJECTED:USER_REVOKED: QPU access of {t.owner!r} was revoked by an "
                    "operator; contact your admin",
                ))
                continue
            base = {
                "id": job_id, "owner": t.owner, "project": t.project, "backend": t.backend,
                "requested_backend": t.requested_backend, "backend_class": t.backend_class,
                "tier": t.tier, "priority": t.priority, "sensitivity": t.sensitivity,
                "n_circuits": t.n_circuits, "shots": t.shots, "est_seconds": t.est_seconds,
                "submitted_at": now, "attempts": 0, "cancel_requested": False,
                "tags": t.tags, "provenance": t.provenance, "started_at": None,
                "finished_at": None, "start_seq": None, "lease_owner": None,
                "lease_until": None, "used_seconds": None, "error": None,
            }
            rate_key = f"{t.owner}:{t.backend_class}"
            limit = policy.rate_limits.get(t.backend_class)
            try:
                tat = rates[rate_key]["tat"] if limit is not None else None
                new_tat, not_before = rate_decision(limit, tat or None, now)
                request = Request(jobs=1, shots=t.shots, seconds=t.est_seconds)
                check = QuotaCheck()
                for kind, subject in subjects(t):
                    used = {period: usage[keys[(kind, period)]] for period in PERIODS}
                    check_quota(policy, kind, subject, t.backend_class, used, request, now,
                                check)
            except Refused as e:
                record(
                    {**base, "state": "REJECTED", "reason": e.code, "held_jobs": 0,
                     "held_shots": 0, "held_seconds": 0.0, "usage_keys": [], "settled": True,
                     "not_before": 0.0, "finished_at": now, "error": e.message},
                    [*decisions, (f"REJECTED:{e.code}",
                                  {"message": e.message, **_jsonable(e.detail)})],
                )
                out.append(Admitted(job_id, "REJECTED", e.code, [], e))
                continue
            for k in keys.values():
                row = usage[k]
                row["jobs"] += 1
                row["shots"] += t.shots
                row["seconds"] += t.est_seconds
                changed_usage.add(k)
            if limit is not None:
                rates[rate_key]["tat"] = new_tat
                changed_rates.add(rate_key)
            if controls.get(f"backend:{t.backend}"):
                state, reason = "HELD", "BACKEND_PAUSED"
            elif controls.get(f"project:{t.project}"):
                state, reason = "HELD", "PROJECT_PAUSED"
            elif not_before > now:
                state, reason = "QUEUED", "RATE_LIMIT"
            else:
                state, reason = "QUEUED", "PENDING"
            decisions.append(
                ("ADMITTED", {"held": {"jobs": 1, "shots": t.shots, "seconds": t.est_seconds},
                              "policy": policy.digest})
            )
            decisions.extend((w["code"], w) for w in check.warnings)
            if reason == "RATE_LIMIT":
                decisions.append(("QUEUED:RATE_LIMIT", {"not_before": not_before}))
            elif state == "HELD":
                decisions.append((f"HELD:{reason}", {}))
            record(
                {**base, "state": state, "reason": reason, "held_jobs": 1,
                 "held_shots": t.shots, "held_seconds": t.est_seconds,
                 "usage_keys": sorted(keys.values()), "settled": False,
                 "not_before": not_before},
                decisions,
            )
            data_rows.append({"job_id": job_id, "circuits": t.circuits, "options": t.options,
                              "result": None})
            out.append(Admitted(job_id, state, reason, check.warnings))

        if changed_usage:
            io.set_usage([usage[k] for k in sorted(changed_usage)])
        if changed_rates:
            io.set_rates([rates[k] for k in sorted(changed_rates)])
        for table, rows in ((m.jobs, job_rows), (m.job_data, data_rows),
                            (m.decisions, decision_rows)):
            if rows:
                io.insert(table, rows)
        return self._settle_keys(io, batch, plans, out)

    # -- idempotency keys ---------------------------------------------------------------

    def _plan_keys(
        self, io: AdmissionIO, batch: Sequence[Ticket], now: float
    ) -> list[_KeyPlan | None]:
        """Claim the batch's keys; plan each keyed ticket (None: no key)."""
        plans: list[_KeyPlan | None] = [None] * len(batch)
        leaders: dict[Pair, int] = {}  # the first ticket of each key in the batch
        for i, t in enumerate(batch):
            if t.idempotency_key is not None:
                leaders.setdefault((t.owner, t.idempotency_key), i)
        if not leaders:
            return plans
        job_ids = {pair: uuid.uuid4().hex for pair in leaders}
        cutoff = now - self.key_seconds
        won = io.claim_keys([
            {"owner": owner, "key": key, "job_id": job_ids[(owner, key)],
             "fingerprint": batch[i].fingerprint, "status": 201, "created_at": now}
            for (owner, key), i in sorted(leaders.items())  # sorted: replicas never deadlock
        ], cutoff)
        held = sorted(set(leaders) - won)
        records = io.key_records(held, cutoff)
        facts = io.replay_facts([r["job_id"] for r in records.values()])
        for i, t in enumerate(batch):
            if t.idempotency_key is None:
                continue
            pair = (t.owner, t.idempotency_key)
            leader = leaders[pair]
            if pair not in won:
                plans[i] = _KeyPlan(outcome=_replay(t.idempotency_key, t.fingerprint,
                                                    records.get(pair), facts))
            elif i == leader:
                plans[i] = _KeyPlan(job_id=job_ids[pair])
            elif t.fingerprint == batch[leader].fingerprint:
                plans[i] = _KeyPlan(leader=leader)
            else:
                plans[i] = _KeyPlan(outcome=key_reused(t.idempotency_key))
        return plans

    def _settle_keys(
        self, io: AdmissionIO, batch: Sequence[Ticket], plans: list[_KeyPlan | None],
        out: list[Admitted | Exception | None],
    ) -> list[Admitted | Exception]:
        """The batch's answers with the repeats in it filled in; each claimed key's record
        made final: the status of a rejection, or dropped when no job row was written (a
        revoked user's refusal stores nothing, so its key stores nothing either)."""
        statuses: list[tuple[str, str, int]] = []
        released: list[Pair] = []
        done: list[Admitted | Exception] = []
        for t, plan, result in zip(batch, plans, out, strict=True):
            if plan is not None and plan.leader is not None:
                first = out[plan.leader]
                result = (dataclasses.replace(first, warnings=list(first.warnings),
                                              replayed=True)
                          if isinstance(first, Admitted) else first)
            elif plan is not None and plan.job_id and t.idempotency_key is not None:
                if not isinstance(result, Admitted):
                    released.append((t.owner, t.idempotency_key))
                elif result.refused is not None:
                    statuses.append((t.owner, t.idempotency_key, result.refused.status))
            assert result is not None
            done.append(result)
        if statuses or released:
            io.settle_keys(statuses, released)
        return done

    def replay(self, owner: str, key: str, fingerprint: str) -> Admitted | Exception | None:
        """The answer of an earlier submission of ``owner`` with ``key`` (None: no
        unexpired one), for a repeat that the policy refuses before admission now."""

        def run(conn: Connection) -> Admitted | Exception | None:
            record = key_records(conn, [(owner, key)], _now() - self.key_seconds).get(
                (owner, key))
            if record is None:
                return None
            return _replay(key, fingerprint, record, replay_facts(conn, [record["job_id"]]))

        out: Admitted | Exception | None = self._read(run)
        return out

    def purge_keys(self, limit: int = 5000) -> int:
        """Forget expired Idempotency-Keys, about ``limit`` at most (one short transaction:
        the caller repeats while it returns ``limit`` or more). Returns how many."""
        keys = m.idempotency

        def run(conn: Connection) -> int:
            cutoff = _now() - self.key_seconds
            bound = conn.execute(
                select(keys.c.created_at).where(keys.c.created_at < cutoff)
                .order_by(keys.c.created_at).offset(limit - 1).limit(1)
            ).scalar()
            upto = keys.c.created_at < cutoff if bound is None else keys.c.created_at <= bound
            return int(conn.execute(delete(keys).where(upto)).rowcount)

        purged: int = self.transaction(run)
        return purged

    def _decide(
        self, conn: Connection, job_id: str, now: float, items: list[tuple[str, dict[str, Any]]]
    ) -> None:
        if items:
            conn.execute(
                _DECISION_INSERT,
                [{"job_id": job_id, "at": now, "code": c, "detail": d} for c, d in items],
            )

    def _controls(self, conn: Connection, keys: list[str]) -> dict[str, bool]:
        return CoreIO(conn).controls(keys)

    # -- dispatch ----------------------------------------------------------------------------

    def claim_next(
        self,
        backend: str,
        lanes: int,
        instance: str,
        lease: float,
        policy: Policy,
        scan_limit: int = 5000,
    ) -> Claimed | None:
        def run(conn: Connection) -> Claimed | None:
            now = _now()
            seq = conn.execute(
                self._lock(
                    select(m.dispatch_locks.c.seq).where(m.dispatch_locks.c.backend == backend)
                )
            ).scalar_one()
            if self._controls(conn, [f"backend:{backend}"]).get(f"backend:{backend}"):
                return None  # paused: nothing starts, no need to rank the queue
            running = self._running(conn, backend)
            if len(running) >= lanes:
                return None
            placements = self._placements(conn, backend, lanes, policy, now, scan_limit,
                                          paused=False, running=running)
            ready = next((p for p in placements if p.reason == "READY"), None)
            if ready is None:
                return None
            conn.execute(
                update(m.dispatch_locks)
                .where(m.dispatch_locks.c.backend == backend)
                .values(seq=seq + 1)
            )
            row = conn.execute(
                select(m.jobs.c.attempts, m.jobs.c.shots).where(m.jobs.c.id == ready.id)
            ).one()
            conn.execute(
                update(m.jobs)
                .where(m.jobs.c.id == ready.id)
                .values(
                    state="RUNNING",
                    reason="EXECUTING",
                    started_at=now,
                    start_seq=seq + 1,
                    lease_owner=instance,
                    lease_until=now + lease,
                    attempts=row.attempts + 1,
                )
            )
            self._decide(conn, ready.id, now, [("STARTED", {"instance": instance,
                                                            "attempt": row.attempts + 1})])
            data = conn.execute(
                select(m.job_data.c.circuits, m.job_data.c.options).where(
                    m.job_data.c.job_id == ready.id
                )
            ).one()
            return Claimed(ready.id, backend, row.shots, data.circuits, dict(data.options),
                           row.attempts + 1)

        claimed: Claimed | None = self.transaction(run)
        return claimed

    def _placements(
        self,
        conn: Connection,
        backend: str,
        lanes: int,
        policy: Policy,
        now: float,
        scan_limit: int,
        *,
        paused: bool | None = None,
        running: list[Any] | None = None,
    ) -> list[Any]:
        """The backend's queue in start order; ``paused`` and ``running`` when the caller
        has read them already in this transaction."""
        from .policy import order

        if paused is None:
            paused = bool(self._controls(conn, [f"backend:{backend}"]).get(f"backend:{backend}"))
        if running is None:
            running = self._running(conn, backend)
        waiting = [
            Queued(r.id, r.project, r.owner, r.priority, r.submitted_at, r.not_before,
                   r.est_seconds, r.state)
            for r in conn.execute(
                select(
                    m.jobs.c.id, m.jobs.c.project, m.jobs.c.owner, m.jobs.c.priority,
                    m.jobs.c.submitted_at, m.jobs.c.not_before, m.jobs.c.est_seconds,
                    m.jobs.c.state,
                )
                .where(m.jobs.c.backend == backend, m.jobs.c.state.in_(WAITING))
                .order_by(m.jobs.c.priority.desc(), m.jobs.c.submitted_at)
                .limit(scan_limit)
            )
        ]
        if not waiting:
            return []
        projects = sorted({q.project for q in waiting})
        paused_projects = {
            k.removeprefix("project:")
            for k, v in self._controls(conn, [f"project:{p}" for p in projects]).items()
            if v
        }
        fair = {
            r.project: decayed(r.value, r.updated_at, now, policy.half_life)
            for r in conn.execute(
                select(m.fair_share).where(m.fair_share.c.project.in_(projects))
            )
        }
        left = sorted(max(0.0, r.started_at + r.est_seconds - now) for r in running)
        placed = order(
            policy, backend, waiting, fair, paused, paused_projects, left[:lanes], lanes, now,
        )
        return _all_busy(placed) if len(running) >= lanes else placed

    def _running(self, conn: Connection, backend: str) -> list[Any]:
        return list(conn.execute(
            select(m.jobs.c.started_at, m.jobs.c.est_seconds).where(
                m.jobs.c.backend == backend, m.jobs.c.state == "RUNNING"
            )
        ).all())

    def placements(self, backend: str, lanes: int, policy: Policy) -> dict[str, Any]:
        def run(conn: Connection) -> dict[str, Any]:
            return {
                p.id: p
                for p in self._placements(conn, backend, lanes, policy, _now(), 100_000)
            }

        result: dict[str, Any] = self._read(run)
        return result

    def _read(self, fn: Any, *args: Any) -> Any:
        """A read-only transaction (never takes SQLite's write lock)."""
        with self.read_engine.connect() as conn:
            try:
                return fn(conn, *args)
            finally:
                conn.rollback()

    # -- settlement ---------------------------------------------------------------------------

    def finish(
        self,
        job_id: str,
        instance: str,
        state: str,
        *,
        result: bytes | None = None,
        seconds: float | None = None,
        error: str | None = None,
        policy: Policy | None = None,
        reason: str | None = None,
    ) -> dict[str, Any] | None:
        """Record the outcome of a run this instance holds; reconcile or refund its quota.
        ``reason`` refines a failure (``MEMORY_LIMIT``, ``TIME_LIMIT``, ...).

        Returns the job as recorded, or None when the job was no longer this instance's."""

        def run(conn: Connection) -> dict[str, Any] | None:
            now = _now()
            job = conn.execute(
                self._lock(select(m.jobs).where(m.jobs.c.id == job_id))
            ).one_or_none()
            if job is None or job.state != "RUNNING" or job.lease_owner != instance:
                return None  # recovered by another replica meanwhile: its outcome wins
            final = "CANCELLED" if job.cancel_requested and state != "DONE" else state
            charged = seconds
            if final != "DONE":
                # A run its owner stopped, or one that overran the policy's limits, held
                # the backend's lane all the same: that time is charged (quota and fair
                # share; a provider's own queue counts, as it does for the policy's time
                # limit), or cancelling near the end, or running into the limit of an
                # underestimated job, would make backend time free. A failure of the
                # backend or the service, or a cancel by a lead or an operator (a drain),
                # is not the owner's doing: refunded whole.
                ran = (reason in CHARGED_FAILURES if final == "FAILED"
                       else final == "CANCELLED" and self._cancelled_by(conn, job_id) == job.owner)
                charged = max(0.0, now - job.started_at) if ran and job.started_at else None
            values = {
                **self._settle(conn, job, final, charged, now),
                "state": final,
                "reason": (reason if final == "FAILED" and reason else
                           {"DONE": "COMPLETED", "FAILED": "EXECUTION_ERROR",
                            "CANCELLED": "CANCELLED"}[final]),
                "finished_at": now,
                "used_seconds": charged or 0.0,
                "lease_owner": None,
                "lease_until": None,
                "error": error,
            }
            conn.execute(update(m.jobs).where(m.jobs.c.id == job_id).values(**values))
            if result is not None and final == "DONE":
                conn.execute(
                    update(m.job_data).where(m.job_data.c.job_id == job_id).values(result=result)
                )
            if charged and policy is not None:
                self._add_fair_share(conn, job.project, charged, now, policy)
            detail: dict[str, Any] = {"backend_seconds": charged} if charged is not None else {}
            if error:
                detail["error"] = error
            self._decide(conn, job_id, now, [(final, detail)])
            return {**dict(job._mapping), **values, "settled": True}

        done: dict[str, Any] | None = self.transaction(run)
        return done

    def _cancelled_by(self, conn: Connection, job_id: str) -> str | None:
        """Who asked last to cancel a running job (its CANCEL_REQUESTED decision)."""
        detail = conn.execute(
            select(m.decisions.c.detail)
            .where(m.decisions.c.job_id == job_id, m.decisions.c.code == "CANCEL_REQUESTED")
            .order_by(m.decisions.c.id.desc()).limit(1)
        ).scalar_one_or_none()
        by = detail.get("by") if isinstance(detail, dict) else None
        return by if isinstance(by, str) else None

    def _settle(
        self, conn: Connection, job: Any, final: str, seconds: float | None, now: float
    ) -> dict[str, Any]:
        """Reconcile held amounts: charge real seconds on success; otherwise refund the job
        and its shots, and charge the ``seconds`` it ran (None: refund all). Returns the
        job's column values to write with the caller's update of the job."""
        if job.settled:
            return {}
        if final == "DONE":
            delta = {"jobs": 0, "shots": 0, "seconds": (seconds or 0.0) - job.held_seconds}
        else:
            delta = {"jobs": -job.held_jobs, "shots": -job.held_shots,
                     "seconds": (seconds or 0.0) - job.held_seconds}
        if job.usage_keys:
            conn.execute(_USAGE_ADD, [{"k": key, "d_jobs": delta["jobs"], "d_shots": delta["shots"],
                                       "d_seconds": delta["seconds"]}
                                      for key in sorted(job.usage_keys)])
        if final != "DONE":
            self._decide(conn, job.id, now, [("REFUNDED", {
                "jobs": job.held_jobs, "shots": job.held_shots, "seconds": job.held_seconds})])
            if seconds:
                self._decide(conn, job.id, now, [("CHARGED", {"backend_seconds": seconds})])
        return {"settled": True}

    def _add_fair_share(
        self, conn: Connection, project: str, seconds: float, now: float, policy: Policy
    ) -> None:
        row = conn.execute(
            self._lock(select(m.fair_share).where(m.fair_share.c.project == project))
        ).one_or_none()
        if row is None:  # the project's first usage (a racing replica's insert wins first)
            self._upsert_ignore(conn, m.fair_share,
                                [{"project": project, "value": 0.0, "updated_at": now}],
                                "project")
            row = conn.execute(
                self._lock(select(m.fair_share).where(m.fair_share.c.project == project))
            ).one()
        conn.execute(
            update(m.fair_share)
            .where(m.fair_share.c.project == project)
            .values(
                value=decayed(row.value, row.updated_at, now, policy.half_life) + seconds,
                updated_at=now,
            )
        )

    def renew_leases(self, instance: str, lease: float, job_ids: Sequence[str]) -> list[str]:
        """Extend the leases of the jobs this process is running (``job_ids``); returns
        those whose cancel was requested. Only jobs actually running here: a restarted
        process under the same instance name must not keep a dead run's lease alive."""
        if not job_ids:
            return []
        ids = sorted(job_ids)

        def run(conn: Connection) -> list[str]:
            now = _now()
            mine = and_(m.jobs.c.state == "RUNNING", m.jobs.c.lease_owner == instance,
                        m.jobs.c.id.in_(ids))
            conn.execute(update(m.jobs).where(mine).values(lease_until=now + lease))
            return list(
                conn.execute(
                    select(m.jobs.c.id).where(mine, m.jobs.c.cancel_requested.is_(True))
                ).scalars()
            )

        renewed: list[str] = self.transaction(run)
        return renewed

    def recover(self, max_attempts: int, requeue: bool) -> list[tuple[str, str]]:
        """Jobs whose replica died (lease expired): requeue them or fail and refund."""

        def run(conn: Connection) -> list[tuple[str, str]]:
            now = _now()
            lost = conn.execute(
                self._lock(
                    select(m.jobs).where(m.jobs.c.state == "RUNNING", m.jobs.c.lease_until < now)
                )
            ).all()
            out = []
            for job in lost:
                detail = {"instance": job.lease_owner, "attempt": job.attempts}
                if job.cancel_requested:
                    values = {**self._settle(conn, job, "CANCELLED", None, now),
                              "state": "CANCELLED", "reason": "CANCELLED", "finished_at": now}
                    code = "CANCELLED"
                elif requeue and job.attempts < max_attempts:
                    values = {"state": "QUEUED", "reason": "RECOVERED"}
                    code = "QUEUED:RECOVERED"
                else:
                    values = {**self._settle(conn, job, "FAILED", None, now),
                              "state": "FAILED", "reason": "LOST", "finished_at": now,
                              "error": "the gateway running the job stopped; quota refunded"}
                    code = "FAILED:LOST"
                conn.execute(
                    update(m.jobs)
                    .where(m.jobs.c.id == job.id)
                    .values(lease_owner=None, lease_until=None, **values)
                )
                self._decide(conn, job.id, now, [(code, detail)])
                out.append((job.id, code))
            return out

        recovered: list[tuple[str, str]] = self.transaction(run)
        return recovered

    # -- cancel and operators --------------------------------------------------------------

    def cancel(self, job_id: str, actor: str, reason: str) -> tuple[str, str]:
        """Cancel a job. Returns (state after, what happened)."""
        _, state, what = self.cancel_many([job_id], actor, reason)[0]
        return state, what

    def cancel_many(
        self, job_ids: Sequence[str], actor: str, reason: str, chunk: int = 500
    ) -> list[tuple[str, str, str]]:
        """Cancel jobs, ``chunk`` per transaction (a drain of thousands stays quick, and no
        transaction holds the write lock long). Returns (job id, state after, what
        happened: ``cancelled``, ``requested`` for a running job, ``final`` or ``gone``)."""

        def run(conn: Connection, ids: Sequence[str]) -> list[tuple[str, str, str]]:
            now = _now()
            return [(i, *self._cancel_one(conn, i, actor, reason, now)) for i in ids]

        out: list[tuple[str, str, str]] = []
        for start in range(0, len(job_ids), chunk):
            out.extend(self.transaction(run, job_ids[start:start + chunk]))
        return out

    def _cancel_one(
        self, conn: Connection, job_id: str, actor: str, reason: str, now: float
    ) -> tuple[str, str]:
        job = conn.execute(self._lock(select(m.jobs).where(m.jobs.c.id == job_id))).one_or_none()
        if job is None:
            return "", "gone"
        if job.state in m.FINAL_STATES:
            return job.state, "final"
        if job.state == "RUNNING":
            conn.execute(
                update(m.jobs).where(m.jobs.c.id == job_id).values(cancel_requested=True)
            )
            self._decide(conn, job_id, now, [("CANCEL_REQUESTED",
                                              {"by": actor, "reason": reason})])
            return "RUNNING", "requested"
        settled = self._settle(conn, job, "CANCELLED", None, now)
        conn.execute(
            update(m.jobs)
            .where(m.jobs.c.id == job_id)
            .values(state="CANCELLED", reason="CANCELLED", finished_at=now,
                    cancel_requested=True, **settled)
        )
        self._decide(conn, job_id, now, [("CANCELLED", {"by": actor, "reason": reason})])
        return "CANCELLED", "cancelled"

    def waiting_ids(self, backend: str | None = None, project: str | None = None) -> list[str]:
        def run(conn: Connection) -> list[str]:
            q = select(m.jobs.c.id).where(
                m.jobs.c.state.in_((*WAITING, "RUNNING"))
            )
            if backend:
                q = q.where(m.jobs.c.backend == backend)
            if project:
                q = q.where(m.jobs.c.project == project)
            return list(conn.execute(q).scalars())

        ids: list[str] = self._read(run)
        return ids

    def set_control(self, key: str, active: bool, actor: str, reason: str,
                    action: str, detail: Mapping[str, Any] | None = None) -> None:
        def run(conn: Connection) -> None:
            now = _now()
            self._upsert_ignore(
                conn, m.controls,
                [{"key": key, "active": False, "actor": actor, "reason": "", "at": now}], "key",
            )
            conn.execute(
                update(m.controls)
                .where(m.controls.c.key == key)
                .values(active=active, actor=actor, reason=reason, at=now)
            )
            self._record(conn, actor, action, key, reason, detail or {}, now)
            if key.startswith(("backend:", "project:")):
                # Waiting jobs show the new state at once.
                kind, _, name = key.partition(":")
                col = m.jobs.c.backend if kind == "backend" else m.jobs.c.project
                if active:
                    conn.execute(
                        update(m.jobs)
                        .where(col == name, m.jobs.c.state == "QUEUED")
                        .values(state="HELD", reason=f"{kind.upper()}_PAUSED")
                    )
                else:
                    conn.execute(
                        update(m.jobs)
                        .where(col == name, m.jobs.c.state == "HELD",
                               m.jobs.c.reason == f"{kind.upper()}_PAUSED")
                        .values(state="QUEUED", reason="PENDING")
                    )

        self.transaction(run)

    def record_action(self, actor: str, action: str, target: str, reason: str,
                      detail: Mapping[str, Any]) -> None:
        self.transaction(lambda conn: self._record(conn, actor, action, target, reason,
                                                   detail, _now()))

    def _record(self, conn: Connection, actor: str, action: str, target: str, reason: str,
                detail: Mapping[str, Any], now: float) -> None:
        conn.execute(
            insert(m.operator_actions).values(
                at=now, actor=actor, action=action, target=target, reason=reason,
                detail=dict(detail),
            )
        )

    def controls(self) -> dict[str, dict[str, Any]]:
        def run(conn: Connection) -> dict[str, dict[str, Any]]:
            return {
                r.key: {"active": bool(r.active), "by": r.actor, "reason": r.reason, "at": r.at}
                for r in conn.execute(select(m.controls))
            }

        out: dict[str, dict[str, Any]] = self._read(run)
        return out

    def actions(self, limit: int = 1000) -> list[dict[str, Any]]:
        def run(conn: Connection) -> list[dict[str, Any]]:
            rows = conn.execute(
                select(m.operator_actions).order_by(m.operator_actions.c.id.desc()).limit(limit)
            )
            return [dict(r._mapping) for r in rows]

        out: list[dict[str, Any]] = self._read(run)
        return out

    # -- reads --------------------------------------------------------------------------------

    def job(self, job_id: str) -> dict[str, Any] | None:
        def run(conn: Connection) -> dict[str, Any] | None:
            row = conn.execute(select(m.jobs).where(m.jobs.c.id == job_id)).one_or_none()
            return None if row is None else dict(row._mapping)

        out: dict[str, Any] | None = self._read(run)
        return out

    def result(self, job_id: str) -> bytes | None:
        def run(conn: Connection) -> bytes | None:
            value: bytes | None = conn.execute(
                select(m.job_data.c.result).where(m.job_data.c.job_id == job_id)
            ).scalar()
            return value

        out: bytes | None = self._read(run)
        return out

    def decisions(self, job_id: str) -> list[dict[str, Any]]:
        def run(conn: Connection) -> list[dict[str, Any]]:
            rows = conn.execute(
                select(m.decisions.c.at, m.decisions.c.code, m.decisions.c.detail)
                .where(m.decisions.c.job_id == job_id)
                .order_by(m.decisions.c.id)
            )
            return [dict(r._mapping) for r in rows]

        out: list[dict[str, Any]] = self._read(run)
        return out

    def jobs(
        self,
        *,
        owner: str | None = None,
        projects: Sequence[str] = (),
        everyone: bool = False,
        state: str | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        def run(conn: Connection) -> list[dict[str, Any]]:
            q = select(m.jobs)
            if not everyone:
                conds = []
                if owner:
                    conds.append(m.jobs.c.owner == owner)
                if projects:
                    conds.append(m.jobs.c.project.in_(list(projects)))
                if not conds:
                    return []
                q = q.where(or_(*conds))
            if state:
                q = q.where(m.jobs.c.state == state)
            q = q.order_by(m.jobs.c.submitted_at.desc()).limit(limit)
            return [dict(r._mapping) for r in conn.execute(q)]

        out: list[dict[str, Any]] = self._read(run)
        return out

    def usage(self, keys: Sequence[str]) -> dict[str, dict[str, float]]:
        def run(conn: Connection) -> dict[str, dict[str, float]]:
            rows = conn.execute(select(m.usage).where(m.usage.c.key.in_(list(keys))))
            return {r.key: {"jobs": r.jobs, "shots": r.shots, "seconds": r.seconds}
                    for r in rows}

        out: dict[str, dict[str, float]] = self._read(run)
        return out

    def export(self, since: float = 0.0, batch: int = 500) -> Iterator[dict[str, Any]]:
        """Every job submitted at or after ``since`` with its decisions (provenance)."""
        last = (since, "")
        while True:
            def run(conn: Connection, after: tuple[float, str] = last) -> list[dict[str, Any]]:
                rows = conn.execute(
                    select(m.jobs)
                    .where(
                        or_(
                            m.jobs.c.submitted_at > after[0],
                            and_(m.jobs.c.submitted_at == after[0], m.jobs.c.id > after[1]),
                        )
                    )
                    .order_by(m.jobs.c.submitted_at, m.jobs.c.id)
                    .limit(batch)
                ).all()
                out = []
                for r in rows:
                    job = dict(r._mapping)
                    job["decisions"] = [
                        dict(d._mapping)
                        for d in conn.execute(
                            select(m.decisions.c.at, m.decisions.c.code, m.decisions.c.detail)
                            .where(m.decisions.c.job_id == r.id)
                            .order_by(m.decisions.c.id)
                        )
                    ]
                    out.append(job)
                return out

            rows = self._read(run)
            if not rows:
                return
            yield from rows
            last = (rows[-1]["submitted_at"], rows[-1]["id"])

    def active_counts(self) -> dict[tuple[str, str], int]:
        """Jobs not yet final, by (backend, state): the queue as the metrics show it."""
        def run(conn: Connection) -> dict[tuple[str, str], int]:
            rows = conn.execute(
                select(m.jobs.c.backend, m.jobs.c.state, func.count())
                .where(m.jobs.c.state.in_(("QUEUED", "HELD", "RUNNING")))
                .group_by(m.jobs.c.backend, m.jobs.c.state)
            )
            return {(str(b), str(st)): int(n) for b, st, n in rows}

        out: dict[tuple[str, str], int] = self._read(run)
        return out

    def counts(self) -> dict[str, int]:
        def run(conn: Connection) -> dict[str, int]:
            rows = conn.execute(select(m.jobs.c.state, func.count()).group_by(m.jobs.c.state))
            return {state: int(n) for state, n in rows}

        out: dict[str, int] = self._read(run)
        return out



# Prebuilt statements for the admission path (built once; SQLAlchemy caches their SQL).
_DECISION_INSERT = insert(m.decisions)
_USAGE_ADD = (
    update(m.usage)
    .where(m.usage.c.key == bindparam("k"))
    .values(jobs=m.usage.c.jobs + bindparam("d_jobs"), shots=m.usage.c.shots + bindparam("d_shots"),
            seconds=m.usage.c.seconds + bindparam("d_seconds"))
)


def _sqlite_engine(url: str, synchronous: str, begin: str, echo: bool) -> Engine:
    engine = create_engine(
        url, connect_args={"check_same_thread": False, "timeout": 30}, echo=echo
    )

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={synchronous}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql(begin)

    return engine


def _all_busy(placements: list[Any]) -> list[Any]:
    """Every lane is taken: nothing is READY, whatever the order says."""
    for p in placements:
        if p.reason == "READY":
            p.reason = "BACKEND_BUSY"
    return placements


def _retryable(e: Exception) -> bool:
    orig = getattr(e, "orig", None)
    text = str(orig or e).lower()
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return (
        "locked" in text
        or "busy" in text
        or "deadlock" in text
        or "could not serialize" in text
        or code in {"40001", "40P01", "55P03"}
    )


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def key_reused(key: str) -> GatewayError:
    return GatewayError(
        422, "IDEMPOTENCY_KEY_REUSED",
        f"Idempotency-Key {key!r} was already used for a different request (other "
        "circuits, shots, options, backend or tags); nothing was admitted. Send a new key "
        "with a new job, and repeat a key only with the request it was first sent with",
    )


def _replay(key: str, fingerprint: str, record: Row | None,
            facts: Mapping[str, Row]) -> Admitted | Exception:
    """The earlier submission's answer, as it stands now, for a repeat of it."""
    fact = facts.get(record["job_id"]) if record is not None else None
    if record is None or fact is None:
        # Only if the key's record went (purged) between the claim and this read.
        return StoreError("the record of this Idempotency-Key changed meanwhile")
    if record["fingerprint"] != fingerprint:
        return key_reused(key)
    if record["status"] >= 400:  # a rejection (a job row too) is answered as it was
        detail = {k: v for k, v in fact["detail"].items() if k not in ("status", "code")}
        refused = Refused(record["status"], fact["reason"],
                          fact["error"] or f"REJECTED:{fact['reason']}", **detail)
        return Admitted(record["job_id"], "REJECTED", fact["reason"], [], refused,
                        replayed=True)
    return Admitted(record["job_id"], fact["state"], fact["reason"], fact["warnings"],
                    replayed=True)
