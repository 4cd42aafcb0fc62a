"""The PostgreSQL store against a real PostgreSQL (a throwaway cluster, tests/pgserver.py):
the same chain and MACs, append-only in the database, verified and queried like a file."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy
from audit_helpers import example, start_writer, writer_result
from pgserver import pg_cluster, pg_url  # noqa: F401  (fixtures)
from sqlalchemy import text

from hub_ext.audit import AuditWriteError, chain
from hub_ext.audit.query import Filter
from hub_ext.audit.verify import verify_db

WRITER = Path(__file__).with_name("audit_writer.py")


@pytest.fixture
def db_log(make_log, pg_url):  # noqa: F811
    return make_log(path="", db_url=pg_url)


@pytest.fixture
def sql(pg_url):  # noqa: F811
    """A superuser connection for playing the attacker (triggers off)."""
    engine = sqlalchemy.create_engine(pg_url)
    yield engine
    engine.dispose()


def tamper(sql, statement, **params):
    with sql.begin() as conn:
        conn.execute(text("SET LOCAL session_replication_role = replica"))  # triggers off
        conn.execute(text(statement), params)


def fill(audit, n=30):
    for i in range(n):
        audit.emit(
            "qpu-job-submitted",
            {"user": f"u{i % 3}", "project": "vqe", "job_id": f"j-{i}", "backend": "aer"},
        )


def test_records_are_the_same_sealed_lines(db_log, sql, key, pg_url):  # noqa: F811
    first = db_log.emit("login", example("login"))
    second = db_log.emit("server-started", example("server-started"))
    with sql.connect() as conn:
        rows = conn.execute(
            text("SELECT seq, type, user_name, hash, line FROM qustody_audit_records ORDER BY seq")
        ).all()
    assert [r.seq for r in rows] == [0, 1] and rows[0].type == "login"
    assert rows[0].user_name == "alice"
    assert json.loads(rows[1].line)["prev"] == first.hash == rows[0].hash
    assert chain.line_hash(rows[1].line.encode()) == second.hash
    report = verify_db(pg_url, [key])
    assert report.ok and report.records == 2, report.summary()


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE qustody_audit_records SET line = 'x' WHERE seq = 0",
        "DELETE FROM qustody_audit_records WHERE seq = 0",
        "TRUNCATE qustody_audit_records",
    ],
)
def test_the_table_is_append_only(db_log, sql, statement):
    db_log.emit("login", {"user": "a"})
    with pytest.raises(sqlalchemy.exc.DBAPIError, match="append-only"), sql.begin() as conn:
        conn.execute(text(statement))


def test_an_edited_record_is_named(db_log, sql, key, pg_url):  # noqa: F811
    fill(db_log)
    tamper(
        sql,
        "UPDATE qustody_audit_records SET line = replace(line, '\"u1\"', '\"u2\"') WHERE seq = 13",
    )
    report = verify_db(pg_url, [key])
    assert not report.ok and report.problem.seq == 13
    assert "MAC does not match" in report.problem.reason


def test_a_deleted_record_is_named(db_log, sql, key, pg_url):  # noqa: F811
    fill(db_log)
    tamper(sql, "DELETE FROM qustody_audit_records WHERE seq = 7")
    report = verify_db(pg_url, [key])
    assert report.problem.seq == 8 and "record 7 deleted" in report.problem.reason


def test_removed_last_records_are_caught_by_the_head(db_log, sql, key, pg_url):  # noqa: F811
    fill(db_log)
    tamper(sql, "DELETE FROM qustody_audit_records WHERE seq >= 27")
    report = verify_db(pg_url, [key])
    assert "records 27..29 were removed (truncated)" in report.problem.reason


def test_a_wiped_and_refilled_database_fails_against_an_earlier_runs_anchor(
    db_log, sql, key, pg_url  # noqa: F811
):
    fill(db_log, 10)
    first = verify_db(pg_url, [key])
    assert first.ok and first.last_seq == 9 and first.last_hash
    tamper(sql, "DELETE FROM qustody_audit_records")
    tamper(sql, "UPDATE qustody_audit_head SET doc = ''")
    db_log.close()
    fill(db_log, 12)  # a fresh chain from seq 0, valid on its own
    assert verify_db(pg_url, [key]).ok
    report = verify_db(pg_url, [key], anchor=(first.last_seq, first.last_hash))
    assert not report.ok and "record 9 is not the record an earlier" in report.problem.reason


def test_renumbered_rows_are_caught(db_log, sql, key, pg_url):  # noqa: F811
    fill(db_log, 5)
    tamper(sql, "UPDATE qustody_audit_records SET seq = 100 WHERE seq = 4")
    assert "seq column (100) is not the seq sealed" in verify_db(pg_url, [key]).problem.reason


def test_wrong_key(db_log, pg_url):  # noqa: F811
    db_log.emit("login", {"user": "a"})
    report = verify_db(pg_url, [b"c" * 32])
    assert not report.ok and "wrong key file" in report.problem.reason


def test_concurrent_processes_form_one_chain(pg_url, key_file, key, sql):  # noqa: F811
    procs = [
        subprocess.Popen(
            [sys.executable, str(WRITER), pg_url, str(key_file), f"p{n}", "60"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(4)
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err
        assert json.loads(out) == {"written": 60}
    report = verify_db(pg_url, [key])
    assert report.ok and report.records == 240, report.summary()
    with sql.connect() as conn:
        users = Counter(
            r[0] for r in conn.execute(text("SELECT user_name FROM qustody_audit_records"))
        )
    assert users == Counter({f"p{n}": 60 for n in range(4)})


def test_query_uses_the_same_filters(db_log, pg_url):  # noqa: F811
    from hub_ext.audit.pg_store import query_db

    fill(db_log)
    db_log.emit("role-changed", {"user": "x", "actor": "u1", "source": "admin", "added": ["a"]})
    hits = list(query_db(pg_url, Filter(users=frozenset({"u1"}))))
    assert [h.record["seq"] for h in hits] == [*range(1, 30, 3), 30]  # as user, then as actor
    assert [h.record["seq"] for h in query_db(pg_url, Filter(jobs=frozenset({"j-4"})))] == [4]
    assert len(list(query_db(pg_url, Filter(after_seq=25), limit=2))) == 2
    # a refused save's reference (what its user was shown), in no column of its own
    for ref in ("3f9a0c12b7e4", "0123456789ab"):
        db_log.record_user_event("rita", "", {"type": "save-refused", "data": {
            "path": "k\u0000.ipynb", "detectors": ["github-token"], "findings": 1, "ref": ref}})
    hits = list(query_db(pg_url, Filter(refs=frozenset({"3f9a0c12b7e4"})), limit=10))
    assert [h.record["data"]["ref"] for h in hits] == ["3f9a0c12b7e4"]


def limited_log(make_log, pg_url, sql, grants, **config):  # noqa: F811
    """An AuditLog connecting as a new role with only ``grants`` ("<privileges> ON <table>")."""
    make_log(path="", db_url=pg_url).emit("login", {"user": "a"})  # creates the tables
    role = f"writer_{uuid.uuid4().hex[:8]}"
    with sql.begin() as conn:
        conn.execute(text(f"CREATE ROLE {role} LOGIN"))
        for grant in grants:
            conn.execute(text(f"GRANT {grant} TO {role}"))
    return make_log(path="", db_url=pg_url.replace("postgres@", f"{role}@"), **config)


def test_a_database_that_refuses_writes_fails_closed(make_log, pg_cluster, pg_url, sql):  # noqa: F811
    grants = ["SELECT, UPDATE ON qustody_audit_head", "SELECT ON qustody_audit_records"]
    audit = limited_log(make_log, pg_url, sql, grants, fail_closed_types=["login"])  # no INSERT
    with pytest.raises(AuditWriteError) as info:
        audit.emit("login", {"user": "b"})
    assert info.value.message == (
        "audit log database: cannot write the log (InsufficientPrivilege). "
        "The event was not recorded."
    )
    assert audit.emit("server-culled", example("server-culled")) is None
    assert audit.dropped == 1


def test_an_unreachable_database_stops_start_up(make_log, pg_cluster):  # noqa: F811
    url = f"postgresql+psycopg://postgres:hunter2secret@127.0.0.1:{pg_cluster.port + 1}/none"
    with pytest.raises(AuditWriteError) as info:
        make_log(path="", db_url=url)
    assert "cannot reach the database or create the audit tables" in info.value.message
    assert "hunter2secret" not in str(info.value) and "127.0.0.1" not in str(info.value)


def test_cli_verify_and_query_the_database(db_log, key_file, pg_url):  # noqa: F811
    fill(db_log)
    run = lambda *a: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "server_ext.cli", "audit", *a],
        capture_output=True,
        text=True,
        timeout=120,
    )
    verified = run("verify", "--db", pg_url, "--key-file", str(key_file), "--record")
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout.startswith("OK: full verification: 30 records")
    assert "recorded as seq 30" in verified.stderr
    found = run("query", "--db", pg_url, "--job", "j-3", "--format", "json")
    assert [json.loads(x)["seq"] for x in found.stdout.splitlines()] == [3]


def test_batches_from_two_processes_form_one_chain(pg_url, key_file, key, sql):  # noqa: F811
    procs = [start_writer(pg_url, key_file, 160, "--batch", "8", tag=tag) for tag in ("a", "b")]
    for proc in procs:
        assert writer_result(proc) == (0, {"written": 160})
    report = verify_db(pg_url, [key])
    assert report.ok and report.records == 320, report.summary()
    with sql.connect() as conn:
        rows = conn.execute(
            text("SELECT seq, job_id FROM qustody_audit_records ORDER BY seq")
        ).all()
    assert [r.seq for r in rows] == list(range(320))
    position = {r.job_id: r.seq for r in rows}
    for tag in ("a", "b"):
        for b in range(20):  # each batch of 8 is contiguous
            seqs = [position[f"{tag}-{i}"] for i in range(8 * b, 8 * b + 8)]
            assert seqs == list(range(seqs[0], seqs[0] + 8))


def test_a_batch_whose_head_update_fails_leaves_no_record(make_log, pg_url, sql, key):  # noqa: F811
    # it may lock the head row but not change the head: the records go in, then fail
    grants = [
        "SELECT, INSERT ON qustody_audit_records",
        "SELECT, UPDATE (id) ON qustody_audit_head",
    ]
    audit = limited_log(make_log, pg_url, sql, grants)
    with pytest.raises(AuditWriteError) as info:
        audit.emit_many([("login", {"user": f"u{i}"}) for i in range(5)])
    assert info.value.message == (
        "audit log database: cannot write the log (InsufficientPrivilege). "
        "5 of 5 events were not recorded."
    )
    with sql.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM qustody_audit_records")).scalar() == 1
    assert verify_db(pg_url, [key]).ok
