"""The reads and writes of one admission batch, behind one small interface.

``Store._admit_batch`` decides; an ``AdmissionIO`` fetches the locked counters it decides
on and writes the outcome. Two implementations of the same statements:

- ``CoreIO`` (PostgreSQL): SQLAlchemy Core, locking rows with ``SELECT ... FOR UPDATE``.
- ``SqliteIO``: the same statements on the sqlite3 cursor of the transaction ``Store``
  opened (``BEGIN IMMEDIATE`` already holds the write lock). Admission runs these eight
  statements for every batch, and through Core each cost ~70 µs of Python before SQLite
  saw it: most of a small batch's CPU time, which under load is the gateway's admission
  rate. The SQL is generated once from the same Table definitions (models.py), and values
  are converted exactly as SQLAlchemy stores them (JSON as ``json.dumps``, booleans as 0/1).

Idempotency keys (``qpu_idempotency``): ``claim_keys`` runs for every batch with a keyed
ticket, so it has both forms; what only a repeated key needs (the earlier record, the
job it made, the record's final status) is Core on the same connection, for both.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from functools import cache
from typing import Any, Protocol

from sqlalchemy import (
    JSON,
    Boolean,
    Connection,
    Table,
    bindparam,
    delete,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql

from . import models as m

Row = dict[str, Any]
Pair = tuple[str, str]  # (owner, Idempotency-Key)

KEY_COLUMNS = ("owner", "key", "job_id", "fingerprint", "status", "created_at")


class AdmissionIO(Protocol):
    def controls(self, keys: list[str]) -> dict[str, bool]:
        """Which of these control keys (``user:``/``backend:``/``project:``) are active."""

    def locked_rows(self, table: Table, keys: list[str], blank: Row) -> dict[str, Row]:
        """The rows of ``table`` with these keys, created from ``blank`` if missing, locked
        for the rest of the transaction."""

    def set_usage(self, rows: list[Row]) -> None:
        """``{"key", "jobs", "shots", "seconds"}`` each."""

    def set_rates(self, rows: list[Row]) -> None:
        """``{"key", "tat"}`` each."""

    def insert(self, table: Table, rows: list[Row]) -> None:
        """New rows of ``qpu_jobs``, ``qpu_job_data`` or ``qpu_decisions``."""

    def claim_keys(self, rows: list[Row], cutoff: float) -> set[Pair]:
        """Insert these ``qpu_idempotency`` rows (``KEY_COLUMNS`` each, one per pair, sorted),
        replacing a row created before ``cutoff`` (expired). Returns the pairs the batch now
        holds; a pair another transaction holds is waited for (PostgreSQL) and left out."""

    def key_records(self, pairs: list[Pair], cutoff: float) -> dict[Pair, Row]:
        """The unexpired ``qpu_idempotency`` rows of these pairs."""

    def replay_facts(self, job_ids: list[str]) -> dict[str, Row]:
        """What a repeated key answers about these jobs (``replay_facts`` below)."""

    def settle_keys(self, statuses: list[tuple[str, str, int]], released: list[Pair]) -> None:
        """Set the status of claimed keys whose job was rejected; drop the claims of
        tickets that got no job row."""

    def close(self) -> None:
        """Release what the batch opened (called in the thread holding the connection)."""


_USAGE_SET = (
    update(m.usage)
    .where(m.usage.c.key == bindparam("k"))
    .values(jobs=bindparam("v_jobs"), shots=bindparam("v_shots"),
            seconds=bindparam("v_seconds"))
)
_RATE_SET = update(m.rate).where(m.rate.c.key == bindparam("k")).values(tat=bindparam("v_tat"))
_KEYS = m.idempotency
_KEY_PAIR = (_KEYS.c.owner == bindparam("o")) & (_KEYS.c.key == bindparam("k"))
_KEY_STATUS = update(_KEYS).where(_KEY_PAIR).values(status=bindparam("s"))
_KEY_RELEASE = delete(_KEYS).where(_KEY_PAIR)


def key_records(conn: Connection, pairs: list[Pair], cutoff: float) -> dict[Pair, Row]:
    """The unexpired ``qpu_idempotency`` rows of ``pairs``."""
    if not pairs:
        return {}
    wanted = set(pairs)
    rows = conn.execute(select(_KEYS).where(
        _KEYS.c.owner.in_(sorted({o for o, _ in wanted})),
        _KEYS.c.key.in_(sorted({k for _, k in wanted})),
        _KEYS.c.created_at >= cutoff,
    ))
    return {(r.owner, r.key): dict(r._mapping) for r in rows if (r.owner, r.key) in wanted}


def replay_facts(conn: Connection, job_ids: list[str]) -> dict[str, Row]:
    """Each job's current ``state``, ``reason`` and ``error``, its soft-limit ``warnings``
    and, when it was rejected, the refusal's ``detail``: what its first answer held."""
    ids = sorted(set(job_ids))
    if not ids:
        return {}
    j, d = m.jobs.c, m.decisions.c
    facts: dict[str, Row] = {
        r.id: {"state": r.state, "reason": r.reason, "error": r.error, "warnings": [],
               "detail": {}}
        for r in conn.execute(select(j.id, j.state, j.reason, j.error).where(j.id.in_(ids)))
    }
    rows = conn.execute(
        select(d.job_id, d.code, d.detail)
        .where(d.job_id.in_(ids), or_(d.code.startswith("WARN:"), d.code.startswith("REJECTED:")))
        .order_by(d.id)
    )
    for r in rows:
        detail = dict(r.detail or {})
        if r.code.startswith("WARN:"):
            facts[r.job_id]["warnings"].append(detail)
        else:
            detail.pop("message", None)  # the job's ``error``
            facts[r.job_id]["detail"] = detail
    return facts


