"""The gateway's Prometheus metrics, at ``GET <base>metrics`` (scope ``read:metrics``, as
JupyterHub's own ``/hub/metrics``).

What the gateway's audit records count (``hub_ext/audit/metrics.py``: jobs submitted,
admitted, rejected by reason, finished, with their run time) plus the queue as it stands:
``qustody_qpu_jobs{backend, state}`` for the jobs not yet final, read from the store at
each scrape. Backends are the configured ones; no label names a user, project or job.
With ``QpuGateway.workers > 1`` each worker answers with its own process's counters (the
queue gauge is the whole store's in every worker).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import REGISTRY, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

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


def exposition() -> bytes:
    """The process's metrics in Prometheus' text format (blocking: reads the store)."""
    return generate_latest(REGISTRY)
