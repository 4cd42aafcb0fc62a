"""An admission batch releases its SQLite cursor in the thread that holds the connection.

A batch that fails (the database is locked by the other replica, say) is retried; before
this was fixed, the failed batch's cursor stayed alive in the exception's traceback and
was reset whenever it was finally freed, in whatever thread, possibly while another
thread was using the same pooled connection: SQLite then answered "bad parameter or other
API misuse" to that thread's admission, under load only."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy.exc import OperationalError

from hub_ext.qpu import admission_io
from hub_ext.qpu.policyfile import parse
from hub_ext.qpu.store import Admitted, Store, Ticket

POLICY = """
[projects.qchem]
members = { alice = "member" }
backends = ["*"]
"""


def _ticket() -> Ticket:
    return Ticket(owner="alice", project="qchem", backend="aer_simulator",
                  requested_backend="aer_simulator", backend_class="simulator",
                  tier="normal", priority=10, sensitivity="internal", n_circuits=1, shots=10,
                  est_seconds=0.1, tags={}, provenance={}, circuits=b"x", options={})


def test_a_failed_and_retried_batch_leaves_no_open_cursor(tmp_path, monkeypatch):
    store = Store(f"sqlite:///{tmp_path / 'qpu.sqlite'}")
    store.create(["aer_simulator"])
    opened: list[admission_io.SqliteIO] = []
    real_init = admission_io.SqliteIO.__init__
    real_insert = admission_io.SqliteIO.insert
    failures = [OperationalError("INSERT", {}, sqlite3.OperationalError("database is locked"))]

    def init(self, conn):
        real_init(self, conn)
        opened.append(self)

    def insert(self, table, rows):
        if failures:
            raise failures.pop()
        real_insert(self, table, rows)

    monkeypatch.setattr(admission_io.SqliteIO, "__init__", init)
    monkeypatch.setattr(admission_io.SqliteIO, "insert", insert)
    policy = parse(POLICY, backends={"aer_simulator": "simulator"})
    results = store.admit_many([_ticket(), _ticket()], policy)
    assert all(isinstance(r, Admitted) for r in results), results
    assert len(opened) == 2  # the failed attempt, then the retry that admitted both
    for io in opened:
        with pytest.raises(sqlite3.ProgrammingError, match="closed cursor"):
            io.cursor.execute("SELECT 1")
    store.dispose()
