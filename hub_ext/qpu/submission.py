"""Admission without a database: parse a submission, then every policy decision that
needs no locked rows, ending in the ``Ticket`` the store admits (or a ``Refused``).

Runs on the gateway's event loop for small bodies and in the parse workers for large
ones (``parsing.py``), so it reads only what both have: the drivers, the validation
limits and how to name an unknown backend (``Backends``).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from typing import Any, Protocol

from . import provenance
from .auth import Identity
from .backends import BackendDriver
from .circuits import encode_circuits
from .errors import Invalid, Refused
from .policy import check_run_limits, check_tier, route_sensitivity
from .policyfile import Policy
from .store import Ticket
from .validation import Limits, Submission, check_labels, parse_submission


class Backends(Protocol):
    """What admission reads of the gateway (or of a parse worker's context)."""

    @property
    def drivers(self) -> Mapping[str, BackendDriver]: ...

    @property
    def limits(self) -> Limits: ...

    def unknown_backend(self, name: str) -> str: ...


def build_ticket(
    gateway: Backends, identity: Identity, sub: Submission, policy: Policy
) -> tuple[Ticket, list[str]]:
    """Apply every decision that needs no database; raise ``Refused``/``Invalid``."""
    mine = policy.projects.projects_of(identity.name, identity.groups)
    project_name = sub.tags.get("project")
    if project_name is None:
        if len(mine) == 1:
            project_name = next(iter(mine))
        else:
            raise Invalid(422, "TAG_REQUIRED",
                          "tag 'project' is required; your projects: "
                          f"{', '.join(sorted(mine)) or 'none (ask an admin to add you)'}")
    if project_name not in mine:
        raise Refused(
            403, "NOT_A_MEMBER",
            f"REJECTED:NOT_A_MEMBER: {project_name!r} is not one of your projects "
            f"({', '.join(sorted(mine)) or 'none'}); ask the project lead or an admin to add "
            "you to it in the policy file",
        )
    project = policy.projects.get(project_name)
    if project.open_until is not None and time.time() >= project.open_until:
        closed = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(project.open_until))
        raise Refused(
            403, "COURSE_CLOSED",
            f"REJECTED:COURSE_CLOSED: the term of {project.name!r} closed on {closed}; it "
            "takes no more jobs. Ask its instructor if you need more time",
        )
    purpose = sub.tags.get("purpose") or project.purpose or None
    if purpose is None or purpose not in policy.purposes:
        raise Invalid(
            422, "TAG_REQUIRED" if purpose is None else "BAD_TAG",
            f"tag 'purpose' must be one of {', '.join(policy.purposes)}"
            + ("" if purpose is None else f" (got {purpose[:64]!r})"),
        )
    labels = check_labels(sub.tags.get("labels", {}), policy.max_labels,
                          policy.max_label_length)
    if not project.allows_backend(sub.backend):
        allowed = [b for b in gateway.drivers if project.allows_backend(b)]
        raise Refused(
            403, "BACKEND_NOT_ALLOWED",
            f"REJECTED:BACKEND_NOT_ALLOWED: project {project.name!r} may use "
            f"{', '.join(allowed) or 'no backend'}; ask an admin to add {sub.backend!r} to "
            f"projects.{project.name}.backends",
        )
    level, backend, rerouted = route_sensitivity(policy, project, sub.tags.get("sensitivity"),
                                                 sub.backend)
    decisions: list[tuple[str, dict[str, Any]]] = []
    if rerouted:
        if not project.allows_backend(backend):
            raise Refused(403, "SENSITIVITY",
                          f"REJECTED:SENSITIVITY: {level!r} jobs are routed to {backend!r}, "
                          f"which project {project.name!r} may not use")
        decisions.append(("ROUTED:SENSITIVITY", {"from": sub.backend, "to": backend,
                                                 "sensitivity": level}))
    tier, priority = check_tier(policy, project, sub.tags.get("priority"))
    driver = gateway.drivers[backend]
    driver.check_circuits(sub.circuits)
    if sub.shots > driver.max_shots:
        raise Invalid(422, "TOO_MANY_SHOTS", f"shots = {sub.shots} is over {backend!r}'s limit "
                      f"of {driver.max_shots}")
    est_seconds = driver.estimate_seconds(sub.circuits, sub.shots)
    check_run_limits(policy, backend, driver.backend_class,
                     max((c.num_qubits for c in sub.circuits), default=0), est_seconds)
    now = time.time()
    if sub.ignored:
        decisions.append(("IGNORED:CLIENT_FIELDS", {"fields": sub.ignored}))
    tags = {"project": project.name, "purpose": purpose, "sensitivity": level,
            "priority": tier, "labels": labels}
    prov = provenance.build(
        owner=identity.name, backend=backend, config_hash=driver.config_hash,
        hashes=sub.hashes, policy_digest=policy.digest, client=sub.client,
        context=sub.context, options=sub.options, submitted_at=now,
    )
    ticket = Ticket(
        owner=identity.name, project=project.name, backend=backend,
        requested_backend=sub.backend, backend_class=driver.backend_class, tier=tier,
        priority=priority, sensitivity=level, n_circuits=len(sub.circuits),
        shots=sub.total_shots, est_seconds=est_seconds,
        tags=tags, provenance=prov, circuits=encode_circuits(sub.raw),
        options={**{k: v for k, v in sub.options.items() if k != "transpile_seed"},
                 "shots_per_circuit": sub.shots},
        decisions=decisions,
    )
    return ticket, sub.ignored


def fingerprint(sub: Submission) -> str:
    """SHA-256 of what makes two submissions the same request, for Idempotency-Keys: the
    backend asked for, each circuit's format and payload hash (in order), shots, options
    and tags, all as parsed (so key order and spacing in the JSON do not matter). The
    owner is the key's scope; what the client reports about itself (``client``,
    ``context``) is left out: a retry from a re-saved notebook is the same request."""
    canonical = {
        "backend": sub.backend,
        "circuits": [[next(iter(raw)), digest]
                     for raw, digest in zip(sub.raw, sub.hashes, strict=True)],
        "shots": sub.shots,
        "options": sub.options,
        "tags": sub.tags,
    }
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def parse(gateway: Backends, body: Mapping[str, Any]) -> Submission:
    backend = body.get("backend")
    driver = gateway.drivers.get(backend) if isinstance(backend, str) else None
    if isinstance(backend, str) and driver is None:
        raise Invalid(422, "UNKNOWN_BACKEND", gateway.unknown_backend(backend))
    return parse_submission(body, gateway.limits, driver.max_shots if driver else 1)
