"""Concurrent writers — threads, separate processes, forked children — never corrupt or fork
the chain: every record lands exactly once and the whole log verifies."""

from __future__ import annotations

import itertools
import json
import multiprocessing
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from hub_ext.audit.verify import verify

WRITER = Path(__file__).with_name("audit_writer.py")


def job_event(tag: str, i: int) -> dict:
    return {"user": tag, "project": "p", "job_id": f"{tag}-{i}", "backend": "aer"}


def assert_complete(records, key, log_path, expected: Counter):
    report = verify(log_path, [key], jobs=2)
    assert report.ok, report.summary()
    found = records()
    assert [r["seq"] for r in found] == list(range(len(found)))
    jobs = Counter(r["data"]["job_id"] for r in found if r["type"] == "qpu-job-submitted")
    assert all(n == 1 for n in jobs.values()), "a record was written twice"
    assert Counter(j.rsplit("-", 1)[0] for j in jobs) == expected
    return found


def test_threads_sharing_one_log(make_log, log_path, key, records):
    audit = make_log(rotate_bytes=65536, checkpoint_every=97)
    barrier = threading.Barrier(8)

    def work(tag):
        barrier.wait()
        for i in range(300):
            audit.emit("qpu-job-submitted", job_event(tag, i))

    threads = [threading.Thread(target=work, args=(f"t{n}",)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert_complete(records, key, log_path, Counter({f"t{n}": 300 for n in range(8)}))
    assert len(list(log_path.parent.glob("audit.0*.jsonl"))) >= 2  # rotated while contended


def test_threads_with_separate_log_objects(make_log, log_path, key, records):
    logs = [make_log(rotate_bytes=65536) for _ in range(4)]

    def work(audit, tag):
        for i in range(200):
            audit.emit("qpu-job-submitted", job_event(tag, i))

    threads = [threading.Thread(target=work, args=(logs[n % 4], f"s{n}")) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert_complete(records, key, log_path, Counter({f"s{n}": 200 for n in range(8)}))


def test_separate_processes_rotating_one_log(log_path, key_file, key, records, tmp_path):
    start = tmp_path / "start"
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(WRITER),
                str(log_path),
                str(key_file),
                f"p{n}",
                "400",
                "--rotate-bytes",
                "65536",
                "--checkpoint-every",
                "50",
                "--start-file",
                str(start),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(4)
    ]
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("start.p*"))) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    start.touch()  # all four are ready: go
    for proc in procs:
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err
        assert json.loads(out) == {"written": 400}
    found = assert_complete(records, key, log_path, Counter({f"p{n}": 400 for n in range(4)}))
    assert len(found) == 1600
    assert len(list(log_path.parent.glob("audit.0*.jsonl"))) >= 5
    # more runs of one writer's records than there are writers: they really interleaved
    runs = 1 + sum(
        1 for a, b in itertools.pairwise(found) if a["data"]["user"] != b["data"]["user"]
    )
    assert runs > 4


def _forked_writer(audit, tag, count):
    for i in range(count):
        audit.emit("qpu-job-submitted", job_event(tag, i))


def test_forked_children_keep_using_the_parents_log(make_log, log_path, key, records):
    audit = make_log(rotate_bytes=65536)
    audit.emit("login", {"user": "parent"})  # the parent has its descriptors open and locked once
    ctx = multiprocessing.get_context("fork")
    children = [ctx.Process(target=_forked_writer, args=(audit, f"f{n}", 250)) for n in range(3)]
    for child in children:
        child.start()
    _forked_writer(audit, "parent", 250)
    for child in children:
        child.join(timeout=240)
        assert child.exitcode == 0
    expected = Counter({"f0": 250, "f1": 250, "f2": 250, "parent": 250})
    assert_complete(records, key, log_path, expected)
