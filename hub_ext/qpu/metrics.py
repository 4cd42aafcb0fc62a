"""The gateway's Prometheus metrics, at ``GET <base>metrics`` (scope ``read:metrics``, as
JupyterHub's own ``/hub/metrics``).

What the gateway's audit records count (``hub_ext/audit/metrics.py``: jobs submitted,
admitted, rejected by reason, finished, with their run time) plus the queue as it stands:
``qustody_qpu_jobs{backend, state}`` for the jobs not yet final, read from the store at
each scrape. Backends are the configured ones; no label names a user, project or job.
With ``QpuGateway.workers > 1`` the workers count into ``prometheus_client``'s
multiprocess files under ``PROMETHEUS_MULTIPROC_DIR`` (the hub sets it for the gateway it
manages) and whichever worker answers a scrape sums them all, a worker that died
included, so totals neither jump between scrapes nor fall after a crash. Without that
directory each worker answers with its own counters (the gateway warns at start).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"

STATES = ("QUEUED", "HELD", "RUNNING")


class QueueCollector(Collector):
    """Jobs not yet final, by backend and state, from the store at scrape time."""

    def __init__(self, counts: Callable[[], dict[tuple[str, str], int]],
                 backends: Callable[[], list[str]]) -> None:
        self._counts, self._backends = counts, backends

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("qustody_qpu_jobs",
                                   "QPU jobs not yet finished, by backend and state",
                                   labels=["backend", "state"])
        counts = self._counts()
        for backend in self._backends():
            for state in STATES:
                family.add_metric([backend, state], counts.get((backend, state), 0))
        yield family


_installed: list[QueueCollector] = []


def install(gateway: Any) -> None:
    """Register the queue gauge for ``gateway`` (replacing an earlier gateway's in this
    process: one queue per process)."""
    while _installed:
        REGISTRY.unregister(_installed.pop())
    collector = QueueCollector(gateway.store.active_counts, lambda: sorted(gateway.drivers))
    REGISTRY.register(collector)
    _installed.append(collector)


def multiprocess_dir() -> Path | None:
    value = os.environ.get(MULTIPROCESS_ENV, "")
    return Path(value) if value else None


def exposition() -> bytes:
    """The metrics in Prometheus' text format: this process's, or every worker's summed
    in multiprocess mode (blocking: reads the store and the value files)."""
    if multiprocess_dir() is None:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # untyped upstream
    for collector in _installed:
        registry.register(collector)
    return generate_latest(registry)
