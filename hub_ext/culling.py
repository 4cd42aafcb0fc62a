"""Idle and maximum-age culling, per profile (and so per role).

jupyterhub-idle-culler runs as a hub-managed service (the fragment ``culler()``) with a
least-privilege role: it may list users, read their servers' activity and state, and
stop servers; it is not an admin. Its decision hook (``CullArbiter``) reads the limits
the spawner recorded in each server's state (the profile's ``idle_timeout`` and
``max_age``, chosen from the user's hub roles) and culls

* an idle server once it has been inactive for its profile's ``idle_timeout``;
* any server, busy or not, once it is older than its profile's ``max_age``;
* a student's server, busy or not, once the last of their courses has closed (its term's
  end plus grace, hub_ext.courses; the spawner records the time at start).

Every cull is logged with its reason as one ``qustody-cull`` line. Kernels inside the
container are culled by jupyter-server itself (``SpawnPolicy.server_args``), and the
server stops itself ``max_age_grace`` seconds past its limits if the culler has not
(``server_ext.session``), so the limits hold while this service is down.

Run it as ``python -m hub_ext.culling --cull-every=60 --timeout=3600 --default-max-age=86400``.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from traitlets import Int, Unicode

from .audit.lifecycle import record_cull
from .wiring import Fragment

#: Exactly what the culler needs; no admin. ``admin:server_state`` is read-only in the
#: REST API and is how the culler sees the limits the spawner chose for each server.
CULLER_SCOPES = [
    "list:users",
    "read:users:activity",
    "read:servers",
    "delete:servers",
    "admin:server_state",
]


def now() -> datetime:
    """The culler's clock (tests patch it)."""
    return datetime.now(UTC)


def _parse(value: str | None) -> datetime | None:
    if not value:
        return None
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _td(seconds: float) -> str:
    return str(timedelta(seconds=int(seconds)))


@dataclass(frozen=True)
class CullDecision:
    server: str
    profile: str
    reason: str  # "idle", "max-age" or "course-closed"
    idle_seconds: float
    age_seconds: float
    limit_seconds: int

    def log_line(self) -> str:
        return (
            f"qustody-cull server={self.server} profile={self.profile} reason={self.reason} "
            f"idle={_td(self.idle_seconds)} age={_td(self.age_seconds)} "
            f"limit={_td(self.limit_seconds)}"
        )


def limits_of(
    server: Mapping[str, Any], default_idle: int, default_max_age: int
) -> tuple[str, int, int]:
    """(profile, idle timeout, max age) recorded for a server, or the defaults.

    A server without recorded limits (started before Qustody, or by another spawner)
    gets the defaults, never "no limit".
    """
    state = server.get("state") or {}
    limits = state.get("qustody") if isinstance(state, Mapping) else None
    if not isinstance(limits, Mapping):
        return "(none)", default_idle, default_max_age
    idle = limits.get("idle_timeout")
    age = limits.get("max_age")
    return (
        str(limits.get("profile") or "(none)"),
        int(idle) if isinstance(idle, int) and idle > 0 else default_idle,
        int(age) if isinstance(age, int) and age > 0 else default_max_age,
    )


def course_closes(server: Mapping[str, Any]) -> float | None:
    """When the student's courses closed (recorded by the spawner at start), or None."""
    state = server.get("state") or {}
    limits = state.get("qustody") if isinstance(state, Mapping) else None
    value = limits.get("course_closes") if isinstance(limits, Mapping) else None
    return float(value) if isinstance(value, int) and value > 0 else None


def decide(
    server: Mapping[str, Any],
    *,
    default_idle: int,
    default_max_age: int,
    at: datetime | None = None,
) -> CullDecision | None:
    """Whether to cull one server (a JupyterHub REST server model, with state)."""
    at = at or now()
    started = _parse(server.get("started"))
    last = _parse(server.get("last_activity")) or started
    if started is None or last is None:
        return None
    name = str(server.get("full_name") or server.get("url") or server.get("name") or "?")
    profile, idle_limit, age_limit = limits_of(server, default_idle, default_max_age)
    idle = max(0.0, (at - last).total_seconds())
    age = max(0.0, (at - started).total_seconds())
    closes = course_closes(server)
    if closes is not None and at.timestamp() >= closes:
        return CullDecision(name, profile, "course-closed", idle, age,
                            max(0, int(closes - started.timestamp())))
    if age_limit and age >= age_limit:
        return CullDecision(name, profile, "max-age", idle, age, age_limit)
    if idle_limit and idle >= idle_limit:
        return CullDecision(name, profile, "idle", idle, age, idle_limit)
    return None


