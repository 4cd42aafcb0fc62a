"""Hardened, time-limited notebook containers.

``SpawnPolicy`` holds every security decision about a user's container: which images
may run (by digest), which profiles exist and which hub roles may use them, and the
limits each profile gets. ``HardenedDockerSpawner`` applies it on top of DockerSpawner
and checks the container Docker actually created against it before starting it;
``QustodyLocalProcessSpawner`` applies the same choices (profiles, limits, kernel
culling, culler state) to a local process for machines without a Docker engine, with
a loud warning that isolation is reduced; ``kubespawner_settings`` expresses the same
policy as KubeSpawner settings.

Configure it in ``jupyterhub_config.py``::

    c.JupyterHub.spawner_class = "qustody-docker"
    c.SpawnPolicy.allowed_images = {"qustody": "sha256:<id printed by make image>"}
    c.SpawnPolicy.profiles = {"student": {"roles": ["student"], "images": ["qustody"], ...}}
    validate_config(c)   # refuse to start on a policy error, with a message saying how to fix it
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import subprocess
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dockerspawner import DockerSpawner
from jupyterhub.spawner import SimpleLocalProcessSpawner
from jupyterhub.utils import random_port
from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError
from traitlets import Bool, Dict, Instance, Int, Unicode, default, validate
from traitlets.config import Config, LoggingConfigurable

from . import firewall, network
from .audit.lifecycle import audited
from .courses.catalog import Catalog
from .courses.live import LiveCatalog, closed_courses, closed_message, term_deadline
from .courses.live import shared as shared_catalog
from .courses.model import CourseError
from .identity.roles import MANAGING_PREFIXES, students_group
from .images import ImageRefused, PinnedImage, parse_pinned, resolve_requested
from .secrets.spawn import TICKET_ENV, spawn_stopped, spawn_ticket

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


class SpawnPolicy(LoggingConfigurable):
    """What a user's notebook container may be. Deny by default: with no allowed images
    and no profiles, nobody can start a server."""

    allowed_images = Dict(
        value_trait=Unicode(),
        config=True,
        help="""Images users' servers may run: a short name (what profiles and users refer
        to) mapped to a reference pinned by content digest, ``repo@sha256:<digest>`` or,
        for an image built or imported on the Docker host, its id ``sha256:<id>`` (``make
        image`` prints it). Tags are refused at start-up. Empty (default) allows nothing.

        .. versionadded:: 0.1
        """,
    )
    profiles = Dict(
        value_trait=Dict(),
        config=True,
        help="""Server profiles, by name. Each is a dict with ``roles`` (hub roles that may
        use it), ``images`` (names from ``allowed_images``, first is the default),
        ``mem_limit`` (e.g. ``"2G"``), ``cpu_limit`` (cores), ``idle_timeout`` and
        ``max_age`` (seconds), and optionally ``pids_limit`` (default 512),
        ``kernel_idle_timeout`` (default: ``idle_timeout``), ``display_name`` and
        ``description``. Unknown keys are refused. A user may start only a profile one of
        their roles allows; without a choice, the first such profile (in this order) is
        used. Empty (default): nobody can start a server.""",
    )
    course_profiles = Dict(
        key_trait=Unicode(),
        value_trait=Unicode(),
        config=True,
        help="""The one profile an instructor may start for a student of their course:
        course group (e.g. ``course-101``) to a profile name; ``"*"`` stands for every
        course not listed. When anyone but the owner or an admin (a caller holding
        ``admin:servers``) starts a server, the owner must be a student of a course the
        caller instructs (hub group ``<course>:students``, which researchers, instructors
        and admins who take the course never join) and the profile must be that course's:
        this keeps instructors from starting a researcher's server, or a student's server
        with another profile. The profile must allow the ``student`` role. Empty
        (default): only owners and admins can start a server.

        .. versionadded:: 0.2
        """,
    )
    courses_dir = Unicode(
        "",
        config=True,
        help="""The courses directory: one ``<course>.toml`` per course (docs/courses.md,
        ``qustody course apply``), re-read when a file changes, without a restart. A
        course's ``profile.name`` is the profile its instructors may start for its
        students (over ``course_profiles``); once a course's term closes (its end plus
        grace), a user who is a student of only closed courses can no longer start a
        server and is told why. A bad catalog stops the hub at start-up; a bad edit later
        is logged and the previous courses stay. Empty (default): no course files.

        .. versionadded:: 0.3
        """,
    )
    materials_volume_prefix = Unicode(
        "qustody-materials-",
        config=True,
        help="""What the name of a course's materials volume (``[materials] volume`` in its
        course file) must start with. Keeps a course file from mounting any other volume,
        a user's home above all, into its students' servers.""",
    )
    run_as = Unicode(
        "1000:1000",
        config=True,
        help="""``uid:gid`` the container's processes run as. Must not be root (uid 0); the
        image's user is 1000.""",
    )
    home_volume_template = Unicode(
        "qustody-home-{username}",
        config=True,
        help="""Name of the per-user Docker volume mounted as home; ``{username}`` is the
        user's name reduced to ``[a-z0-9-]`` plus a short hash, so names never collide.
        Only named volumes are used: no host directory is ever mounted.""",
    )
    home_mount = Unicode(
        "/home/jovyan",
        config=True,
        help="Where the home volume is mounted in the container (the image's HOME).",
    )
    tmpfs = Dict(
        value_trait=Unicode(),
        default_value={
            "/tmp": "rw,nosuid,nodev,size=512m,mode=1777",  # noqa: S108 - in the container
            "/run/jupyter": "rw,nosuid,nodev,noexec,size=16m,uid=1000,gid=1000,mode=0700",
        },
        config=True,
        help="""Writable in-memory mounts on the otherwise read-only root filesystem: path
        to Docker tmpfs options. ``/run/jupyter`` holds kernel connection files (the
        image sets JUPYTER_RUNTIME_DIR there), so kernel keys never reach the home
        volume.""",
    )
    network_mode = Unicode(
        "qustody-users",
        config=True,
        help="""Docker network of the containers: the name of Qustody's internal user
        network (default ``qustody-users``). The hub creates it at start-up when it is
        missing (a user-defined bridge with ``internal=True`` and the subnet
        ``network_subnet``) and refuses to start when a network of that name exists with
        other properties. Containers on it have no route off the subnet: they reach the hub
        and its services only through the network proxy on the bridge's host address
        (``network_proxy_port``), never the host's loopback (hub API, QPU gateway, auditor
        page, IdP, databases, Vault) and never another host.

        ``host`` shares the host's network with every kernel (a kernel can then reach every
        loopback service and squat a port a hub service needs after a restart): it needs
        ``allow_host_network`` and is refused outside demo mode. ``none``, ``bridge`` and
        ``container:...`` are refused.

        .. versionchanged:: 0.2
           The default was ``host``.
        """,
    )
    network_subnet = Unicode(
        "198.18.7.0/24",
        config=True,
        help="""IPv4 subnet of the user network (``/16`` to ``/28``). The host gets its
        first address on the bridge (``198.18.7.1`` by default); the network proxy listens
        there and nothing else of Qustody's does. The default lies in 198.18.0.0/15,
        reserved for network benchmarks, so it does not collide with a site's networks;
        choose another if it does. Must match an existing network of the same name.""",
    )
    network_proxy_port = Int(
        8000,
        config=True,
        help="""Port of the network proxy on the user network's host address: the one
        place containers reach the hub from. It forwards to the hub's public proxy, so a
        container sees exactly what a browser sees (the hub API under ``/hub/api``, the QPU
        gateway under ``/services/qpu/``), with the same authentication. Servers get their
        hub URLs (``JUPYTERHUB_API_URL``, ``QUSTODY_QPU_URL``) pointing here. Started by
        ``hub_ext.proxy.QustodyProxy`` (``c.JupyterHub.proxy_class``).""",
    )
    host_firewall = Unicode(
        "nftables",
        config=True,
        help="""Firewall on the host for the user network. ``nftables`` (default): at
        start-up the hub installs (and on every start replaces) the nftables tables
        ``inet qustody_<bridge>`` and ``bridge qustody_<bridge>``, so what containers send
        to the host is dropped unless it goes to the network proxy
        (``network_proxy_port`` on the bridge address) or answers a connection the proxy
        opened, and containers cannot reach each other. Without it a container reaches
        every host service listening on all addresses (sshd, a database, ...) and every
        other user's server. Needs ``nft`` (the ``nftables`` package) and root; the hub
        refuses to start when the tables cannot be installed.

        ``off`` installs nothing (the Docker engine runs with ``--iptables=false`` and adds
        no filtering either): only where another firewall does the same. Outside demo mode
        the hub logs a warning at every start.""",
    )
    allow_host_network = Bool(
        False,
        config=True,
        help="""Allow ``network_mode = "host"``: containers share the host's network, its
        loopback services and its ports. For a demo on a machine whose Docker engine cannot
        create bridge networks; refused at start-up outside demo mode. Off by default.""",
    )
    seccomp_profile = Unicode(
        "",
        config=True,
        help="""Path of a seccomp JSON profile on the Docker host. Empty (default) keeps
        Docker's default profile. ``unconfined`` is refused.""",
    )
    token_via_stdin = Bool(
        True,
        config=True,
        help="""Hand the server's hub API token to the container on its standard input right
        after it starts, instead of in its environment, so the token never appears in the
        container configuration (``docker inspect``). Needs the Qustody image's entry
        point.""",
    )
    activity_interval = Int(
        60,
        config=True,
        help="""Seconds between the server's activity reports to the hub
        (JUPYTERHUB_ACTIVITY_INTERVAL). The culler sees activity at most this late.""",
    )
    max_age_grace = Int(
        300,
        config=True,
        help="""Seconds past a profile's ``max_age`` (and past ``idle_timeout``) after which
        the server stops itself if the culler has not stopped it: the time limits hold
        even when the culler service is down.""",
    )
    log_max_size = Unicode(
        "10m",
        config=True,
        help="Largest container log file kept by Docker (json-file driver, two files).",
    )

    @validate("allowed_images")
    def _valid_images(self, proposal: Any) -> dict[str, str]:
        value = dict(proposal["value"])
        for name, ref in value.items():
            try:
                parse_pinned(name, ref)
            except ValueError as e:
                raise ValueError(f"SpawnPolicy.allowed_images: {e}") from None
        return value

    @validate("run_as")
    def _valid_user(self, proposal: Any) -> str:
        value = str(proposal["value"])
        m = re.fullmatch(r"(\d+)(?::(\d+))?", value)
        if not m:
            raise ValueError(
                f"SpawnPolicy.run_as={value!r}: write numeric 'uid:gid', e.g. '1000:1000'"
            )
        if int(m.group(1)) == 0:
            raise ValueError("SpawnPolicy.run_as must not be root (uid 0); use '1000:1000'")
        return value

    @validate("network_mode")
    def _valid_network(self, proposal: Any) -> str:
        value = str(proposal["value"])
        if value != "host" and (value in network.RESERVED or not network.NAME.fullmatch(value)):
            raise ValueError(
                f"SpawnPolicy.network_mode={value!r}: use the name of Qustody's internal user "
                "network (letters, digits, '_', '.', '-'; e.g. 'qustody-users'), which the hub "
                "creates; 'none', 'bridge' and 'container:...' are refused"
            )
        return value

    @validate("network_subnet")
    def _valid_subnet(self, proposal: Any) -> str:
        value = str(proposal["value"])
        try:
            network.parse_subnet(value)
        except ValueError as e:
            raise ValueError(f"SpawnPolicy.network_subnet: {e}") from None
        return value

    @validate("network_proxy_port")
    def _valid_proxy_port(self, proposal: Any) -> int:
        value = int(proposal["value"])
        if not 1 <= value <= 65535:
            raise ValueError("SpawnPolicy.network_proxy_port must be a TCP port, 1-65535")
        return value

    @validate("host_firewall")
    def _valid_firewall(self, proposal: Any) -> str:
        value = str(proposal["value"])
        if value not in ("nftables", "off"):
            raise ValueError(
                f"SpawnPolicy.host_firewall={value!r}: use 'nftables' (the default: the hub "
                "installs nftables rules so containers reach only the network proxy) or "
                "'off' (no filtering on the host: only behind a firewall of your own)"
            )
        return value

    @validate("seccomp_profile")
    def _valid_seccomp(self, proposal: Any) -> str:
        value = str(proposal["value"])
        if value.strip().lower() == "unconfined":
            raise ValueError("SpawnPolicy.seccomp_profile must not be 'unconfined'")
        return value

    @validate("tmpfs")
    def _valid_tmpfs(self, proposal: Any) -> dict[str, str]:
        value = dict(proposal["value"])
        for path, options in value.items():
            if not path.startswith("/") or path in ("/", "/home", "/etc", "/usr", "/opt"):
                raise ValueError(f"SpawnPolicy.tmpfs: {path!r} is not a valid tmpfs mount point")
            if "size=" not in options:
                raise ValueError(f"SpawnPolicy.tmpfs[{path!r}] needs a size= option")
        return value

    @validate("activity_interval", "max_age_grace")
    def _positive(self, proposal: Any) -> int:
        if proposal["value"] < 1:
            raise ValueError(f"SpawnPolicy.{proposal['trait'].name} must be at least 1 second")
        return int(proposal["value"])

    @validate("home_volume_template")
    def _valid_volume(self, proposal: Any) -> str:
        value = str(proposal["value"])
        if "/" in value or "{username}" not in value:
            raise ValueError(
                "SpawnPolicy.home_volume_template must be a volume name containing {username} "
                "(not a host path)"
            )
        return value

    # -- derived views ---------------------------------------------------------------

    @property
    def images(self) -> dict[str, PinnedImage]:
        return {name: parse_pinned(name, ref) for name, ref in self.allowed_images.items()}

    def parsed_profiles(self) -> dict[str, Profile]:
        allowed = list(self.allowed_images)
        return {name: parse_profile(name, spec, allowed) for name, spec in self.profiles.items()}

    @property
    def host_network(self) -> bool:
        """Whether containers share the host's network (the demo-only opt-in)."""
        return self.network_mode == "host"

    @property
    def network_proxy_url(self) -> str:
        """Where containers reach the hub: the network proxy on the bridge's host address."""
        return f"http://{network.host_address(self.network_subnet)}:{self.network_proxy_port}"

    def check(self) -> None:
        """Cross-setting checks, run once at start-up; ValueError says how to fix it."""
        if self.host_network and not self.allow_host_network:
            raise ValueError(
                "SpawnPolicy.network_mode = 'host' shares the host's network and loopback "
                "services with every kernel. Remove the setting to use Qustody's internal "
                "network (the default), or, for a demo only, also set "
                "SpawnPolicy.allow_host_network = True."
            )
        profiles = self.parsed_profiles()
        if not self.allowed_images:
            self.log.warning("SpawnPolicy.allowed_images is empty: no server can start")
        if not profiles:
            self.log.warning("SpawnPolicy.profiles is empty: no server can start")
        if self.courses_dir:
            try:
                self.courses().load_now()
            except CourseError as e:
                raise ValueError(f"SpawnPolicy.courses_dir: {e}") from None
        for course, name in self.course_profiles.items():
            where = f"SpawnPolicy.course_profiles[{course!r}]"
            if name not in profiles:
                raise ValueError(
                    f"{where} = {name!r} is not in SpawnPolicy.profiles "
                    f"({', '.join(profiles) or 'empty'}): name one of them"
                )
            if "student" not in profiles[name].roles:
                raise ValueError(
                    f"{where} = {name!r}, but that profile does not allow the 'student' role, "
                    "so no instructor could start it for a student: add 'student' to its "
                    "roles or name a student profile"
                )
        uid = int(self.run_as.split(":")[0])
        for path, options in self.tmpfs.items():
            m = re.search(r"(?:^|,)uid=(\d+)", options)
            if m and int(m.group(1)) != uid:
                raise ValueError(
                    f"SpawnPolicy.tmpfs[{path!r}] is owned by uid {m.group(1)} but servers run "
                    f"as {uid} (SpawnPolicy.run_as)"
                )

    def courses(self) -> LiveCatalog:
        return shared_catalog(Path(self.courses_dir), self.log, self._check_course_profiles)

    def _check_course_profiles(self, catalog: Catalog) -> None:
        profiles = self.parsed_profiles()
        for course in catalog.courses.values():
            if course.materials and not self._materials_ok(course.materials):
                raise CourseError(
                    f"{course.source}: materials.volume: {course.materials!r} does not start "
                    f"with {self.materials_volume_prefix!r} (SpawnPolicy.materials_volume_prefix)"
                    "; name the course's materials volume with that prefix"
                )
            name = course.profile
            if name and (name not in profiles or "student" not in profiles[name].roles):
                raise CourseError(
                    f"{course.source}: profile.name: {name!r} is not a hub profile that "
                    f"allows the 'student' role; student profiles: "
                    f"{', '.join(p for p, v in profiles.items() if 'student' in v.roles)}"
                )

    def _materials_ok(self, volume: str) -> bool:
        prefix = self.materials_volume_prefix
        return bool(prefix) and volume.startswith(prefix) and volume != prefix

    def materials_mounts(self, owner_groups: Iterable[str]) -> dict[str, str]:
        """Materials volume -> where it is mounted (read-only) for a user: the courses
        they take as a student, teach or assist (hub groups ``<course>:students``,
        ``<course>:instructors`` and ``<course>:assistants``). Never inside the home: the
        engine follows symlinks in a mount's target, and the home is the user's to fill
        with them."""
        catalog = self.course_catalog()
        mounts = {}
        for group in sorted(owner_groups):
            course_id, _, kind = group.rpartition(":")
            staff_or_student = kind in ("students", "instructors", "assistants")
            course = catalog.get(course_id) if staff_or_student else None
            if course is not None and course.materials and self._materials_ok(course.materials):
                mounts[course.materials] = f"{MATERIALS_ROOT}/{course.id}"
        return mounts

    def course_catalog(self) -> Catalog:
        return self.courses().current() if self.courses_dir else Catalog()

    def check_term(self, roles: Iterable[str], owner_groups: Iterable[str]) -> float | None:
        """SpawnRefused when the owner is a student of closed courses only (a researcher,
        instructor or admin keeps their own profiles). Otherwise, for a student whose
        courses all have a term, when the last of them closes (the culler stops the
        server then); None when no term binds the server."""
        if set(roles) & STAFF_ROLES or not self.courses_dir:
            return None
        catalog = self.course_catalog()
        closed = closed_courses(catalog, owner_groups, time.time())
        if closed:
            raise SpawnRefused(403, closed_message(closed))
        return term_deadline(catalog, owner_groups)

    def available(self, roles: Iterable[str]) -> list[Profile]:
        have = set(roles)
        return [p for p in self.parsed_profiles().values() if have & set(p.roles)]

    def on_behalf(
        self, requester: Requester, owner_groups: Iterable[str], user_options: Mapping[str, Any]
    ) -> Mapping[str, Any]:
        """The options a spawn requested by ``requester`` may use, or SpawnRefused.

        The owner and admins choose freely (``decide`` still applies the owner's roles).
        Anyone else must instruct a course the owner is a student of, and gets only that
        course's profile (``course_profiles``), whatever the scopes they hold say.
        """
        if requester.is_owner or requester.admin:
            return user_options
        groups = set(owner_groups)
        courses = sorted(c for c in requester.instructs if students_group(c) in groups)
        if not courses:
            raise SpawnRefused(
                403,
                "Only the owner, an admin, or an instructor of a course the owner takes as "
                "a student may start this server profile; this user is not a student of a "
                "course you instruct.",
            )
        profiles = self.parsed_profiles()
        table = {
            **self.course_profiles,
            **{
                cid: c.profile
                for cid, c in self.course_catalog().courses.items()
                if c.profile in profiles and "student" in profiles[c.profile].roles
            },
        }
        allowed = sorted({p for c in courses if (p := table.get(c, table.get("*")))})
        if not allowed:
            raise SpawnRefused(
                403,
                f"No course profile is configured for {', '.join(courses)}, so only the "
                "student can start their server. Ask an admin to set "
                "SpawnPolicy.course_profiles.",
            )
        if not isinstance(user_options, Mapping):
            raise SpawnRefused(400, "Server options must be an object.")
        requested = user_options.get("profile")
        if requested in (None, ""):
            return {**user_options, "profile": allowed[0]}
        if requested not in allowed:
            raise SpawnRefused(
                403,
                f"Profile {str(requested)[:64]!r} is not allowed: an instructor may start a "
                f"student's server only with the course profile ({', '.join(allowed)}).",
            )
        return user_options

    def decide(self, roles: Iterable[str], user_options: Mapping[str, Any]) -> Decision:
        """Which profile and image this spawn gets, or SpawnRefused saying why not."""
        roles = sorted(set(roles))
        if not isinstance(user_options, Mapping):
            raise SpawnRefused(400, "Server options must be an object.")
        unknown = sorted(set(user_options) - USER_OPTION_KEYS)
        if unknown:
            raise SpawnRefused(
                400,
                f"Unknown server options {unknown}: only 'profile' and 'image' can be chosen.",
            )
        profiles = self.parsed_profiles()
        mine = self.available(roles)
        if not mine:
            needed = sorted({r for p in profiles.values() for r in p.roles})
            raise SpawnRefused(
                403,
                f"No server profile is available for your roles ({', '.join(roles) or 'none'}). "
                + (
                    f"Ask an admin for one of the roles {', '.join(needed)}."
                    if needed
                    else "No profiles are configured (SpawnPolicy.profiles)."
                ),
            )
        names = ", ".join(p.name for p in mine)
        requested = user_options.get("profile")
        if requested in (None, ""):
            profile = mine[0]
        elif not isinstance(requested, str) or requested not in profiles:
            raise SpawnRefused(
                400, f"Unknown profile {str(requested)[:64]!r}. Profiles you may use: {names}."
            )
        elif profiles[requested] not in mine:
            raise SpawnRefused(
                403,
                f"Profile {requested!r} is not allowed for your roles ({', '.join(roles)}); it "
                f"needs one of {', '.join(profiles[requested].roles)}. Profiles you may use: "
                f"{names}.",
            )
        else:
            profile = profiles[requested]
        images = self.images
        wanted = user_options.get("image")
        if wanted in (None, ""):
            name = profile.images[0]
            if name not in images:
                raise SpawnRefused(500, f"Profile {profile.name!r} has no allowed image.")
            return Decision(profile, images[name])
        try:
            return Decision(
                profile, resolve_requested(str(wanted)[:256], images, list(profile.images))
            )
        except ImageRefused as e:
            raise SpawnRefused(400, str(e)) from None

    # -- what Docker is asked for ----------------------------------------------------

    def host_config(self, profile: Profile) -> dict[str, Any]:
        """docker-py ``create_host_config`` keyword arguments for a profile."""
        security_opt = ["no-new-privileges:true"]
        if self.seccomp_profile:
            with open(self.seccomp_profile) as f:
                security_opt.append(f"seccomp={f.read()}")
        return {
            "read_only": True,
            "cap_drop": ["ALL"],
            "cap_add": [],
            "privileged": False,
            "security_opt": security_opt,
            "pids_limit": profile.pids_limit,
            "mem_limit": profile.mem_limit,
            "memswap_limit": profile.mem_limit,
            "cpu_period": 100_000,
            "cpu_quota": int(profile.cpu_limit * 100_000),
            "tmpfs": dict(self.tmpfs),
            "network_mode": self.network_mode,
            "ipc_mode": "private",
            "auto_remove": False,  # removed explicitly, after its exit reason is read
            "devices": [],
            "log_config": {
                "type": "json-file",
                "config": {"max-size": self.log_max_size, "max-file": "2"},
            },
        }

    def volume_name(self, username: str) -> str:
        safe = re.sub(r"[^a-z0-9]+", "-", username.lower()).strip("-")[:40] or "user"
        digest = uuid.uuid5(uuid.NAMESPACE_URL, username).hex[:8]
        return self.home_volume_template.format(username=f"{safe}-{digest}")

    def environment(self, decision: Decision, started: float) -> dict[str, str]:
        p = decision.profile
        return {
            "QUSTODY_PROFILE": p.name,
            "QUSTODY_SESSION_ID": decision.session_id,
            "QUSTODY_STARTED_AT": f"{started:.0f}",
            "QUSTODY_IDLE_TIMEOUT_SECONDS": str(p.idle_timeout),
            "QUSTODY_MAX_AGE_SECONDS": str(p.max_age),
            "QUSTODY_KERNEL_IDLE_TIMEOUT_SECONDS": str(p.kernel_idle_timeout),
            "QUSTODY_MAX_AGE_GRACE_SECONDS": str(self.max_age_grace),
            "JUPYTERHUB_ACTIVITY_INTERVAL": str(self.activity_interval),
        }

    def server_args(self, profile: Profile) -> list[str]:
        """jupyter-server options: kernel culling, and self-shutdown as a backstop."""
        interval = max(5, min(60, profile.kernel_idle_timeout // 4))
        return [
            f"--MappingKernelManager.cull_idle_timeout={profile.kernel_idle_timeout}",
            f"--MappingKernelManager.cull_interval={interval}",
            "--MappingKernelManager.cull_connected=True",
            "--MappingKernelManager.cull_busy=False",
            f"--ServerApp.shutdown_no_activity_timeout={profile.idle_timeout + self.max_age_grace}",
        ]

    def labels(self, decision: Decision, user: str, server: str, started: float) -> dict[str, str]:
        return {
            f"{LABEL}.managed": "true",
            f"{LABEL}.user": user,
            f"{LABEL}.server-name": server,
            f"{LABEL}.session-id": decision.session_id,
            f"{LABEL}.profile": decision.profile.name,
            f"{LABEL}.image-name": decision.image.name,
            f"{LABEL}.image-digest": decision.image.digest,
            f"{LABEL}.started-at": f"{started:.0f}",
            f"{LABEL}.max-age-seconds": str(decision.profile.max_age),
        }

    def verify(
        self,
        container: Mapping[str, Any],
        decision: Decision,
        image_id: str,
        volume: str,
        materials: Mapping[str, str] | None = None,
    ) -> list[str]:
        """What differs between a created container and the policy (empty: all good).

        Checked on what Docker reports, so a setting dropped or overridden anywhere on
        the way (spawner config, docker-py, the engine) is caught before the start.
        """
        problems: list[str] = []
        hc: Mapping[str, Any] = container.get("HostConfig") or {}
        cfg: Mapping[str, Any] = container.get("Config") or {}
        p = decision.profile

        def expect(ok: bool, what: str) -> None:
            if not ok:
                problems.append(what)

        expect(hc.get("ReadonlyRootfs") is True, "root filesystem is not read-only")
        expect(
            [c.upper() for c in hc.get("CapDrop") or []] in (["ALL"], ["CAP_ALL"]),
            "capabilities not all dropped",
        )
        expect(not hc.get("CapAdd"), "capabilities added")
        expect(hc.get("Privileged") is False, "privileged")
        opts = [str(o) for o in hc.get("SecurityOpt") or []]
        expect(
            any(o.startswith("no-new-privileges") and not o.endswith("false") for o in opts),
            "no-new-privileges not set",
        )
        expect(
            not any("unconfined" in o or o.startswith("label=disable") for o in opts),
            "a confinement is disabled",
        )
        expect(hc.get("PidsLimit") == p.pids_limit, "pids limit differs")
        expect(hc.get("Memory") == p.mem_limit, "memory limit differs")
        expect(hc.get("MemorySwap") == p.mem_limit, "swap is allowed")
        expect(
            hc.get("CpuQuota") == int(p.cpu_limit * 100_000) and hc.get("CpuPeriod") == 100_000,
            "CPU limit differs",
        )
        expect(hc.get("NetworkMode") == self.network_mode, "network differs")
        if not self.host_network:
            attached = set(((container.get("NetworkSettings") or {}).get("Networks")) or {})
            expect(attached == {self.network_mode}, f"attached to networks {sorted(attached)}")
        expect(not hc.get("PortBindings"), "ports published on the host")
        expect(hc.get("PidMode") in ("", None), "shares a PID namespace")
        expect(hc.get("IpcMode") in ("private", "", None), "shares an IPC namespace")
        expect(hc.get("UsernsMode") in ("", None), "user namespace mode changed")
        expect(not hc.get("Devices"), "devices mapped")
        expect(not hc.get("VolumesFrom"), "volumes from another container")
        expect(set((hc.get("Tmpfs") or {}).keys()) == set(self.tmpfs), "tmpfs mounts differ")
        materials = dict(materials or {})
        binds = sorted(str(b) for b in hc.get("Binds") or [])
        wanted = sorted([f"{volume}:{self.home_mount}:rw"]
                        + [f"{name}:{target}:ro" for name, target in materials.items()])
        expect(binds == wanted, f"unexpected binds {binds}")
        for mount in hc.get("Mounts") or []:
            problems.append(f"unexpected mount {mount.get('Type')}:{mount.get('Target')}")
        for mount in container.get("Mounts") or []:
            name = mount.get("Name")
            if mount.get("Type") != "volume" or name not in {volume, *materials}:
                problems.append(
                    f"unexpected mount {mount.get('Type')} at {mount.get('Destination')}"
                )
            elif name in materials and mount.get("RW") is not False:
                problems.append(f"course materials writable at {mount.get('Destination')}")
        for item in container.get("Mounts") or []:
            if "docker.sock" in str(item.get("Source", "")):
                problems.append("the Docker socket is mounted")
        user = str(cfg.get("User") or "")
        expect(
            user == self.run_as and not user.startswith("0"), f"runs as {user or 'the image user'}"
        )
        expect(container.get("Image") == image_id, "image differs from the allowed digest")
        env_keys = {str(e).split("=", 1)[0] for e in cfg.get("Env") or []}
        if self.token_via_stdin:
            expect(not env_keys & set(TOKEN_KEYS), "the API token is in the environment")
        return problems


# -- Docker -------------------------------------------------------------------------------


class _PolicyState:
    """What both spawners keep of a spawn: the policy decision, and the limits the culler
    reads from the server's state (``admin:server_state``), handed to the server as env."""

    policy: SpawnPolicy
    user: Any
    user_options: Any
    _decision: Decision | None = None
    _limits: dict[str, Any] | None = None

    def _user_roles(self) -> set[str]:
        from jupyterhub import roles as hub_roles

        return {role.name for role in hub_roles.get_roles_for(self.user.orm_user)}

    def _requester(self) -> Requester:
        """Who asked for this start, from the hub's request handler (JupyterHub passes
        it to ``spawn``). No handler or no user: an unknown caller, refused for anyone's
        server but an admin's request."""
        from jupyterhub import roles as hub_roles

        handler = getattr(self, "handler", None)
        caller = getattr(handler, "current_user", None) if handler is not None else None
        name = str(getattr(caller, "name", "") or "")
        kind = getattr(caller, "kind", None)
        admin = "admin:servers" in (getattr(handler, "expanded_scopes", None) or ())
        if kind != "user" or caller is None:
            return Requester(name, is_owner=False, admin=admin)
        roles = {r.name for r in hub_roles.get_roles_for(caller.orm_user)}
        return Requester(
            name,
            is_owner=name == self.user.name,
            admin=admin,
            instructs=frozenset(  # instructors and TAs (observers only read)
                r.split("-", 1)[1] for r in roles if r.startswith(MANAGING_PREFIXES)
            ),
        )

    def profile_allowed_for(self, roles: Iterable[str]) -> bool:
        """Whether one of ``roles`` may use the profile this server was started with (False
        when that profile is unknown or gone from the policy)."""
        name = (self._limits or {}).get("profile")
        profile = self.policy.parsed_profiles().get(name) if isinstance(name, str) else None
        return profile is not None and bool(set(roles) & set(profile.roles))

    def _decide(self) -> Decision:
        """The policy's decision for this start: who asked, then the owner's roles."""
        groups = {g.name for g in self.user.groups}
        options = self.policy.on_behalf(self._requester(), groups, self.user_options or {})
        roles = self._user_roles()
        self._course_closes = self.policy.check_term(roles, groups)
        return self.policy.decide(roles, options)

    _course_closes: float | None = None

    def _term_limit(self) -> dict[str, int]:
        """The course deadline for the server's state (hub_ext.culling reads it)."""
        return {} if self._course_closes is None else {"course_closes": int(self._course_closes)}

    def get_state(self) -> dict[str, Any]:
        state: dict[str, Any] = super().get_state()  # type: ignore[misc]
        if self._limits:
            state["qustody"] = dict(self._limits)
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)  # type: ignore[misc]
        self._limits = dict(state.get("qustody") or {}) or None

    def clear_state(self) -> None:
        super().clear_state()  # type: ignore[misc]
        self._limits = None

    def get_env(self) -> dict[str, str]:
        env: dict[str, str] = super().get_env()  # type: ignore[misc]
        if self._decision is not None:
            started = float((self._limits or {}).get("started_at", now()))
            env.update(self.policy.environment(self._decision, started))
            profile = self._decision.profile
            ticket = spawn_ticket(self, profile.name, profile.roles)
            if ticket:
                env[TICKET_ENV] = ticket
        return env

    async def stop(self, now: bool = False) -> None:
        try:
            await super().stop(now=now)  # type: ignore[misc]
        finally:
            spawn_stopped(self)  # burn its tickets, revoke its leases

    async def poll(self) -> int | str | None:
        status: int | str | None = await super().poll()  # type: ignore[misc]
        if status is not None:
            # Stopped by itself (crash, idle or max-age exit): the hub will not call
            # stop(), so release here what stop() releases. Idempotent; nothing left is
            # a no-op, so repeated polls of a stopped server cost nothing.
            spawn_stopped(self)
        return status


@audited
class HardenedDockerSpawner(_PolicyState, DockerSpawner):  # type: ignore[misc]
    """DockerSpawner with the Qustody spawn policy (``SpawnPolicy``) applied to every server.

    Profiles replace free image choice; the container is created read-only, without
    capabilities, non-root, limited, on a per-user volume and tmpfs only, verified
    against the policy before it starts, and removed when it stops. A start that fails
    is reported with its reason (exit code and last log line) instead of a timeout.
    """

    policy = Instance(SpawnPolicy)

    @default("policy")
    def _default_policy(self) -> SpawnPolicy:
        return SpawnPolicy(parent=self)

    ready_poll_interval = Int(
        100,
        config=True,
        help="Milliseconds between readiness checks of a starting server.",
    )

    @default("remove")
    def _default_remove(self) -> bool:
        return True

    @default("prefix")
    def _default_prefix(self) -> str:
        return "qustody"

    @default("disable_user_config")
    def _default_disable_user_config(self) -> bool:
        # ~/.jupyter config in the user's volume must not switch the credential guard off.
        return True

    @default("pull_policy")
    def _default_pull_policy(self) -> str:
        return "never"

    @default("options_form")
    def _default_options_form(self) -> Any:
        return self._profile_form

    @default("options_from_form")
    def _default_options_from_form(self) -> Any:
        return _options_from_form

    def _profile_form(self, spawner: Any) -> str:
        return profile_form(self.policy.available(self._user_roles()))

    def get_env(self) -> dict[str, str]:
        env: dict[str, str] = self._on_network(super().get_env())
        if self.policy.token_via_stdin:
            for key in TOKEN_KEYS:
                env.pop(key, None)
            env["QUSTODY_TOKEN_ON_STDIN"] = "1"  # noqa: S105 - a flag, not a token
            self._ticket = env.pop(TICKET_ENV, "")  # sent after the token, not in the config
            if self._ticket:
                env["QUSTODY_TICKET_ON_STDIN"] = "1"
        return env

    _ticket = ""

    def get_args(self) -> list[str]:
        args: list[str] = super().get_args()
        if self._decision is not None:
            args += self.policy.server_args(self._decision.profile)
        return args

    async def check_allowed(self, image: str) -> str:
        # The image was chosen and checked by the policy in start(); DockerSpawner's own
        # allowed_images is not used.
        assert self._decision is not None
        return self._decision.image.ref

    async def pull_image(self, image: str) -> None:
        """Never pull by tag: the image must be present with the allowed digest."""
        assert self._decision is not None
        pinned = self._decision.image
        try:
            inspected = await self.docker("inspect_image", pinned.ref)
        except Exception:
            inspected = None
        if inspected is None and pinned.repo:
            self.log.info("Pulling %s", pinned.ref)
            try:
                await self.docker("pull", f"{pinned.repo}@{pinned.digest}")
                inspected = await self.docker("inspect_image", pinned.ref)
            except Exception:
                inspected = None
        if inspected is None:
            raise SpawnRefused(
                500,
                f"Image {pinned.describe()} is allowed but not present on the Docker engine. "
                "Ask an admin to build or load it (`make image`).",
            )
        if not pinned.matches(inspected):
            raise SpawnRefused(
                500, f"Image {pinned.describe()} on the engine does not have the allowed digest."
            )
        self._image_id = str(inspected["Id"])

    _image_id = ""

    async def start(self) -> tuple[str, int]:
        decision = self._decide()
        profile = decision.profile
        started = (
            self.orm_spawner.started.replace(tzinfo=UTC).timestamp()
            if getattr(self.orm_spawner, "started", None)
            else now()
        )
        self._decision = decision
        self._limits = {
            **profile.limits(),
            "started_at": int(started),
            "session_id": decision.session_id,
            "image": decision.image.digest,
            **self._term_limit(),
        }
        self.image = decision.image.ref
        self.mem_limit = profile.mem_limit
        self.cpu_limit = profile.cpu_limit
        volume = self.policy.volume_name(self.user.name)
        self.volumes = {volume: {"bind": self.policy.home_mount, "mode": "rw"}}
        self._materials = await self._existing_materials()
        for name, target in self._materials.items():
            self.volumes[name] = {"bind": target, "mode": "ro"}
        self.read_only_volumes: dict[str, str] = {}
        self.mounts: list[Any] = []
        self.links: dict[str, str] = {}
        self.network_name = self.policy.network_mode
        self.use_internal_ip = True  # reached on its own address: no port published on the host
        if self.policy.host_network:
            if not self.policy.allow_host_network:
                raise SpawnRefused(500, "Servers cannot start: the host network is not allowed "
                                   "(SpawnPolicy.allow_host_network). An admin must fix the "
                                   "hub's configuration.")
            self.ip = "127.0.0.1"
            self.port = random_port()
            self.hub_connect_url = None
        else:
            await self._check_network()
            self.hub_connect_url = self.policy.network_proxy_url
        self.extra_host_config = self.policy.host_config(profile)
        self.extra_create_kwargs = {
            "user": self.policy.run_as,
            "labels": self.policy.labels(decision, self.user.name, self.name, started),
            "stdin_open": self.policy.token_via_stdin,
        }
        self._volume = volume
        self.log.info(
            "Starting %s: profile %s, image %s, %s",
            self._log_name,
            profile.name,
            decision.image.describe(),
            profile.summary(),
        )
        try:
            ip, port = await super().start()
            await self._wait_ready(ip, port)
        except Exception:
            await self._remove_quietly()
            raise
        return ip, port

    _volume = ""
    _materials: dict[str, str] = {}  # noqa: RUF012 - replaced per start, never mutated

    async def _existing_materials(self) -> dict[str, str]:
        """The owner's courses' materials volumes that exist on the engine. A missing one
        is left out and logged: Docker would otherwise make an empty volume of that name."""
        wanted = self.policy.materials_mounts({g.name for g in self.user.groups})
        found = {}
        for name, target in wanted.items():
            try:
                await self.docker("inspect_volume", name)
            except Exception:
                self.log.warning("course materials volume %s is missing; %s starts without it",
                                 name, self._log_name)
                continue
            found[name] = target
        return found

    async def _check_network(self) -> None:
        """Fail closed unless the user network is still Qustody's, with the proxy on it."""
        name = self.policy.network_mode
        try:
            info = await self.docker("inspect_network", name)
        except Exception:
            info = None
        problems = (
            network.network_problems(info, self.policy.network_subnet)
            if info
            else ["it does not exist"]
        )
        if info and not network.forwarding_off(network.bridge_of(info)):
            problems.append("the host forwards its packets to other networks")
        if not problems:
            try:
                host, port = self.policy.network_proxy_url.rsplit(":", 1)
                _reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(host.removeprefix("http://"), int(port)), 5
                )
                writer.close()
            except (OSError, TimeoutError):
                problems = [
                    f"nothing listens on {self.policy.network_proxy_url} (set "
                    "c.JupyterHub.proxy_class = hub_ext.proxy.QustodyProxy)"
                ]
        if not problems and info and self.policy.host_firewall == "nftables":
            problems += await self._check_firewall(network.bridge_of(info))
        if problems:
            self.log.error("Refusing to start %s: user network %r: %s", self._log_name, name,
                           "; ".join(problems))
            raise SpawnRefused(
                500,
                "Your server was not started: the network for servers is not as the security "
                "policy requires. An admin has been told in the hub log.",
            )

    async def _check_firewall(self, bridge: str) -> list[str]:
        """The host firewall must be in place before a container joins the bridge: tables
        removed since the proxy's last check (``nft flush ruleset``) are installed again,
        and a spawn is refused when they cannot be (fail closed)."""
        try:
            installed = await asyncio.to_thread(
                firewall.ensure, bridge, self.policy.network_subnet,
                network.host_address(self.policy.network_subnet), self.policy.network_proxy_port,
            )
        except (firewall.FirewallRefused, OSError, subprocess.TimeoutExpired) as e:
            return [f"the host firewall for bridge {bridge} is missing: {e}"]
        if installed:
            self.log.warning("The host firewall for bridge %s was missing; installed it again",
                             bridge)
        return []

    def _on_network(self, env: dict[str, str]) -> dict[str, str]:
        """Point the hub URLs in a server's environment at the network proxy.

        The hub's public and API addresses are on the host's loopback, which a container
        on the internal network cannot reach; the proxy on the bridge forwards to the
        public one (JUPYTERHUB_API_URL itself comes from ``hub_connect_url``).
        """
        if self.policy.host_network:
            return env
        proxy = (self.user.settings or {}).get("proxy")
        public = str(getattr(proxy, "public_url", "") or "")
        if not public:
            return env
        parts = urlsplit(public)
        base = f"{parts.scheme}://{parts.netloc}"
        target = self.policy.network_proxy_url
        return {
            key: target + value[len(base):] if value == base or value.startswith(base + "/")
            else value
            for key, value in env.items()
        }

    async def create_object(self) -> dict[str, Any]:
        obj: dict[str, Any] = await super().create_object()
        assert self._decision is not None
        info = await self.docker("inspect_container", obj["Id"])
        problems = self.policy.verify(
            info, self._decision, self._image_id, self._volume, self._materials
        )
        if problems:
            self.object_id = obj["Id"]
            await self._remove_quietly()
            self.log.error("Refusing to start %s: %s", self._log_name, "; ".join(problems))
            raise SpawnRefused(
                500,
                "Your server was not started: its container did not match the security "
                f"policy ({'; '.join(problems)}). An admin has been told in the hub log.",
            )
        return obj

    async def start_object(self) -> None:
        if not self.policy.token_via_stdin:
            await super().start_object()
            return
        sock = await self.docker(
            "attach_socket", self.container_id, params={"stdin": 1, "stream": 1}
        )
        try:
            await self.docker("start", self.container_id)
            await asyncio.to_thread(_send_line, sock, self.api_token, ticket=self._ticket)
            self._ticket = ""
        finally:
            with contextlib.suppress(Exception):
                sock.close()

    async def get_ip_and_port(self) -> tuple[str, int]:
        if self.policy.host_network:
            return "127.0.0.1", int(self.port)
        result: tuple[str, int] = await super().get_ip_and_port()
        return result

    async def _wait_ready(self, ip: str, port: int) -> None:
        """Until the server answers, or its container exits (then say why)."""
        base = (self.server.base_url if self.server else "/").rstrip("/")
        url = f"http://{ip}:{port}{base}/api?no_track_activity=1"
        client = AsyncHTTPClient()
        deadline = time.monotonic() + max(5, self.start_timeout - 2)
        checks = 0
        while True:
            try:
                response = await client.fetch(url, request_timeout=2, raise_error=False)
                if response.code == 200:
                    return
            except (OSError, HTTPClientError):
                pass
            checks += 1
            if checks % 3 == 1:
                info = await self.docker("inspect_container", self.container_id)
                if not info["State"]["Running"]:
                    raise SpawnRefused(500, await self._exit_reason(info))
            if time.monotonic() > deadline:
                raise SpawnRefused(
                    500,
                    f"Your server did not answer within {self.start_timeout} s of starting. "
                    "Try again; if it keeps happening, ask an admin to check the hub log.",
                )
            await asyncio.sleep(self.ready_poll_interval / 1000)

    async def _exit_reason(self, info: Mapping[str, Any]) -> str:
        state = info.get("State") or {}
        code = state.get("ExitCode")
        detail = "it ran out of memory" if state.get("OOMKilled") else f"exit code {code}"
        tail = ""
        try:
            logs = await self.docker("logs", self.container_id, stdout=True, stderr=True, tail=5)
            lines = [
                ln.strip() for ln in logs.decode("utf-8", "replace").splitlines() if ln.strip()
            ]
            if lines:
                tail = f" Last message: {lines[-1][:300]}"
        except Exception:  # noqa: S110 - the reason is best effort; the exit code is enough
            pass
        if state.get("Error"):
            tail += f" Docker: {str(state['Error'])[:300]}"
        self.log.error("%s exited during start-up (%s).%s", self._log_name, detail, tail)
        return f"Your server's container stopped during start-up ({detail}).{tail}"

    async def poll(self) -> int | str | None:
        status: int | str | None = await super().poll()
        if status is not None and self.object_id:
            # Stopped on its own (crash, max-age backstop): remove it now, as the hub
            # will not call stop() for a server that is no longer running.
            await self._remove_quietly()
        return status

    async def _remove_quietly(self) -> None:
        if not self.object_id:
            return
        with contextlib.suppress(Exception):
            await self.docker("remove_container", self.object_id, v=False, force=True)
        self.object_id = ""


