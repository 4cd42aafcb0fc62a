"""The gateway's events in the hub's audit log.

The gateway is a separate process from the hub, so it builds its own
``hub_ext.audit.AuditLog`` from its config (``c.AuditLog.path``/``db_url`` and
``key_file``, the same as the hub's; the file store's lock keeps one chain). It connects
at the gateway's ``on_event`` hook. Records are written in order by one thread, so the
admission path never waits on the log's lock and secret scanner; ``close`` writes what is
still queued before the gateway exits. Under load the thread takes everything already
queued (up to ``BATCH`` records) and writes it with one ``AuditLog.emit_many``: one lock
and one write for the batch instead of one per record.

Internal events map to audit types (hub_ext/audit/schemas/*.yaml):

- ``qpu.job.submitted`` -> ``qpu-job-submitted`` and ``qpu-job-admitted``, plus
  ``qpu-job-queued`` when admission already made the job wait for a stated reason
- ``qpu.job.rejected`` -> ``qpu-job-rejected``
- ``qpu.job.cancelled`` -> ``qpu-job-cancelled``
- ``qpu.job.finished`` -> ``qpu-job-finished`` (``qpu-job-cancelled`` when it was cancelled
  while running); ``qpu.job.recovered`` -> ``qpu-job-queued`` (requeued) or
  ``qpu-job-finished`` (failed)
- ``qpu.policy.reloaded`` -> ``policy-changed``; ``qpu.operator.action`` -> ``break-glass``
- ``qpu.job.replayed`` (a repeated Idempotency-Key) -> nothing: it admitted nothing, and
  the job's submission or rejection is on record once, from the first time
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from hub_ext.audit.errors import AuditError, AuditWriteError

Lookup = Callable[[str], Mapping[str, Any] | None]
Record = tuple[str, str, dict[str, Any]]  # (gateway event, audit type, data)

BATCH = 512  # records per write: bounds the time the log's lock is held

QUEUED_REASONS = {
    "RATE_LIMIT": "rate-limit",
    "RESERVATION": "reservation",
    "FAIR_SHARE": "fair-share",
    "PRIORITY": "priority",
    "BACKEND_BUSY": "backend-busy",
    "BACKEND_PAUSED": "backend-offline",
    "PROJECT_PAUSED": "project-paused",
    "RECOVERED": "recovered",
}

REJECTED_REASONS = {
    "USER_QUOTA": "quota-exceeded",
    "PROJECT_QUOTA": "quota-exceeded",
    "RATE_LIMIT": "rate-limited",
    "USER_REVOKED": "access-revoked",
    "NOT_A_MEMBER": "not-member",
    "BACKEND_NOT_ALLOWED": "backend-not-allowed",
    "SENSITIVITY": "sensitivity",
    "SENSITIVITY_TOO_LOW": "sensitivity",
    "UNKNOWN_SENSITIVITY": "sensitivity",
    "TIER_NOT_ALLOWED": "priority-not-allowed",
    "UNKNOWN_TIER": "priority-not-allowed",
}

OPERATOR_ACTIONS = {
    ("backends", "pause"): "qpu-backend-pause",
    ("backends", "resume"): "qpu-backend-resume",
    ("backends", "drain"): "qpu-backend-drain",
    ("projects", "pause"): "qpu-project-pause",
    ("projects", "resume"): "qpu-project-resume",
    ("projects", "drain"): "qpu-project-drain",
    ("users", "revoke"): "qpu-user-revoke",
    ("users", "restore"): "qpu-user-restore",
    ("jobs", "cancel"): "qpu-job-cancel",
}


def _clean(fields: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None and v != ""}


class AuditBridge:
    """``on_event`` for the gateway: maps its events to audit records, one writer thread."""

    def __init__(
        self, audit: Any, lookup: Lookup, log: logging.Logger, service: str = "qpu",
        policy_path: str = "", linger: float = 0.005,
    ) -> None:
        self.audit = audit
        self.linger = linger  # seconds the writer waits for more records after the first
        self.lookup = lookup
        self.log = log
        self.service = service
        self.policy_path = policy_path
        self.failures = 0  # audit records lost (each also logged at CRITICAL)
        self.batches = 0  # emit_many calls that wrote a whole batch
        self._jobs: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._queue: queue.SimpleQueue[tuple[str, dict[str, Any]] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="qpu-audit", daemon=True)
        self._thread.start()

    def __call__(self, name: str, fields: dict[str, Any]) -> None:
        self._queue.put((name, dict(fields)))

    def close(self, timeout: float = 30.0) -> None:
        """Write every queued event, then stop the writer (and close the log)."""
        self._queue.put(None)
        self._thread.join(timeout)
        self.audit.close()

    def _run(self) -> None:
        stop = False
        while not stop:
            batch: list[Record] = []
            item = self._queue.get()  # wait for the first, then take what is queued already
            if item is not None and self.linger:
                # Under load jobs arrive one at a time; a moment's wait lets a batch form,
                # which costs a third of the CPU per record. Admission does not wait for it.
                time.sleep(self.linger)
            while item is not None:
                batch += self._mapped(*item)
                if len(batch) >= BATCH:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            stop = item is None
            if batch:
                self._write(batch)

    def _mapped(self, name: str, fields: dict[str, Any]) -> list[Record]:
        try:
            return [(name, type_name, data) for type_name, data in self.records(name, fields)]
        except Exception as e:
            self._lost(name, "(not mapped)", e)
            return []

    def _write(self, batch: list[Record]) -> None:
        """One emit_many for the batch; if it fails, each record left on its own, so a bad
        record costs only itself."""
        try:
            self.audit.emit_many([(type_name, data) for _, type_name, data in batch])
            self.batches += 1
            return
        except Exception as e:  # what a rotation let through is in the log already
            rest = batch[e.written if isinstance(e, AuditWriteError) else 0 :]
        for name, type_name, data in rest:
            try:
                self.audit.emit(type_name, data)
            except Exception as e:
                self._lost(name, type_name, e)

    def _lost(self, name: str, type_name: str, e: Exception) -> None:
        # The action already happened; a lost record must be loud. Audit errors name
        # fields and rules, never values; other errors may hold values: only their class.
        self.failures += 1
        why = e.message[:300] if isinstance(e, AuditError) else "(details withheld)"
        self.log.critical("QPU audit record %s for %s NOT written: %s: %s", type_name, name,
                          type(e).__name__, why)

    # -- mapping ---------------------------------------------------------------------------

    def _job(self, job_id: str) -> dict[str, Any]:
        known = self._jobs.get(job_id)
        if known is not None:
            return known
        row = self.lookup(job_id) or {}
        return {"user": row.get("owner"), "project": row.get("project"),
                "backend": row.get("backend")}

    def _remember(self, job_id: str, facts: dict[str, Any]) -> None:
        self._jobs[job_id] = facts
        while len(self._jobs) > 50_000:
            self._jobs.popitem(last=False)

    def records(self, name: str, f: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        handler = getattr(self, "_" + name.replace("qpu.", "").replace(".", "_"), None)
        if handler is None:
            return []
        out: list[tuple[str, dict[str, Any]]] = handler(f)
        return out

    def _job_submitted(self, f: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        job = {"user": f["user"], "project": f["project"], "backend": f["backend"]}
        self._remember(f["job_id"], job)
        base = {**job, "job_id": f["job_id"]}
        tags = [f"{k}={v}" for k, v in sorted((f.get("tags") or {}).items())
                if not isinstance(v, dict | list)]
        tags += [f"labels.{k}={v}" for k, v in sorted(((f.get("tags") or {}).get("labels")
                                                       or {}).items())]
        out = [
            ("qpu-job-submitted", _clean({**base, "shots": f.get("shots"),
                                          "circuits": f.get("circuits"),
                                          "tags": [t[:256] for t in tags[:64]]})),
            ("qpu-job-admitted", _clean({**base, "priority": f.get("priority")})),
        ]
        waiting = QUEUED_REASONS.get(str(f.get("reason", "")))
        if waiting is not None:
            out.append(("qpu-job-queued", {**base, "reason": waiting,
                                           "detail": f"{f.get('state')}:{f.get('reason')}"}))
        return out

    def _job_rejected(self, f: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        code = str(f.get("code", ""))
        return [("qpu-job-rejected", _clean({
            "user": f["user"], "project": f.get("project"), "backend": f.get("backend"),
            "job_id": f.get("job_id"), "reason": REJECTED_REASONS.get(code, "policy"),
            "code": code, "detail": str(f.get("message", ""))[:1024],
            "period": f.get("period"), "period_left": f.get("period_left"),
        }))]

    def _cancelled(self, job_id: str, by: str | None, reason: str) -> tuple[str, dict[str, Any]]:
        job = self._job(job_id)
        user = job.get("user") or by or "unknown"
        own = by is None or by == user
        return ("qpu-job-cancelled", _clean({
            **job, "user": user, "job_id": job_id, "actor": None if own else by,
            "reason": "user-request" if own else "admin", "detail": reason[:1024],
        }))

    def _job_cancelled(self, f: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        return [self._cancelled(f["job_id"], f.get("by"), str(f.get("reason", "")))]

    def _job_finished(self, f: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        job_id = f["job_id"]
        if f.get("state") == "CANCELLED":
            return [self._cancelled(job_id, None, "cancelled while running")]
        job = self._job(job_id)
        self._jobs.pop(job_id, None)
        return [("qpu-job-finished", _clean({
            **job, "user": job.get("user") or "unknown", "job_id": job_id,
            "backend": f.get("backend") or job.get("backend"),
            "status": "done" if f.get("state") == "DONE" else "error",
            "usage_seconds": f.get("backend_seconds"),
        }))]

    def _job_recovered(self, f: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        job_id = f["job_id"]
        job = self._job(job_id)
        base = {**job, "user": job.get("user") or "unknown", "job_id": job_id}
        if str(f.get("outcome", "")).startswith("QUEUED"):
            return [("qpu-job-queued", _clean({**base, "reason": "recovered",
                                               "detail": str(f.get("outcome"))}))]
        return [("qpu-job-finished", _clean({**base, "status": "error"}))]

    def _policy_reloaded(self, f: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        return [("policy-changed", _clean({
            "actor": f.get("by") or self.service, "policy": "qpu.policy",
            "summary": f"QPU policy {f.get('from')} -> {f.get('to')} "
                       f"({'manual reload' if f.get('by') else 'file changed'}: "
                       f"{self.policy_path})"[:512],
        }))]

    def _operator_action(self, f: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        action = OPERATOR_ACTIONS.get((f["kind"], f["action"]))
        if action is None:
            return []
        return [("break-glass", _clean({
            "actor": f["by"], "action": action, "target": f"{f['kind'][:-1]}:{f['name']}",
            "user": f["name"] if f["kind"] == "users" else None,
            "justification": str(f.get("reason") or "")[:1024] or "(none given)",
        }))]


__all__ = ["AuditBridge"]
