"""The emitting API: what a record holds, identity stamping for user servers, start-up checks."""

from __future__ import annotations

import json
import logging
import os
import stat

import pytest
from audit_helpers import example

from hub_ext.audit import AuditWriteError, SchemaViolation, UserEventRefused, chain, clock
from hub_ext.audit.keys import key_id


def test_emit_appends_a_sealed_chained_record(audit, records, fake_clock, key):
    first = audit.emit("login", example("login"))
    fake_clock.advance(1.5)
    second = audit.emit("server-started", example("server-started"))
    assert (first.seq, second.seq) == (0, 1)
    assert (first.ts, second.ts) == ("2025-03-01T12:00:00.000000Z", "2025-03-01T12:00:01.500000Z")
    r0, r1 = records()
    assert r0["type"] == "login" and r0["v"] == 1 and r0["origin"] == "hub"
    assert r0["data"] == example("login")
    assert r0["prev"] == chain.GENESIS and r1["prev"] == first.hash
    assert r0["kid"] == key_id(key)
    assert "redacted" not in r0
    # the MAC is HMAC-SHA256 under the configured key over the line without its mac member
    import hashlib
    import hmac

    line = audit.store.layout.live.read_bytes().splitlines()[0]
    body = line[: line.rindex(b',"mac":')] + b"}"
    assert hmac.new(key, body, hashlib.sha256).hexdigest() == r0["mac"]
    assert hashlib.sha256(line).hexdigest() == first.hash


def test_the_callers_dict_is_not_changed(audit):
    event = example("secret-delivered")
    before = json.dumps(event, sort_keys=True)
    audit.emit("secret-delivered", event)
    assert json.dumps(event, sort_keys=True) == before


def test_event_json_is_compact_ascii_exactly_as_json_writes_it(audit, log_path):
    data = {
        "user": 'zoë ☃ \u2028 "quoted" \\ tab\t',
        "ip": "10.0.0.1",
        "user_agent": "Mözilla/5.0 (ünï; \u0000)",
        "credential": {"kind": "api-token", "id": "t-1"},
        "amr": ["pwd", "otp"],
        "roles": [],
    }
    audit.emit("login", data)
    line = log_path.read_bytes().splitlines()[0]
    assert line.isascii()
    assert b',"data":' + json.dumps(data, separators=(",", ":")).encode() + b',"kid":' in line


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_values_json_cannot_carry_are_refused(make_log, records, bad):
    event = {**example("qpu-job-finished"), "usage_seconds": bad}  # a number to the schema
    with pytest.raises(SchemaViolation, match="holds a value JSON cannot carry"):
        make_log().emit("qpu-job-finished", event)
    fail_open = make_log(fail_closed_types=["login"])
    assert fail_open.emit_many([("login", {"user": "a"}), ("qpu-job-finished", event)])[1] is None
    assert fail_open.dropped == 1
    assert [r["type"] for r in records()] == ["login"]


def test_time_never_goes_back_in_the_log(audit, fake_clock, records):
    audit.emit("login", {"user": "a"})
    fake_clock.advance(-3600)  # an NTP step backwards
    audit.emit("login", {"user": "b"})
    fake_clock.advance(7200)
    audit.emit("login", {"user": "c"})
    ts = [r["ts"] for r in records()]
    assert ts == sorted(ts) and ts[0] == ts[1] < ts[2]


def test_timestamps_are_fixed_width_utc():
    from datetime import datetime, timedelta, timezone

    moment = datetime(2025, 3, 1, 13, 0, 0, tzinfo=timezone(timedelta(hours=1)))
    assert clock.stamp(moment) == "2025-03-01T12:00:00.000000Z"
    with pytest.raises(ValueError, match="timezone-aware"):
        clock.stamp(datetime(2025, 3, 1))
    assert clock.stamp(clock.parse("2025-03-01")) == "2025-03-01T00:00:00.000000Z"
    assert clock.stamp(clock.parse("2025-03-01T14:00:00+02:00")) == "2025-03-01T12:00:00.000000Z"
    with pytest.raises(ValueError, match="not an ISO 8601"):
        clock.parse("yesterday")


# -- events from user servers -------------------------------------------------------------


def user_event(**data):
    body = {"path": "nb.ipynb", "detectors": ["github-token"], "findings": 1, **data}
    return {"type": "save-refused", "data": body}


