"""Batches (``AuditLog.emit_many``): one write for many records, and still one verified
chain — across processes, rotations, checkpoints, failed writes and redactions."""

from __future__ import annotations

import itertools
import json
import time
from collections import Counter

import pytest
from audit_helpers import example, qustody, run_writer, start_writer, writer_result
from qtest import GITHUB_TOKEN, IBM_QUANTUM_TOKEN

from hub_ext.audit import AuditWriteError, SchemaViolation, SecretInEvent
from hub_ext.audit.layout import Layout
from hub_ext.audit.verify import verify

TYPES = ["login", "server-started", "qpu-job-submitted", "break-glass", "secret-delivered"]


def job(tag: str, i: int) -> tuple[str, dict]:
    return "qpu-job-submitted", {
        "user": tag,
        "project": "p",
        "job_id": f"{tag}-{i}",
        "backend": "aer",
    }


def file_bytes(log_path) -> bytes:
    if not log_path.parent.exists():
        return b""
    return b"".join(p.read_bytes() for p in log_path.parent.iterdir() if p.is_file())


@pytest.mark.parametrize("fsync", ["never", "checkpoint", "always"])
def test_a_batch_is_consecutive_chained_records_that_verify(
    make_log, records, key, log_path, key_file, fsync
):
    audit = make_log(fsync=fsync)
    audit.emit("login", {"user": "before"})
    events = [(name, example(name)) for name in TYPES] * 20
    done = audit.emit_many(events)
    assert [d.seq for d in done] == list(range(1, 101))
    assert [d.type for d in done] == [name for name, _ in events]
    found = records()
    assert [r["seq"] for r in found] == list(range(101))
    assert [(r["type"], r["data"]) for r in found[1:]] == events
    for previous, record, result in zip(done, found[2:], done[1:], strict=False):
        assert record["prev"] == previous.hash and record["seq"] == result.seq
    ts = [r["ts"] for r in found]
    assert ts == sorted(ts)
    assert verify(log_path, [key]).ok
    audit.emit("login", {"user": "after"})  # the chain goes on after a batch
    cli = qustody("verify", "--log", str(log_path), "--key-file", str(key_file))
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert cli.stdout.startswith("OK: full verification: 102 records (seq 0..101)")


def test_emit_is_a_batch_of_one(audit, records):
    (one,) = audit.emit_many([("login", {"user": "a"})])
    two = audit.emit("login", {"user": "b"})
    assert (one.seq, two.seq) == (0, 1)
    assert audit.emit_many([]) == []
    assert len(records()) == 2


def test_a_bad_event_of_a_fail_closed_type_stops_the_batch_before_anything_is_written(
    audit, records
):
    with pytest.raises(SchemaViolation, match="login event"):
        audit.emit_many([job("a", 1), ("login", {"user": 5}), job("a", 2)])
    assert records() == [] and audit.dropped == 0
    with pytest.raises(Exception, match="reported by user servers"):
        audit.emit_many([job("a", 3), ("save-refused", example("save-refused"))])
    assert records() == []


def test_a_bad_event_of_a_fail_open_type_is_dropped_and_the_rest_recorded(
    make_log, records, caplog
):
    audit = make_log(fail_closed_types=["login"])
    done = audit.emit_many(
        [
            ("login", {"user": "a"}),
            ("session-refreshed", {"user": "a", "roles": "x"}),
            ("login", {"user": "b"}),
        ]
    )
    assert done[1] is None and (done[0].seq, done[2].seq) == (0, 1)
    assert audit.dropped == 1
    assert "audit event session-refreshed was not recorded" in caplog.text
    assert [r["data"]["user"] for r in records()] == ["a", "b"]


