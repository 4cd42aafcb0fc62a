"""Hardened, time-limited notebook servers: one spawn policy, three backends.

``SpawnPolicy`` (``policy.py``) holds every security decision about a user's server:
which images may run (by digest), which profiles exist and which hub roles may use them,
and the limits each profile gets. ``PolicyLaunch`` (``launch.py``) makes that decision for
each start and produces what every backend hands the server the same way: environment,
arguments, secrets ticket, culler state, audit events. The backends add how a server runs:

- ``HardenedDockerSpawner`` (``docker.py``, entry point ``qustody-docker``): a
  read-only, capability-less, non-root container on Qustody's internal network, checked
  against the policy before it starts;
- ``QustodyKubeSpawner`` (``kubernetes.py``, ``qustody-kubernetes``): the same policy
  as a KubeSpawner pod that meets the Pod Security "restricted" profile, checked before
  it is created (``pod_problems``);
- ``QustodyLocalProcessSpawner`` (``local.py``, ``qustody-local``): profiles and time
  limits for local processes, for a demo without Docker (no isolation).

Configure it in ``jupyterhub_config.py``::

    c.JupyterHub.spawner_class = "qustody-docker"
    c.SpawnPolicy.allowed_images = {"qustody": "sha256:<id printed by make image>"}
    c.SpawnPolicy.profiles = {"student": {"roles": ["student"], "images": ["qustody"], ...}}
    validate_config(c)   # refuse to start on a policy error, with a message saying how to fix it

``QustodyKubeSpawner`` is imported on first use, so a hub without kubespawner installed
(the ``kubernetes`` extra) loads the rest.
"""

from __future__ import annotations

from typing import Any

from .docker import HardenedDockerSpawner
from .launch import PolicyLaunch, profile_form
from .local import QustodyLocalProcessSpawner
from .policy import SpawnPolicy
from .profiles import Decision, Profile, Requester, SpawnRefused, parse_bytes, parse_profile
from .validation import FIREWALL_OFF, validate_config

__all__ = [
    "FIREWALL_OFF",
    "Decision",
    "HardenedDockerSpawner",
    "PolicyLaunch",
    "Profile",
    "QustodyKubeSpawner",
    "QustodyLocalProcessSpawner",
    "Requester",
    "SpawnPolicy",
    "SpawnRefused",
    "parse_bytes",
    "parse_profile",
    "profile_form",
    "validate_config",
]


def __getattr__(name: str) -> Any:
    if name == "QustodyKubeSpawner":
        from .kubernetes import QustodyKubeSpawner

        return QustodyKubeSpawner
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
