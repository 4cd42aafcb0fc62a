"""The guard's Prometheus metrics in each user's server, on jupyter-server's own
``/metrics`` (``prometheus_client``'s default registry, authenticated as the server's API
is). Labels: the kind of file and the outcome; never a path, a rule's finding or a value.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from prometheus_client import Counter, Histogram

CHECKS = Counter(
    "qustody_guard_checks",
    "Saves the credential guard checked, by kind (notebook or file) and outcome "
    "(saved, redacted, refused, error)",
    ["kind", "outcome"],
)
CHECK_SECONDS = Histogram(
    "qustody_guard_check_seconds",
    "Time the credential guard took to check one save, by kind",
    ["kind"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)

T = TypeVar("T")


def timed_check(model: dict[str, Any], check: Callable[[], T], refused: type[Exception]) -> T:
    """Run ``check`` (the guard on ``model``), counting its outcome and time."""
    kind = "notebook" if model.get("type") == "notebook" else "file"
    started = time.perf_counter()
    outcome = "error"
    try:
        report = check()
        outcome = "redacted" if getattr(report, "redacted", 0) else "saved"
        return report
    except refused:
        outcome = "refused"
        raise
    finally:
        CHECK_SECONDS.labels(kind).observe(time.perf_counter() - started)
        CHECKS.labels(kind, outcome).inc()