def checkpoints(log_path) -> list[dict]:
    path = Layout(log_path).checkpoints
    return [json.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []


def test_checkpoints_inside_a_batch_land_where_single_records_put_them(
    make_log, tmp_path, key, key_file
):
    one_by_one = tmp_path / "single" / "audit.jsonl"
    batched = tmp_path / "batched" / "audit.jsonl"
    events = [job("c", i) for i in range(75)]
    single = make_log(path=str(one_by_one), checkpoint_every=10)
    for name, data in events:
        single.emit(name, data)
    log = make_log(path=str(batched), checkpoint_every=10)
    done = []
    for size in (3, 25, 1, 40, 6):  # boundaries at the start, middle and end of batches
        done += log.emit_many(events[len(done) : len(done) + size])
    assert len(done) == 75
    expected = [9, 19, 29, 39, 49, 59, 69]
    assert [c["seq"] for c in checkpoints(one_by_one)] == expected
    cks = checkpoints(batched)
    assert [c["seq"] for c in cks] == expected
    assert [c["hash"] for c in cks] == [done[s].hash for s in expected]
    assert all(b["prev"] != a["prev"] for a, b in itertools.pairwise(cks))
    for path in (one_by_one, batched):
        report = verify(path, [key], quick=True)
        assert report.ok and report.checkpoints == 7, report.summary()
        assert verify(path, [key]).ok


def test_a_batch_crossing_the_rotation_size_is_split_at_the_same_record(make_log, tmp_path, key):
    one_by_one = tmp_path / "single" / "audit.jsonl"
    batched = tmp_path / "batched" / "audit.jsonl"
    events = [job("r", i) for i in range(700)]  # over three files of 64 KiB
    single = make_log(path=str(one_by_one), rotate_bytes=65536, checkpoint_every=0)
    for name, data in events:
        single.emit(name, data)
    batch_log = make_log(path=str(batched), rotate_bytes=65536, checkpoint_every=0)
    done = batch_log.emit_many(events[:5]) + batch_log.emit_many(events[5:])  # one big batch
    assert [d.seq for d in done] == list(range(700))

    def files(path):
        return [(first, p.stat().st_size) for first, p in Layout(path).rotated_files()]

    rotated = files(batched)
    assert len(rotated) >= 2 and rotated == files(one_by_one)
    for first, p in Layout(batched).rotated_files():
        size = p.stat().st_size
        nxt = Layout(batched).data_files()[[q for q in Layout(batched).data_files()].index(p) + 1]
        first_line = nxt.read_bytes().split(b"\n", 1)[0]
        assert size <= 65536 < size + len(first_line) + 1  # rotated exactly when due
        assert json.loads(p.read_bytes().splitlines()[0])["seq"] == first
    # a checkpoint at each rotation, as with single records
    assert [c["seq"] for c in checkpoints(batched)] == [c["seq"] for c in checkpoints(one_by_one)]
    for quick in (False, True):
        report = verify(batched, [key], quick=quick)
        assert report.ok, report.summary()
    assert verify(batched, [key]).records == 700


def test_time_rotation_starts_the_next_batch_in_a_new_file(make_log, fake_clock, log_path, key):
    audit = make_log(rotate_seconds=60)
    audit.emit_many([job("t", i) for i in range(5)])
    fake_clock.advance(61)  # the live file is due: the next batch starts a new one, whole
    done = audit.emit_many([job("u", i) for i in range(5)])
    ((first, rotated),) = Layout(log_path).rotated_files()
    assert first == 0 and len(rotated.read_bytes().splitlines()) == 5
    assert [json.loads(line)["seq"] for line in log_path.read_bytes().splitlines()] == [
        d.seq for d in done
    ]
    assert verify(log_path, [key]).ok and verify(log_path, [key], quick=True).ok


def test_a_batch_written_before_a_crash_is_taken_over(make_log, log_path, key, caplog):
    audit = make_log()
    audit.emit("login", {"user": "a"})
    head = Layout(log_path).head
    saved = head.read_bytes()
    audit.emit_many([job("c", i) for i in range(20)])
    head.write_bytes(saved)  # as if the writer died between its write and its head update
    survivor = make_log()
    assert [d.seq for d in survivor.emit_many([job("d", i) for i in range(3)])] == [21, 22, 23]
    assert "took over 20 record(s)" in caplog.text
    report = verify(log_path, [key])
    assert report.ok and report.records == 24, report.summary()


def test_batches_from_two_processes_keep_one_chain_and_stay_whole(
    log_path, key_file, key, records, tmp_path
):
    start = tmp_path / "start"
    procs = [
        start_writer(
            log_path,
            key_file,
            800,
            *("--batch", "16", "--rotate-bytes", "65536", "--checkpoint-every", "50"),
            *("--pause", "0.002"),  # let the other writer in between batches
            *("--start-file", str(start)),
            tag=tag,
        )
        for tag in ("a", "b")
    ]
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("start.*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    start.touch()
    for proc in procs:
        assert writer_result(proc) == (0, {"written": 800})
    report = verify(log_path, [key], jobs=2)
    assert report.ok and report.records == 1600, report.summary()
    found = records()
    assert [r["seq"] for r in found] == list(range(1600))
    jobs = Counter(r["data"]["job_id"] for r in found)
    assert len(jobs) == 1600 and set(jobs.values()) == {1}
    # every batch of 16 is contiguous in the chain: no other writer got between its records
    position = {r["data"]["job_id"]: r["seq"] for r in found}
    for tag in ("a", "b"):
        for b in range(50):
            seqs = [position[f"{tag}-{i}"] for i in range(16 * b, 16 * b + 16)]
            assert seqs == list(range(seqs[0], seqs[0] + 16))
    runs = 1 + sum(
        1 for x, y in itertools.pairwise(found) if x["data"]["user"] != y["data"]["user"]
    )
    assert runs > 10  # the two writers really interleaved


def test_a_failed_batch_write_leaves_nothing_behind(make_log, log_path):
    log_path.parent.mkdir()
    log_path.symlink_to("/dev/full")
    audit = make_log()
    with pytest.raises(AuditWriteError) as info:
        audit.emit_many([job("f", i) for i in range(3)])
    assert info.value.message == (
        f"audit log {log_path}: cannot write the log (ENOSPC: No space left on device). "
        "3 of 3 events were not recorded."
    )
    assert info.value.written == 0


def test_a_batch_that_does_not_fit_is_removed_whole_and_writing_resumes(
    log_path, key_file, key, records
):
    code, result = run_writer(log_path, key_file, 10_000, "--batch", "16", "--fsize-limit", "50000")
    assert code == 3, result
    assert "cannot write the log (" in result["error"]
    assert result["error"].endswith("16 of 16 events were not recorded.")
    written = result["written"]
    assert 50 < written < 10_000 and written % 16 == 0  # whole batches only
    report = verify(log_path, [key])
    assert report.ok and report.records == written, report.summary()
    assert log_path.read_bytes().endswith(b"\n")
    code, result = run_writer(log_path, key_file, 40, "--batch", "16", tag="w2")
    assert (code, result) == (0, {"written": 40})
    assert verify(log_path, [key]).ok and len(records()) == written + 40


def test_a_batch_failing_at_a_rotation_keeps_the_part_before_it(make_log, log_path, key, records):
    audit = make_log(rotate_bytes=65536)
    audit.emit_many([job("v", i) for i in range(10)])
    blocker = Layout(log_path).rotated(0)
    blocker.mkdir()  # the live file cannot be renamed to its rotated name: EISDIR
    with pytest.raises(AuditWriteError) as info:
        audit.emit_many([job("w", i) for i in range(1000)])
    kept = len(log_path.read_bytes().splitlines()) - 10
    assert info.value.written == kept and 150 < kept < 1000
    assert info.value.message == (
        f"audit log {log_path}: cannot write the log (EISDIR: Is a directory). "
        f"{1000 - kept} of 1000 events were not recorded."
    )
    blocker.rmdir()
    report = verify(log_path, [key])
    assert report.ok and report.records == 10 + kept, report.summary()
    assert [r["data"]["job_id"] for r in records()[10:]] == [f"w-{i}" for i in range(kept)]
    # the next batch rotates and continues the chain
    done = audit.emit_many([job("x", i) for i in range(10)])
    assert done[0].seq == 10 + kept and len(Layout(log_path).rotated_files()) == 1
    assert verify(log_path, [key]).ok


@pytest.mark.parametrize("policy", ["redact", "refuse"])
def test_a_secret_inside_a_batch_never_reaches_the_file(
    make_log, log_path, key, records, caplog, policy
):
    audit = make_log(secret_policy=policy)
    audit.add_known_secrets([IBM_QUANTUM_TOKEN])
    events = [job("s", i) for i in range(40)]
    events[7] = ("login", {"user": "s", "user_agent": f"curl {IBM_QUANTUM_TOKEN}"})
    events[30] = ("login", {"user": "s", "user_agent": GITHUB_TOKEN})
    if policy == "refuse":
        with pytest.raises(SecretInEvent):
            audit.emit_many(events)
        assert records() == []
    else:
        done = audit.emit_many(events)
        assert [d.redacted for d in done if d.redacted] == [1, 1]
        assert done[7].redacted == 1 and done[30].redacted == 1
        found = records()
        assert found[7]["data"]["user_agent"] == "curl [REDACTED:known-secret]"
        assert found[7]["redacted"] == [{"field": "/user_agent", "detector": "known-secret"}]
        assert found[30]["data"]["user_agent"].startswith("[REDACTED:")
        assert len(found) == 40 and verify(log_path, [key]).ok
    blob = file_bytes(log_path)
    assert IBM_QUANTUM_TOKEN.encode() not in blob and GITHUB_TOKEN.encode() not in blob
    assert IBM_QUANTUM_TOKEN not in caplog.text and GITHUB_TOKEN not in caplog.text
