"""The audit service's alert loop: read the log behind its writers, record alerts, post them.

``AlertWatcher.poll`` runs in a worker thread every two seconds (``web.main``). Alerts are
recorded in the audit log first; one the log cannot take (a full disk, a database down)
is kept and recorded at the next poll, and the webhook is told at once all the same. The
webhook is posted from its own thread with a bounded queue, so a webhook that hangs
delays no alert's record. Its URL (which may hold a token in its path) is logged by
scheme and host only.
"""

from __future__ import annotations

import logging
import queue
import threading
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from . import clock
from .alerts import ALERT, Alert, AlertEngine, AlertRules, replay_since, webhook_body
from .cli import Where, _hits
from .query import Filter, Stats

MAX_PENDING = 1000  # alerts kept while the log refuses them
MAX_QUEUED = 1000  # webhook posts waiting


def origin(url: str) -> str:
    """``scheme://host[:port]`` of a URL: what may be logged of a webhook."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}"


class WebhookSender:
    """Posts alert bodies to one URL from its own thread, a bounded queue in front."""

    def __init__(self, url: str, log: logging.Logger, timeout: float = 5.0) -> None:
        self.url = url
        self.log = log
        self.timeout = timeout
        self.sent = 0
        self._queue: queue.Queue[bytes | None] = queue.Queue(MAX_QUEUED)
        self._thread = threading.Thread(target=self._run, name="qustody-alert-webhook",
                                        daemon=True)
        self._thread.start()

    def send(self, body: bytes) -> None:
        try:
            self._queue.put_nowait(body)
        except queue.Full:
            self.log.error("alert webhook %s: %d posts waiting, one dropped (it is in the "
                           "audit log)", origin(self.url), MAX_QUEUED)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(self.timeout + 1)

    def _run(self) -> None:
        while (body := self._queue.get()) is not None:
            # the URL is validated as http(s) (AlertRules.webhook_url)
            request = urllib.request.Request(  # noqa: S310
                self.url, data=body, headers={"Content-Type": "application/json"},
                method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout):  # noqa: S310
                    self.sent += 1
            except Exception as e:  # any failure: the alert is in the log; a courtesy
                self.log.error("alert webhook %s failed: %s", origin(self.url),
                               type(e).__name__)


class AlertWatcher:
    """Feeds the log to the alert engine, records each alert and posts it."""

    def __init__(self, where: Where, emit: Callable[[list[dict[str, Any]]], list[Any]],
                 rules: AlertRules, log: logging.Logger | None = None) -> None:
        self.where = where
        self.emit = emit
        self.rules = rules
        self.log = log or logging.getLogger("qustody.alerts")
        self.engine = AlertEngine(rules.rules())
        self.webhook = WebhookSender(rules.webhook_url, self.log) if rules.webhook_url else None
        self.raised = 0
        self._pending: list[Alert] = []  # raised, not yet in the log
        self._told: set[Alert] = set()  # pending alerts the webhook already has
        self._replayed = False
        self._lock = threading.Lock()

    def replay(self) -> None:
        """Start one longest window back, with a fresh engine: alerts already raised
        first (so none is raised twice), then every record (so a burst that spans a
        restart is seen whole). A replay that fails is done again whole."""
        self.engine = AlertEngine(self.rules.rules())
        since = clock.stamp(datetime.fromtimestamp(
            replay_since(self.engine.longest_window), UTC))
        for hit in _hits(self.where, Filter(types=frozenset({ALERT}), since=since), None,
                         Stats()):
            self.engine.feed(hit.record)
        self.engine.last_seq = -1
        self.engine.not_before = since
        self._read(Filter(since=since))
        self._replayed = True

    def poll(self) -> None:
        """Read what was written since the last poll (in a worker thread)."""
        if not self._replayed:
            self.replay()
        else:
            self._read(Filter(after_seq=self.engine.last_seq))

    def close(self) -> None:
        if self.webhook is not None:
            self.webhook.close()

    def _read(self, flt: Filter) -> None:
        with self._lock:
            alerts = list(self._pending)
            for hit in _hits(self.where, flt, None, Stats()):
                alerts += self.engine.feed(hit.record)
            if not alerts:
                return
            datas = [a.data() for a in alerts]
            try:
                recorded = self.emit(datas)
            except Exception:
                for alert, data in zip(alerts, datas, strict=True):
                    if self.webhook is not None and alert not in self._told:
                        self.webhook.send(webhook_body(data, None, None))
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
                if self.webhook is not None and alert not in self._told:
                    self.webhook.send(webhook_body(data, getattr(rec, "seq", None),
                                                   getattr(rec, "ts", None)))
            self._told.clear()
