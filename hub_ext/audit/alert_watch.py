"""The audit service's alert loop: read the log behind its writers, record alerts, post them.

``AlertWatcher.poll`` runs in a worker thread every two seconds (``web.main``). Alerts are
recorded in the audit log first; one the log cannot take (a full disk, a database down)
is kept and recorded at the next poll, and the webhook is told at once all the same. The
webhook is posted from its own thread with a bounded queue, so a webhook that hangs
delays no alert's record. Its URL (which may hold a token in its path) is logged by
scheme and host only.
"""

from __future__ import annotations

import contextlib
import email.policy
import json
import logging
import queue
import smtplib
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from . import clock
from .alerts import ALERT, Alert, AlertEngine, AlertRules, replay_since, webhook_body
from .cli import Where, _hits
from .query import Filter, Stats

#: where the audit service finds the course files (``audit_page(courses_dir=...)``)
COURSES_ENV = "QUSTODY_ALERT_COURSES_DIR"
#: no folding of long subjects (a folded one reads with a leading space in some clients)
_MAIL_POLICY = email.policy.SMTP.clone(max_line_length=998)
MAX_PENDING = 1000  # alerts kept while the log refuses them
MAX_QUEUED = 1000  # webhook posts waiting


def origin(url: str) -> str:
    """``scheme://host[:port]`` of a URL: what may be logged of a webhook."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}"


class QueuedSender:
    """Delivers alert bodies from its own thread, a bounded queue in front: a receiver that
    hangs delays no alert's record. ``label`` is what may be logged of the receiver."""

    def __init__(self, label: str, deliver: Callable[[bytes], None],
                 log: logging.Logger, timeout: float = 5.0) -> None:
        self.label = label
        self.deliver = deliver
        self.log = log
        self.timeout = timeout
        self.sent = 0
        self._queue: queue.Queue[bytes | None] = queue.Queue(MAX_QUEUED)
        self._thread = threading.Thread(target=self._run, name=f"qustody-alert-{label[:20]}",
                                        daemon=True)
        self._thread.start()

    def send(self, body: bytes) -> None:
        try:
            self._queue.put_nowait(body)
        except queue.Full:
            self.log.error("alert %s: %d deliveries waiting, one dropped (it is in the "
                           "audit log)", self.label, MAX_QUEUED)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(self.timeout + 1)

    def _run(self) -> None:
        while (body := self._queue.get()) is not None:
            try:
                self.deliver(body)
                self.sent += 1
            except Exception as e:  # any failure: the alert is in the log; a courtesy
                self.log.error("alert %s failed: %s", self.label, type(e).__name__)


def webhook(url: str, log: logging.Logger, timeout: float = 5.0) -> QueuedSender:
    """Posts each alert as JSON to ``url`` (logged by scheme and host only)."""

    def post(body: bytes) -> None:
        # the URL is validated as http(s) (AlertRules.webhook_url)
        request = urllib.request.Request(  # noqa: S310
            url, data=body, headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, timeout=timeout):  # noqa: S310
            pass

    return QueuedSender(f"webhook {origin(url)}", post, log, timeout)


def _one_line(text: str) -> str:
    """A header value: a subject names a user or address, which an identity provider's
    claim or a refused login's name may fill with line breaks or control characters."""
    return "".join(c if c.isprintable() else "?" for c in text)[:900]


def mailer(rules: AlertRules, log: logging.Logger, timeout: float = 10.0) -> QueuedSender:
    """E-mails each alert to ``rules.email_to`` through ``rules.smtp_host``."""

    def mail(body: bytes) -> None:
        alert = json.loads(body)
        data = alert.get("data") or {}
        message = EmailMessage(policy=_MAIL_POLICY)
        message["From"] = rules.email_from
        message["To"] = ", ".join(rules.email_to)
        # subject and body carry rule ids, user names and sequence numbers: no secret
        # ever reaches an alert (the records it cites are already scrubbed)
        message["Subject"] = _one_line(
            f"[Qustody alert] {data.get('title', data.get('rule'))}: {data.get('subject')}")
        message.set_content(
            f"{data.get('title')}\n\nsubject: {data.get('subject')}\n"
            f"count: {data.get('count')} within {data.get('window_seconds')} s\n"
            f"from {data.get('first_ts')} to {data.get('last_ts')}\n"
            f"alert record: seq {alert.get('seq')}\n"
            f"evidence (audit seq): {', '.join(map(str, data.get('evidence') or []))}\n\n"
            "Open the auditor page (/services/audit/) to see the records and verify them.\n"
        )
        with smtplib.SMTP(rules.smtp_host, rules.smtp_port, timeout=timeout) as smtp:
            smtp.send_message(message)

    return QueuedSender(f"e-mail via {rules.smtp_host}:{rules.smtp_port}", mail, log, timeout)