def _send_line(sock: Any, token: str, ticket: str = "") -> None:
    raw = getattr(sock, "_sock", sock)
    raw.sendall(token.encode() + b"\n" + (ticket.encode() + b"\n" if ticket else b""))
    with contextlib.suppress(OSError):
        raw.shutdown(socket.SHUT_WR)


def _options_from_form(formdata: Mapping[str, list[str]]) -> dict[str, str]:
    options = {}
    for key in ("profile", "image"):
        values = formdata.get(key) or []
        if values and values[0]:
            options[key] = values[0]
    return options


def profile_form(profiles: list[Profile]) -> str:
    from html import escape

    if not profiles:
        return (
            "<p>No server profile is available for your roles: your role reads through the "
            "hub's pages instead (an observer uses the instructor page, an auditor the audit "
            "page: see <em>Services</em> in the menu above). If you need a server of your "
            "own, ask an admin for a role that has one.</p>"
        )
    rows = []
    for i, p in enumerate(profiles):
        checked = " checked" if i == 0 else ""
        rows.append(
            f'<label class="form-check"><input type="radio" name="profile" '
            f'value="{escape(p.name)}"{checked}> <strong>{escape(p.display_name)}</strong> '
            f"<small>{escape(p.description)} ({escape(p.summary())})</small></label>"
        )
    return "\n".join(rows)