def test_user_event_is_stamped_with_the_authenticated_identity(audit, records):
    done = audit.record_user_event("alice", "gpu", user_event())
    assert done.type == "save-refused"
    (record,) = records()
    assert record["origin"] == "user-server"
    assert record["data"]["user"] == "alice" and record["data"]["server"] == "gpu"


@pytest.mark.parametrize(
    ("event", "status", "message"),
    [
        (user_event(user="bob"), 403, "may not set user"),
        (user_event(server="other"), 403, "may not set server"),
        (user_event(actor="admin"), 403, "may not set actor"),
        ({"type": "login", "data": {"user": "alice"}}, 403, "may report only"),
        ({"type": "break-glass", "data": example("break-glass")}, 403, "may report only"),
        ({"type": "no-such-type", "data": {}}, 403, "may report only"),
        ({"type": "save-refused"}, 400, "JSON object"),
        (["save-refused"], 400, "JSON object"),
        ({**user_event(), "origin": "hub"}, 400, "1 unexpected member(s) in the event"),
        ({**user_event(), "version": 2}, 400, "schema version 1"),
        (user_event(findings=-1), 400, "/findings"),
        (user_event(extra="x"), 400, "1 unexpected field(s); allowed"),
    ],
)
def test_user_servers_cannot_send_other_events_or_identities(
    audit, records, event, status, message
):
    with pytest.raises(UserEventRefused) as info:
        audit.record_user_event("alice", "", event)
    assert info.value.status == status
    assert message in info.value.message
    assert records() == []


def test_user_event_types_can_be_narrowed_to_none(make_log):
    audit = make_log(user_server_types=[])
    with pytest.raises(UserEventRefused, match=r"only these audit event types: \(none\)"):
        audit.record_user_event("alice", "", user_event())


def test_record_user_event_needs_an_identity(audit):
    with pytest.raises(ValueError, match="authenticated user"):
        audit.record_user_event("", "", user_event())


# -- configuration -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"path": ""}, "AuditLog needs exactly one place for the log"),
        ({"db_url": "postgresql+psycopg://db/x"}, "exactly one place for the log"),
        ({"path": "", "db_url": "sqlite:///x.db"}, "must be a PostgreSQL URL"),
        ({"key_file": ""}, "exactly one MAC key source"),
        ({"key_provider": lambda: b"k" * 32}, "exactly one MAC key source"),
        ({"fsync": "sometimes"}, "AuditLog.fsync is 'sometimes'; use one of never, checkpoint"),
        ({"secret_policy": "ignore"}, "use one of redact, refuse"),
        ({"fail_closed_types": ["logn"]}, "unknown event types ['logn']"),
        ({"detectors": ["nope"]}, "unknown detector ids ['nope']"),
        ({"user_server_types": ["login"]}, "['login'] cannot come from user servers"),
        ({"rotate_bytes": 100}, "at least 65536"),
        ({"checkpoint_every": -1}, "0 (off) or positive"),
        ({"max_record_bytes": 10}, "between 1024"),
    ],
)
def test_bad_config_stops_start_up_with_a_fix(make_log, config, message):
    with pytest.raises(Exception, match=None) as info:
        make_log(**config)
    assert message in str(info.value)


def test_path_must_be_a_file(make_log, tmp_path):
    with pytest.raises(Exception, match="must name a file, not a directory"):
        make_log(path=str(tmp_path))


def test_missing_key_file_is_not_created_unless_asked(make_log, tmp_path):
    missing = tmp_path / "nokey" / "audit.key"
    with pytest.raises(ValueError, match="does not exist; create it"):
        make_log(key_file=str(missing))
    audit = make_log(key_file=str(missing), create_key_file=True)
    assert stat.S_IMODE(missing.stat().st_mode) == 0o600
    assert len(missing.read_bytes().strip()) == 64
    assert audit.emit("login", {"user": "a"}).seq == 0


def test_key_file_others_can_read_is_refused(make_log, key_file):
    os.chmod(key_file, 0o640)
    with pytest.raises(
        ValueError, match=r"may be read by group or others \(mode 0640\); run `chmod 600"
    ):
        make_log()


def test_short_key_is_refused(make_log, key_file):
    key_file.write_text("too-short\n")
    with pytest.raises(ValueError, match="needs at least 32 random bytes"):
        make_log()


def test_key_from_a_provider(make_log, records):
    key = os.urandom(32)
    audit = make_log(key_file="", key_provider=lambda: key)
    audit.emit("login", {"user": "a"})
    assert records()[0]["kid"] == key_id(key)


