"""Audit events of a server's life: spawn requested, started, failed, stopped, culled.

``@audited`` on a spawner class records around its whole ``start``/``stop``, policy
checks included, into the hub's log (``hub_emit``). With the default
``AuditLog.fail_closed_types`` a failure to record the request stops the spawn, and a
failure to record the start fails it (the hub then stops the server).

The culler is another process: ``record_cull`` writes ``server-culled`` to the log named
by its environment (``service_environment`` in ``hub.py``).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from ..ratelimit import request_ip
from .errors import AuditError
from .hub import hub_emit, service_settings

log = logging.getLogger(__name__)

_MAX_DETAIL = 1024

#: Spawner attribute a hub component sets before stopping a server, to record why
#: (a ``server-stopped`` reason, e.g. ``role-lost``); cleared by the stop.
STOP_REASON = "qustody_stop_reason"


def _role_lost(spawner: Any) -> str | None:
    """"role-lost" when none of the owner's current roles may use the server's profile."""
    allowed = getattr(spawner, "profile_allowed_for", None)
    limits = getattr(spawner, "_limits", None)
    if allowed is None or not isinstance(limits, dict) or not limits.get("profile"):
        return None  # no profile recorded (or already cleared): nothing to judge by
    try:
        from jupyterhub.roles import get_roles_for

        roles = {r.name for r in get_roles_for(spawner.user.orm_user)}
        return None if allowed(roles) else "role-lost"
    except Exception:  # the record says "requested" rather than nothing at all
        log.exception("roles of %s unreadable at a stop", spawner.user.name)
        return None


def _who(spawner: Any) -> dict[str, Any]:
    return {"user": spawner.user.name, "server": spawner.name or ""}


def _request(spawner: Any) -> dict[str, Any]:
    """Who asked for the spawn, from the hub's request handler (if any)."""
    handler = getattr(spawner, "handler", None)
    out: dict[str, Any] = {}
    if handler is None:
        return out
    ip = request_ip(handler)
    if ip:
        out["ip"] = ip
    current = getattr(handler, "current_user", None)
    name = getattr(current, "name", None)
    if isinstance(name, str) and name and name != spawner.user.name:
        out["actor"] = name
    kind = "api-token" if getattr(handler, "_token_authenticated", False) else "browser-session"
    out["credential"] = {"kind": kind}
    return out


def _chosen(spawner: Any) -> dict[str, Any]:
    """Profile, image and limits of the policy's decision, once made."""
    decision = getattr(spawner, "_decision", None)
    if decision is None:
        return {}
    profile = decision.profile
    limits: dict[str, Any] = {"mem_bytes": int(profile.mem_limit), "cpus": float(profile.cpu_limit)}
    if getattr(profile, "pids_limit", None):
        limits["pids"] = int(profile.pids_limit)
    return {"profile": profile.name, "image": decision.image.ref, "limits": limits}


def failure_reason(error: BaseException) -> str:
    """The ``server-spawn-failed`` reason for an exception from ``start``."""
    if isinstance(error, TimeoutError):
        return "timeout"
    message = str(getattr(error, "log_message", "") or error).lower()
    status = getattr(error, "status_code", None)
    if status is None:
        return "internal-error"
    if "the term of" in message and status == 403:  # hub_ext.courses.live.closed_message
        return "course-closed"
    if "profile" in message and status < 500:
        return "profile-not-allowed"
    if "image" in message:
        return "image-not-allowed"
    if "security" in message or "hardening" in message:
        return "hardening-check"
    if "did not start" in message or "timed out" in message:
        return "timeout"
    return "container-error" if status >= 500 else "internal-error"


def _detail(error: BaseException) -> str:
    if getattr(error, "status_code", None) is not None:
        # the message shown to the user (never a credential; the log scrubs it anyway)
        return str(getattr(error, "log_message", "") or error)[:_MAX_DETAIL]
    return type(error).__name__


_T = TypeVar("_T", bound=type)


