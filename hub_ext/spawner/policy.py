"""``SpawnPolicy``: every security decision about a user's server, for all backends.

Which images may run (by digest), which profiles exist and which hub roles may use them,
the limits each profile gets, who may start whose server (instructors, admins), course
terms, and what the container or pod must look like (checked against what the engine
created in ``verify``).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from traitlets import Bool, Dict, Int, Unicode, validate
from traitlets.config import LoggingConfigurable

from .. import network
from ..courses.catalog import Catalog
from ..courses.live import LiveCatalog, closed_courses, closed_message, term_deadline
from ..courses.live import shared as shared_catalog
from ..courses.model import CourseError, materials_ok
from ..identity.roles import students_group
from ..images import ImageRefused, PinnedImage, parse_pinned, resolve_requested
from ..traits import HintedEnum
from ..volumes import (
    HOME_MOUNT,
    HOME_VOLUME_TEMPLATE,
    home_template_error,
    home_volume_name,
    materials_overlap_error,
)
from . import hardening
from .profiles import (
    LABEL,
    MATERIALS_ROOT,
    STAFF_ROLES,
    TOKEN_KEYS,
    USER_OPTION_KEYS,
    Decision,
    Profile,
    Requester,
    SpawnRefused,
    parse_bytes,
    parse_profile,
)

#: Kernel settings of a container on the user network: no IPv6 at all. The host firewall
#: drops IPv4 between containers; before Docker 26 every container has an IPv6 link-local
#: address its neighbours can compute, which would reach them past it.
NO_IPV6 = {"net.ipv6.conf.all.disable_ipv6": "1", "net.ipv6.conf.default.disable_ipv6": "1"}
IPV6_SYSCTLS = "/proc/sys/net/ipv6"

#: Where a course's assignments volume is mounted for its staff: beside the materials,
#: on the read-only root, and no course id can make a path that is one of them.
STAFF_MATERIALS_ROOT = MATERIALS_ROOT + "-staff"


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
        HOME_VOLUME_TEMPLATE,
        config=True,
        help="""Name of the per-user Docker volume mounted as home; ``{username}`` is the
        user's name reduced to ``[a-z0-9-]`` plus a short hash, so names never collide.
        Only named volumes are used: no host directory is ever mounted.""",
    )
    home_mount = Unicode(
        HOME_MOUNT,
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
        hub URLs (``JUPYTERHUB_API_URL``, ``QUSTODY_QPU_URL``, ``QUSTODY_API_URL``) pointing
        here. Started by ``hub_ext.proxy.QustodyProxy`` (``c.JupyterHub.proxy_class``).""",
    )
    host_firewall = HintedEnum(
        ("nftables", "off"),
        "nftables",
        "use 'nftables' (the default: the hub installs nftables rules so containers reach "
        "only the network proxy) or 'off' (no filtering on the host: only behind a firewall "
        "of your own)",
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
        error = home_template_error(value)
        if error is not None:
            raise ValueError(f"SpawnPolicy.home_volume_template = {value[:80]!r} {error}")
        return value

    # -- derived views ---------------------------------------------------------------

    @property
    def images(self) -> dict[str, PinnedImage]:
        return {name: parse_pinned(name, ref) for name, ref in self.allowed_images.items()}

    def server_max_ages(self) -> dict[str, int]:
        """Profile -> seconds after which its servers must be gone: ``max_age`` plus the
        grace after which a server stops itself (the audit service alerts past it)."""
        return {name: p.max_age + self.max_age_grace
                for name, p in self.parsed_profiles().items()}

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
        overlap = materials_overlap_error(self.home_volume_template,
                                          self.materials_volume_prefix)
        if overlap is not None:
            raise ValueError(f"SpawnPolicy.home_volume_template {self.home_volume_template!r} "
                             f"{overlap} (SpawnPolicy.materials_volume_prefix)")
        profiles = self.parsed_profiles()
        if not self.allowed_images:
            self.log.warning("SpawnPolicy.allowed_images is empty: no server can start")
        if not profiles:
            self.log.warning("SpawnPolicy.profiles is empty: no server can start")
        if self.courses_dir:
            try:
                catalog = self.courses().load_now()
            except CourseError as e:
                raise ValueError(f"SpawnPolicy.courses_dir: {e}") from None
            self._warn_open_assignments(catalog)
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
        staff = _staff_volumes(catalog)
        for course in catalog.courses.values():
            for key, volume in (("volume", course.materials),
                                ("assignments_volume", course.assignments_volume)):
                if volume and not self._materials_ok(volume):
                    raise CourseError(
                        f"{course.source}: materials.{key}: {volume!r} does not start "
                        f"with {self.materials_volume_prefix!r} "
                        "(SpawnPolicy.materials_volume_prefix); name the course's "
                        f"{'materials' if key == 'volume' else 'assignments'} volume with "
                        "that prefix"
                    )
            if course.materials in staff:
                raise CourseError(
                    f"{course.source}: materials.volume: {course.materials!r} is the "
                    f"assignments_volume of {staff[course.materials]}, which students must "
                    "not read; name another volume"
                )
            name = course.profile
            if name and (name not in profiles or "student" not in profiles[name].roles):
                raise CourseError(
                    f"{course.source}: profile.name: {name!r} is not a hub profile that "
                    f"allows the 'student' role; student profiles: "
                    f"{', '.join(p for p, v in profiles.items() if 'student' in v.roles)}"
                )

    def _warn_open_assignments(self, catalog: Catalog) -> None:
        for course in catalog.courses.values():
            if course.assignments and not course.assignments_volume:
                self.log.warning(
                    "courses: %s: its assignments are released from its materials volume "
                    "%s, which its students can read before each release time; set "
                    "[materials] assignments_volume (docs/courses.md)", course.id,
                    course.materials)

    def _materials_ok(self, volume: str) -> bool:
        return materials_ok(self.materials_volume_prefix, volume)

    def materials_mounts(self, owner_groups: Iterable[str]) -> dict[str, str]:
        """Volume -> where it is mounted (read-only) for a user: the materials of the
        courses they take as a student, teach or assist (hub groups ``<course>:students``,
        ``<course>:instructors`` and ``<course>:assistants``), and, for instructors and
        TAs only, the course's assignments volume. Never inside the home: the engine
        follows symlinks in a mount's target, and the home is the user's to fill with
        them. A volume that is not allowed (a reload the check refused) is left out."""
        catalog = self.course_catalog()
        staff_only = _staff_volumes(catalog)
        mounts = {}
        for group in sorted(owner_groups):
            course_id, _, kind = group.rpartition(":")
            staff_or_student = kind in ("students", "instructors", "assistants")
            course = catalog.get(course_id) if staff_or_student else None
            if course is None:
                continue
            shared = course.materials
            if shared and self._materials_ok(shared) and shared not in staff_only:
                mounts[shared] = f"{MATERIALS_ROOT}/{course.id}"
            own = course.assignments_volume
            if kind != "students" and own and self._materials_ok(own):
                mounts[own] = f"{STAFF_MATERIALS_ROOT}/{course.id}"
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
        extra: dict[str, Any] = {"sysctls": dict(NO_IPV6)} if self._ipv6_to_disable() else {}
        return {
            **extra,
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

    def _ipv6_to_disable(self) -> bool:
        """Whether containers get IPv6 switched off: on the user network of a host that
        has IPv6 (booted with ``ipv6.disable=1``, it has none to switch off, and the
        engine could not write the setting)."""
        return not self.host_network and os.path.isdir(IPV6_SYSCTLS)

    def tmpfs_sizes(self) -> dict[str, int]:
        """Each tmpfs path's size in bytes (from its ``size=`` option)."""
        sizes = {}
        for path, options in self.tmpfs.items():
            size = re.search(r"(?:^|,)size=([0-9.]+[kmgKMG]?)", options)
            sizes[path] = parse_bytes(size.group(1) if size else "64M")
        return sizes

    def volume_name(self, username: str) -> str:
        return home_volume_name(self.home_volume_template, username)

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

    def expected(self, decision: Decision, image: str) -> hardening.Expected:
        """What ``hardening.problems`` checks a server against, for ``decision``; ``image``
        is how the engine names the allowed image (Docker: its id; Kubernetes: the ref)."""
        p = decision.profile
        return hardening.Expected(
            user=self.run_as, memory_limit=p.mem_limit, cpu_limit=p.cpu_limit, image=image,
            network=self.network_mode,
        )

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
        hc: Mapping[str, Any] = container.get("HostConfig") or {}
        cfg: Mapping[str, Any] = container.get("Config") or {}
        p = decision.profile
        problems = hardening.problems(
            hardening.from_docker(container), self.expected(decision, image_id)
        )

        def expect(ok: bool, what: str) -> None:
            if not ok:
                problems.append(what)

        expect(hc.get("PidsLimit") == p.pids_limit, "pids limit differs")
        expect(hc.get("NetworkMode") == self.network_mode, "network differs")
        if not self.host_network:
            attached = set(((container.get("NetworkSettings") or {}).get("Networks")) or {})
            expect(attached == {self.network_mode}, f"attached to networks {sorted(attached)}")
            if self._ipv6_to_disable():
                expect(dict(hc.get("Sysctls") or {}) == NO_IPV6, "IPv6 is not disabled")
        expect(not hc.get("PortBindings"), "ports published on the host")
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
        env_keys = {str(e).split("=", 1)[0] for e in cfg.get("Env") or []}
        if self.token_via_stdin:
            expect(not env_keys & set(TOKEN_KEYS), "the API token is in the environment")
        return problems


def _staff_volumes(catalog: Catalog) -> dict[str, str]:
    """Assignments volume -> its course: never mounted as any course's materials."""
    return {c.assignments_volume: c.id for c in catalog.courses.values()
            if c.assignments_volume}
