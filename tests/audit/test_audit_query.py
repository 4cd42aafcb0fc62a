"""Querying and exporting: the fast paths (time bisection, raw prefilter) give exactly the
records a plain filter over every record gives; rotation keeps one chain across files."""

from __future__ import annotations

import io
import json
from datetime import timedelta

import pytest
from audit_helpers import example

from hub_ext.audit import chain, clock
from hub_ext.audit.export import export
from hub_ext.audit.layout import Layout
from hub_ext.audit.query import Filter, Stats, query
from hub_ext.audit.verify import verify

START = "2025-03-01T12:00:00.000000Z"


def event_for(i: int) -> tuple[str, dict]:
    user = f"u{i % 5}"
    kind = i % 4
    if kind == 0:
        return "login", {"user": user, "ip": "10.0.0.1"}
    if kind == 1:
        return "qpu-job-submitted", {
            "user": user,
            "project": f"proj{i % 3}",
            "job_id": f"j-{i}",
            "backend": "aer",
        }
    if kind == 2:
        return "qpu-job-finished", {
            "user": user,
            "project": f"proj{i % 3}",
            "job_id": f"j-{i - 1}",
            "backend": "aer",
            "status": "done",
        }
    return "role-changed", {
        "user": f"u{(i + 1) % 5}",
        "actor": user,
        "added": ["x"],
        "source": "admin",
    }


@pytest.fixture
def history(make_log, fake_clock, log_path):
    audit = make_log(rotate_bytes=65536, checkpoint_every=100)
    for i in range(800):
        name, data = event_for(i)
        audit.emit(name, data)
        fake_clock.advance(60)
    assert len(Layout(log_path).rotated_files()) >= 2
    return log_path


def at(minutes: int) -> str:
    return clock.stamp(clock.parse(START) + timedelta(minutes=minutes))


FILTERS = {
    "everything": Filter(),
    "one user": Filter(users=frozenset({"u3"})),
    "two users": Filter(users=frozenset({"u1", "u2"})),
    "one type": Filter(types=frozenset({"login"})),
    "two types": Filter(types=frozenset({"login", "role-changed"})),
    "project": Filter(projects=frozenset({"proj2"})),
    "job": Filter(jobs=frozenset({"j-401"})),
    "since": Filter(since=at(500)),
    "until": Filter(until=at(100)),
    "window": Filter(since=at(200), until=at(230)),
    "window and user": Filter(since=at(100), until=at(700), users=frozenset({"u4"})),
    "user and type": Filter(users=frozenset({"u0"}), types=frozenset({"qpu-job-finished"})),
    "job and project": Filter(jobs=frozenset({"j-401"}), projects=frozenset({"proj0"})),
    "after seq": Filter(after_seq=650),
    "nothing": Filter(users=frozenset({"nobody"})),
    "empty window": Filter(since=at(100), until=at(100)),
    "after the end": Filter(since=at(100_000)),
}


def brute_force(records, flt: Filter):
    out = []
    for r in records:
        d = r["data"]
        if flt.types and r["type"] not in flt.types:
            continue
        if flt.users and d.get("user") not in flt.users and d.get("actor") not in flt.users:
            continue
        if flt.projects and d.get("project") not in flt.projects:
            continue
        if flt.jobs and d.get("job_id") not in flt.jobs:
            continue
        if flt.since and r["ts"] < flt.since:
            continue
        if flt.until and r["ts"] >= flt.until:
            continue
        if flt.after_seq is not None and r["seq"] <= flt.after_seq:
            continue
        out.append(r["seq"])
    return out


@pytest.mark.parametrize("name", list(FILTERS))
def test_query_matches_a_plain_filter_over_every_record(history, records, name):
    flt = FILTERS[name]
    got = [hit.record["seq"] for hit in query(history, flt)]
    assert got == brute_force(records(), flt)