class _KeyRecords:
    """What only a repeated key needs, in Core on the batch's connection (either database)."""

    conn: Connection

    def key_records(self, pairs: list[Pair], cutoff: float) -> dict[Pair, Row]:
        return key_records(self.conn, pairs, cutoff)

    def replay_facts(self, job_ids: list[str]) -> dict[str, Row]:
        return replay_facts(self.conn, job_ids)

    def settle_keys(self, statuses: list[tuple[str, str, int]], released: list[Pair]) -> None:
        if statuses:
            self.conn.execute(_KEY_STATUS, [{"o": o, "k": k, "s": s} for o, k, s in statuses])
        if released:
            self.conn.execute(_KEY_RELEASE, [{"o": o, "k": k} for o, k in released])


class CoreIO(_KeyRecords):
    """SQLAlchemy Core; rows are locked with FOR UPDATE (PostgreSQL)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def controls(self, keys: list[str]) -> dict[str, bool]:
        rows = self.conn.execute(
            select(m.controls.c.key, m.controls.c.active).where(m.controls.c.key.in_(keys))
        )
        return {r.key: bool(r.active) for r in rows}

    def locked_rows(self, table: Table, keys: list[str], blank: Row) -> dict[str, Row]:
        if not keys:
            return {}

        def read() -> dict[str, Row]:
            q = select(table).where(table.c.key.in_(keys)).order_by(table.c.key)
            return {r.key: dict(r._mapping) for r in self.conn.execute(q.with_for_update())}

        rows = read()
        missing = [{"key": k, **blank} for k in keys if k not in rows]
        if missing:
            self.conn.execute(
                postgresql.insert(table).on_conflict_do_nothing(index_elements=["key"]),
                missing,
            )
            rows = read()
        return rows

    def set_usage(self, rows: list[Row]) -> None:
        self.conn.execute(_USAGE_SET, [{"k": r["key"], "v_jobs": r["jobs"],
                                        "v_shots": r["shots"], "v_seconds": r["seconds"]}
                                       for r in rows])

    def set_rates(self, rows: list[Row]) -> None:
        self.conn.execute(_RATE_SET, [{"k": r["key"], "v_tat": r["tat"]} for r in rows])

    def insert(self, table: Table, rows: list[Row]) -> None:
        self.conn.execute(insert(table), rows)

    def claim_keys(self, rows: list[Row], cutoff: float) -> set[Pair]:
        if not rows:
            return set()
        # A key a concurrent transaction inserted and has not committed makes this wait;
        # once it commits the key is a conflict (not ours), once it rolls back it is ours.
        values = postgresql.insert(_KEYS).values(rows)
        stmt = values.on_conflict_do_update(
            index_elements=[_KEYS.c.owner, _KEYS.c.key],
            set_={c: values.excluded[c] for c in KEY_COLUMNS[2:]},
            where=_KEYS.c.created_at < cutoff,
        ).returning(_KEYS.c.owner, _KEYS.c.key)
        return {(r.owner, r.key) for r in self.conn.execute(stmt)}

    def close(self) -> None:
        """Nothing to release: the statements ran on the caller's connection."""


# -- SQLite ------------------------------------------------------------------------------


