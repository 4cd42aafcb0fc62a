"""Stop the servers a user's new roles no longer allow.

A server keeps the profile it was started with. When a refresh (or a new login) changes
the user's roles so that none of them may use that profile any more, the server goes:
otherwise a demoted researcher would keep a prod workspace, and once their only role is
student they would join their course's ``<course>:students`` group, putting that
workspace in their instructor's reach. Each stop is recorded as ``server-stopped`` with
reason ``role-lost``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from hub_ext.audit.lifecycle import STOP_REASON


async def stop_servers_beyond(
    app: Any, user: Any, roles: Iterable[str], log: logging.Logger
) -> list[str]:
    """Stop ``user``'s running servers whose profile none of ``roles`` allows; returns
    their names. Spawners without a profile policy are left alone (nothing to check)."""
    have = set(roles)
    stopped: list[str] = []
    for name, spawner in list(user.spawners.items()):
        allowed = getattr(spawner, "profile_allowed_for", None)
        if allowed is None or not spawner.active or spawner.pending or allowed(have):
            continue
        setattr(spawner, STOP_REASON, "role-lost")
        try:
            if spawner.ready:  # unreachable from now on, for the owner and for staff
                await app.proxy.delete_user(user, name)
        except Exception:  # the others must still go
            log.exception("identity: unrouting %s's server %r (role lost) failed", user.name, name)
        # The stop itself runs on: the refresh may be a request of this very server (its
        # secret refresh), which could not finish while its server waits to shut down.
        task = asyncio.ensure_future(_stop(user, name, log))
        _STOPPING.add(task)
        task.add_done_callback(_STOPPING.discard)
        stopped.append(name)
    if stopped:
        await asyncio.sleep(0)  # the stops have begun: the spawners say "stop" pending
        log.warning(
            "identity: %s's roles no longer allow the profile of %s: stopping",
            user.name,
            ", ".join(repr(n) for n in stopped),
        )
    return stopped


_STOPPING: set[asyncio.Future[None]] = set()


async def _stop(user: Any, name: str, log: logging.Logger) -> None:
    try:
        await user.stop(name)
    except Exception:
        log.exception("identity: stopping %s's server %r (role lost) failed", user.name, name)