def test_query_semantics_by_example(history):
    def seqs(**kw):
        return [h.record["seq"] for h in query(history, Filter(**kw))]

    assert seqs(jobs=frozenset({"j-401"})) == [401, 402]  # submitted, then finished
    # the user filter matches the actor too: u3 acted in role-changed 3, 23, ...
    assert 3 in seqs(users=frozenset({"u3"}), types=frozenset({"role-changed"}))
    # since is inclusive, until exclusive, to the microsecond
    assert seqs(since=at(10), until=at(12)) == [10, 11]
    assert seqs(since=at(10), until=at(10)) == []


def test_time_windows_skip_whole_files(history):
    stats = Stats()
    hits = list(query(history, Filter(since=at(780)), stats=stats))
    assert [h.record["seq"] for h in hits] == list(range(780, 800))
    assert stats.files_skipped >= 2 and stats.candidates == 20


def test_prefilter_parses_only_candidate_lines(history):
    stats = Stats()
    assert len(list(query(history, Filter(jobs=frozenset({"j-5"})), stats=stats))) == 2
    assert stats.candidates == 2


def test_limit_and_hits_are_the_stored_lines(history):
    hits = list(query(history, Filter(types=frozenset({"login"})), limit=3))
    assert [h.record["seq"] for h in hits] == [0, 4, 8]
    for hit in hits:
        assert json.loads(hit.line) == hit.record
        assert hit.line.startswith(b'{"seq":') and not hit.line.endswith(b"\n")


def test_damaged_lines_are_skipped_and_counted(audit, log_path):
    audit.emit("login", {"user": "a"})
    audit.close()
    with open(log_path, "ab") as f:
        f.write(b'{"seq":1,"prev":"broken "user":"a"\n')
    stats = Stats()
    assert [
        h.record["seq"] for h in query(log_path, Filter(users=frozenset({"a"})), stats=stats)
    ] == [0]
    assert stats.damaged == 1


def test_rotation_by_time_keeps_one_chain(make_log, fake_clock, log_path, key, records):
    audit = make_log(rotate_seconds=3600, rotate_bytes=0)
    audit.emit("login", {"user": "a"})
    fake_clock.advance(3599)
    audit.emit("login", {"user": "b"})
    assert Layout(log_path).rotated_files() == []
    fake_clock.advance(2)
    audit.emit("login", {"user": "c"})  # the live file is now over an hour old: rotate first
    rotated = Layout(log_path).rotated_files()
    assert [seq for seq, _ in rotated] == [0]
    assert [json.loads(x)["seq"] for x in log_path.read_bytes().splitlines()] == [2]
    r = records()
    assert r[2]["prev"] == chain.line_hash(rotated[0][1].read_bytes().splitlines()[-1])
    report = verify(log_path, [key])
    assert report.ok and report.files == 2 and report.checkpoints == 1  # one at the rotation


def test_rotation_by_size(make_log, log_path, key):
    audit = make_log(rotate_bytes=65536, checkpoint_every=0)
    for _ in range(500):
        audit.emit("server-started", example("server-started"))
    files = Layout(log_path).data_files()
    assert len(files) >= 3
    assert all(p.stat().st_size <= 65536 for p in files)
    report = verify(log_path, [key])
    assert report.ok and report.records == 500 and report.checkpoints == len(files) - 1


def test_export_is_documented_siem_json_lines(history, records):
    out = io.StringIO()
    count = export(history, out, Filter(after_seq=700))
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    assert count == len(lines) == 99
    stored = {r["seq"]: r for r in records()}
    previous = None
    for item in lines:
        assert item["format"] == "qustody-audit/1"
        rec = stored[item["seq"]]
        assert item["@timestamp"] == rec["ts"] and item["type"] == rec["type"]
        assert item["schema"] == f"https://qustody.org/audit/{rec['type']}"
        assert item["schema_version"] == 1 and item["origin"] == "hub"
        assert item["event"] == rec["data"] and item["user"] == rec["data"]["user"]
        assert item["integrity"]["mac"] == rec["mac"] and item["integrity"]["kid"] == rec["kid"]
        if previous is not None:  # the SIEM can check continuity without the key
            assert item["integrity"]["prev"] == previous["integrity"]["hash"]
        previous = item
