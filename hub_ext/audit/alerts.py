"""Security alerts from the audit stream; each alert is an audit record citing its evidence.

The audit service (``web.py``) reads the records the hub, the gateway and users' servers
write, a few seconds behind them, and feeds them to an ``AlertEngine``. A rule counts
the records of some types about one subject (a user, an address, the log itself) in a
sliding window; when the count reaches the rule's threshold the engine raises an alert:
an ``alert-raised`` record naming the rule, the subject and the sequence numbers of the
records that triggered it. The auditor page lists alerts with links to that evidence,
and a webhook, if set, receives each alert as JSON.

One alert per rule and subject per window: a flood of refusals raises one alert, not one
per refusal. After a restart the engine replays the last window of the log, alerts
included, so it neither misses a burst that spans the restart nor raises an alert twice.

Thresholds and windows are ``AlertRules`` traits (``c.AlertRules`` in the hub's config;
``audit_page`` hands them to the service). The same rules, over the hub's metrics, ship
as Prometheus rules (docs/prometheus/qustody-rules.yml) for sites with Alertmanager.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from traitlets import Int, Unicode, validate
from traitlets.config import LoggingConfigurable

#: The record type of an alert.
ALERT = "alert-raised"
#: Evidence kept per alert (the window's most recent records).
MAX_EVIDENCE = 50
#: Subjects tracked at once; beyond it the stalest are dropped (a flood of distinct
#: addresses cannot grow the engine without bound).
MAX_SUBJECTS = 100_000

Record = Mapping[str, Any]


@dataclass(frozen=True)
class Rule:
    id: str
    title: str
    types: frozenset[str]
    subject: Callable[[Record], str | None]  # what one matching record is about
    threshold: int
    window: int  # seconds


@dataclass(frozen=True)
class Alert:
    rule: Rule
    subject: str
    count: int
    evidence: tuple[int, ...]
    first_ts: str
    last_ts: str

    def data(self) -> dict[str, Any]:
        """The ``alert-raised`` record's data."""
        return {
            "rule": self.rule.id,
            "title": self.rule.title,
            "subject": self.subject,
            "count": self.count,
            "threshold": self.rule.threshold,
            "window_seconds": self.rule.window,
            "first_ts": self.first_ts,
            "last_ts": self.last_ts,
            "evidence": list(self.evidence),
        }


def _user(record: Record) -> str | None:
    user = (record.get("data") or {}).get("user")
    return f"user:{user}" if isinstance(user, str) and user else None


def _ip(record: Record) -> str | None:
    ip = (record.get("data") or {}).get("ip")
    return f"ip:{ip}" if isinstance(ip, str) and ip else None


def _failed_verification(record: Record) -> str | None:
    return "log" if (record.get("data") or {}).get("result") == "failed" else None


def _admin_granted(record: Record) -> str | None:
    added = (record.get("data") or {}).get("added") or []
    return _user(record) if any(r in ("admin", "qpu-operator") for r in added) else None


def _any(record: Record) -> str | None:
    return "log"


