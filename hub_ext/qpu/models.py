"""The gateway's database schema (SQLAlchemy Core), shared by every replica.

One table per concern, each small:

- ``jobs``: one row per submission that reached policy (admitted or rejected), with the
  state, the reason code, the amounts held against quotas and the lease of the replica
  running it. Scheduling queries read only this table.
- ``job_data``: the circuits as submitted and the result, kept apart so scheduling scans
  stay small.
- ``decisions``: every policy decision on a job, in order, with its time.
- ``usage``: quota counters, one row per (subject, backend class, period). Admission locks
  these rows, so two replicas can never both admit past a limit.
- ``rate``: the token bucket of each (user, backend class), as a GCRA arrival time.
- ``fair_share``: decayed backend-seconds per project.
- ``controls``: operator switches (backend or project paused, user revoked).
- ``operator_actions``: who did which break-glass action, when and why.
- ``dispatch_locks``: one row per backend; a replica locks it to start a job there.
- ``idempotency``: each (owner, ``Idempotency-Key``) a submission came with, the job it
  made and a fingerprint of the request, written in the transaction that writes the job.
  A table of its own, so ``create_all`` adds it to a database made before it (no schema
  version change).
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

SCHEMA_VERSION = 1

metadata = MetaData()

jobs = Table(
    "qpu_jobs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("owner", String(255), nullable=False),
    Column("project", String(255), nullable=False),
    Column("backend", String(255), nullable=False),
    Column("requested_backend", String(255), nullable=False),
    Column("backend_class", String(16), nullable=False),
    Column("state", String(16), nullable=False),
    Column("reason", String(64), nullable=False),
    Column("tier", String(64), nullable=False),
    Column("priority", Integer, nullable=False),
    Column("sensitivity", String(64), nullable=False),
    Column("n_circuits", Integer, nullable=False),
    Column("shots", Integer, nullable=False),
    Column("est_seconds", Float, nullable=False),
    Column("held_jobs", Integer, nullable=False, default=0),
    Column("held_shots", Integer, nullable=False, default=0),
    Column("held_seconds", Float, nullable=False, default=0.0),
    Column("used_seconds", Float, nullable=True),
    Column("usage_keys", JSON, nullable=False),
    Column("settled", Boolean, nullable=False, default=False),
    Column("not_before", Float, nullable=False, default=0.0),
    Column("submitted_at", Float, nullable=False),
    Column("started_at", Float, nullable=True),
    Column("finished_at", Float, nullable=True),
    Column("start_seq", Integer, nullable=True),
    Column("lease_owner", String(64), nullable=True),
    Column("lease_until", Float, nullable=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("tags", JSON, nullable=False),
    Column("provenance", JSON, nullable=False),
    Column("error", Text, nullable=True),
)
Index("ix_qpu_jobs_queue", jobs.c.backend, jobs.c.state)
Index("ix_qpu_jobs_owner", jobs.c.owner, jobs.c.submitted_at)
Index("ix_qpu_jobs_project", jobs.c.project, jobs.c.submitted_at)
Index("ix_qpu_jobs_state", jobs.c.state, jobs.c.lease_until)

job_data = Table(
    "qpu_job_data",
    metadata,
    Column("job_id", String(32), ForeignKey("qpu_jobs.id"), primary_key=True),
    Column("circuits", LargeBinary, nullable=False),
    Column("options", JSON, nullable=False),
    Column("result", LargeBinary, nullable=True),
)

decisions = Table(
    "qpu_decisions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", String(32), ForeignKey("qpu_jobs.id"), nullable=False, index=True),
    Column("at", Float, nullable=False),
    Column("code", String(64), nullable=False),
    Column("detail", JSON, nullable=False),
)

usage = Table(
    "qpu_usage",
    metadata,
    Column("key", String(512), primary_key=True),
    Column("jobs", Integer, nullable=False, default=0),
    Column("shots", Integer, nullable=False, default=0),
    Column("seconds", Float, nullable=False, default=0.0),
)

rate = Table(
    "qpu_rate",
    metadata,
    Column("key", String(512), primary_key=True),
    Column("tat", Float, nullable=False),
)

fair_share = Table(
    "qpu_fair_share",
    metadata,
    Column("project", String(255), primary_key=True),
    Column("value", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

controls = Table(
    "qpu_controls",
    metadata,
    Column("key", String(512), primary_key=True),
    Column("active", Boolean, nullable=False),
    Column("actor", String(255), nullable=False),
    Column("reason", Text, nullable=False),
    Column("at", Float, nullable=False),
)

operator_actions = Table(
    "qpu_operator_actions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False),
    Column("actor", String(255), nullable=False),
    Column("action", String(64), nullable=False),
    Column("target", String(512), nullable=False),
    Column("reason", Text, nullable=False),
    Column("detail", JSON, nullable=False),
)

dispatch_locks = Table(
    "qpu_dispatch_locks",
    metadata,
    Column("backend", String(255), primary_key=True),
    Column("seq", Integer, nullable=False, default=0),
)

idempotency = Table(
    "qpu_idempotency",
    metadata,
    Column("owner", String(255), primary_key=True),
    Column("key", String(128), primary_key=True),
    # No foreign key: the key is claimed at the start of the admission transaction, before
    # its job row is written (the claim is what makes a racing replica wait), and the
    # rows are purged on their own schedule.
    Column("job_id", String(32), nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("status", Integer, nullable=False),  # the HTTP status the first answer had
    Column("created_at", Float, nullable=False),
    # SQLite: the rows live in the primary key's B-tree, not in a rowid table beside it
    # (one B-tree fewer to write per key: admission writes one key per keyed job).
    sqlite_with_rowid=False,
)
Index("ix_qpu_idempotency_created", idempotency.c.created_at)

meta = Table(
    "qpu_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", String(255), nullable=False),
)

FINAL_STATES = frozenset({"DONE", "FAILED", "CANCELLED", "REJECTED"})
WAITING_STATES = frozenset({"QUEUED", "HELD"})
