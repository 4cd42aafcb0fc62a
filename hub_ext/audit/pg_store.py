"""The PostgreSQL store: the same sealed records in a table, for hubs on several hosts.

Each row holds one record line exactly as the JSON-lines store writes it (so the same
chain, MAC and verifier apply) plus indexed copies of the fields auditors filter on.
Writers serialise on a row lock of the one-row head table (``SELECT ... FOR UPDATE``),
which also holds the sealed head, so appends from any number of processes and hosts
form one chain and a removed tail is detectable. A batch of records is one transaction.

A trigger makes the records table append-only (UPDATE, DELETE and TRUNCATE raise).
That is defence in depth: a database owner can drop the trigger, and then the chain
and the MACs are what reveal an edit.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from . import chain, clock
from .chain import Sealer
from .errors import AuditWriteError
from .query import Filter, Hit
from .store import EMPTY, Appended, Head, Pending, not_recorded, parse_head

# Table names: qustody_audit_records (one row per record), qustody_audit_head (one row).
_DDL_LOCK = 0x5157_4155_4449_54  # pg_advisory_xact_lock key while creating the tables

DDL = (
    """CREATE TABLE IF NOT EXISTS qustody_audit_records (
        seq BIGINT PRIMARY KEY,
        ts TEXT NOT NULL,
        type TEXT NOT NULL,
        user_name TEXT,
        actor TEXT,
        project TEXT,
        job_id TEXT,
        hash CHAR(64) NOT NULL,
        line TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS qustody_audit_head (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        doc TEXT NOT NULL
    )""",
    "INSERT INTO qustody_audit_head (id, doc) VALUES (1, '') ON CONFLICT (id) DO NOTHING",
    *(
        f"CREATE INDEX IF NOT EXISTS qustody_audit_records_{column} "
        f"ON qustody_audit_records ({column}, seq)"
        for column in ("ts", "type", "user_name", "actor", "project", "job_id")
    ),
    """CREATE OR REPLACE FUNCTION qustody_audit_append_only() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'qustody audit records are append-only'; END $$""",
    "DROP TRIGGER IF EXISTS qustody_audit_no_change ON qustody_audit_records",
    """CREATE TRIGGER qustody_audit_no_change BEFORE UPDATE OR DELETE ON qustody_audit_records
        FOR EACH ROW EXECUTE FUNCTION qustody_audit_append_only()""",
    "DROP TRIGGER IF EXISTS qustody_audit_no_truncate ON qustody_audit_records",
    """CREATE TRIGGER qustody_audit_no_truncate BEFORE TRUNCATE ON qustody_audit_records
        FOR EACH STATEMENT EXECUTE FUNCTION qustody_audit_append_only()""",
)


def connect(url: str) -> sqlalchemy.Engine:
    if not url.startswith("postgresql"):
        raise ValueError("the audit database must be PostgreSQL (postgresql+psycopg://...)")
    return sqlalchemy.create_engine(url, pool_pre_ping=True)


def database_error(what: str, e: SQLAlchemyError, after: str) -> AuditWriteError:
    """A message naming the failure without the statement, its parameters or the URL."""
    cause = type(getattr(e, "orig", None) or e).__name__
    return AuditWriteError(f"audit log database: {what} ({cause}). {after}")


class PgStore:
    """Append-only, hash-chained records in PostgreSQL (``store.Store``)."""

    def __init__(self, url: str, sealer: Sealer) -> None:
        self.sealer = sealer
        self._sealers = {sealer.kid: sealer}
        self.engine = connect(url)
        try:
            with self.engine.begin() as conn:
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _DDL_LOCK})
                if not _installed(conn):  # a writer role without DDL rights can use them
                    for statement in DDL:
                        conn.execute(text(statement))
        except SQLAlchemyError as e:
            raise database_error(
                "cannot reach the database or create the audit tables",
                e,
                "Check AuditLog.db_url and the role's rights (the first start needs CREATE).",
            ) from None

    def append(
        self, type_: str, version: int, origin: str, data_json: str, extra_json: str = ""
    ) -> Appended:
        return self.append_many([Pending(type_, version, origin, data_json, extra_json)])[0]

    def append_many(self, records: Sequence[Pending]) -> list[Appended]:
        """Seal and append records in order in one transaction (all or nothing)."""
        if not records:
            return []
        done: list[Appended] = []
        rows: list[dict[str, Any]] = []
        try:
            with self.engine.begin() as conn:
                doc = conn.execute(
                    text("SELECT doc FROM qustody_audit_head WHERE id = 1 FOR UPDATE")
                ).scalar()
                head = self._head(conn, doc)
                ts = max(clock.stamp(), head.ts)
                for record in records:
                    line = self.sealer.seal_record(head.seq + 1, head.hash, ts, *record)
                    head = head._replace(
                        seq=head.seq + 1,
                        hash=chain.line_hash(line),
                        ts=ts,
                        opened=head.opened or ts,
                    )
                    data = json.loads(record.data_json)
                    rows.append(
                        {
                            "seq": head.seq,
                            "ts": ts,
                            "type": record.type,
                            "user": _text(data.get("user")),
                            "actor": _text(data.get("actor")),
                            "project": _text(data.get("project")),
                            "job": _text(data.get("job_id")),
                            "hash": head.hash,
                            "line": line.decode("ascii"),
                        }
                    )
                    done.append(Appended(head.seq, ts, head.hash))
                conn.execute(
                    text(
                        "INSERT INTO qustody_audit_records (seq, ts, type, user_name, actor, "
                        "project, job_id, hash, line) VALUES (:seq, :ts, :type, :user, :actor, "
                        ":project, :job, :hash, :line)"
                    ),
                    rows,
                )
                conn.execute(
                    text("UPDATE qustody_audit_head SET doc = :doc WHERE id = 1"),
                    {"doc": self.sealer.seal_document(head.members())},
                )
        except SQLAlchemyError as e:
            raise database_error("cannot write the log", e, not_recorded(len(records), 0)) from None
        return done

    def _head(self, conn: sqlalchemy.Connection, doc: str | None) -> Head:
        if not doc:
            if (
                conn.execute(text("SELECT 1 FROM qustody_audit_records LIMIT 1")).first()
                is not None
            ):
                raise AuditWriteError(
                    "audit log database: the head row is empty but the log has records, so its "
                    "end cannot be trusted. Nothing was written. Run `qustody audit verify --db`."
                )
            return EMPTY
        try:
            return parse_head(doc.encode("ascii"), self._sealers)
        except (chain.Malformed, UnicodeEncodeError) as e:
            raise AuditWriteError(
                f"audit log database: the head is not valid ({e}); a different key, or "
                "tampering. Nothing was written."
            ) from None

    def close(self) -> None:
        self.engine.dispose()


def _installed(conn: sqlalchemy.Connection) -> bool:
    """Whether both tables and the append-only triggers are there already."""
    found = conn.execute(
        text(
            "SELECT to_regclass('qustody_audit_records') IS NOT NULL "
            "AND to_regclass('qustody_audit_head') IS NOT NULL "
            "AND (SELECT count(*) FROM pg_trigger WHERE tgname IN "
            "('qustody_audit_no_change', 'qustody_audit_no_truncate')) = 2"
        )
    ).scalar()
    return bool(found)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


# -- reading ---------------------------------------------------------------------------------


def read_head(engine: sqlalchemy.Engine) -> str | None:
    with engine.connect() as conn:
        doc = conn.execute(text("SELECT doc FROM qustody_audit_head WHERE id = 1")).scalar()
    return str(doc) if doc else None


def lines(engine: sqlalchemy.Engine, batch: int = 20000) -> Iterator[list[tuple[int, bytes]]]:
    """Every (seq column, record line) in seq order, in batches."""
    with engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=batch).execute(
            text("SELECT seq, line FROM qustody_audit_records ORDER BY seq")
        )
        for part in result.partitions():
            yield [(int(seq), line.encode("ascii", "replace")) for seq, line in part]


def query_db(url: str, flt: Filter, *, limit: int | None = None) -> Iterator[Hit]:
    """Matching records, oldest first, filtered by the database's indexes."""
    where: list[str] = []
    params: dict[str, Any] = {}
    for column, values, name in (
        ("type", flt.types, "types"),
        ("project", flt.projects, "projects"),
        ("job_id", flt.jobs, "jobs"),
    ):
        if values:
            where.append(f"{column} = ANY(:{name})")
            params[name] = sorted(values)
    if flt.users:
        where.append("(user_name = ANY(:users) OR actor = ANY(:users))")
        params["users"] = sorted(flt.users)
    if flt.since:
        where.append("ts >= :since")
        params["since"] = flt.since
    if flt.until:
        where.append("ts < :until")
        params["until"] = flt.until
    if flt.after_seq is not None:
        where.append("seq > :after")
        params["after"] = flt.after_seq
    if flt.seqs:
        where.append("seq = ANY(:seqs)")
        params["seqs"] = sorted(flt.seqs)
    if flt.refs:  # no column of its own: the reference a refused save's user was shown;
        # the line as text (a record holding \u0000 is no jsonb), then matched exactly below
        likes = []
        for i, ref in enumerate(sorted(flt.refs)):
            likes.append(f"line LIKE :ref{i} ESCAPE '!'")
            escaped = json.dumps(ref).replace("!", "!!").replace("%", "!%").replace("_", "!_")
            params[f"ref{i}"] = f'%"ref":{escaped}%'
        where.append("(" + " OR ".join(likes) + ")")
    sql = "SELECT line FROM qustody_audit_records"
    if where:  # constant fragments; every value is a bound parameter
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY seq"
    if limit is not None:
        sql += " LIMIT :limit"
        params["limit"] = limit
    engine = connect(url)
    try:
        with engine.connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=5000).execute(
                text(sql), params
            )
            for (line,) in result:
                record = json.loads(line)
                if flt.matches(record):  # as the file store does: a filter SQL missed is kept
                    yield Hit(record, line.encode("ascii", "replace"))
    finally:
        engine.dispose()