def _stamp(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


class AlertRules(LoggingConfigurable):
    """The alert rules' thresholds and windows (``c.AlertRules`` in the hub's config)."""

    login_failures = Int(5, config=True, help="Login or MFA refusals for one user, or from "
                         "one address, within login_window that raise an alert.")
    login_window = Int(600, config=True, help="Seconds (login and MFA refusals).")
    save_refusals = Int(10, config=True, help="Refused saves (keys in a notebook) of one "
                        "user within save_window that raise an alert.")
    save_window = Int(600, config=True, help="Seconds (refused saves).")
    qpu_rejections = Int(20, config=True, help="QPU submissions of one user rejected within "
                         "qpu_window (quota, policy, invalid circuits) that raise an alert.")
    qpu_window = Int(600, config=True, help="Seconds (QPU rejections).")
    ticket_refusals = Int(3, config=True, help="Refused secrets claim tickets for one user "
                          "(replayed, expired, someone else's) within ticket_window.")
    ticket_window = Int(600, config=True, help="Seconds (ticket refusals).")
    webhook_url = Unicode("", config=True, help="""http(s) URL that receives each alert as a
        JSON POST (the alert-raised record's data, plus its seq and ts). Empty: none. A
        failed delivery is logged and not retried; the alert stays in the audit log.""")

    @validate("login_failures", "login_window", "save_refusals", "save_window",
              "qpu_rejections", "qpu_window", "ticket_refusals", "ticket_window")
    def _positive(self, proposal: Any) -> int:
        value = int(proposal["value"])
        if not 1 <= value <= 10_000_000:
            raise ValueError(f"AlertRules.{proposal['trait'].name} = {value}: give a positive "
                             "number (a count, or seconds)")
        return value

    @validate("webhook_url")
    def _valid_webhook(self, proposal: Any) -> str:
        value = str(proposal["value"])
        if value and not value.startswith(("http://", "https://")):
            raise ValueError(f"AlertRules.webhook_url = {value[:80]!r}: give an http(s) URL")
        return value

    def settings(self) -> dict[str, Any]:
        """The traits as JSON-able settings (what ``audit_page`` passes to the service)."""
        return {name: getattr(self, name) for name in self.trait_names(config=True)}

    def rules(self) -> list[Rule]:
        login = frozenset({"login-refused", "mfa-refused"})
        return [
            Rule("login-failures-user", "Repeated login or MFA refusals for one user", login,
                 _user, self.login_failures, self.login_window),
            Rule("login-failures-ip", "Repeated login or MFA refusals from one address",
                 login, _ip, self.login_failures, self.login_window),
            Rule("save-refusals", "A burst of refused saves (keys in notebooks) by one user",
                 frozenset({"save-refused"}), _user, self.save_refusals, self.save_window),
            Rule("secret-withheld", "Secrets withheld from a server whose user lost the role",
                 frozenset({"secret-withheld"}), _user, 1, self.ticket_window),
            Rule("ticket-refusals", "Refused secrets claim tickets (replay or theft)",
                 frozenset({"ticket-refused"}), lambda r: _user(r) or _ip(r),
                 self.ticket_refusals, self.ticket_window),
            Rule("qpu-rejections", "Repeated QPU submissions rejected for one user",
                 frozenset({"qpu-job-rejected"}), _user, self.qpu_rejections, self.qpu_window),
            Rule("audit-verification-failed", "The audit log failed verification (tampering)",
                 frozenset({"audit-verified"}), _failed_verification, 1, self.login_window),
            Rule("secret-store-tampered", "The secret store failed its integrity check",
                 frozenset({"secret-store-tampered"}), _any, 1, self.login_window),
            Rule("admin-granted", "A user was given an admin or operator role",
                 frozenset({"role-changed"}), _admin_granted, 1, 60),
        ]


class AlertEngine:
    """Sliding-window counts per rule and subject over records fed in log order."""

    def __init__(self, rules: Iterable[Rule]) -> None:
        self.rules = {r.id: r for r in rules}
        self._by_type: dict[str, list[Rule]] = {}
        for rule in self.rules.values():
            for t in rule.types:
                self._by_type.setdefault(t, []).append(rule)
        # (rule, subject) -> recent (time, seq, ts) of matching records
        self._windows: dict[tuple[str, str], deque[tuple[float, int, str]]] = {}
        # (rule, subject) -> time until which no new alert is raised
        self._quiet: dict[tuple[str, str], float] = {}
        self.last_seq = -1
        #: records stamped before this (a clock.stamp string) are passed over: a service
        #: started on an old log does not alert on what happened before its window
        self.not_before = ""

    def feed(self, record: Record) -> list[Alert]:
        """Take one record (in seq order); the alerts it raises."""
        seq = int(record.get("seq", -1))
        if seq <= self.last_seq:
            return []  # seen (a replay overlapping what was read)
        self.last_seq = seq
        if str(record.get("ts", "")) < self.not_before:
            return []
        kind = record.get("type")
        if kind == ALERT:
            self._remember(record)
            return []
        rules = self._by_type.get(str(kind))
        if not rules:
            return []
        ts = str(record.get("ts", ""))
        try:
            now = _stamp(ts)
        except ValueError:
            return []
        raised = []
        for rule in rules:
            subject = rule.subject(record)
            if subject is None:
                continue
            key = (rule.id, subject)
            window = self._windows.get(key)
            if window is None:
                if len(self._windows) >= MAX_SUBJECTS:
                    self._forget_stalest(now)
                window = self._windows[key] = deque(maxlen=max(rule.threshold, MAX_EVIDENCE))
            window.append((now, seq, ts))
            while window and window[0][0] <= now - rule.window:
                window.popleft()
            if len(window) >= rule.threshold and self._quiet.get(key, float("-inf")) <= now:
                self._quiet[key] = now + rule.window
                recent = list(window)[-MAX_EVIDENCE:]
                raised.append(Alert(rule, subject, len(window), tuple(s for _, s, _ in recent),
                                    recent[0][2], ts))
        return raised

    def _remember(self, record: Record) -> None:
        """An alert already in the log (raised before a restart): stay quiet as it did."""
        data = record.get("data") or {}
        rule = self.rules.get(str(data.get("rule")))
        if rule is None:
            return
        try:
            raised = _stamp(str(record.get("ts", "")))
        except ValueError:
            return
        key = (rule.id, str(data.get("subject")))
        self._quiet[key] = max(self._quiet.get(key, float("-inf")), raised + rule.window)

    def _forget_stalest(self, now: float) -> None:
        for key in [k for k, w in self._windows.items() if not w or w[-1][0] < now - 86400]:
            del self._windows[key]
        if len(self._windows) >= MAX_SUBJECTS:
            stalest = sorted(self._windows, key=lambda k: self._windows[k][-1][0])
            for key in stalest[: len(stalest) // 10 or 1]:
                del self._windows[key]
        self._quiet = {k: t for k, t in self._quiet.items() if t > now}

    @property
    def longest_window(self) -> int:
        return max((r.window for r in self.rules.values()), default=0)


def webhook_body(alert_data: Mapping[str, Any], seq: int | None, ts: str | None) -> bytes:
    return json.dumps({"type": ALERT, "seq": seq, "ts": ts, "data": dict(alert_data)}).encode()


def replay_since(longest_window: int, now: float | None = None) -> float:
    """Where a starting engine begins reading: one longest window back."""
    return (time.time() if now is None else now) - longest_window


__all__ = ["ALERT", "Alert", "AlertEngine", "AlertRules", "Rule", "webhook_body"]
