"""Tamper-evident audit log: event schemas, the hash-chained store and review tools.

Components record events through :class:`AuditLog` (``emit``, or ``emit_many`` for
several at once, for the hub's own events; ``record_user_event`` for events user
servers report through the hub).
Auditors use ``qustody audit verify|query|export``, or :func:`verify.verify`,
:func:`query.query` and :func:`export.export`.

Names are imported lazily so the review tools (and verification workers) do not
load the scanner and the schemas unless they need them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .errors import (
        AuditError,
        AuditSpaceLow,
        AuditWriteError,
        SchemaViolation,
        SecretInEvent,
        UnknownEventType,
        UserEventRefused,
    )
    from .log import AuditLog, Recorded

_EXPORTS = {
    "AuditError": "errors",
    "AuditSpaceLow": "errors",
    "AuditWriteError": "errors",
    "SchemaViolation": "errors",
    "SecretInEvent": "errors",
    "UnknownEventType": "errors",
    "UserEventRefused": "errors",
    "AuditLog": "log",
    "Recorded": "log",
}

__all__ = [
    "AuditError",
    "AuditLog",
    "AuditSpaceLow",
    "AuditWriteError",
    "Recorded",
    "SchemaViolation",
    "SecretInEvent",
    "UnknownEventType",
    "UserEventRefused",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