def _converter(table: Table, name: str) -> Callable[[Any], Any] | None:
    kind = table.c[name].type
    if isinstance(kind, JSON):
        return json.dumps
    if isinstance(kind, Boolean):
        return lambda v: None if v is None else int(bool(v))
    return None


class _Insert:
    """``INSERT INTO table (columns) VALUES (?, ...)`` with each value as Core stores it."""

    def __init__(self, table: Table, columns: Sequence[str]) -> None:
        self.columns = tuple(columns)
        self.convert = [_converter(table, c) for c in self.columns]
        self.sql = (f"INSERT INTO {table.name} ({', '.join(self.columns)}) "  # noqa: S608
                    f"VALUES ({_placeholders(len(self.columns))})")

    def params(self, row: Row) -> tuple[Any, ...]:
        return tuple(
            row[c] if f is None or row[c] is None else f(row[c])
            for c, f in zip(self.columns, self.convert, strict=True)
        )


@cache
def _insert_for(table: Table) -> _Insert:
    # Autoincrement keys are left to SQLite, as Core does when they are not given.
    columns = [c.name for c in table.c if not (c.primary_key and c.autoincrement is True)]
    return _Insert(table, columns)


@cache
def _placeholders(n: int) -> str:
    return ", ".join("?" * n)


# Table and column names below come from models.py, never from a request; values are
# always bound parameters.


@cache
def _claim_sql(n: int) -> str:
    rows = ", ".join([f"({_placeholders(len(KEY_COLUMNS))})"] * n)
    replace = ", ".join(f"{c} = excluded.{c}" for c in KEY_COLUMNS[2:])
    return (f"INSERT INTO {_KEYS.name} ({', '.join(KEY_COLUMNS)}) VALUES {rows} "  # noqa: S608
            f"ON CONFLICT (owner, key) DO UPDATE SET {replace} "
            f"WHERE {_KEYS.name}.created_at < ? RETURNING owner, key")


class SqliteIO(_KeyRecords):
    """The same statements on the sqlite3 cursor, inside the caller's BEGIN IMMEDIATE
    (which already excludes every other writer, so reads need no row locks)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        dbapi = conn.connection.driver_connection
        assert dbapi is not None
        self.cursor = dbapi.cursor()

    def controls(self, keys: list[str]) -> dict[str, bool]:
        if not keys:
            return {}
        rows = self.cursor.execute(
            f"SELECT key, active FROM {m.controls.name} "  # noqa: S608
            f"WHERE key IN ({_placeholders(len(keys))})", keys,
        )
        return {k: bool(active) for k, active in rows}

    def locked_rows(self, table: Table, keys: list[str], blank: Row) -> dict[str, Row]:
        if not keys:
            return {}
        names = [c.name for c in table.c]
        query = (f"SELECT {', '.join(names)} FROM {table.name} "  # noqa: S608
                 f"WHERE key IN ({_placeholders(len(keys))})")
        rows = {r[0]: dict(zip(names, r, strict=True))
                for r in self.cursor.execute(query, keys)}
        missing = [k for k in keys if k not in rows]
        if missing:
            fields = ["key", *blank]
            self.cursor.executemany(
                f"INSERT INTO {table.name} ({', '.join(fields)}) VALUES "  # noqa: S608
                f"({_placeholders(len(fields))}) ON CONFLICT(key) DO NOTHING",
                [(k, *blank.values()) for k in missing],
            )
            rows.update((k, {"key": k, **blank}) for k in missing)
        return rows

    def set_usage(self, rows: list[Row]) -> None:
        self.cursor.executemany(
            f"UPDATE {m.usage.name} SET jobs = ?, shots = ?, seconds = ? "  # noqa: S608
            "WHERE key = ?",
            [(r["jobs"], r["shots"], r["seconds"], r["key"]) for r in rows],
        )

    def set_rates(self, rows: list[Row]) -> None:
        self.cursor.executemany(f"UPDATE {m.rate.name} SET tat = ? WHERE key = ?",  # noqa: S608
                                [(r["tat"], r["key"]) for r in rows])

    def insert(self, table: Table, rows: list[Row]) -> None:
        statement = _insert_for(table)
        self.cursor.executemany(statement.sql, [statement.params(r) for r in rows])

    def claim_keys(self, rows: list[Row], cutoff: float) -> set[Pair]:
        if not rows:
            return set()
        params = [r[c] for r in rows for c in KEY_COLUMNS]
        claimed = self.cursor.execute(_claim_sql(len(rows)), [*params, cutoff]).fetchall()
        return {(owner, key) for owner, key in claimed}

    def close(self) -> None:
        self.cursor.close()
