"""The alert engine over a real audit log: bursts raise one alert citing their records, a
normal day raises none, a restart raises nothing twice and misses nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from traitlets.config import Config

from hub_ext.audit import AuditLog, schema
from hub_ext.audit.alert_watch import AlertWatcher, origin
from hub_ext.audit.alerts import ALERT, MAX_SUBJECTS, AlertEngine, AlertRules
from hub_ext.audit.cli import Where
from hub_ext.audit.keys import load_key_file
from hub_ext.audit.query import Filter, query

T0 = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)


def rec(seq: int, kind: str, minutes: float = 0, **data: Any) -> dict[str, Any]:
    ts = (T0 + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {"seq": seq, "ts": ts, "type": kind, "data": data}


def engine(**settings: Any) -> AlertEngine:
    return AlertEngine(AlertRules(**settings).rules())


def test_a_burst_of_login_refusals_from_one_address_raises_one_alert_with_its_records():
    e = engine()
    raised = []
    for i in range(12):  # one address, several user names: a password-spraying loop
        raised += e.feed(rec(i, "login-refused", i * 0.5, user=f"u{i}", ip="203.0.113.7",
                             reason="idp-error"))
    by_rule = {a.rule.id: a for a in raised}
    assert list(by_rule) == ["login-failures-ip"]  # each user failed once: no user alert
    alert = by_rule["login-failures-ip"]
    assert alert.subject == "ip:203.0.113.7" and alert.count == 5
    assert alert.evidence == (0, 1, 2, 3, 4)
    assert len(raised) == 1  # the rest of the burst is the same alert's window


def test_the_next_window_raises_again_and_a_quiet_subject_never():
    e = engine(save_refusals=3, save_window=60)
    first = [a for i in range(3) for a in e.feed(rec(i, "save-refused", i / 10, user="mal"))]
    assert [a.rule.id for a in first] == ["save-refusals"]
    later = [a for i in range(3, 6) for a in e.feed(rec(i, "save-refused", 5 + i / 10, user="mal"))]
    assert [(a.subject, a.evidence) for a in later] == [("user:mal", (3, 4, 5))]
    spread = [a for i in range(6, 12) for a in e.feed(rec(i, "save-refused", 20 + i * 2, user="amy"))]
    assert spread == []  # one refusal every two minutes is not a burst


@pytest.mark.parametrize(("record", "rule"), [
    (rec(0, "audit-verified", actor="cli", result="failed", mode="full", records=10),
     "audit-verification-failed"),
    (rec(0, "secret-store-tampered", store="embedded", detail="mac"), "secret-store-tampered"),
    (rec(0, "role-changed", user="eve", added=["admin"], source="admin"), "admin-granted"),
    (rec(0, "secret-withheld", user="sam", server="", reason="role-lost", profile="x"),
     "secret-withheld"),
])
def test_one_record_is_enough_for_the_integrity_and_privilege_rules(record, rule):
    assert [a.rule.id for a in engine().feed(record)] == [rule]


def test_a_normal_day_raises_nothing():
    """A day of the demo's traffic: logins, spawns and stops within the profiles' maximum
    age, secret deliveries and QPU submissions at a researcher's pace, a few refused saves
    (outside course folders) and rejected jobs spread over the day, a successful
    verification, an ordinary role change and an admin grant inside the change window."""
    rules = AlertRules(change_window="Mon-Fri 08:00-18:00", server_max_age={"student": 4 * 3600})
    e = AlertEngine(rules.rules(lambda path: path.startswith("qc101/")), rules.server_max_age)
    seq = 0
    day: list[dict[str, Any]] = []
    for hour in range(8, 18):
        for u in ("sam", "rita", "ivan", "tina"):
            day.append(rec(seq, "login", hour * 60, user=u, ip="192.0.2.10"))
            seq += 1
            day.append(rec(seq, "server-started", hour * 60 + 1, user=u, server="",
                           profile="student"))
            seq += 1
            for minute in range(2, 60, 6):  # ten deliveries and submissions an hour each
                day.append(rec(seq, "secret-delivered", hour * 60 + minute, user=u, server=""))
                day.append(rec(seq + 1, "qpu-job-submitted", hour * 60 + minute + 1, user=u))
                seq += 2
            day.append(rec(seq, "server-stopped", hour * 60 + 59, user=u, server="",
                           reason="user-request"))
            seq += 1
        day.append(rec(seq, "save-refused", hour * 60 + 30, user="sam"))
        seq += 1
        day.append(rec(seq, "qpu-job-rejected", hour * 60 + 40, user="rita",
                       reason="quota-exceeded"))
        seq += 1
        day.append(rec(seq, "login-refused", hour * 60 + 50, user="sam", ip="192.0.2.10",
                       reason="token-expired"))
        seq += 1
    day.append(rec(seq, "audit-verified", 18 * 60, actor="cli", result="ok", mode="full",
                   records=seq))
    day.append(rec(seq + 1, "role-changed", 18 * 60, user="tina", added=["assistant"],
                   source="idp-groups"))
    day.append(rec(seq + 2, "role-changed", 60, user="ada", added=["admin"],
                   source="idp-groups"))
    assert [a for r in day for a in e.feed(r)] == []
    # a day later every server would be far past 4 h, had one not been stopped
    assert e.tick(T0.timestamp() + 30 * 3600) == []


def test_a_flood_of_distinct_addresses_keeps_the_engine_bounded():
    e = engine()
    for i in range(MAX_SUBJECTS + 500):
        e.feed(rec(i, "login-refused", i / 1000, ip=f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}",
                   reason="idp-error"))
    assert len(e._windows) <= MAX_SUBJECTS


def test_thresholds_are_validated_traits():
    c = Config()
    c.AlertRules.login_failures = 0
    with pytest.raises(ValueError, match="login_failures = 0"):
        AlertRules(config=c)
    with pytest.raises(ValueError, match="http"):
        AlertRules(webhook_url="file:///etc/passwd")


# -- the service's watcher over a real log ------------------------------------------------------


def _log(tmp_path: Path) -> AuditLog:
    return AuditLog(path=str(tmp_path / "audit.jsonl"), key_file=str(tmp_path / "audit.key"),
                    create_key_file=True)


def _watcher(tmp_path: Path, audit: AuditLog, **settings: Any) -> AlertWatcher:
    where = Where(tmp_path / "audit.jsonl", None, [load_key_file(str(tmp_path / "audit.key"))],
                  [str(tmp_path / "audit.key")])
    return AlertWatcher(where, lambda datas: audit.emit_many([(ALERT, d) for d in datas]),
                        AlertRules(**settings))


def _refusal(user: str) -> dict[str, Any]:
    data = dict(schema.get("login-refused").examples[0])
    data.update(user=user, ip="198.51.100.9")
    return data


def test_the_watcher_records_alerts_citing_verifiable_evidence_and_none_twice(tmp_path):
    audit = _log(tmp_path)
    try:
        watcher = _watcher(tmp_path, audit, login_failures=3)
        watcher.poll()  # empty log
        audit.emit("login", schema.get("login").examples[0])
        seqs = [audit.emit("login-refused", _refusal("mallory")).seq for _ in range(3)]
        watcher.poll()
        alerts = [h.record for h in query(tmp_path / "audit.jsonl",
                                          Filter(types=frozenset({ALERT})))]
        by_rule = {a["data"]["rule"]: a["data"] for a in alerts}
        assert set(by_rule) == {"login-failures-ip", "login-failures-user"}
        assert by_rule["login-failures-user"]["evidence"] == seqs
        assert by_rule["login-failures-user"]["subject"] == "user:mallory"
        # the evidence is in the log, as cited
        cited = [h.record for h in query(tmp_path / "audit.jsonl",
                                         Filter(seqs=frozenset(seqs)))]
        assert [r["type"] for r in cited] == ["login-refused"] * 3

        # a restarted service (new watcher) replays the window: nothing raised twice...
        restarted = _watcher(tmp_path, audit, login_failures=3)
        restarted.poll()
        assert restarted.raised == 0
        # ...and a burst that spans the restart is seen whole
        audit.emit("login-refused", _refusal("trudy"))
        audit.emit("login-refused", _refusal("trudy"))
        again = _watcher(tmp_path, audit, login_failures=3)
        audit.emit("login-refused", _refusal("trudy"))
        again.poll()
        new = [h.record["data"] for h in query(tmp_path / "audit.jsonl",
                                               Filter(types=frozenset({ALERT})))][len(alerts):]
        assert [(a["rule"], a["subject"]) for a in new] == [("login-failures-user", "user:trudy")]
    finally:
        audit.close()


def test_a_failing_webhook_loses_no_alert(tmp_path, caplog):
    audit = _log(tmp_path)
    try:
        hook = "http://127.0.0.1:9/hooks/T000/SECRET-PART-OF-THE-URL"
        watcher = _watcher(tmp_path, audit, save_refusals=1, webhook_url=hook)
        data = dict(schema.get("save-refused").examples[0])
        del data["user"], data["server"]
        audit.record_user_event("sam", "", {"type": "save-refused", "data": data})
        watcher.poll()
        watcher.close()  # waits for the webhook's thread
        assert watcher.raised == 1
        failures = [r.getMessage() for r in caplog.records if "alert webhook" in r.getMessage()]
        assert failures and all("SECRET" not in m for m in failures)  # host only, no path
        assert origin(hook) in failures[0]
        assert [h.record["data"]["rule"] for h in query(
            tmp_path / "audit.jsonl", Filter(types=frozenset({ALERT})))] == ["save-refusals"]
    finally:
        audit.close()


def test_the_alert_record_type_is_documented():
    assert ALERT in schema.names() and schema.get(ALERT).examples


def test_an_alert_the_log_could_not_take_is_recorded_at_the_next_poll(tmp_path):
    audit = _log(tmp_path)
    try:
        watcher = _watcher(tmp_path, audit, login_failures=2)
        watcher.poll()
        real_emit, calls = watcher.emit, []

        def failing(datas):
            calls.append(datas)
            if len(calls) == 1:
                raise OSError("disk full")
            return real_emit(datas)

        watcher.emit = failing
        for _ in range(2):
            audit.emit("login-refused", _refusal("mallory"))
        with pytest.raises(OSError):
            watcher.poll()
        assert watcher.raised == 0
        watcher.poll()  # nothing new was written: the kept alerts are recorded now
        assert watcher.raised == 2  # user and address
        assert len([h for h in query(tmp_path / "audit.jsonl",
                                     Filter(types=frozenset({ALERT})))]) == 2
    finally:
        audit.close()


def test_a_service_started_on_an_old_log_does_not_alert_on_old_bursts(tmp_path):
    audit = _log(tmp_path)
    try:
        for _ in range(6):
            audit.emit("login-refused", _refusal("mallory"))
        watcher = _watcher(tmp_path, audit, login_failures=3)
        # the burst is older than every window (as if written a day ago)
        watcher.engine.not_before = "9999"
        watcher._replayed = True
        watcher.poll()
        assert watcher.raised == 0 and watcher.engine.last_seq == 5
    finally:
        audit.close()


def test_the_timeline_shows_events_about_no_user():
    from hub_ext.audit.timeline import sessions

    alert = rec(7, ALERT, rule="save-refusals", subject="user:mal", count=3,
                window_seconds=600, first_ts="a", last_ts="b", evidence=[1, 2, 3])
    found = sessions([rec(1, "save-refused", user="mal"), alert])
    assert [(s.user, [e.type for e in s.events]) for s in found] == [
        ("", [ALERT]), ("mal", ["save-refused"])]
