"""The one place Qustody reaches into JupyterHub's private code (a shim), and why.

``guard_service_health_check``: JupyterHub 5 keeps its periodic service health check
running while the hub shuts down, after ``Service.stop()`` has deleted a service's server
row, so ``check_services_health`` calls ``Server.from_orm(None)`` and tornado prints an
``AttributeError`` traceback at Ctrl-C whenever the check falls inside the shutdown (the
more managed services, the likelier). The shim swallows that error only while a service
with a URL has no server row (it is being stopped); any other error still surfaces.

``tests/test_upstream_shims.py`` fails when the upstream code this relies on changes (or
the bug is fixed), so the shim is reviewed then.
"""

from __future__ import annotations

from typing import Any


def _stopping(app: Any) -> bool:
    services = getattr(app, "_service_map", {}) or {}
    return any(
        s.url and getattr(getattr(s, "orm", None), "server", "absent") is None
        for s in services.values()
    )


def guard_service_health_check() -> None:
    """Install the guard (idempotent); called from ``jupyterhub_config.py``."""
    from jupyterhub.app import JupyterHub

    original = JupyterHub.check_services_health
    if getattr(original, "qustody_guarded", False):
        return

    async def check_services_health(self: Any) -> None:
        try:
            await original(self)
        except AttributeError:
            if not _stopping(self):
                raise

    check_services_health.qustody_guarded = True  # type: ignore[attr-defined]
    JupyterHub.check_services_health = check_services_health
