"""Report the guard's decisions to the hub's audit log (``save-refused``, ``outputs-redacted``).

Under JupyterHub the server has ``QUSTODY_API_URL`` (the hub's ``qustody`` service) and its
own ``JUPYTERHUB_API_TOKEN``; events go to ``POST $QUSTODY_API_URL api/audit/events``, where
the service stamps them
with this server's user and name. Outside a hub nothing is sent.

A save never waits for the hub: events go on a bounded queue that one daemon thread
drains. When the queue is full or the hub does not take an event, the event is dropped
and a warning logged (without the event's fields beyond its type and path). Events carry
detector ids, the path and counts, never a found value.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import secrets
import threading
import urllib.error
import urllib.request
from typing import Any

QUEUE_SIZE = 256
TIMEOUT_SECONDS = 5.0
MAX_PATH = 1024
REF_BYTES = 6  # 12 hex digits: unique among a hub's refusals, short enough to read out

_lock = threading.Lock()
_reporter: AuditReporter | None = None
_checked = False


class AuditReporter:
    """Sends audit events to the hub endpoint from a background thread."""

    def __init__(self, api_url: str, token: str, log: logging.Logger | Any) -> None:
        self.url = api_url.rstrip("/") + "/api/audit/events"
        self._token = token
        self.log = log
        self.queue: queue.Queue[dict[str, Any] | None] = queue.Queue(QUEUE_SIZE)
        self.sent = 0
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="qustody-audit", daemon=True)
        self._thread.start()

    def report(self, type_name: str, data: dict[str, Any]) -> bool:
        """Queue an event; never blocks. False when it was dropped at once."""
        try:
            self.queue.put_nowait({"type": type_name, "data": data})
        except queue.Full:
            self._drop(type_name, data, "the report queue is full")
            return False
        return True

    def close(self, timeout: float = TIMEOUT_SECONDS) -> None:
        """Send what is queued (up to ``timeout``) and stop the thread."""
        try:
            self.queue.put(None, timeout=timeout)
        except queue.Full:
            return
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            event = self.queue.get()
            if event is None:
                return
            try:
                self._send(event)
            except Exception as e:  # whatever failed, the event is dropped
                self._drop(event["type"], event["data"], type(e).__name__)

    def _send(self, event: dict[str, Any]) -> None:
        request = urllib.request.Request(  # noqa: S310 - the hub's own http(s) API URL
            self.url,
            data=json.dumps(event).encode("utf-8"),
            headers={"Authorization": f"token {self._token}", "Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:  # noqa: S310
                response.read()
        except urllib.error.HTTPError as e:
            message = _message(e)
            e.close()
            self._drop(event["type"], event["data"], f"the hub answered {e.code}: {message}")
            return
        self.sent += 1

    def _drop(self, type_name: str, data: dict[str, Any], why: str) -> None:
        self.dropped += 1
        ref = data.get("ref")
        self.log.warning(
            "Qustody audit event %s for %s%s not sent to the hub (%s); it is not in the audit log",
            type_name,
            data.get("path", "?"),
            f" (reference {ref}, shown to the user)" if ref else "",
            why,
        )


def _message(error: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(error.read(4096)).get("message", ""))[:300]
    except (ValueError, AttributeError, OSError):
        return ""


def reporter(log: logging.Logger | Any) -> AuditReporter | None:
    """The server's reporter, or None when the server does not run under a hub."""
    global _reporter, _checked
    with _lock:
        if not _checked:
            _checked = True
            url = os.environ.get("QUSTODY_API_URL", "")
            token = os.environ.get("JUPYTERHUB_API_TOKEN", "")
            if url and token:
                _reporter = AuditReporter(url, token, log)
        return _reporter


def reset() -> None:
    """Forget the reporter (tests that change the environment)."""
    global _reporter, _checked
    with _lock:
        if _reporter is not None:
            _reporter.close()
        _reporter, _checked = None, False


def _detectors(findings: Any) -> list[str]:
    return sorted({loc.finding.detector for loc in findings})[:64]


def new_ref() -> str:
    """A reference for one reported event, random so that it says nothing of the event:
    the user sees it with the refusal, the security team finds the record by it."""
    return secrets.token_hex(REF_BYTES)


def save_refused(log: Any, path: str, refused: Any) -> str | None:
    """Report a save the guard refused because it found credentials; the record's
    ``ref``, or None when nothing is reported (no hub)."""
    sink = reporter(log)
    if sink is None or not refused.findings:
        return None
    ref = new_ref()
    queued = sink.report(
        "save-refused",
        {
            "path": path[:MAX_PATH],
            "detectors": _detectors(refused.findings),
            "findings": len(refused.findings),
            "ref": ref,
        },
    )
    # dropped at once: no reference that leads nowhere (a later drop logs the reference)
    return ref if queued else None


def outputs_redacted(log: Any, path: str, report: Any) -> None:
    """Report a save whose credentials the guard replaced before writing it."""
    sink = reporter(log)
    if sink is None or report is None or not report.redacted:
        return
    data: dict[str, Any] = {
        "path": path[:MAX_PATH],
        "detectors": _detectors(report.findings),
        "redacted": int(report.redacted),
    }
    if report.mode in ("block", "redact"):
        data["mode"] = report.mode
    sink.report("outputs-redacted", data)


def file_finding(log: Any, path: str, action: str, located: Any, redacted: int) -> None:
    """Report credentials found in a file written outside the contents API (the watcher)."""
    sink = reporter(log)
    if sink is None:
        return
    sink.report(
        "file-finding",
        {
            "path": path[:MAX_PATH],
            "action": action,
            "detectors": _detectors(located),
            "findings": len(located),
            "redacted": int(redacted),
        },
    )