def test_failing_provider_error_does_not_leak_its_message(make_log):
    def broken():
        raise RuntimeError("vault token hvs.SECRETSECRET rejected")

    with pytest.raises(ValueError) as info:
        make_log(key_file="", key_provider=broken)
    assert "RuntimeError" in str(info.value) and "hvs." not in str(info.value)


def test_key_never_reaches_the_log_files_or_messages(make_log, key, log_path, caplog):
    caplog.set_level(logging.DEBUG)
    audit = make_log()
    for _ in range(3):
        audit.emit("login", {"user": "a"})
    everything = b"".join(p.read_bytes() for p in log_path.parent.iterdir())
    assert key not in everything and key.decode() not in caplog.text


def test_fail_open_types_log_and_count_the_drop(make_log, caplog):
    audit = make_log(fail_closed_types=["login"])
    assert audit.emit("session-refreshed", {"user": "a", "roles": "not-a-list"}) is None
    assert audit.dropped == 1
    assert "audit event session-refreshed was not recorded" in caplog.text
    with pytest.raises(Exception, match="login event"):
        audit.emit("login", {"user": 5})


def test_writer_refuses_a_log_whose_head_is_gone(audit, log_path):
    audit.emit("login", {"user": "a"})
    audit.close()
    (log_path.parent / "audit.head").unlink()
    with pytest.raises(
        AuditWriteError, match=r"head file .* is missing or empty but the log has records"
    ):
        audit.emit("login", {"user": "b"})


def test_writer_refuses_a_log_with_a_foreign_head(make_log, log_path, tmp_path):
    make_log().emit("login", {"user": "a"})
    other_key = tmp_path / "other.key"
    other_key.write_text(os.urandom(32).hex())
    os.chmod(other_key, 0o600)
    with pytest.raises(AuditWriteError, match=r"head file .* is not valid .*wrong key file"):
        make_log(key_file=str(other_key)).emit("login", {"user": "b"})


def test_writer_refuses_a_truncated_live_file(audit, log_path):
    for _ in range(3):
        audit.emit("login", {"user": "a"})
    data = log_path.read_bytes()
    log_path.write_bytes(data[: data.rindex(b"\n", 0, len(data) - 1) + 1])
    with pytest.raises(AuditWriteError, match="records were removed"):
        audit.emit("login", {"user": "b"})


def test_writer_refuses_to_append_after_a_torn_record(audit, log_path):
    audit.emit("login", {"user": "a"})
    with open(log_path, "ab") as f:
        f.write(b'{"seq":1,"prev":"abc')
    with pytest.raises(AuditWriteError, match="not valid records: a torn write or tampering"):
        audit.emit("login", {"user": "b"})


def test_writer_takes_over_records_written_just_before_a_crash(make_log, log_path, caplog, key):
    from hub_ext.audit.verify import verify

    audit = make_log()
    audit.emit("login", {"user": "a"})
    head = log_path.with_name("audit.head")
    saved = head.read_bytes()
    audit.emit("login", {"user": "b"})  # as if the writer died before updating the head:
    head.write_bytes(saved)
    survivor = make_log()
    assert survivor.emit("login", {"user": "c"}).seq == 2
    assert "took over 1 record(s)" in caplog.text
    assert verify(log_path, [key]).ok


def test_writer_finishes_a_rotation_interrupted_by_a_crash(make_log, log_path, key, records):
    from hub_ext.audit.verify import verify

    audit = make_log()
    audit.emit("login", {"user": "a"})
    audit.close()
    log_path.rename(log_path.with_name("audit.000000000000.jsonl"))  # renamed, head not updated
    assert make_log().emit("login", {"user": "b"}).seq == 1
    assert [r["seq"] for r in records()] == [0, 1]
    assert verify(log_path, [key]).ok


def test_writer_refuses_when_the_live_file_disappeared(audit, log_path):
    audit.emit("login", {"user": "a"})
    audit.close()
    log_path.unlink()
    with pytest.raises(AuditWriteError, match="is missing but its head says"):
        audit.emit("login", {"user": "b"})


def test_does_not_import_jupyter_server(tmp_path, key_file):
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['jupyter_server'] = None\n"
        "from hub_ext.audit import AuditLog\n"
        "from hub_ext.audit.verify import verify\n"
        f"a = AuditLog(path={str(tmp_path / 'a.jsonl')!r}, key_file={str(key_file)!r})\n"
        "a.emit('login', {'user': 'x'})\n"
        "assert 'jupyter_server.serverapp' not in sys.modules\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
