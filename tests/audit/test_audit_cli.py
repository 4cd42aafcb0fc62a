"""``qustody audit`` as auditors run it: real subprocesses on a real log."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from audit_helpers import qustody

from hub_ext.audit import schema
from hub_ext.audit.layout import Layout


@pytest.fixture
def filled(make_log, fake_clock, log_path):
    audit = make_log(rotate_bytes=65536)
    for i in range(300):
        audit.emit(
            "qpu-job-submitted",
            {"user": f"u{i % 3}", "project": "vqe", "job_id": f"j-{i}", "backend": "aer"},
        )
        fake_clock.advance(60)
    audit.emit("login", {"user": "alice", "user_agent": "ghp_OKBRA9XBAxWFVc7mYOiJTy028bBckPRS8KgT"})
    audit.close()
    return log_path


def test_verify_ok_and_failed(filled, key_file):
    ok = qustody("verify", "--log", str(filled), "--key-file", str(key_file))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("OK: full verification: 301 records (seq 0..300)")
    _, first = Layout(filled).rotated_files()[0]
    data = first.read_bytes()
    cut = data.index(b'{"seq":5,')
    nxt = data.index(b"\n", cut) + 1
    first.write_bytes(data[:cut] + data[nxt:])
    bad = qustody("verify", "--log", str(filled), "--key-file", str(key_file), "--jobs", "2")
    assert bad.returncode == 1
    assert bad.stdout.startswith("FAILED: record seq 6, audit.000000000000.jsonl line 6 (byte ")
    assert "expected seq 5 but found 6: record 5 deleted or moved" in bad.stdout
    as_json = json.loads(
        qustody(
            "verify", "--log", str(filled), "--key-file", str(key_file), "--format", "json"
        ).stdout
    )
    assert as_json["ok"] is False and as_json["problem"]["seq"] == 6


def test_verify_can_record_its_result(filled, key_file):
    result = qustody(
        "verify",
        "--log",
        str(filled),
        "--key-file",
        str(key_file),
        "--record",
        "--actor",
        "sec-dave",
    )
    assert result.returncode == 0 and "recorded as seq 301" in result.stderr
    last = json.loads(filled.read_bytes().splitlines()[-1])
    assert last["type"] == "audit-verified"
    assert last["data"]["actor"] == "sec-dave" and last["data"]["records"] == 301
    assert qustody("verify", "--log", str(filled), "--key-file", str(key_file)).returncode == 0


def test_verify_reads_the_hub_config(filled, key_file, tmp_path):
    cfg = tmp_path / "jupyterhub_config.py"
    cfg.write_text(
        f"c = get_config()\nc.AuditLog.path = {str(filled)!r}\n"
        f"c.AuditLog.key_file = {str(key_file)!r}\n"
    )
    result = qustody("verify", "--config", str(cfg), "--quick", "--record", "--actor", "cron")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("OK: quick verification")
    assert "recorded as seq 301" in result.stderr  # written with the config's key
    last = json.loads(filled.read_bytes().splitlines()[-1])
    assert last["data"]["mode"] == "quick" and last["data"]["actor"] == "cron"


def test_verify_with_the_wrong_key(filled, tmp_path):
    other = tmp_path / "other.key"
    other.write_text("b" * 64)
    other.chmod(0o600)
    result = qustody("verify", "--log", str(filled), "--key-file", str(other))
    assert result.returncode == 1 and "wrong key file" in result.stdout


def test_query_table_and_json(filled):
    table = qustody(
        "query",
        "--log",
        str(filled),
        "--user",
        "u1",
        "--since",
        "2025-03-01T12:30:00Z",
        "--until",
        "2025-03-01T13:00",
        "--type",
        "qpu-job-submitted",
    )
    assert table.returncode == 0, table.stderr
    rows = table.stdout.splitlines()
    assert rows[0].startswith("time (UTC)") and rows[-1] == "(10 record(s))"
    assert rows[1].startswith("2025-03-01T12:31:00        31  qpu-job-submitted      u1")
    as_json = qustody("query", "--log", str(filled), "--job", "j-42", "--format", "json")
    (line,) = as_json.stdout.splitlines()
    record = json.loads(line)
    assert record["seq"] == 42 and record["data"]["job_id"] == "j-42"
    assert (
        line.encode()
        in filled.parent.joinpath(Layout(filled).rotated_files()[0][1].name).read_bytes()
    )


def test_query_by_the_reference_a_user_was_shown(make_log, log_path):
    audit = make_log()
    for i, ref in enumerate(("3f9a0c12b7e4", "00000000beef")):
        event = {"path": f"n{i}.ipynb", "detectors": ["github-token"], "findings": 1, "ref": ref}
        audit.record_user_event("u0", "", {"type": "save-refused", "data": event})
    audit.close()
    found = qustody("query", "--log", str(log_path), "--ref", "3F9A0C12B7E4", "--format", "json")
    assert found.returncode == 0, found.stderr
    (line,) = found.stdout.splitlines()
    assert json.loads(line)["data"]["path"] == "n0.ipynb"


def test_query_shows_redactions_never_values(filled):
    result = qustody("query", "--log", str(filled), "--user", "alice")
    assert "user_agent=[REDACTED:github-token] [redacted]" in result.stdout
    assert "ghp_OKBRA" not in result.stdout


def test_export_for_a_siem(filled, key_file, tmp_path):
    out = tmp_path / "siem.jsonl"
    result = qustody(
        "export",
        "--log",
        str(filled),
        "--after-seq",
        "290",
        "-o",
        str(out),
        "--verify",
        "--key-file",
        str(key_file),
    )
    assert result.returncode == 0, result.stderr
    assert "10 record(s) exported" in result.stderr
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["seq"] for x in lines] == list(range(291, 301))
    assert {x["format"] for x in lines} == {"qustody-audit/1"}


def test_export_refuses_a_log_that_fails_verification(filled, key_file, tmp_path):
    data = filled.read_bytes()
    filled.write_bytes(data.replace(b'"user":"u1"', b'"user":"u2"', 1))
    out = tmp_path / "siem.jsonl"
    result = qustody(
        "export", "--log", str(filled), "-o", str(out), "--verify", "--key-file", str(key_file)
    )
    assert result.returncode == 1 and "nothing exported" in result.stderr
    assert not out.exists()


def test_environment_names_the_log(filled, key_file):
    env = {**os.environ, "QUSTODY_AUDIT_LOG": str(filled), "QUSTODY_AUDIT_KEY_FILE": str(key_file)}
    assert qustody("verify", env=env).returncode == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["verify"], "which log? give --log PATH"),
        (["verify", "--log", "x.jsonl"], "verification needs the MAC key"),
        (["verify", "--log", "x.jsonl", "--key-file", "/nonexistent"], "does not exist"),
        (["query", "--log", "x.jsonl", "--type", "loggedin"], "unknown event types ['loggedin']"),
        (["query", "--log", "x.jsonl", "--since", "last tuesday"], "not an ISO 8601"),
        (["query", "--log", "x.jsonl", "--ref", "3F9A"], "a reference is 12 hex digits"),
        (["query", "--log", "x.jsonl", "--ref", "3f9a0c12b7eg"], "a reference is 12 hex digits"),
        (["verify", "--config", "/nonexistent/jupyterhub_config.py"], "not found"),
    ],
)
def test_usage_errors_exit_2(args, message):
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUSTODY_AUDIT")}
    result = qustody(*args, env=env)
    assert result.returncode == 2
    assert message in result.stderr


def test_types_and_help():
    types = qustody("types")
    assert types.returncode == 0
    assert "save-refused             v1  user-server Save refused" in types.stdout
    assert len(types.stdout.splitlines()) == len(schema.names())  # one line per event type
    top = subprocess.run(
        [sys.executable, "-m", "server_ext.cli", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "audit" in top.stdout


def test_a_path_a_user_reported_cannot_drive_the_auditors_terminal(make_log, log_path):
    """A user's server reports its paths: escape sequences in one (erase the lines above,
    set the clipboard) are printed as text in the table, never sent to the terminal."""
    audit = make_log()
    audit.record_user_event("u0", "", {"type": "save-refused", "data": {
        "path": "a.ipynb", "detectors": ["github-token"], "findings": 1}})
    sneaky = "\x1b[1A\x1b[2K" * 5 + "\x1b]52;c;aGk=\x07\x9b2J"
    audit.record_user_event("u0", "", {"type": "save-refused", "data": {
        "path": sneaky, "detectors": ["github-token"], "findings": 1}})
    audit.close()
    table = qustody("query", "--log", str(log_path))
    assert table.returncode == 0, table.stderr
    assert not any(c in table.stdout for c in "\x1b\x07\x9b")
    assert "path=\\x1b[1A\\x1b[2K" in table.stdout and "(2 record(s))" in table.stdout
