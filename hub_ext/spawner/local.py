"""``QustodyLocalProcessSpawner``: the policy's profiles and time limits for local
processes, for a demo on a machine without a Docker engine (no isolation)."""

from __future__ import annotations

import os
from typing import Any

from jupyterhub.spawner import SimpleLocalProcessSpawner
from traitlets import Instance, default

from ..audit.lifecycle import audited
from .launch import PolicyLaunch, options_from_form, profile_form
from .policy import SpawnPolicy
from .profiles import now


@audited
class QustodyLocalProcessSpawner(PolicyLaunch, SimpleLocalProcessSpawner):  # type: ignore[misc]
    """The spawn policy's profiles, limits and time limits for local processes.

    For machines without a Docker engine (the demo on a laptop). There is NO container
    isolation: every server runs as the hub's user, can read every other user's files
    and the hub's. Memory, CPU and process limits are not enforced. Never use it for
    real users.
    """

    policy = Instance(SpawnPolicy)

    @default("policy")
    def _default_policy(self) -> SpawnPolicy:
        return SpawnPolicy(parent=self)

    @default("disable_user_config")
    def _default_disable_user_config(self) -> bool:
        return True

    @default("options_form")
    def _default_options_form(self) -> Any:
        return lambda spawner: profile_form(self.policy.available(self._user_roles()))

    @default("options_from_form")
    def _default_options_from_form(self) -> Any:
        return options_from_form

    def get_args(self) -> list[str]:
        args: list[str] = super().get_args()  # the policy's arguments (PolicyLaunch)
        if os.geteuid() == 0:
            args.append("--ServerApp.allow_root=True")
        return args

    async def start(self) -> Any:
        self.begin(now(), runs_image=False)  # no image: the local Python environment
        self.log.warning(
            "QustodyLocalProcessSpawner: %s runs as a LOCAL PROCESS WITHOUT CONTAINER "
            "ISOLATION (no read-only root, no capability drop, no memory/CPU/pids limits). "
            "Demo use only.",
            self._log_name,
        )
        return await super().start()

