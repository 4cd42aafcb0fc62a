"""Alerts by e-mail, through a real SMTP server (aiosmtpd) on loopback: each alert arrives
once, names its rule, subject and evidence, and an SMTP server that is down loses no alert
(it stays in the audit log)."""

from __future__ import annotations

import time
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from ports import free_port

from hub_ext.audit import AuditLog, schema
from hub_ext.audit.alert_watch import AlertWatcher
from hub_ext.audit.alerts import ALERT, AlertRules
from hub_ext.audit.cli import Where
from hub_ext.audit.keys import load_key_file
from hub_ext.audit.query import Filter, query


class Inbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.content, policy=policy.default)
        self.messages.append((envelope.rcpt_tos, message))
        return "250 OK"


@pytest.fixture
def smtp():
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield inbox, controller.port
    finally:
        controller.stop()


def _setup(tmp_path: Path, **settings: Any) -> tuple[AuditLog, AlertWatcher]:
    audit = AuditLog(path=str(tmp_path / "audit.jsonl"), key_file=str(tmp_path / "audit.key"),
                     create_key_file=True)
    where = Where(tmp_path / "audit.jsonl", None, [load_key_file(str(tmp_path / "audit.key"))],
                  [str(tmp_path / "audit.key")])
    watcher = AlertWatcher(where, lambda datas: audit.emit_many([(ALERT, d) for d in datas]),
                           AlertRules(**settings))
    return audit, watcher


def _refusal(user: str) -> dict[str, Any]:
    data = dict(schema.get("login-refused").examples[0])
    data.update(user=user, ip="198.51.100.9")
    return data


def test_each_alert_is_mailed_once_with_its_evidence(tmp_path, smtp):
    inbox, port = smtp
    audit, watcher = _setup(tmp_path, login_failures=3, email_to=["sec@example.org"],
                            smtp_port=port)
    try:
        watcher.poll()
        seqs = [audit.emit("login-refused", _refusal("mallory")).seq for _ in range(4)]
        watcher.poll()
        watcher.poll()
        watcher.close()  # waits for the mail thread
        subjects = sorted(m["Subject"] for _, m in inbox.messages)
        assert subjects == [
            "[Qustody alert] Repeated login or MFA refusals for one user: user:mallory",
            "[Qustody alert] Repeated login or MFA refusals from one address: ip:198.51.100.9",
        ]
        rcpt, message = inbox.messages[0]
        assert rcpt == ["sec@example.org"] and message["From"] == "qustody-alerts@localhost"
        body = message.get_content()
        assert f"evidence (audit seq): {', '.join(map(str, seqs[:3]))}" in body
        recorded = [h.record["seq"] for h in query(tmp_path / "audit.jsonl",
                                                   Filter(types=frozenset({ALERT})))]
        assert any(f"alert record: seq {s}" in body for s in recorded)
    finally:
        audit.close()


def test_an_smtp_server_that_is_down_loses_no_alert(tmp_path, caplog):
    audit, watcher = _setup(tmp_path, save_refusals=1, email_to=["sec@example.org"],
                            smtp_port=free_port())  # nothing listens there
    try:
        data = dict(schema.get("save-refused").examples[0])
        del data["user"], data["server"]
        audit.record_user_event("sam", "", {"type": "save-refused", "data": data})
        watcher.poll()
        watcher.close()
        assert watcher.raised == 1
        assert any("alert e-mail via 127.0.0.1" in r.getMessage() for r in caplog.records)
        assert [h.record["data"]["rule"] for h in query(
            tmp_path / "audit.jsonl", Filter(types=frozenset({ALERT})))] == ["save-refusals"]
    finally:
        audit.close()


def test_the_watcher_raises_a_server_past_its_age_without_new_records(tmp_path):
    """The passing of time alone raises it: nothing new is written after the start."""
    clock = [time.time()]
    audit, watcher = _setup(tmp_path, server_max_age={"student": 60}, server_age_slack=10)
    watcher.now = lambda: clock[0]
    try:
        data = dict(schema.get("server-started").examples[0])
        data.update(user="sam", server="", profile="student")
        started = audit.emit("server-started", data).seq
        watcher.poll()
        assert watcher.raised == 0
        clock[0] += 71
        watcher.poll()
        alerts = [h.record["data"] for h in query(tmp_path / "audit.jsonl",
                                                  Filter(types=frozenset({ALERT})))]
        assert [(a["rule"], a["subject"], a["evidence"]) for a in alerts] == [
            ("server-over-age", "server:sam/", [started])]
    finally:
        audit.close()


def test_a_name_with_line_breaks_cannot_add_mail_headers(tmp_path, smtp):
    """A refused login's name comes from the request: it reaches the subject as one line."""
    inbox, port = smtp
    audit, watcher = _setup(tmp_path, login_failures=1, email_to=["sec@example.org"],
                            smtp_port=port)
    try:
        audit.emit("login-refused", _refusal("eve\r\nBcc: all@example.org"))
        watcher.poll()
        watcher.close()
        subjects = sorted(m["Subject"] for _, m in inbox.messages)
        assert any("user:eve??Bcc: all@example.org" in s for s in subjects), subjects
        assert all(m["Bcc"] is None for _, m in inbox.messages)
        assert all(rcpt == ["sec@example.org"] for rcpt, _ in inbox.messages)
    finally:
        audit.close()