def audited(cls: _T) -> _T:
    """Class decorator: record every spawn and stop of the spawner class's servers.

    Wraps the class's own ``start`` and ``stop`` (so the policy checks in ``start`` are
    inside the record: a refused spawn is a ``server-spawn-failed``).
    """
    inner_start: Callable[[Any], Awaitable[Any]] = cls.start  # type: ignore[attr-defined]
    inner_stop: Callable[..., Awaitable[Any]] = cls.stop  # type: ignore[attr-defined]

    @functools.wraps(inner_start)
    async def start(self: Any) -> Any:
        hub_emit("server-spawn-requested", {**_who(self), **_request(self)})
        began = time.monotonic()
        try:
            result = await inner_start(self)
        except BaseException as e:
            self._qustody_start_failed = True  # the hub's cleanup stop is no server's exit
            data = {**_who(self), "reason": failure_reason(e), "detail": _detail(e)}
            chosen = _chosen(self)
            data.update({k: v for k, v in chosen.items() if k in ("profile", "image")})
            try:
                hub_emit("server-spawn-failed", data)
            except AuditError:
                log.exception("server-spawn-failed not recorded for %s", data["user"])
            raise
        decision = getattr(self, "_decision", None)
        self._qustody_spawn_at = time.time()
        # the SBOM the image was built with, where the spawner read the image's labels
        sbom = str(getattr(self, "image_sbom_sha256", "") or "")
        hub_emit(
            "server-started",
            {
                **_who(self),
                **_chosen(self),
                "image_digest": decision.image.digest if decision is not None else "",
                **({"sbom_sha256": sbom} if sbom else {}),
                "duration_seconds": round(time.monotonic() - began, 3),
            },
        )
        return result

    inner_post_stop: Callable[[Any], Any] = cls.run_post_stop_hook  # type: ignore[attr-defined]

    def stopped(self: Any, reason: str) -> None:
        data: dict[str, Any] = {**_who(self), "reason": reason}
        began = getattr(self, "_qustody_spawn_at", None)
        if began is not None:
            data["duration_seconds"] = round(max(0.0, time.time() - began), 3)
            self._qustody_spawn_at = None
        self._qustody_stop_recorded = True
        hub_emit("server-stopped", data)

    @functools.wraps(inner_stop)
    async def stop(self: Any, now: bool = False) -> Any:
        # a hub component that stops a server for a reason of its own names it first;
        # a stop asked through the API (the qustody service withholding secrets) of a
        # server its owner's roles no longer allow is that too (judged before the stop:
        # a spawner's stop clears the profile it ran)
        reason = getattr(self, STOP_REASON, None) or _role_lost(self) or "requested"
        result = await inner_stop(self, now=now)
        setattr(self, STOP_REASON, None)
        stopped(self, reason)
        return result

    @functools.wraps(inner_post_stop)
    def run_post_stop_hook(self: Any) -> Any:
        # JupyterHub runs this hook after every stop, but calls stop() only for a server
        # still running: one that crashed, was shut down from inside or stopped itself is
        # recorded here, so the log (and the alert engine's list of running servers)
        # knows it is gone.
        if not (getattr(self, "_qustody_stop_recorded", False)
                or getattr(self, "_qustody_start_failed", False)):
            try:
                stopped(self, "exited")
            except AuditError:
                log.exception("server-stopped (exited) not recorded for %s", self.user.name)
        self._qustody_stop_recorded = self._qustody_start_failed = False
        return inner_post_stop(self)

    cls.start = start  # type: ignore[attr-defined]
    cls.stop = stop  # type: ignore[attr-defined]
    cls.run_post_stop_hook = run_post_stop_hook  # type: ignore[attr-defined]
    return cls


# -- the culler (its own process) ----------------------------------------------------------

_service_lock = threading.Lock()
_service_log: Any = None


def _service_audit() -> Any:
    """The audit log named by this service's environment (None when it names none)."""
    global _service_log
    with _service_lock:
        if _service_log is None:
            settings = service_settings()
            if settings is None:
                return None
            from .log import AuditLog

            _service_log = AuditLog(**settings)
        return _service_log


def record_cull(decision: Any, server: Mapping[str, Any], actor: str) -> None:
    """Record that the culler decided to stop ``server`` (a hub REST server model).

    Never stops the cull: a server past its limits must go even if the log fails.
    """
    full = str(server.get("full_name") or "")
    user, _, name = full.partition("/")
    if not user:
        log.error("qustody-cull: server model without full_name; cull not audited")
        return
    try:
        audit = _service_audit()
        if audit is None:
            log.error("qustody-cull: no QUSTODY_AUDIT_LOG/KEY_FILE; cull of %s not audited", full)
            return
        audit.emit(
            "server-culled",
            {
                "user": user,
                "server": name,
                "actor": actor,
                "reason": decision.reason,
                "idle_seconds": round(decision.idle_seconds, 3),
                "age_seconds": round(decision.age_seconds, 3),
                "policy": decision.profile[:128],
            },
        )
    except (AuditError, ValueError, OSError) as e:
        log.error("qustody-cull: cull of %s not audited: %s", full, e)
