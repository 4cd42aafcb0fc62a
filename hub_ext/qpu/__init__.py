"""The QPU gateway: a hub-managed service that admits, schedules and runs Qiskit jobs.

Modules: ``policyfile`` (the policy file), ``projects`` (the project registry),
``validation`` (payload checks), ``policy`` (quota, rate, priority, reservation,
fair-share and sensitivity decisions), ``models``/``store`` (the database and its atomic
transactions), ``backends`` (Aer, emulated devices, the provider plugin interface),
``runner`` (execution lanes, leases, crash recovery), ``provenance``, ``auth`` (hub token
resolution), ``handlers`` (REST API) and ``app`` (the service: ``python -m hub_ext.qpu``).
"""

__version__ = "0.1.0"

from .backends import BackendDriver, Cancelled, Execution, ExecutionError

__all__ = ["BackendDriver", "Cancelled", "Execution", "ExecutionError", "__version__"]
