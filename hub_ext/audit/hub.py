"""The audit log of the hub process, shared by every component that runs in it.

The authenticator, the spawners, the culler hooks and the hub's API handlers all record
into one :class:`AuditLog` (one store, one chain writer per process). It is created
from the hub's configuration the first time it is asked for; ``jupyterhub_config.py``
asks at start-up so a bad ``c.AuditLog`` setting stops the hub before it serves anyone.
Services (the QPU gateway, the auditor page) are other processes with their own
``AuditLog``; the file store's lock keeps their writes on one chain.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from traitlets.config import Config

    from .log import AuditLog, Recorded

_lock = threading.Lock()
_log: AuditLog | None = None


def hub_audit(config: Config | None = None) -> AuditLog:
    """The process's audit log, created from ``config`` on first use.

    Later calls return the same log whatever config they pass; call it with the hub's
    config first (``jupyterhub_config.py`` does).
    """
    global _log
    with _lock:
        if _log is None:
            if config is None:
                raise RuntimeError(
                    "the hub's audit log is not configured: call hub_audit(c) in "
                    "jupyterhub_config.py with c.AuditLog.path (or db_url) and key_file set"
                )
            from .log import AuditLog

            _log = AuditLog(config=config)
        return _log


def hub_emit(type_name: str, data: dict[str, Any]) -> Recorded | None:
    """Record a hub-side event in the process's audit log (see ``AuditLog.emit``).

    A refusal because the audit disk is nearly full becomes a 503 whose message (shown
    on the hub's error page or in the API's JSON) tells the admin what to do, instead of
    an unexplained 500 from the login or spawn that emitted it.
    """
    from .errors import AuditSpaceLow

    try:
        return hub_audit().emit(type_name, data)
    except AuditSpaceLow as e:
        from tornado import web

        raise web.HTTPError(503, e.message.replace("%", "%%")) from None


def hub_can_record(type_name: str) -> None:
    """Raise the 503 ``hub_emit`` would raise for this type when the audit disk is nearly
    full, before the action that would record it runs."""
    refusal = hub_audit().space_refusal(type_name)
    if refusal is not None:
        from tornado import web

        raise web.HTTPError(503, refusal.message.replace("%", "%%"))


def reset_hub_audit() -> None:
    """Close and forget the process's log (tests that build several in one process)."""
    global _log
    with _lock:
        if _log is not None:
            _log.close()
        _log = None


def service_environment(config: Config) -> dict[str, str]:
    """Environment naming the hub's log and key, for services that record or read it."""
    audit = config.AuditLog
    env = {"QUSTODY_AUDIT_KEY_FILE": str(audit.get("key_file", ""))}
    if audit.get("db_url"):
        env["QUSTODY_AUDIT_DB"] = str(audit.db_url)
    else:
        env["QUSTODY_AUDIT_LOG"] = str(audit.get("path", ""))
    return env


def service_settings() -> dict[str, str] | None:
    """``AuditLog`` settings from the environment ``service_environment`` gives a service
    (``path`` or ``db_url``, and ``key_file``), or None when it names no log or key."""
    import os

    path = os.environ.get("QUSTODY_AUDIT_LOG", "")
    db = "" if path else os.environ.get("QUSTODY_AUDIT_DB", "")
    key_file = os.environ.get("QUSTODY_AUDIT_KEY_FILE", "")
    if not (path or db) or not key_file:
        return None
    return {"db_url": db, "key_file": key_file} if db else {"path": path, "key_file": key_file}
