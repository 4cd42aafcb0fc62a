"""How long this server may live: the remaining idle time and age, and a backstop.

The hub's spawner passes the limits of the user's profile in environment variables
(not secrets): ``QUSTODY_PROFILE``, ``QUSTODY_STARTED_AT`` (epoch seconds),
``QUSTODY_IDLE_TIMEOUT_SECONDS``, ``QUSTODY_MAX_AGE_SECONDS``,
``QUSTODY_KERNEL_IDLE_TIMEOUT_SECONDS``, ``QUSTODY_MAX_AGE_GRACE_SECONDS`` and
``JUPYTERHUB_ACTIVITY_INTERVAL``.

``GET /qustody/api/session`` tells the user (and the labextension) how long is left;
polling it does not count as activity. ``POST /qustody/api/session/keepalive`` is the
user's "keep working": it counts as activity (the idle limit only; the maximum age is a
hard limit) and reports it to the hub at once. The hub's culler enforces the limits; as a
backstop the server stops itself when it is ``grace`` seconds past its maximum age.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from tornado import web


def now() -> float:
    """Seconds since the epoch (tests patch it)."""
    return time.time()


def _int(env: Mapping[str, str], key: str) -> int | None:
    try:
        value = int(env.get(key, ""))
    except ValueError:
        return None
    return value if value > 0 else None


@dataclass(frozen=True)
class SessionLimits:
    profile: str | None
    session_id: str | None
    started_at: float | None
    idle_timeout: int | None
    max_age: int | None
    kernel_idle_timeout: int | None
    grace: int
    activity_interval: int | None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SessionLimits:
        env = os.environ if env is None else env
        started = _int(env, "QUSTODY_STARTED_AT")
        return cls(
            profile=env.get("QUSTODY_PROFILE") or None,
            session_id=env.get("QUSTODY_SESSION_ID") or None,
            started_at=float(started) if started else None,
            idle_timeout=_int(env, "QUSTODY_IDLE_TIMEOUT_SECONDS"),
            max_age=_int(env, "QUSTODY_MAX_AGE_SECONDS"),
            kernel_idle_timeout=_int(env, "QUSTODY_KERNEL_IDLE_TIMEOUT_SECONDS"),
            grace=_int(env, "QUSTODY_MAX_AGE_GRACE_SECONDS") or 300,
            activity_interval=_int(env, "JUPYTERHUB_ACTIVITY_INTERVAL"),
        )

    def status(self, last_activity: float, at: float | None = None) -> dict[str, Any]:
        """The remaining time, as the session API returns it."""
        at = now() if at is None else at
        idle_for = max(0.0, at - last_activity)
        idle_left = None if self.idle_timeout is None else max(0.0, self.idle_timeout - idle_for)
        age = None if self.started_at is None else max(0.0, at - self.started_at)
        age_left = None if self.max_age is None or age is None else max(0.0, self.max_age - age)
        candidates = [
            (v, k) for v, k in ((idle_left, "idle"), (age_left, "max-age")) if v is not None
        ]
        next_left, next_reason = min(candidates) if candidates else (None, None)
        return {
            "enforced": bool(candidates),
            "profile": self.profile,
            "session_id": self.session_id,
            "now": _iso(at),
            "started_at": _iso(self.started_at),
            "idle": {
                "timeout_seconds": self.idle_timeout,
                "idle_seconds": round(idle_for),
                "remaining_seconds": None if idle_left is None else round(idle_left),
                "last_activity": _iso(last_activity),
            },
            "age": {
                "max_seconds": self.max_age,
                "age_seconds": None if age is None else round(age),
                "remaining_seconds": None if age_left is None else round(age_left),
            },
            "stops_in_seconds": None if next_left is None else round(next_left),
            "stop_reason": next_reason,
            "kernel_idle_timeout_seconds": self.kernel_idle_timeout,
            # The hub learns of activity at most this late, so an idle stop can come
            # up to this much earlier than "remaining_seconds" says.
            "activity_report_interval_seconds": self.activity_interval,
        }

    def backstop_delay(self, at: float | None = None) -> float | None:
        """Seconds until the server must stop itself (max age + grace), or None."""
        if self.max_age is None or self.started_at is None:
            return None
        at = now() if at is None else at
        return max(0.0, self.started_at + self.max_age + self.grace - at)


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def _last_activity(web_app: Any, settings: Mapping[str, Any]) -> float:
    getter = getattr(web_app, "last_activity", None)
    stamp = getter() if callable(getter) else settings.get("started")
    if isinstance(stamp, datetime):
        return stamp.timestamp()
    return now()


class SessionStatusHandler(APIHandler):
    """``GET /qustody/api/session``: remaining idle time and age of this server."""

    auth_resource = "server"
    # Asking how long is left must not count as activity, or polling it keeps a
    # server alive for ever.
    _track_activity = False

    @web.authenticated
    @authorized
    async def get(self) -> None:
        limits: SessionLimits = self.settings.get("qustody_session") or SessionLimits.from_env()
        body = limits.status(_last_activity(self.application, self.settings))
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(body))


def _hub_activity_notifier(serverapp: Any) -> Any:
    """jupyterhub-singleuser's ``notify_activity`` coroutine function, or None outside a hub.

    Found by duck typing among the server's extension apps: server_ext does not import
    jupyterhub.
    """
    manager = getattr(serverapp, "extension_manager", None)
    for apps in getattr(manager, "extension_apps", {}).values():
        for app in apps:
            notify = getattr(app, "notify_activity", None)
            if callable(notify):
                return notify
    return None


class SessionKeepAliveHandler(APIHandler):
    """``POST /qustody/api/session/keepalive``: count as activity now, tell the hub now.

    The single-user server reports activity to the hub only every
    ``JUPYTERHUB_ACTIVITY_INTERVAL`` seconds (5 minutes by default), later than a 2-minute
    warning; this reports it at once so the culler sees it. Returns the new status.
    """

    auth_resource = "server"

    @web.authenticated
    @authorized
    async def post(self) -> None:
        self.update_api_activity()
        notify = _hub_activity_notifier(self.serverapp)
        reported = False
        if notify is not None:
            try:
                await notify()
                reported = True
            except Exception as e:  # the hub being down must not fail the user's request
                self.log.warning("Qustody keep-alive: the hub was not told (%s)", type(e).__name__)
        limits: SessionLimits = self.settings.get("qustody_session") or SessionLimits.from_env()
        body = limits.status(_last_activity(self.application, self.settings))
        body["hub_notified"] = reported
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(body))


def start_backstop(
    serverapp: Any, log: logging.Logger | logging.LoggerAdapter[Any]
) -> SessionLimits:
    """Record the limits, and stop the server ``grace`` seconds past its maximum age."""
    limits = SessionLimits.from_env()
    serverapp.web_app.settings["qustody_session"] = limits
    delay = limits.backstop_delay()
    if delay is None:
        return limits
    loop = getattr(serverapp, "io_loop", None)

    def stop() -> None:
        log.warning(
            "Qustody: this server is %ss past its maximum age of %ss (profile %s) and the "
            "hub has not stopped it; stopping now",
            limits.grace,
            limits.max_age,
            limits.profile,
        )
        serverapp.stop()

    if loop is None:
        from tornado.ioloop import IOLoop

        IOLoop.current().call_later(delay, stop)
    else:
        loop.call_later(delay, stop)
    log.info(
        "Qustody session limits: profile %s, idle %ss, max age %ss (backstop in %.0fs)",
        limits.profile,
        limits.idle_timeout,
        limits.max_age,
        delay,
    )
    return limits
