"""The courses service's own work, wired from its environment (hub_ext.courses.hub sets
it): the term keeper every ``QUSTODY_TERM_INTERVAL`` seconds, and what the instructor
page's Release now / Collect now buttons act with.

The service reaches the hub with its own token (``JUPYTERHUB_API_TOKEN``; the
``courses-service`` role) and, on a Docker hub, the engine (``DOCKER_HOST``) and the
servers' homes (``QUSTODY_TERM_VOLUMES``). An engine that does not answer at start-up
is not fatal: the page still serves, and the steps that move files fail and are retried.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
from pathlib import Path
from typing import Any

from tornado import ioloop

from .keeper import HubAPI, TermActions, TermKeeper
from .term import Journal

log = logging.getLogger("qustody.courses.service")


def volumes_from(spec: dict[str, Any]) -> Any:
    """``Volumes`` for the hub's Docker homes (``QUSTODY_TERM_VOLUMES``, hub.py)."""
    import docker

    from ..volumes import home_volume_name
    from .assignments import Volumes

    uid, gid = (int(x) for x in str(spec.get("run_as", "1000:1000")).split(":"))
    return Volumes(docker.from_env(), spec["image"], spec["home_mount"],
                   functools.partial(home_volume_name, spec["home_volume_template"]), uid, gid,
                   materials_prefix=str(spec.get("materials_prefix", "qustody-materials-")))


def term_actions(catalog: Any, archive: Path) -> TermActions | None:
    """What the keeper and the buttons act with; None outside a hub (no token)."""
    url, token = os.environ.get("JUPYTERHUB_API_URL"), os.environ.get("JUPYTERHUB_API_TOKEN")
    if not (url and token):
        return None
    actions = TermActions(HubAPI(url, token), lambda: catalog.current(), archive)
    spec = os.environ.get("QUSTODY_TERM_VOLUMES", "")
    if not spec:
        return actions
    settings = json.loads(spec)  # written by hub.py: a bad one is the hub's bug, said at start
    actions.materials_prefix = str(settings.get("materials_prefix", actions.materials_prefix))
    actions.reconnect = functools.partial(volumes_from, settings)
    try:
        actions.volumes = actions.reconnect()
    except Exception as e:  # the page still serves; file steps fail, reconnect, retry
        actions.volumes_error = f"the Docker engine is not reachable ({type(e).__name__})"
        log.error("courses: %s: releases, collects and archives wait for it",
                  actions.volumes_error)
    return actions


def start_keeper(catalog: Any, actions: TermActions, audit: Any) -> TermKeeper | None:
    """Tick every ``QUSTODY_TERM_INTERVAL`` seconds, in a thread, never two at once.
    Without an audit log the keeper takes no step (each is audited or not taken)."""
    interval = float(os.environ.get("QUSTODY_TERM_INTERVAL", "0") or 0)
    if interval <= 0:
        return None
    if audit is None:
        log.error("courses: no audit log, so the term keeper takes no step")
        return None
    keeper = TermKeeper(lambda: catalog.current(), Journal(catalog.directory), actions, audit)
    busy = asyncio.Lock()

    async def tick() -> None:
        if busy.locked():
            return
        async with busy:
            try:
                await asyncio.to_thread(keeper.tick)
            except Exception:
                log.exception("courses: the term keeper's tick failed")

    ioloop.PeriodicCallback(tick, interval * 1000).start()
    ioloop.IOLoop.current().add_callback(tick)
    return keeper
