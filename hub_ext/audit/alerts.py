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

import fnmatch
import json
import math
import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from traitlets import Dict, Float, Int, List, Unicode, validate
from traitlets.config import LoggingConfigurable

from . import clock
from .change_window import EXAMPLE, ChangeWindow, ChangeWindowError

#: The record type of an alert.
ALERT = "alert-raised"
#: Rules the engine raises itself, not from a record's type.
GAP = "audit-gap"
OVER_AGE = "server-over-age"
#: a culled server is tracked until it is stopped: the cull is recorded before the stop,
#: which may fail
_SERVER_TYPES = frozenset({"server-started", "server-stopped"})
_ADDRESS = re.compile(r"[^@\s<>,;]+@[^@\s<>,;]+")
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
    #: > 0: the subject's own past raises its threshold to ``baseline_factor`` times its
    #: average count per window over the last ``baseline_hours`` (``threshold`` stays the
    #: floor, so a subject with no past is held to it)
    baseline_factor: float = 0.0
    baseline_hours: int = 0


@dataclass(frozen=True)
class Alert:
    rule: Rule
    subject: str
    count: int
    evidence: tuple[int, ...]
    first_ts: str
    last_ts: str
    #: what the count reached: the rule's threshold, or the subject's own baseline's
    threshold: int = 0

    def data(self) -> dict[str, Any]:
        """The ``alert-raised`` record's data."""
        return {
            "rule": self.rule.id,
            "title": self.rule.title,
            "subject": self.subject,
            "count": self.count,
            "threshold": self.threshold or self.rule.threshold,
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


def _any(record: Record) -> str | None:
    return "log"


def _quota_early(left: float) -> Callable[[Record], str | None]:
    def subject(record: Record) -> str | None:
        data = record.get("data") or {}
        share = data.get("period_left")
        if data.get("reason") != "quota-exceeded" or not isinstance(share, int | float):
            return None
        user = _user(record)
        return f"{user}:{data.get('project')}:{data.get('period')}" if user and share >= left \
            else None

    return subject


def _quota_rejected(record: Record) -> str | None:
    return _user(record) if (record.get("data") or {}).get("reason") == "quota-exceeded" else None


def _shared_refusal(shared: Callable[[str], bool]) -> Callable[[Record], str | None]:
    """Subject of a refused save in a folder others see (a course's work, collected for
    its staff): the user, or None."""

    def subject(record: Record) -> str | None:
        path = str((record.get("data") or {}).get("path") or "")
        return _user(record) if path and shared(path) else None

    return subject


def _granted(
    patterns: Sequence[str], window: ChangeWindow | None
) -> Callable[[Record], str | None]:
    """Subject of a role change that adds a privileged role outside the change window."""

    def subject(record: Record) -> str | None:
        data = record.get("data") or {}
        added = [str(r) for r in data.get("added") or []]
        if not any(fnmatch.fnmatchcase(r, p) for r in added for p in patterns):
            return None
        if window is not None and window.contains(_stamp(str(record.get("ts", "")))):
            return None
        return _user(record)

    return subject


#: What the user an alert is about is told in JupyterLab (``AlertRules.user_rules``):
#: what happened, in their words, and what to do. ``{count}`` and ``{minutes}`` are filled.
USER_NOTICES = {
    "login-failures-user": "Sign-ins to your account were refused {count} times within "
    "{minutes} minutes. If that was not you, tell your hub admin: someone may be guessing "
    "your password or second factor.",
    "save-refusals": "{count} of your saves were refused within {minutes} minutes because "
    "they held keys or tokens. Keep credentials in the Secrets panel and read them with "
    "get_secret().",
    "save-refused-shared": "A save in one of your course folders was refused because it "
    "held a key. Course staff collect these folders: keep credentials out of them and use "
    "the Secrets panel.",
    "ticket-refusals": "Your server's claims for its secrets were refused {count} times. "
    "Restart your server; if it happens again, tell your hub admin.",
    "secret-withheld": "Secrets were withheld from your server because your roles changed. "
    "Restart it to get the secrets your roles still allow.",
    "qpu-quota-rejections": "{count} of your QPU jobs were rejected for quota within "
    "{minutes} minutes. The QPU panel shows what is left and when it renews.",
    "quota-burnt-early": "A QPU quota of yours ran out early in its period. The QPU panel "
    "shows when it renews; ask your project lead if you need more.",
    "server-over-age": "Your server has run past its maximum age and should have been "
    "stopped. Save your work and restart it from the hub's home page.",
}


def alert_owner(rule: str, subject: str) -> str | None:
    """The user an alert is about, from its subject (``user:<name>``,
    ``user:<name>:<project>:<period>`` or ``server:<name>/<server>``), or None."""
    if rule == OVER_AGE and subject.startswith("server:"):
        return subject[len("server:"):].rpartition("/")[0] or None
    if not subject.startswith("user:"):
        return None
    name = subject[len("user:"):]
    if rule == "quota-burnt-early":  # project and period hold no ':'
        name = name.rsplit(":", 2)[0] if name.count(":") >= 2 else ""
    return name or None


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
    quota_rejections = Int(5, config=True, help="QPU submissions of one user rejected for "
                           "quota within qpu_window that raise an alert.")
    quota_early_left = Float(0.5, config=True, help="""A quota used up while at least this
        share of its period (day, week, month) is left raises an alert (0-1; 1 turns it
        off).""")
    secret_reads = Int(60, config=True, help="""Secret deliveries (claims and refreshes) to
        one user within secret_reads_window that raise an alert, or secret_reads_factor
        times the user's own average per window over baseline_hours, whichever is more.""")
    secret_reads_window = Int(3600, config=True, help="Seconds (secret deliveries).")
    secret_reads_factor = Float(5.0, config=True, help="Multiple of the user's own baseline "
                                "(secret deliveries).")
    qpu_submissions = Int(200, config=True, help="""QPU submissions of one user within
        qpu_submissions_window that raise an alert, or qpu_submissions_factor times the
        user's own average per window over baseline_hours, whichever is more.""")
    qpu_submissions_window = Int(600, config=True, help="Seconds (QPU submissions).")
    qpu_submissions_factor = Float(5.0, config=True, help="Multiple of the user's own "
                                   "baseline (QPU submissions).")
    baseline_hours = Int(24, config=True, help="""Hours of a user's past that make their
        baseline. The audit service reads this much of the log back when it starts.""")
    privileged_roles = List(Unicode(), ["admin", "qpu-operator", "auditor"], config=True,
                            help="""Roles (shell patterns) whose grant raises an alert outside
        change_window: those that reach other users' servers, data or the whole hub.""")
    change_window = Unicode("", config=True, help=f"""When grants of privileged roles are
        expected, e.g. {EXAMPLE!r}; a grant outside it raises an alert. Empty: every grant
        does.""")
    server_max_age = Dict(Int(), {}, config=True, help="""Profile -> seconds a server of it
        may run (max_age plus the culler's grace; ``audit_page`` fills it from
        c.SpawnPolicy.profiles). A server still running past it, plus server_age_slack,
        raises an alert: its culling failed.""")
    server_age_slack = Int(600, config=True, help="Seconds past server_max_age before the "
                           "alert (the culler's own period).")
    user_rules = List(Unicode(), list(USER_NOTICES), config=True, help="""Rules whose alerts
        the user they are about sees in JupyterLab, with what to do (the others, e.g. a
        user's own QPU burst, are for the security team only).""")
    webhook_url = Unicode("", config=True, help="""http(s) URL that receives each alert as a
        JSON POST (the alert-raised record's data, plus its seq and ts). Empty: none. A
        failed delivery is logged and not retried; the alert stays in the audit log.""")
    email_to = List(Unicode(), [], config=True, help="""Addresses that receive each alert by
        e-mail (through smtp_host). Empty: no e-mail.""")
    email_from = Unicode("qustody-alerts@localhost", config=True, help="Sender of alert "
                         "e-mails.")
    smtp_host = Unicode("127.0.0.1", config=True, help="SMTP server for alert e-mails.")
    smtp_port = Int(25, config=True, help="Its port.")

    @validate("login_failures", "login_window", "save_refusals", "save_window",
              "qpu_rejections", "qpu_window", "ticket_refusals", "ticket_window",
              "quota_rejections", "secret_reads", "secret_reads_window", "qpu_submissions",
              "qpu_submissions_window", "baseline_hours", "server_age_slack")
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

    @validate("quota_early_left")
    def _fraction(self, proposal: Any) -> float:
        value = float(proposal["value"])
        if not 0 <= value <= 1:
            raise ValueError(f"AlertRules.quota_early_left = {value}: give a share of the "
                             "period between 0 and 1")
        return value

    @validate("secret_reads_factor", "qpu_submissions_factor")
    def _factor(self, proposal: Any) -> float:
        value = float(proposal["value"])
        if not 1 <= value <= 1000:
            raise ValueError(f"AlertRules.{proposal['trait'].name} = {value}: give a multiple "
                             "of the baseline between 1 and 1000")
        return value

    @validate("change_window")
    def _valid_window(self, proposal: Any) -> str:
        value = str(proposal["value"]).strip()
        if value:
            try:
                ChangeWindow.parse(value)
            except ChangeWindowError as e:
                raise ValueError(f"AlertRules.change_window = {value[:80]!r}: {e}") from None
        return value

    @validate("server_max_age")
    def _valid_ages(self, proposal: Any) -> dict[str, int]:
        ages = dict(proposal["value"])
        for profile, seconds in ages.items():
            if int(seconds) < 1:
                raise ValueError(f"AlertRules.server_max_age[{profile!r}] = {seconds}: give "
                                 "seconds (positive)")
        return ages

    @validate("email_from")
    def _valid_sender(self, proposal: Any) -> str:
        value = str(proposal["value"]).strip()
        if not _ADDRESS.fullmatch(value):
            raise ValueError(f"AlertRules.email_from: {value[:80]!r} is not an e-mail address")
        return value

    @validate("email_to")
    def _valid_addresses(self, proposal: Any) -> list[str]:
        addresses = [str(a).strip() for a in proposal["value"]]
        for a in addresses:
            if not _ADDRESS.fullmatch(a):
                raise ValueError(f"AlertRules.email_to: {a[:80]!r} is not an e-mail address")
        return addresses

    @validate("user_rules")
    def _known_notices(self, proposal: Any) -> list[str]:
        rules = list(proposal["value"])
        unknown = sorted(set(rules) - set(USER_NOTICES))
        if unknown:
            raise ValueError(f"AlertRules.user_rules: no user notice for {', '.join(unknown)}; "
                             f"choose from {', '.join(USER_NOTICES)}")
        return rules

    @validate("smtp_port")
    def _valid_port(self, proposal: Any) -> int:
        value = int(proposal["value"])
        if not 1 <= value <= 65535:
            raise ValueError(f"AlertRules.smtp_port = {value}: give a TCP port")
        return value

    def settings(self) -> dict[str, Any]:
        """The traits as JSON-able settings (what ``audit_page`` passes to the service)."""
        return {name: getattr(self, name) for name in self.trait_names(config=True)}

    def rules(self, shared: Callable[[str], bool] | None = None) -> list[Rule]:
        """The rules; ``shared(path)`` tells whether a saved path is in a folder others see
        (the audit service knows the course folders)."""
        login = frozenset({"login-refused", "mfa-refused"})
        window = ChangeWindow.parse(self.change_window) if self.change_window else None
        qpu_rejected = frozenset({"qpu-job-rejected"})
        optional = [
            Rule("save-refused-shared", "A refused save (keys) in a course folder its staff "
                 "collect", frozenset({"save-refused"}), _shared_refusal(shared), 1,
                 self.save_window),
        ] if shared is not None else []
        if self.quota_early_left < 1:
            optional.append(Rule("quota-burnt-early", "A QPU quota used up early in its period",
                                 qpu_rejected, _quota_early(self.quota_early_left), 1, 86400))
        return [*optional,
            Rule("secret-reads-burst", "Secret deliveries far above the user's own baseline",
                 frozenset({"secret-delivered"}), _user, self.secret_reads,
                 self.secret_reads_window, self.secret_reads_factor, self.baseline_hours),
            Rule("qpu-submissions-burst", "QPU submissions far above the user's own baseline",
                 frozenset({"qpu-job-submitted"}), _user, self.qpu_submissions,
                 self.qpu_submissions_window, self.qpu_submissions_factor,
                 self.baseline_hours),
            Rule("qpu-quota-rejections", "Repeated QPU submissions rejected for quota",
                 qpu_rejected, _quota_rejected, self.quota_rejections, self.qpu_window),
            Rule(GAP, "Records missing from the audit log (a gap in its sequence)",
                 frozenset(), _any, 1, self.login_window),
            Rule(OVER_AGE, "A server running past its maximum age (its culling failed)",
                 frozenset(), _any, 1, 86400),
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
            Rule("admin-granted", "A privileged role granted outside the change window",
                 frozenset({"role-changed"}), _granted(self.privileged_roles, window), 1, 60),
        ]


class _Counts:
    """A subject's counts for a baseline rule, in buckets, with running sums: the count in
    the current window, and the average per window over the ``span`` before it (its
    baseline). Constant time per record; at most ~2,000 buckets whatever the settings."""

    __slots__ = ("first", "past", "past_sum", "recent", "recent_sum", "span", "width",
                 "window")

    def __init__(self, now: float, window: int, span: int) -> None:
        self.window = window
        self.span = max(span, window)
        self.width = max(1, window // 20, self.span // 2000)
        self.first = now
        self.recent: deque[list[float]] = deque()  # [bucket start, count], in the window
        self.past: deque[list[float]] = deque()  # before it, within the span
        self.recent_sum = 0
        self.past_sum = 0

    def add(self, now: float) -> None:
        start = now - now % self.width
        if self.recent and self.recent[-1][0] == start:
            self.recent[-1][1] += 1
        else:
            self.recent.append([start, 1])
        self.recent_sum += 1
        while self.recent and self.recent[0][0] <= now - self.window:
            bucket = self.recent.popleft()
            self.recent_sum -= int(bucket[1])
            self.past.append(bucket)
            self.past_sum += int(bucket[1])
        while self.past and self.past[0][0] < now - self.span:
            self.past_sum -= int(self.past.popleft()[1])

    def in_window(self) -> int:
        return self.recent_sum

    def baseline(self, now: float) -> float:
        """Average count per window before the current one; 0 with less than a window."""
        history = (now - self.window) - max(self.first, now - self.span)
        if history < self.window:
            return 0.0
        return self.past_sum * self.window / history


class AlertEngine:
    """Sliding-window counts per rule and subject over records fed in log order."""

    def __init__(self, rules: Iterable[Rule], server_max_age: Mapping[str, int] | None = None,
                 age_slack: int = 600) -> None:
        self.rules = {r.id: r for r in rules}
        self._by_type: dict[str, list[Rule]] = {}
        for rule in self.rules.values():
            for t in rule.types:
                self._by_type.setdefault(t, []).append(rule)
        # (rule, subject) -> recent (time, seq, ts) of matching records
        self._windows: dict[tuple[str, str], deque[tuple[float, int, str]]] = {}
        # (rule, subject) -> counts, for rules with a baseline
        self._counts: dict[tuple[str, str], _Counts] = {}
        # (rule, subject) -> time until which no new alert is raised
        self._quiet: dict[tuple[str, str], float] = {}
        # "user/server" -> (started, seq, ts, profile), while server ages are checked
        self.max_age = dict(server_max_age or {})
        self.age_slack = age_slack
        self._servers: dict[str, tuple[float, int, str, str]] = {}
        self.last_seq = -1
        #: records stamped before this (a clock.stamp string) are passed over: a service
        #: started on an old log does not alert on what happened before its window
        self.not_before = ""

    def feed(self, record: Record) -> list[Alert]:
        """Take one record (in seq order); the alerts it raises."""
        seq = int(record.get("seq", -1))
        if seq <= self.last_seq:
            return []  # seen (a replay overlapping what was read)
        previous, self.last_seq = self.last_seq, seq
        ts = str(record.get("ts", ""))
        if ts < self.not_before:
            return []
        raised = []
        if previous >= 0 and seq > previous + 1 and GAP in self.rules:
            raised += self._raise(self.rules[GAP], "log", ts, [(previous, ts), (seq, ts)])
        kind = record.get("type")
        if kind == ALERT:
            self.remember(record)
            return raised
        if self.max_age and kind in _SERVER_TYPES:
            self._track_server(str(kind), record, seq, ts)
        return raised + self._count(record, seq, ts, raising=True)

    def learn(self, record: Record) -> None:
        """Count one record of the baseline rules' past, raising nothing (the replay of
        the users' baselines, from before the windows a restart reads whole)."""
        self._count(record, int(record.get("seq", -1)), str(record.get("ts", "")),
                    raising=False)

    def _count(self, record: Record, seq: int, ts: str, raising: bool) -> list[Alert]:
        rules = self._by_type.get(str(record.get("type")))
        if not rules:
            return []
        try:
            now = _stamp(ts)
        except ValueError:
            return []
        raised: list[Alert] = []
        for rule in rules:
            if not raising and not rule.baseline_factor:
                continue
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
            count, threshold = len(window), rule.threshold
            if rule.baseline_factor:
                counts = self._counts.get(key)
                if counts is None:
                    counts = self._counts[key] = _Counts(now, rule.window,
                                                         rule.baseline_hours * 3600)
                counts.add(now)
                count = counts.in_window()
                threshold = max(threshold,
                                math.ceil(rule.baseline_factor * counts.baseline(now)))
            if raising and count >= threshold and self._quiet.get(key, float("-inf")) <= now:
                self._quiet[key] = now + rule.window
                recent = list(window)[-MAX_EVIDENCE:]
                raised.append(Alert(rule, subject, count, tuple(s for _, s, _ in recent),
                                    recent[0][2], ts, threshold))
        return raised

    def tick(self, now: float) -> list[Alert]:
        """Alerts that the passing of time raises: servers running past their maximum age
        (a culler that failed). Called after each read."""
        rule = self.rules.get(OVER_AGE)
        if rule is None or not self._servers:
            return []
        ts = clock.stamp(datetime.fromtimestamp(now, UTC))
        raised = []
        for name, (started, seq, started_ts, profile) in list(self._servers.items()):
            limit = self.max_age.get(profile)
            if limit is not None and now - started > limit + self.age_slack:
                raised += self._raise(rule, f"server:{name}", ts, [(seq, started_ts)], now)
        return raised

    def _raise(self, rule: Rule, subject: str, ts: str, evidence: list[tuple[int, str]],
               now: float | None = None) -> list[Alert]:
        key = (rule.id, subject)
        try:
            at = _stamp(ts) if now is None else now
        except ValueError:
            return []
        if self._quiet.get(key, float("-inf")) > at:
            return []
        self._quiet[key] = at + rule.window
        return [Alert(rule, subject, len(evidence), tuple(s for s, _ in evidence),
                      evidence[0][1], ts)]

    def track(self, record: Record) -> None:
        """Follow one server record (``server-started``/``-stopped``), nothing else: the
        replay of the servers still running, from further back than the rules' windows."""
        kind = str(record.get("type"))
        if self.max_age and kind in _SERVER_TYPES:
            self._track_server(kind, record, int(record.get("seq", -1)),
                               str(record.get("ts", "")))

    @property
    def server_history(self) -> int:
        """Seconds back a starting engine reads server records (0: ages are not checked)."""
        return max(self.max_age.values(), default=0) + self.age_slack if self.max_age else 0

    def _track_server(self, kind: str, record: Record, seq: int, ts: str) -> None:
        data = record.get("data") or {}
        name = f"{data.get('user')}/{data.get('server') or ''}"
        if kind != "server-started":
            self._servers.pop(name, None)
            return
        try:
            self._servers[name] = (_stamp(ts), seq, ts, str(data.get("profile") or ""))
        except ValueError:
            return

    def remember(self, record: Record) -> None:
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
            self._counts.pop(key, None)
        if len(self._windows) >= MAX_SUBJECTS:
            stalest = sorted(self._windows, key=lambda k: self._windows[k][-1][0])
            for key in stalest[: len(stalest) // 10 or 1]:
                del self._windows[key]
                self._counts.pop(key, None)
        self._quiet = {k: t for k, t in self._quiet.items() if t > now}

    @property
    def longest_window(self) -> int:
        """How far back a starting engine reads every record: the longest window a count
        spans (a rule that raises on one record needs none; its quiet time is in the
        alerts it raised)."""
        return max((r.window for r in self.rules.values()
                    if r.types and (r.threshold > 1 or r.baseline_factor)), default=0)

    @property
    def quiet_history(self) -> int:
        """How far back a starting engine reads alerts already raised: any rule's window."""
        return max((r.window for r in self.rules.values()), default=0)

    @property
    def baseline_history(self) -> tuple[int, frozenset[str]]:
        """(seconds, record types) a starting engine reads for the users' baselines."""
        rules = [r for r in self.rules.values() if r.baseline_factor]
        return (max((r.baseline_hours * 3600 for r in rules), default=0),
                frozenset(t for r in rules for t in r.types))


def webhook_body(alert_data: Mapping[str, Any], seq: int | None, ts: str | None) -> bytes:
    return json.dumps({"type": ALERT, "seq": seq, "ts": ts, "data": dict(alert_data)}).encode()


def replay_since(longest_window: int, now: float | None = None) -> float:
    """Where a starting engine begins reading: one longest window back."""
    return (time.time() if now is None else now) - longest_window


__all__ = ["ALERT", "USER_NOTICES", "Alert", "AlertEngine", "AlertRules", "Rule", "alert_owner",
           "webhook_body"]
