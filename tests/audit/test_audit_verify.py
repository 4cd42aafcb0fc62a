"""Verification catches every kind of tampering and names the first bad record and why."""

from __future__ import annotations

import os
import random
import secrets
import shutil

import pytest
from audit_helpers import example

from hub_ext.audit import AuditLog
from hub_ext.audit.layout import Layout
from hub_ext.audit.verify import verify

RECORDS = 400


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A log of 400 records over several rotated files, with checkpoints every 50."""
    root = tmp_path_factory.mktemp("pristine")
    key = secrets.token_hex(32).encode()
    key_path = root / "audit.key"
    key_path.write_bytes(key)
    os.chmod(key_path, 0o600)
    audit = AuditLog(
        path=str(root / "log" / "audit.jsonl"),
        key_file=str(key_path),
        rotate_bytes=65536,
        checkpoint_every=50,
    )
    for i in range(RECORDS):
        audit.emit(
            "qpu-job-submitted",
            {
                "user": f"user{i % 7}",
                "project": "vqe",
                "job_id": f"j-{i}",
                "backend": "aer",
                "shots": 100 + i,
                "tags": ["k=v"] * (i % 5),
            },
        )
    audit.close()
    return root / "log", key


@pytest.fixture
def copy(pristine, tmp_path):
    """A fresh copy of the pristine log: (live path, key, list of (seq, file, offset, line))."""
    src, key = pristine
    dst = tmp_path / "log"
    shutil.copytree(src, dst)
    live = dst / "audit.jsonl"
    index = []
    for p in Layout(live).data_files():
        offset = 0
        for line in p.read_bytes().splitlines(keepends=True):
            index.append((len(index), p, offset, line))
            offset += len(line)
    return live, key, index


def check(live, key, **kw):
    report = verify(live, [key], **kw)
    assert not report.ok, "tampering went unnoticed"
    assert report.problem is not None
    return report.problem


def rewrite(path, transform):
    path.write_bytes(transform(path.read_bytes()))


def flip(path, pos):
    """Change one byte of a file (xor 1: always a different byte)."""
    data = bytearray(path.read_bytes())
    data[pos] ^= 0x01
    path.write_bytes(bytes(data))


def test_pristine_log_verifies(pristine):
    live, key = pristine
    for kw in ({}, {"quick": True}, {"jobs": 2, "chunk_bytes": 8192}, {"deep": True}):
        report = verify(live / "audit.jsonl", [key], **kw)
        assert report.ok, report.summary()
        assert report.last_seq == RECORDS - 1
    full = verify(live / "audit.jsonl", [key])
    assert full.records == RECORDS and full.first_seq == 0 and full.files >= 3
    assert full.checkpoints >= RECORDS // 50
    assert full.summary().startswith(
        f"OK: full verification: {RECORDS} records (seq 0..{RECORDS - 1})"
    )


WHERE = {
    "event data": lambda line: line.index(b'"job_id"') + 10,
    "mac": lambda line: len(line) - 10,
    "prev hash": lambda line: line.index(b'"prev":"') + 20,
    "seq digits": lambda line: len(b'{"seq":'),
    "key id": lambda line: line.index(b'"kid":"') + 8,
    "timestamp": lambda line: line.index(b'"ts":"') + 10,
    "type": lambda line: line.index(b'"type":"') + 9,
    "newline": lambda line: len(line) - 1,
}


@pytest.mark.parametrize("jobs", [1, 2])
@pytest.mark.parametrize("where", list(WHERE))
@pytest.mark.parametrize("victim", [0, 7, 201, RECORDS - 1])
def test_a_flipped_byte_anywhere_is_found_at_its_record(copy, victim, where, jobs):
    live, key, index = copy
    _, path, offset, line = index[victim]
    flip(path, offset + WHERE[where](line))
    problem = check(live, key, jobs=jobs, chunk_bytes=4096)
    assert problem.file == str(path)
    if where == "newline" and victim == RECORDS - 1:
        assert "ends inside a record" in problem.reason
    else:
        assert problem.offset == offset, problem.describe()
        assert problem.line == victim - sum(1 for s, p, *_ in index if s < victim and p != path) + 1


def test_random_byte_flips_are_all_caught(copy):
    live, key, _ = copy
    rng = random.Random(20250301)
    files = Layout(live).data_files()
    originals = {p: p.read_bytes() for p in files}
    for _ in range(60):
        path = rng.choice(files)
        data = bytearray(originals[path])
        pos = rng.randrange(len(data))
        data[pos] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(data))
        problem = check(live, key)
        assert problem.file == str(path)
        assert problem.offset <= pos < problem.offset + 2000
        path.write_bytes(originals[path])
    assert verify(live, [key]).ok


def drop(index, seqs):
    for seq in sorted(seqs, reverse=True):
        _, path, offset, line = index[seq]
        end = offset + len(line)
        rewrite(path, lambda d, o=offset, e=end: d[:o] + d[e:])


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_deleted_record_is_named(copy, jobs):
    live, key, index = copy
    drop(index, [123])
    problem = check(live, key, jobs=jobs, chunk_bytes=4096)
    assert problem.seq == 124
    assert "expected seq 123 but found 124: record 123 deleted or moved" in problem.reason


def test_deleted_records_in_a_run_are_named(copy):
    live, key, index = copy
    drop(index, [60, 61, 62])
    assert "records 60..62 deleted" in check(live, key).reason


def test_deleting_the_first_record_is_caught(copy):
    live, key, index = copy
    drop(index, [0])
    assert "should start at seq 0 but starts at 1" in check(live, key).reason


def test_deleting_the_last_records_is_caught_by_the_sealed_head(copy):
    live, key, index = copy
    drop(index, [RECORDS - 1])
    problem = check(live, key)
    assert problem.reason == (
        f"the log ends at seq {RECORDS - 2} but its sealed head says it reached seq "
        f"{RECORDS - 1}: record {RECORDS - 1} were removed (truncated)"
    )
    drop(index, range(RECORDS - 5, RECORDS - 1))
    assert f"records {RECORDS - 5}..{RECORDS - 1} were removed" in check(live, key).reason


@pytest.mark.parametrize("quick", [False, True])
def test_a_truncated_file_is_caught(copy, quick):
    live, key, _ = copy
    size = live.stat().st_size
    with open(live, "r+b") as f:
        f.truncate(size - 100)  # cut inside the last record
    problem = check(live, key, quick=quick)
    assert "ends inside a record" in problem.reason
    assert problem.seq == RECORDS - 1


def test_a_truncated_rotated_file_is_caught(copy):
    live, key, index = copy
    first_file = index[0][1]
    last_in_first = max(i for i, (_, p, *_r) in enumerate(index) if p == first_file)
    drop(index, [last_in_first])
    full = check(live, key)
    assert f"expected seq {last_in_first}" in full.reason
    quick = check(live, key, quick=True)
    assert "ends before checkpointed record" in quick.reason and "truncated" in quick.reason


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_reordered_pair_is_caught(copy, jobs):
    live, key, index = copy
    _, path, offset, a = index[250]
    _, path_b, _, b = index[251]
    assert path == path_b
    rewrite(path, lambda d: d[:offset] + b + a + d[offset + len(a) + len(b) :])
    problem = check(live, key, jobs=jobs, chunk_bytes=4096)
    assert problem.seq == 251 and problem.offset == offset
    assert "expected seq 250 but found 251" in problem.reason


def test_a_replayed_record_is_caught(copy):
    live, key, index = copy
    _, path, offset, line = index[300]
    rewrite(path, lambda d: d[: offset + len(line)] + line + d[offset + len(line) :])
    assert (
        "expected seq 301 but found 300: records reordered or duplicated" in check(live, key).reason
    )


def test_a_wrong_key_is_reported_as_such(copy):
    live, _, _ = copy
    problem = check(live, key=secrets.token_hex(32).encode())
    assert "wrong key file" in problem.reason


def test_old_keys_still_verify_after_a_key_change(copy):
    live, key, _ = copy
    assert verify(live, [secrets.token_hex(32).encode(), key]).ok


def test_a_deleted_rotated_file_is_caught(copy):
    live, key, _ = copy
    rotated = Layout(live).rotated_files()
    assert len(rotated) >= 2
    first_seq, path = rotated[1]
    next_seq = rotated[2][0] if len(rotated) > 2 else None
    path.unlink()
    problem = check(live, key)
    assert f"expected seq {first_seq} but found" in problem.reason and "deleted" in problem.reason
    if next_seq is not None:
        assert f"..{next_seq - 1} deleted" in problem.reason
    assert "is missing" in check(live, key, quick=True).reason


def test_retention_may_prune_the_oldest_files_when_allowed(copy):
    live, key, _ = copy
    (_, oldest), (second_seq, _) = Layout(live).rotated_files()[:2]
    oldest.unlink()
    assert "oldest records are missing" in check(live, key).reason
    report = verify(live, [key], allow_pruned=True)
    assert report.ok and report.first_seq == second_seq
    assert any("older records were pruned" in w for w in report.warnings)
    assert "oldest records are missing" in check(live, key, quick=True).reason
    assert verify(live, [key], quick=True, allow_pruned=True).ok


def test_an_extended_rotated_file_fails_quick_verification(copy):
    live, key, index = copy
    first_file = index[0][1]
    rewrite(first_file, lambda d: d + d[: d.index(b"\n") + 1])
    assert "but its last checkpoint says it ends at byte" in check(live, key, quick=True).reason
    assert "expected seq" in check(live, key).reason


def test_a_missing_head_fails_verification(copy):
    live, key, _ = copy
    live.with_name("audit.head").unlink()
    assert "head file is missing" in check(live, key).reason


def test_an_edited_checkpoint_fails_verification(copy):
    live, key, _ = copy
    ck = live.with_name("audit.checkpoints.jsonl")
    rewrite(ck, lambda d: d.replace(b'"seq":99,', b'"seq":98,', 1))
    problem = check(live, key)
    assert "checkpoint is not valid" in problem.reason and "MAC" in problem.reason


def test_a_removed_checkpoint_fails_verification(copy):
    live, key, _ = copy
    ck = live.with_name("audit.checkpoints.jsonl")
    lines = ck.read_bytes().splitlines(keepends=True)
    ck.write_bytes(b"".join(lines[:2] + lines[3:]))
    assert "does not follow the checkpoint before it" in check(live, key).reason


def test_quick_verification_reads_little_and_catches_the_end(copy):
    live, key, index = copy
    report = verify(live, [key], quick=True)
    assert report.ok and report.bytes < sum(len(line) for *_, line in index) / 4
    audit = AuditLog(path=str(live), key_file=str(_key_file(live, key)))
    for _ in range(3):  # records after the last checkpoint (seq 399)
        audit.emit("login", {"user": "late"})
    audit.close()
    assert verify(live, [key], quick=True).ok
    flip(live, live.read_bytes().index(b'{"seq":401,') + 40)
    problem = check(live, key, quick=True)
    assert problem.seq == 401 and "MAC does not match" in problem.reason


def test_quick_verification_catches_an_edited_checkpointed_record(copy):
    live, key, index = copy
    _, path, offset, _ = index[149]  # checkpoint every 50: seq 149 has one
    flip(path, offset + 40)
    problem = check(live, key, quick=True)
    assert "checkpoint for seq 149 does not match" in problem.reason


def test_quick_verification_limit_edits_between_old_checkpoints_need_a_full_run(copy):
    live, key, index = copy
    _, path, offset, _ = index[120]
    flip(path, offset + 40)
    assert verify(live, [key], quick=True).ok  # documented limitation of --quick
    assert check(live, key).seq == 120


def test_deep_verification_checks_each_event_against_its_schema(copy):
    live, key, _ = copy
    audit = AuditLog(path=str(live), key_file=str(_key_file(live, key)))
    audit.store.append("login", 1, "hub", '{"user":5}')  # sealed, but not a valid login event
    audit.close()
    assert verify(live, [key]).ok
    problem = check(live, key, deep=True)
    assert problem.seq == RECORDS and "/user must be of type string" in problem.reason


def _key_file(live, key):
    path = live.parent.parent / "k.key"
    path.write_bytes(key)
    os.chmod(path, 0o600)
    return path


def test_no_log_at_all(tmp_path, key):
    problem = check(tmp_path / "audit.jsonl", key)
    assert "there is no audit log" in problem.reason


def test_report_event_and_public_form(copy):
    live, key, index = copy
    drop(index, [10])
    report = verify(live, [key])
    event = report.event("sec-dave")
    assert event["result"] == "failed" and event["bad_seq"] == 11 and event["actor"] == "sec-dave"
    public = report.public()
    assert public["ok"] is False and public["problem"]["seq"] == 11
    assert report.summary().startswith("FAILED: record seq 11, audit.000000000000.jsonl line 11")


def test_a_log_deleted_and_started_again_fails_against_an_earlier_runs_anchor(
    log_path, key_file, key
):
    """A fresh log is a valid chain on its own; only what an earlier run saw exposes it."""
    live = log_path

    def write(n: int) -> None:
        audit = AuditLog(path=str(live), key_file=str(key_file))
        for _ in range(n):
            audit.emit("login", example("login"))
        audit.close()

    write(5)
    first = verify(live, [key])
    assert first.ok and first.last_seq == 4 and first.last_hash
    anchor = (first.last_seq, first.last_hash)
    write(3)  # appending keeps the anchored record: still fine
    grown = verify(live, [key], anchor=anchor)
    assert grown.ok and grown.last_seq == 7, grown.summary()
    for path in live.parent.iterdir():  # delete everything, then the log starts again
        path.unlink()
    write(9)
    assert verify(live, [key]).ok, "the new log is a valid chain when nothing is remembered"
    problem = check(live, key, anchor=anchor)
    assert "record 4 is not the record an earlier verification saw" in problem.reason
    for path in live.parent.iterdir():
        path.unlink()
    write(2)
    assert "now ends at seq 1" in check(live, key, anchor=anchor).reason


def test_the_auditor_pages_anchor_outlives_a_restart_and_resists_edits(log_path, key_file, key):
    """The page remembers the last verified record in a file next to the key, MAC'd: a log
    deleted and refilled while the service was down still fails, and so does an edited
    anchor file."""
    import json as json_

    from hub_ext.audit.cli import Where
    from hub_ext.audit.web import Verifier

    def write(n: int) -> None:
        audit = AuditLog(path=str(log_path), key_file=str(key_file))
        for _ in range(n):
            audit.emit("login", example("login"))
        audit.close()

    where = Where(log_path, None, [key], [str(key_file)])
    anchor = key_file.with_name(key_file.name + ".verified")

    def run() -> dict:
        verifier = Verifier(where, lambda report, actor: None, anchor)  # a fresh service
        verifier._run("test")
        return verifier.state

    write(5)
    assert run()["status"] == "ok" and json_.loads(anchor.read_text())["seq"] == 4
    assert oct(anchor.stat().st_mode & 0o777) == "0o600"
    write(2)
    assert run()["status"] == "ok"  # grown: still the same log
    for path in log_path.parent.iterdir():
        path.unlink()
    write(9)  # refilled past the remembered seq while "the service was down"
    state = run()
    assert state["status"] == "failed", state
    assert "is not the record an earlier verification saw" in state["summary"]
    doc = json_.loads(anchor.read_text())
    anchor.write_text(json_.dumps({**doc, "seq": 0}))  # move the anchor back: detected
    state = run()
    assert state["status"] == "failed" and "it was altered" in state["summary"], state
    assert str(key_file.parent) not in json_.dumps(state)


def test_a_bad_anchor_fails_even_an_empty_log_and_clears_once_removed(log_path, key_file, key):
    from hub_ext.audit.cli import Where
    from hub_ext.audit.web import Verifier

    where = Where(log_path, None, [key], [str(key_file)])
    anchor = key_file.with_name(key_file.name + ".verified")
    verifier = Verifier(where, lambda report, actor: None, anchor)
    anchor.write_text("{not json")
    verifier._run("test")  # the log is empty: still a failure, the anchor is bad
    assert verifier.state["status"] == "failed" and "unreadable" in verifier.state["summary"]
    anchor.unlink()  # what the message says to do: no restart needed
    verifier._run("test")
    assert verifier.state["status"] == "empty", verifier.state
    # an anchor directory the service cannot write: the run stands, with a warning
    unwritable = Verifier(where, lambda report, actor: None, log_path.parent / "no" / "x")
    audit = AuditLog(path=str(log_path), key_file=str(key_file))
    audit.emit("login", example("login"))
    audit.close()
    unwritable._run("test")
    assert unwritable.state["status"] == "ok", unwritable.state
    assert any("not saved" in w for w in unwritable.state["report"]["warnings"])
    assert unwritable.seen is not None  # remembered in memory all the same
