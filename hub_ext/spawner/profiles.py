"""Profiles, the policy's decision for one spawn, and the few names every backend shares.

A profile is what a user may choose (limits, images, time limits, the roles allowed);
``Decision`` is what the policy chose for one start (profile, pinned image, session id).
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tornado import web

from ..images import PinnedImage

LABEL = "io.qustody"
TOKEN_KEYS = ("JUPYTERHUB_API_TOKEN", "JPY_API_TOKEN")
#: user_options keys a spawn request may carry; anything else is refused.
USER_OPTION_KEYS = frozenset({"profile", "image"})
#: Where course materials are mounted: on the image's read-only root, which no user can
#: change before the mount is made (hub_ext.courses).
MATERIALS_ROOT = "/srv/qustody/materials"
#: Roles with work of their own: a course's term never stops their servers.
STAFF_ROLES = frozenset({"researcher", "instructor", "assistant", "observer", "admin", "auditor"})

_BYTES = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_bytes(value: str | int) -> int:
    """``"512M"`` / ``"2G"`` / ``1073741824`` -> bytes (binary units, like JupyterHub)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    m = _BYTES.match(str(value))
    if not m:
        raise ValueError(f"{value!r} is not a size; write e.g. '512M' or '2G'")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def now() -> float:
    """Seconds since the epoch. The one clock of this module (tests patch it)."""
    return time.time()


class SpawnRefused(web.HTTPError):
    """A spawn the policy does not allow. The message is shown to the user as is."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, log_message=message)
        self.message = message
        self.jupyterhub_message = message


# -- profiles -------------------------------------------------------------------------

PROFILE_FIELDS: dict[str, str] = {
    "display_name": "name shown in the spawn form",
    "description": "one line shown under the name",
    "roles": "hub roles that may use the profile (at least one)",
    "images": "names from SpawnPolicy.allowed_images (the first is the default)",
    "mem_limit": "memory limit, e.g. '2G' (no swap beyond it)",
    "cpu_limit": "CPU limit in cores, e.g. 1.5",
    "pids_limit": "most processes and threads the container may have",
    "idle_timeout": "seconds without activity before the culler stops the server",
    "max_age": "seconds after start when the server is stopped, busy or not",
    "kernel_idle_timeout": "seconds a kernel may stay idle before jupyter-server culls it",
}
_REQUIRED = ("roles", "images", "mem_limit", "cpu_limit", "idle_timeout", "max_age")


@dataclass(frozen=True)
class Profile:
    """One admin-defined server profile, validated."""

    name: str
    display_name: str
    description: str
    roles: tuple[str, ...]
    images: tuple[str, ...]
    mem_limit: int
    cpu_limit: float
    pids_limit: int
    idle_timeout: int
    max_age: int
    kernel_idle_timeout: int

    def limits(self) -> dict[str, int | float | str]:
        return {
            "profile": self.name,
            "idle_timeout": self.idle_timeout,
            "max_age": self.max_age,
            "kernel_idle_timeout": self.kernel_idle_timeout,
        }

    def summary(self) -> str:
        return (
            f"{self.cpu_limit:g} CPU, {self.mem_limit / 1024**3:g} GiB, "
            f"idle {_human(self.idle_timeout)}, at most {_human(self.max_age)}"
        )


def _human(seconds: int) -> str:
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"


def parse_profile(name: str, spec: Mapping[str, Any], allowed_images: Iterable[str]) -> Profile:
    """Validate one entry of ``SpawnPolicy.profiles``; ValueError says how to fix it."""
    where = f"SpawnPolicy.profiles[{name!r}]"
    if not re.fullmatch(r"[a-z0-9][a-z0-9_\-]{0,31}", name):
        raise ValueError(f"{where}: profile names are 1-32 lowercase letters, digits, '-' or '_'")
    if not isinstance(spec, Mapping):
        raise ValueError(f"{where} must be a dict of {', '.join(PROFILE_FIELDS)}")
    unknown = sorted(set(spec) - set(PROFILE_FIELDS))
    if unknown:
        raise ValueError(
            f"{where}: unknown keys {unknown} (a typo would silently weaken the policy). "
            f"Known keys: {', '.join(PROFILE_FIELDS)}"
        )
    missing = [k for k in _REQUIRED if k not in spec]
    if missing:
        raise ValueError(
            f"{where}: missing {missing}; "
            + "; ".join(f"{k}: {PROFILE_FIELDS[k]}" for k in missing)
        )
    roles = spec["roles"]
    if isinstance(roles, str) or not roles or not all(isinstance(r, str) and r for r in roles):
        raise ValueError(f"{where}['roles'] must be a non-empty list of hub role names")
    images = spec["images"]
    if isinstance(images, str) or not images:
        raise ValueError(f"{where}['images'] must be a non-empty list of allowed image names")
    known = set(allowed_images)
    for image in images:
        if image not in known:
            raise ValueError(
                f"{where}['images'] names {image!r}, which is not in SpawnPolicy.allowed_images "
                f"({', '.join(sorted(known)) or 'empty'}). Add it there, pinned by digest."
            )

    def positive(key: str, default: int | None = None) -> int:
        value = spec.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(
                f"{where}['{key}'] must be a whole number >= 1 ({PROFILE_FIELDS[key]})"
            )
        return value

    try:
        mem = parse_bytes(spec["mem_limit"])
    except ValueError as e:
        raise ValueError(f"{where}['mem_limit']: {e}") from None
    if mem < 64 * 1024**2:
        raise ValueError(f"{where}['mem_limit'] must be at least 64M")
    cpu = spec["cpu_limit"]
    if isinstance(cpu, bool) or not isinstance(cpu, int | float) or not 0.01 <= cpu <= 256:
        raise ValueError(f"{where}['cpu_limit'] must be a number of cores between 0.01 and 256")
    idle, max_age = positive("idle_timeout"), positive("max_age")
    kernel_idle = positive("kernel_idle_timeout", idle)
    return Profile(
        name=name,
        display_name=str(spec.get("display_name") or name),
        description=str(spec.get("description") or ""),
        roles=tuple(roles),
        images=tuple(images),
        mem_limit=mem,
        cpu_limit=float(cpu),
        pids_limit=positive("pids_limit", 512),
        idle_timeout=idle,
        max_age=max_age,
        kernel_idle_timeout=kernel_idle,
    )


# -- the policy -----------------------------------------------------------------------


@dataclass(frozen=True)
class Requester:
    """Who asked for a spawn: the server's owner, an admin (holds unfiltered
    ``admin:servers``), or someone else with the courses they instruct."""

    name: str
    is_owner: bool
    admin: bool
    instructs: frozenset[str] = frozenset()


@dataclass
class Decision:
    """What the policy decided for one spawn."""

    profile: Profile
    image: PinnedImage
    session_id: str = field(default_factory=lambda: uuid.uuid4().hex)