class CullArbiter:
    """jupyterhub-idle-culler's ``cull_arbiter_hook``, with per-profile limits."""

    def __init__(
        self, log: logging.Logger | logging.LoggerAdapter[Any], default_max_age: int
    ) -> None:
        self.log = log
        self.default_max_age = default_max_age
        self.actor = os.environ.get("JUPYTERHUB_SERVICE_NAME", "qustody-culler")

    def __call__(
        self,
        *,
        inactive: timedelta | None,
        inactive_limit: int,
        server: Mapping[str, Any],
        **_: Any,
    ) -> bool:
        try:
            decision = decide(
                server, default_idle=inactive_limit, default_max_age=self.default_max_age
            )
        except Exception:
            # Fail closed would stop servers on a bug; fail loud instead and keep the
            # in-container backstop (the server stops itself past its limits).
            self.log.exception("qustody-cull: cannot evaluate server %s", server.get("name"))
            return False
        if decision is None:
            return False
        self.log.warning(decision.log_line())
        record_cull(decision, server, self.actor)
        return True


def _culler_class() -> Any:
    from jupyterhub_idle_culler import IdleCuller

    class QustodyIdleCuller(IdleCuller):  # type: ignore[misc]
        """jupyterhub-idle-culler with Qustody's per-profile limits."""

        name = "qustody-culler"
        default_max_age = Int(
            86400,
            config=True,
            help="""Maximum age (seconds) of a server whose state records no profile limits
            (the idle limit for such servers is ``--timeout``).""",
        )
        config_file = Unicode(
            "",
            config=True,
            help="Config file to load (none by default: nothing is read from the working "
            "directory).",
        )
        aliases = {  # noqa: RUF012 - traitlets class attribute
            **IdleCuller.aliases,
            "default-max-age": "QustodyIdleCuller.default_max_age",
        }

    return QustodyIdleCuller


def main(argv: list[str] | None = None) -> None:
    # the hub stops its services with SIGINT; a parent may have left SIGINT ignored, which
    # Python keeps (then every stop waits out the hub's interrupt timeout)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    cls = _culler_class()
    app = cls.instance()
    app.initialize(argv if argv is not None else sys.argv[1:])
    app.cull_arbiter_hook = CullArbiter(app.log, app.default_max_age)
    app.log.info(
        "qustody-culler: every %ss, default idle %ss, default max age %ss, per-profile limits "
        "from server state",
        app.cull_every,
        app.timeout,
        app.default_max_age,
    )
    app.start()


def culler(
    *,
    name: str = "qustody-culler",
    cull_every: int = 60,
    default_idle_timeout: int = 3600,
    default_max_age: int = 86400,
    python: str = sys.executable,
    environment: dict[str, str] | None = None,
) -> Fragment:
    """The culler as a hub-managed service with its least-privilege role
    (``hub_ext.wiring.apply`` adds it to the hub's config).

    ``environment``: e.g. ``service_environment(c)``, so culls are recorded in the audit log.
    """
    service: dict[str, Any] = {
        "environment": dict(environment or {}),
        "name": name,
        "command": [
            python,
            "-m",
            "hub_ext.culling",
            f"--cull-every={cull_every}",
            f"--timeout={default_idle_timeout}",
            f"--default-max-age={default_max_age}",
            "--concurrency=5",
        ],
    }
    role = {
        "name": f"{name}-role",
        "description": "Qustody culler: stop idle and over-age servers (least privilege, no admin)",
        "scopes": list(CULLER_SCOPES),
        "services": [name],
    }
    return Fragment("the culler (hub_ext.culling)", services=[service], roles=[role])


if __name__ == "__main__":
    main()
