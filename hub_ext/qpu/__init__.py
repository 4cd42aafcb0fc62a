"""The QPU gateway: a hub-managed service that admits, schedules and runs Qiskit jobs.

Modules: ``policyfile`` (the policy file), ``projects`` (the project registry),
``validation`` (payload checks), ``policy`` (quota, rate, priority, reservation,
fair-share and sensitivity decisions), ``models``/``store`` (the database and its atomic
transactions), ``backends`` (Aer, emulated devices, the provider plugin interface),
``runner`` (execution lanes, leases, crash recovery), ``provenance``, ``auth`` (hub token
resolution), ``errors`` (the one error type), ``submission`` (admission without a database),
``handlers`` (REST API), ``app`` (the gateway: configuration and operations) and
``server`` (HTTP serving: ``python -m hub_ext.qpu``).
"""

__version__ = "0.1.0"

from typing import Any

# Loaded on first use: the hub imports hub_ext.qpu.hub at start-up and needs no Qiskit.
_LAZY = ("BackendDriver", "Cancelled", "Execution", "ExecutionError")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from . import backends

        return getattr(backends, name)
    raise AttributeError(f"module 'hub_ext.qpu' has no attribute {name!r}")

__all__ = ["BackendDriver", "Cancelled", "Execution", "ExecutionError", "__version__"]
