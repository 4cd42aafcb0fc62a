"""``HardenedDockerSpawner``: the spawn policy on a Docker engine.

The container is created read-only, without capabilities, non-root, limited, on a
per-user volume and tmpfs only, on Qustody's internal network, checked against the policy
(``SpawnPolicy.verify``) before it starts, and removed when it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import subprocess
import time
from collections.abc import Mapping
from datetime import UTC
from typing import Any
from urllib.parse import urlsplit

from dockerspawner import DockerSpawner
from jupyterhub.utils import random_port
from tornado.httpclient import AsyncHTTPClient, HTTPClientError
from traitlets import Instance, Int, default

from .. import firewall, network
from ..audit.lifecycle import audited
from ..secrets.spawn import TICKET_ENV
from ..volumes import HOME_OWNER
from .launch import PolicyLaunch, options_from_form, profile_form
from .policy import SpawnPolicy
from .profiles import TOKEN_KEYS, SpawnRefused, now

#: Label images/build.py sets to the sha256 of the image's SBOM (build/image/sbom-image.cdx.json)
SBOM_LABEL = "io.qustody.image.sbom-sha256"
_SHA256 = re.compile(r"[0-9a-f]{64}")


def sbom_sha256(inspected: Mapping[str, Any]) -> str:
    """The image's SBOM digest from ``docker image inspect`` output, or "" when the image
    has no well-formed one (built before SBOMs, or elsewhere)."""
    labels = (inspected.get("Config") or {}).get("Labels") or {}
    value = labels.get(SBOM_LABEL)
    return value if isinstance(value, str) and _SHA256.fullmatch(value) else ""


@audited
class HardenedDockerSpawner(PolicyLaunch, DockerSpawner):  # type: ignore[misc]
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
        return options_from_form

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
        self.image_sbom_sha256 = sbom_sha256(inspected)

    _image_id = ""
    #: SHA-256 of the CycloneDX SBOM the running image was built with (its
    #: ``io.qustody.image.sbom-sha256`` label), for the ``server-started`` record's
    #: ``sbom_sha256``; empty for an image without the label (it still spawns).
    image_sbom_sha256 = ""

    async def start(self) -> tuple[str, int]:
        started = (
            self.orm_spawner.started.replace(tzinfo=UTC).timestamp()
            if getattr(self.orm_spawner, "started", None)
            else now()
        )
        decision = self.begin(started)
        profile = decision.profile
        self.image = decision.image.ref
        self.mem_limit = profile.mem_limit
        self.cpu_limit = profile.cpu_limit
        volume = self.policy.volume_name(self.user.name)
        await self._own_home(volume)
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

    async def _own_home(self, volume: str) -> None:
        """Create the home volume labelled with its owner, or refuse one labelled for
        another user. A home's name holds 32 bits of a hash of the user name: someone
        who may choose their name at the IdP could find one that names another user's
        home. A volume without the label (made before the hub labelled homes) is used."""
        import docker.errors

        try:
            info = await self.docker("inspect_volume", volume)
        except docker.errors.NotFound:
            await self.docker("create_volume", volume, labels={HOME_OWNER: self.user.name})
            return
        owner = ((info or {}).get("Labels") or {}).get(HOME_OWNER)
        if owner is not None and owner != self.user.name:
            self.log.error("%s: home volume %s belongs to %r, not %r; not started",
                           self._log_name, volume, owner, self.user.name)
            raise SpawnRefused(
                500, "Your server cannot start: its home volume belongs to another account. "
                "An admin must look at the hub's log (rename this account at the identity "
                "provider, or move the volume)."
            )

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
        # DockerSpawner runs every Docker call of every spawn on one thread: ask the engine
        # whether the container still runs once a second, not at every readiness poll
        next_inspect = time.monotonic() + 1.0
        while True:
            try:
                response = await client.fetch(url, request_timeout=2, raise_error=False)
                if response.code == 200:
                    return
            except (OSError, HTTPClientError):
                pass
            if time.monotonic() >= next_inspect:
                next_inspect = time.monotonic() + 1.0
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