class CourseFolders:
    """``(path) -> bool``: whether a path in a home is in a course's folder (``<course>/``),
    which the course's staff collect. Course ids are the ``<id>.toml`` files of the courses
    directory, listed at most every ``ttl`` seconds (courses are applied while it runs)."""

    def __init__(self, directory: Path, ttl: float = 30.0) -> None:
        self.directory = directory
        self.ttl = ttl
        self._ids: frozenset[str] = frozenset()
        self._read = float("-inf")

    def __call__(self, path: str) -> bool:
        if time.monotonic() - self._read > self.ttl:
            # on an error keep the last list; the directory may be briefly replaced
            with contextlib.suppress(OSError):
                self._ids = frozenset(p.stem for p in self.directory.glob("*.toml"))
            self._read = time.monotonic()
        top, sep, _ = path.strip("/").partition("/")
        return bool(sep) and top in self._ids


class AlertWatcher:
    """Feeds the log to the alert engine, records each alert and posts it."""

    def __init__(self, where: Where, emit: Callable[[list[dict[str, Any]]], list[Any]],
                 rules: AlertRules, log: logging.Logger | None = None,
                 shared: Callable[[str], bool] | None = None,
                 now: Callable[[], float] = time.time) -> None:
        self.where = where
        self.emit = emit
        self.rules = rules
        self.shared = shared
        self.now = now
        self.log = log or logging.getLogger("qustody.alerts")
        self.engine = self._engine()
        self.senders = [
            *([webhook(rules.webhook_url, self.log)] if rules.webhook_url else []),
            *([mailer(rules, self.log)] if rules.email_to else []),
        ]
        self.raised = 0
        self._pending: list[Alert] = []  # raised, not yet in the log
        self._told: set[Alert] = set()  # pending alerts the webhook already has
        self._replayed = False
        self._since = ""  # where the replay's full read began
        self._lock = threading.Lock()

    def replay(self) -> None:
        """Start again with a fresh engine, reading back only what each part needs:
        the alerts already raised (so none is raised twice), the servers still running
        (their starts, up to the longest maximum age), the users' baselines (their rules'
        records only, counted without raising), then every record of the longest counting
        window (so a burst that spans a restart is seen whole). A replay that fails is
        done again whole."""
        engine = self.engine = self._engine()
        now = self.now()

        def stamp(seconds_back: int) -> str:
            return clock.stamp(datetime.fromtimestamp(replay_since(seconds_back, now), UTC))

        since = stamp(engine.longest_window)
        for hit in self._all(Filter(types=frozenset({ALERT}),
                                    since=stamp(engine.quiet_history))):
            engine.remember(hit.record)
        if engine.server_history:
            for hit in self._all(Filter(types=frozenset({"server-started", "server-stopped"}),
                                        since=stamp(engine.server_history), until=since)):
                engine.track(hit.record)
        seconds, types = engine.baseline_history
        if seconds > engine.longest_window:
            for hit in self._all(Filter(types=types, since=stamp(seconds), until=since)):
                engine.learn(hit.record)
        engine.not_before = self._since = since
        self._read(Filter(since=since))
        self._replayed = True

    def poll(self) -> None:
        """Read what was written since the last poll (in a worker thread)."""
        if not self._replayed:
            self.replay()
        elif self.engine.last_seq < 0:  # nothing since the replay began: no seq to go from
            self._read(Filter(since=self._since))
        else:
            self._read(Filter(after_seq=self.engine.last_seq))

    def _all(self, flt: Filter) -> Iterator[Any]:
        return _hits(self.where, flt, None, Stats())

    def close(self) -> None:
        for sender in self.senders:
            sender.close()

    def _engine(self) -> AlertEngine:
        return AlertEngine(self.rules.rules(self.shared), self.rules.server_max_age,
                           self.rules.server_age_slack)

    def _tell(self, body: bytes) -> None:
        for sender in self.senders:
            sender.send(body)

    def _read(self, flt: Filter) -> None:
        with self._lock:
            alerts = list(self._pending)
            for hit in _hits(self.where, flt, None, Stats()):
                alerts += self.engine.feed(hit.record)
            alerts += self.engine.tick(self.now())
            if not alerts:
                return
            datas = [a.data() for a in alerts]
            try:
                recorded = self.emit(datas)
            except Exception:
                for alert, data in zip(alerts, datas, strict=True):
                    if alert not in self._told:
                        self._tell(webhook_body(data, None, None))
                        self._told.add(alert)
                self._pending = alerts[-MAX_PENDING:]
                self.log.error("%d alert(s) not recorded; they are recorded at the next poll",
                               len(self._pending))
                raise
            self._pending = []
            for alert, data, rec in zip(alerts, datas, recorded, strict=True):
                self.raised += 1
                self.log.warning("ALERT %s %s: %d in %ds (evidence seq %s)", alert.rule.id,
                                 alert.subject, alert.count, alert.rule.window,
                                 ",".join(map(str, alert.evidence[-5:])))
                if alert not in self._told:
                    self._tell(webhook_body(data, getattr(rec, "seq", None),
                                            getattr(rec, "ts", None)))
            self._told.clear()
