"""Prometheus metrics derived from the audit records a process writes.

Every security-relevant action of the hub already passes through the audit log (logins
and their refusals, spawns, secret deliveries, the guard's reports from user servers), so
counting records as they are written gives the metrics without a second hook in each
component. In the hub process they are served by JupyterHub's own ``/hub/metrics``
(``prometheus_client``'s default registry, protected by the ``read:metrics`` scope).

Labels stay low-cardinality and say nothing of a person or a secret: the event type (from
the schemas), the ``reason`` only where the schema makes it an enum, and the guard's
detector ids only where they name one of the guard's own rules (a user's server reports
them, so a hostile one could invent names, or put a word of its choosing in them: those
count as ``other``, once per report). Never a user name, path, server name, job id or
value. Counting never stands in the way of the audit record: a failure here is logged
and the write goes on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import Counter, Histogram

from server_ext.scanner import rules
from server_ext.scanner.known import DETECTOR_ID as KNOWN_SECRET

from . import schema

#: Events whose ``detectors`` list says which guard rules matched.
GUARD_EVENTS = ("save-refused", "outputs-redacted", "file-finding")
#: The guard's rules, and the id of a value delivered to the server (``get_secret``).
KNOWN_DETECTORS = frozenset(rules.BY_ID) | {KNOWN_SECRET}

RECORDS = Counter(
    "qustody_audit_records",
    "Audit records written by this process, by event type and (where the schema fixes "
    "its values) reason",
    ["type", "reason"],
)
DROPPED = Counter(
    "qustody_audit_dropped",
    "Audit events that could not be written (a tolerated failure: the event type does "
    "not fail closed)",
    ["type"],
)
WRITE_SECONDS = Histogram(
    "qustody_audit_write_seconds",
    "Time to append one batch of audit records to the store",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
QPU_JOB_SECONDS = Histogram(
    "qustody_qpu_job_backend_seconds",
    "Backend-seconds used by finished QPU jobs, by backend and outcome (done or error)",
    ["backend", "status"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
)
DETECTIONS = Counter(
    "qustody_guard_detections",
    "Credentials the save guard reported (refused saves, redacted outputs, files written "
    "outside the editor), by event and detector rule",
    ["event", "detector"],
)

_reason_enums: dict[str, frozenset[str]] = {}


def _reasons(type_name: str) -> frozenset[str]:
    """The values the schema allows for ``reason`` (empty when it is free text)."""
    known = _reason_enums.get(type_name)
    if known is None:
        prop = schema.get(type_name).schema.get("properties", {}).get("reason", {})
        known = frozenset(str(v) for v in prop.get("enum", ()))
        _reason_enums[type_name] = known
    return known


def _detectors(names: Any) -> set[str]:
    """The guard's own rule ids among ``names`` (each once); anything else is ``other``."""
    if not isinstance(names, list):
        return set()
    return {n if isinstance(n, str) and n in KNOWN_DETECTORS else "other" for n in names}


def written(events: Iterable[tuple[str, Mapping[str, Any]]], log: Any) -> None:
    """Count records that reached the store: ``(type, data)`` each."""
    try:
        for type_name, data in events:
            reason = data.get("reason")
            label = reason if isinstance(reason, str) and reason in _reasons(type_name) else ""
            RECORDS.labels(type_name, label).inc()
            if type_name == "qpu-job-finished":  # written by the gateway: its own backends
                seconds = data.get("usage_seconds")
                if isinstance(seconds, int | float):
                    QPU_JOB_SECONDS.labels(str(data.get("backend", "")),
                                           str(data.get("status", ""))).observe(seconds)
            if type_name in GUARD_EVENTS:
                for name in _detectors(data.get("detectors")):
                    DETECTIONS.labels(type_name, name).inc()
    except Exception as e:  # never in the way of the record that was written
        log.error("audit metrics: not counted (%s)", type(e).__name__)


def timed(seconds: float, log: Any) -> None:
    try:
        WRITE_SECONDS.observe(seconds)
    except Exception as e:
        log.error("audit metrics: write time not observed (%s)", type(e).__name__)


def dropped(type_names: Iterable[str], log: Any) -> None:
    try:
        for type_name in type_names:
            DROPPED.labels(type_name).inc()
    except Exception as e:
        log.error("audit metrics: drop not counted (%s)", type(e).__name__)
