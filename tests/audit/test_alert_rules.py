"""The alert rules beyond plain bursts: a user's own baseline, quotas used up early, gaps in
the log, servers past their maximum age, privileged grants outside the change window, and
refused saves in a course folder; and the rules' settings as validated traits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from traitlets.config import Config

from hub_ext.audit.alert_watch import CourseFolders
from hub_ext.audit.alerts import GAP, OVER_AGE, AlertEngine, AlertRules
from hub_ext.audit.change_window import ChangeWindow, ChangeWindowError

# A Thursday, 10:00 UTC
T0 = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)


def rec(seq: int, kind: str, minutes: float = 0, **data: Any) -> dict[str, Any]:
    ts = (T0 + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {"seq": seq, "ts": ts, "type": kind, "data": data}


def engine(shared: Any = None, **settings: Any) -> AlertEngine:
    rules = AlertRules(**settings)
    return AlertEngine(rules.rules(shared), rules.server_max_age, rules.server_age_slack)


def feed_all(e: AlertEngine, records: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(a.rule.id, a.subject) for r in records for a in e.feed(r)]


# -- baselines ------------------------------------------------------------------------------


def _deliveries(start_seq: int, user: str, per_hour: int, hours: float, start_min: float = 0):
    n = int(per_hour * hours)
    step = 60 / per_hour
    return [rec(start_seq + i, "secret-delivered", start_min + i * step, user=user, server="")
            for i in range(n)]


def test_secret_reads_far_above_a_users_own_baseline_alert_and_their_usual_rate_does_not():
    e = engine(secret_reads=20, secret_reads_window=3600, secret_reads_factor=5)
    # a pipeline user who reads 100 an hour, every hour, for a day: their normal. With
    # less than an hour of past, the floor (20) applies: the new user is flagged...
    day = _deliveries(0, "pipe", 100, 24)
    first_hours = feed_all(e, day[:200])
    assert first_hours and set(first_hours) == {("secret-reads-burst", "user:pipe")}
    assert feed_all(e, day[200:]) == []  # ...and from then on their own baseline holds
    raised = feed_all(e, _deliveries(len(day), "pipe", 150, 1, start_min=24 * 60))
    assert raised == []  # 150 in an hour is 1.5x their baseline: not an alert
    burst = _deliveries(len(day) + 150, "pipe", 2000, 0.5, start_min=25 * 60 + 1)
    assert feed_all(e, burst) == [("secret-reads-burst", "user:pipe")]  # > 5 x 100


def test_a_user_with_no_past_is_held_to_the_floor():
    e = engine(qpu_submissions=30, qpu_submissions_window=600)
    quiet = [rec(i, "qpu-job-submitted", i * 30, user="amy") for i in range(40)]
    assert feed_all(e, quiet) == []  # one every half hour
    flood = [rec(40 + i, "qpu-job-submitted", 2000 + i / 10, user="mal") for i in range(40)]
    alerts = [a for r in flood for a in e.feed(r)]
    assert [(a.rule.id, a.subject, a.count) for a in alerts] == [
        ("qpu-submissions-burst", "user:mal", 30)]
    assert alerts[0].evidence[-1] == 69  # the records that made the count


# -- QPU quotas -----------------------------------------------------------------------------


def _rejected(seq: int, minutes: float, left: float | None, user: str = "bob") -> dict[str, Any]:
    data: dict[str, Any] = {"user": user, "project": "qchem", "reason": "quota-exceeded",
                            "code": "PROJECT_QUOTA", "period": "day"}
    if left is not None:
        data["period_left"] = left
    return rec(seq, "qpu-job-rejected", minutes, **data)


def test_a_quota_used_up_early_in_its_period_alerts_once():
    e = engine()
    raised = feed_all(e, [_rejected(0, 0, 0.58), _rejected(1, 1, 0.57)])
    assert raised == [("quota-burnt-early", "user:bob:qchem:day")]
    assert feed_all(e, [_rejected(2, 0, 0.1, user="late")]) == []  # near the period's end


def test_repeated_quota_rejections_alert():
    e = engine(quota_rejections=3, quota_early_left=1)  # 1: the early rule is off
    raised = feed_all(e, [_rejected(i, i, 0.9) for i in range(3)])
    assert raised == [("qpu-quota-rejections", "user:bob")]


# -- the log itself -------------------------------------------------------------------------


def test_a_gap_in_the_sequence_alerts_citing_both_sides():
    e = engine()
    assert feed_all(e, [rec(0, "login", user="a"), rec(1, "login", 1, user="a")]) == []
    alerts = e.feed(rec(5, "login", 2, user="a"))
    assert [(a.rule.id, a.evidence) for a in alerts] == [(GAP, (1, 5))]
    assert e.feed(rec(6, "login", 3, user="a")) == []


def test_a_server_past_its_maximum_age_alerts_and_a_stopped_one_does_not():
    e = engine(server_max_age={"student": 3600}, server_age_slack=600)
    start = T0.timestamp()
    e.feed(rec(0, "server-started", 0, user="sam", server="", profile="student"))
    e.feed(rec(1, "server-started", 1, user="rita", server="big", profile="student"))
    e.feed(rec(2, "server-stopped", 30, user="rita", server="big", reason="user-request"))
    assert e.tick(start + 3600 + 500) == []  # within the slack
    alerts = e.tick(start + 3600 + 700)
    assert [(a.rule.id, a.subject, a.evidence) for a in alerts] == [
        (OVER_AGE, "server:sam/", (0,))]
    assert e.tick(start + 3600 + 800) == []  # once a day per server
    # a cull is recorded before its stop, which may fail: only the stop ends the tracking
    culled = engine(server_max_age={"student": 3600})
    culled.feed(rec(0, "server-started", 0, user="sam", server="", profile="student"))
    culled.feed(rec(1, "server-culled", 60, user="sam", server="", reason="max-age"))
    assert [a.subject for a in culled.tick(start + 10 * 3600)] == ["server:sam/"]
    stopped = engine(server_max_age={"student": 3600})
    stopped.feed(rec(0, "server-started", 0, user="sam", server="", profile="student"))
    stopped.feed(rec(1, "server-culled", 60, user="sam", server="", reason="max-age"))
    stopped.feed(rec(2, "server-stopped", 61, user="sam", server="", reason="requested"))
    assert stopped.tick(start + 10 * 3600) == []


# -- privileged grants ----------------------------------------------------------------------


def _grant(seq: int, when: datetime, role: str = "admin") -> dict[str, Any]:
    minutes = (when - T0).total_seconds() / 60
    return rec(seq, "role-changed", minutes, user="eve", added=[role], removed=[],
               source="idp-groups")


def test_a_grant_inside_the_change_window_is_routine_and_outside_it_alerts():
    e = engine(change_window="Mon-Fri 08:00-18:00 UTC")
    assert feed_all(e, [_grant(0, T0)]) == []  # Thursday 10:00
    night = T0.replace(hour=23)
    assert feed_all(e, [_grant(1, night)]) == [("admin-granted", "user:eve")]
    saturday = T0 + timedelta(days=2)
    assert feed_all(e, [_grant(2, saturday, "qpu-operator")]) == [("admin-granted", "user:eve")]


def test_privileged_roles_are_patterns_and_others_are_not_alerted():
    e = engine(privileged_roles=["admin", "*:instructors"])
    assert feed_all(e, [_grant(0, T0, "student")]) == []
    assert feed_all(e, [_grant(1, T0, "qc101:instructors")]) == [("admin-granted", "user:eve")]


@pytest.mark.parametrize(("text", "inside", "outside"), [
    ("Mon-Fri 08:00-18:00", "2026-12-03T09:00", "2026-12-05T09:00"),
    ("Sat,Sun 10:00-12:00 UTC", "2026-12-05T11:59", "2026-12-05T12:00"),
    ("Fri-Mon 22:00-02:00", "2026-12-08T01:30", "2026-12-08T23:00"),  # Mon night is Tue
    ("Mon-Fri 08:00-18:00 Europe/Berlin", "2026-12-03T07:30", "2026-12-03T17:30"),
])
def test_change_windows(text, inside, outside):
    window = ChangeWindow.parse(text)

    def at(s: str) -> float:
        return datetime.fromisoformat(s).replace(tzinfo=UTC).timestamp()

    assert window.contains(at(inside)) and not window.contains(at(outside))


@pytest.mark.parametrize(("text", "message"), [
    ("weekdays 08:00-18:00", "not a day"),
    ("Mon-Fri 8-18", "not a time"),
    ("Mon-Fri 08:00-25:00", "not a time of day"),
    ("Mon-Fri 08:00-08:00", "empty"),
    ("Mon-Fri 08:00-18:00 Mars/Olympus", "not a time zone"),
    ("Mon-Fri", "e.g."),
    ("Mon-Fri 08:00-18:00 Europe", "not a time zone"),  # a folder of the tz database
    ("Mon 24:00-08:00", "starts at 24:00"),
])
def test_a_bad_change_window_is_refused_with_what_to_write(text, message):
    with pytest.raises(ChangeWindowError, match=message):
        ChangeWindow.parse(text)
    c = Config()
    c.AlertRules.change_window = text
    with pytest.raises(ValueError, match=r"AlertRules\.change_window"):
        AlertRules(config=c)


# -- course folders -------------------------------------------------------------------------


def test_any_refused_save_in_a_course_folder_alerts(tmp_path):
    (tmp_path / "qc101.toml").write_text("")
    folders = CourseFolders(tmp_path)
    e = engine(folders)
    raised = feed_all(e, [
        rec(0, "save-refused", 0, user="sam", path="notes/keys.ipynb"),
        rec(1, "save-refused", 1, user="sam", path="qc101/hw1/answer.ipynb"),
        rec(2, "save-refused", 2, user="tom", path="qc101.ipynb"),  # not inside the folder
    ])
    assert raised == [("save-refused-shared", "user:sam")]
    (tmp_path / "qc202.toml").write_text("")  # applied while the service runs
    folders._read = float("-inf")
    assert feed_all(e, [rec(3, "save-refused", 3, user="ana", path="/qc202/x.ipynb")]) == [
        ("save-refused-shared", "user:ana")]


# -- settings -------------------------------------------------------------------------------


@pytest.mark.parametrize(("trait", "value", "message"), [
    ("quota_early_left", 1.5, "between 0 and 1"),
    ("secret_reads_factor", 0.5, "between 1 and 1000"),
    ("server_max_age", {"student": 0}, "positive"),
    ("email_to", ["not-an-address"], "not an e-mail address"),
    ("email_from", "alerts\r\nBcc: x@example.org", "not an e-mail address"),
    ("smtp_port", 70000, "TCP port"),
    ("baseline_hours", 0, "positive"),
])
def test_the_new_settings_are_validated(trait, value, message):
    c = Config()
    setattr(c.AlertRules, trait, value)
    with pytest.raises(ValueError, match=message):
        AlertRules(config=c)


def test_the_rules_settings_survive_the_trip_to_the_service():
    rules = AlertRules(change_window="Mon-Fri 08:00-18:00", email_to=["sec@example.org"],
                       server_max_age={"student": 600})
    again = AlertRules(**rules.settings())
    assert again.settings() == rules.settings()


# -- a restarted service (the watcher's replay) ---------------------------------------------


def _log_and_watcher(tmp_path, **settings: Any):
    from hub_ext.audit import AuditLog
    from hub_ext.audit.alert_watch import AlertWatcher
    from hub_ext.audit.alerts import ALERT
    from hub_ext.audit.cli import Where
    from hub_ext.audit.keys import load_key_file

    audit = AuditLog(path=str(tmp_path / "audit.jsonl"), key_file=str(tmp_path / "audit.key"),
                     create_key_file=True)
    where = Where(tmp_path / "audit.jsonl", None, [load_key_file(str(tmp_path / "audit.key"))],
                  [str(tmp_path / "audit.key")])

    def watcher() -> AlertWatcher:
        return AlertWatcher(where, lambda datas: audit.emit_many([(ALERT, d) for d in datas]),
                            AlertRules(**settings))

    return audit, watcher


def _started(user: str) -> dict[str, Any]:
    from hub_ext.audit import schema

    return {**schema.get("server-started").examples[0], "user": user, "server": "",
            "profile": "student"}


def test_a_restart_still_knows_servers_started_before_every_window(tmp_path):
    import time

    audit, watcher = _log_and_watcher(tmp_path, server_max_age={"student": 40 * 3600},
                                      server_age_slack=60)
    try:
        started = audit.emit("server-started", _started("sam")).seq
        now = time.time()
        restarted = watcher()
        restarted.now = lambda: now + 30 * 3600  # a day and more after the start
        restarted.poll()
        assert restarted.raised == 0
        restarted.now = lambda: now + 41 * 3600
        restarted.poll()
        assert restarted.raised == 1
        [alert] = [a for a in restarted.engine._quiet if a[0] == OVER_AGE]
        assert alert == (OVER_AGE, "server:sam/")
        assert started == 0
    finally:
        audit.close()


def test_a_restart_neither_hides_a_later_gap_nor_raises_old_bursts_again(tmp_path):
    from hub_ext.audit import schema

    audit, watcher = _log_and_watcher(tmp_path, login_failures=2, secret_reads=500)
    try:
        refused = {**schema.get("login-refused").examples[0], "ip": "198.51.100.9"}
        first = watcher()
        for user in ("mallory", "trudy"):  # two alerts, other records between them
            audit.emit("login", schema.get("login").examples[0])
            for _ in range(2):
                audit.emit("login-refused", {**refused, "user": user})
            first.poll()
        assert first.raised == 3  # mallory, the address, trudy
        restarted = watcher()
        restarted.poll()
        assert restarted.raised == 0  # nothing raised twice
        assert (GAP, "log") not in restarted.engine._quiet  # alerts are not a gap
    finally:
        audit.close()


@pytest.mark.parametrize(("rule", "subject", "owner"), [
    ("login-failures-user", "user:alice", "alice"),
    ("login-failures-user", "user:bob:x", "bob:x"),  # a ':' in a name is the name's
    ("quota-burnt-early", "user:bob:x:qchem:day", "bob:x"),
    ("quota-burnt-early", "user:bob", None),
    ("server-over-age", "server:alice/big", "alice"),
    ("server-over-age", "server:alice/", "alice"),
    ("login-failures-ip", "ip:198.51.100.9", None),
    ("audit-gap", "log", None),
])
def test_whose_alert_it_is(rule, subject, owner):
    from hub_ext.audit.alerts import alert_owner

    assert alert_owner(rule, subject) == owner