# -- local processes (demo without Docker) ----------------------------------------------


@audited
class QustodyLocalProcessSpawner(_PolicyState, SimpleLocalProcessSpawner):  # type: ignore[misc]
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
        return _options_from_form

    def get_args(self) -> list[str]:
        args: list[str] = super().get_args()
        if self._decision is not None:
            args += self.policy.server_args(self._decision.profile)
        if os.geteuid() == 0:
            args.append("--ServerApp.allow_root=True")
        return args

    async def start(self) -> Any:
        decision = self._decide()
        started = now()
        self._decision = decision
        self._limits = {
            **decision.profile.limits(),
            "started_at": int(started),
            "session_id": decision.session_id,
            **self._term_limit(),
        }
        self.log.warning(
            "QustodyLocalProcessSpawner: %s runs as a LOCAL PROCESS WITHOUT CONTAINER "
            "ISOLATION (no read-only root, no capability drop, no memory/CPU/pids limits). "
            "Demo use only.",
            self._log_name,
        )
        return await super().start()


# -- Kubernetes ------------------------------------------------------------------------------


def kubespawner_settings(policy: SpawnPolicy) -> dict[str, Any]:
    """The same policy as ``c.KubeSpawner`` settings (apply with ``c.KubeSpawner.update``).

    Pod and container security contexts, resource limits, a per-user PVC for home,
    memory-backed emptyDirs for the tmpfs mounts, and a ``profile_list`` callable that
    offers each user only the profiles their hub roles allow (KubeSpawner refuses any
    other slug). Per-container pids limits are a kubelet setting (``podPidsLimit``) on
    Kubernetes, so they are not part of the pod spec.
    """
    uid, _, gid = policy.run_as.partition(":")
    uid_n, gid_n = int(uid), int(gid or uid)
    profiles = policy.parsed_profiles()
    images = policy.images

    def entry(p: Profile) -> dict[str, Any]:
        image = images[p.images[0]]
        env = {
            "QUSTODY_PROFILE": p.name,
            "QUSTODY_IDLE_TIMEOUT_SECONDS": str(p.idle_timeout),
            "QUSTODY_MAX_AGE_SECONDS": str(p.max_age),
            "QUSTODY_KERNEL_IDLE_TIMEOUT_SECONDS": str(p.kernel_idle_timeout),
            "QUSTODY_MAX_AGE_GRACE_SECONDS": str(policy.max_age_grace),
            "JUPYTERHUB_ACTIVITY_INTERVAL": str(policy.activity_interval),
        }
        return {
            "display_name": p.display_name,
            "slug": p.name,
            "description": f"{p.description} ({p.summary()})".strip(),
            "kubespawner_override": {
                "image": image.ref,
                "image_pull_policy": "IfNotPresent",
                "cpu_limit": p.cpu_limit,
                "cpu_guarantee": p.cpu_limit,
                "mem_limit": p.mem_limit,
                "mem_guarantee": p.mem_limit,
                "environment": env,
                "args": policy.server_args(p),
                "extra_labels": {
                    "qustody.io/profile": p.name,
                    "qustody.io/image-digest": image.digest.replace(":", "-")[:63],
                },
            },
        }

    entries = {name: entry(p) for name, p in profiles.items()}

    def profile_list(spawner: Any) -> list[dict[str, Any]]:
        from jupyterhub import roles as hub_roles

        have = {r.name for r in hub_roles.get_roles_for(spawner.user.orm_user)}
        return [entries[p.name] for p in policy.available(have)]

    tmpfs_volumes = []
    tmpfs_mounts = []
    for i, (path, options) in enumerate(sorted(policy.tmpfs.items())):
        size = re.search(r"size=([0-9]+[kmgKMG]?)", options)
        tmpfs_volumes.append(
            {
                "name": f"tmpfs-{i}",
                "emptyDir": {
                    "medium": "Memory",
                    "sizeLimit": (size.group(1) if size else "64m").upper() + "i",
                },
            }
        )
        tmpfs_mounts.append({"name": f"tmpfs-{i}", "mountPath": path})
    return {
        "profile_list": profile_list,
        "uid": uid_n,
        "gid": gid_n,
        "fs_gid": gid_n,
        "privileged": False,
        "allow_privilege_escalation": False,
        "automount_service_account_token": False,
        "env_keep": [],
        "disable_user_config": True,
        "pod_security_context": {
            "runAsNonRoot": True,
            "runAsUser": uid_n,
            "runAsGroup": gid_n,
            "fsGroup": gid_n,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "container_security_context": {
            "runAsNonRoot": True,
            "runAsUser": uid_n,
            "runAsGroup": gid_n,
            "privileged": False,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "extra_pod_config": {
            "enableServiceLinks": False,
            "hostNetwork": False,
            "hostPID": False,
            "hostIPC": False,
        },
        "storage_pvc_ensure": True,
        "pvc_name_template": policy.home_volume_template.replace("{username}", "{user_server}"),
        "volumes": [
            {"name": "home", "persistentVolumeClaim": {"claimName": "{pvc_name}"}},
            *tmpfs_volumes,
        ],
        "volume_mounts": [{"name": "home", "mountPath": policy.home_mount}, *tmpfs_mounts],
        "delete_stopped_pods": True,
    }


# -- start-up validation -------------------------------------------------------------------

#: DockerSpawner settings the policy owns; setting them directly is refused at start-up.
_OWNED = {
    "allowed_images": "SpawnPolicy.allowed_images",
    "image": "SpawnPolicy.allowed_images and profiles",
    "volumes": "SpawnPolicy.home_volume_template",
    "read_only_volumes": "SpawnPolicy (no host mounts)",
    "mounts": "SpawnPolicy (no host mounts)",
    "extra_host_config": "SpawnPolicy",
    "extra_create_kwargs": "SpawnPolicy",
    "mem_limit": "SpawnPolicy.profiles[...]['mem_limit']",
    "cpu_limit": "SpawnPolicy.profiles[...]['cpu_limit']",
    "network_name": "SpawnPolicy.network_mode",
    "use_internal_ip": "SpawnPolicy.network_mode",
    "hub_connect_url": "SpawnPolicy.network_proxy_port (servers reach the hub there)",
    "host_ip": "SpawnPolicy.network_mode (no port is published on the host)",
    "links": "SpawnPolicy",
    "env_keep": "nothing: servers inherit no environment from the hub",
}


def validate_config(config: Config, *, demo: bool = False) -> SpawnPolicy:
    """Check the spawn policy in a hub config once, at start-up.

    Raises ValueError with a message that says what to change. Call it at the end of
    ``jupyterhub_config.py``: ``validate_config(c)``. ``demo`` says the hub runs in demo
    mode (``make demo``, or the shared-password demo login): only then may containers
    share the host's network (``SpawnPolicy.allow_host_network``).
    """
    for section in ("Spawner", "DockerSpawner", "HardenedDockerSpawner"):
        if section not in config:
            continue
        for key in config[section]:
            if key in _OWNED and not (key == "env_keep" and not config[section][key]):
                raise ValueError(
                    f"c.{section}.{key} is set, but the hardened spawner owns it: use "
                    f"{_OWNED[key]} instead (or remove the setting)."
                )
    policy = SpawnPolicy(config=config)
    policy.check()
    if policy.host_network and not demo:
        raise ValueError(
            "SpawnPolicy.network_mode = 'host' (with allow_host_network) is for demos only, "
            "and this hub is not in demo mode: every kernel would share the host's loopback "
            "services and ports. Remove both settings to use Qustody's internal network."
        )
    if policy.host_firewall == "off" and not policy.host_network and not demo:
        policy.log.warning(FIREWALL_OFF)
    return policy


#: The warning for ``SpawnPolicy.host_firewall = "off"`` outside demo mode.
FIREWALL_OFF = (
    "SECURITY: SpawnPolicy.host_firewall = 'off': no firewall on the host for the user "
    "network. Every container can reach any host service listening on all addresses or on "
    "the bridge (sshd, databases, ...) and every other user's server. Set it back to "
    "'nftables' unless a firewall of your own does the same."
)
