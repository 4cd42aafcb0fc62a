"""Provenance: what the gateway records about each job, and its JSON-lines export.

Recorded by the gateway (never taken from the client): owner, time, circuit hashes
(SHA-256 of each payload as received), backend and its configuration hash, the policy
version, every decision. Reported by the client and kept as reported (marked
``client_reported``): server name, notebook path and hash, kernel id, SDK versions,
transpile seed.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import qiskit  # type: ignore[import-untyped]

from . import __version__

try:
    import qiskit_aer  # type: ignore[import-untyped]

    AER_VERSION = str(qiskit_aer.__version__)
except ImportError:  # pragma: no cover - aer is a hub dependency
    AER_VERSION = ""


def build(
    *,
    owner: str,
    backend: str,
    config_hash: str,
    hashes: list[str],
    policy_digest: str,
    client: Mapping[str, str],
    context: Mapping[str, str],
    options: Mapping[str, Any],
    submitted_at: float,
) -> dict[str, Any]:
    return {
        "owner": owner,
        "submitted_at": submitted_at,
        "backend": backend,
        "backend_config_hash": config_hash,
        "circuit_hashes": hashes,
        "policy": policy_digest,
        "gateway": {
            "version": __version__,
            "qiskit": qiskit.__version__,
            "qiskit_aer": AER_VERSION,
            "python": platform.python_version(),
        },
        "client_reported": {
            "sdk": dict(client),
            "server_name": context.get("server_name"),
            "notebook_path": context.get("notebook_path"),
            "notebook_hash": context.get("notebook_hash"),
            "kernel_id": context.get("kernel_id"),
            "transpile_seed": options.get("transpile_seed"),
        },
    }


def record(job: Mapping[str, Any]) -> dict[str, Any]:
    """One export line: the job row (without payloads) and its decisions."""
    keep = (
        "id", "owner", "project", "backend", "requested_backend", "backend_class", "state",
        "reason", "tier", "priority", "sensitivity", "n_circuits", "shots", "est_seconds",
        "held_jobs", "held_shots", "held_seconds", "used_seconds", "submitted_at",
        "started_at", "finished_at", "attempts", "tags", "provenance", "error", "decisions",
    )
    return {k: job.get(k) for k in keep if k in job}


def jsonl(jobs: Iterable[Mapping[str, Any]]) -> Iterator[str]:
    for job in jobs:
        yield json.dumps(record(job), sort_keys=True, default=str) + "\n"
