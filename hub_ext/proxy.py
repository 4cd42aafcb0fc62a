"""The hub's proxy, plus the one listener user containers may reach: ``QustodyProxy``.

User containers run on Qustody's internal network (``hub_ext.network``) and can reach
only the bridge's host address. ``QustodyProxy`` is JupyterHub's configurable-http-proxy
(public side on loopback as configured) and, when the hardened Docker spawner uses the
internal network, a second configurable-http-proxy listening on
``<bridge address>:SpawnPolicy.network_proxy_port`` that forwards every request to the
public proxy. A container therefore sees exactly what a browser sees, with the same
authentication, and nothing else of the host: the hub API, the QPU gateway, the auditor
page and every other service keep listening on loopback only.

At start it creates the network when missing and refuses to start the hub when a network
of that name has other properties (``ensure_network``), then installs the host firewall
for its bridge (``hub_ext.firewall``, ``SpawnPolicy.host_firewall``) or refuses to start
when it cannot::

    c.JupyterHub.proxy_class = "hub_ext.proxy.QustodyProxy"
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

from jupyterhub.proxy import ConfigurableHTTPProxy
from jupyterhub.utils import random_port

from . import firewall
from .network import NetworkRefused, ensure_network, host_address
from .spawner import FIREWALL_OFF, HardenedDockerSpawner, SpawnPolicy

#: The hub's environment variables the network proxy (node) is started with.
_PROXY_ENV = frozenset({"PATH", "HOME", "LANG", "TZ", "NODE_PATH", "NODE_OPTIONS",
                        "NODE_EXTRA_CA_CERTS"})


class QustodyProxy(ConfigurableHTTPProxy):  # type: ignore[misc]
    """configurable-http-proxy, and its forwarder on the user network's host address."""

    _network_process: subprocess.Popen[bytes] | None = None
    #: The user network's bridge once the host firewall is installed on it.
    _firewalled_bridge: str | None = None

    def _policy(self) -> SpawnPolicy | None:
        """The spawn policy when servers run on the internal network, else None."""
        app = getattr(self, "app", None)
        spawner = getattr(app, "spawner_class", None)
        if not (isinstance(spawner, type) and issubclass(spawner, HardenedDockerSpawner)):
            return None
        policy = SpawnPolicy(config=self.config, log=self.log)
        return None if policy.host_network else policy

    async def start(self) -> None:
        policy = self._policy()
        if policy is not None:
            await asyncio.to_thread(self._ensure_network, policy)
        await super().start()
        if policy is not None and not self._network_running():
            await self._start_network_proxy(policy)

    def _ensure_network(self, policy: SpawnPolicy) -> None:
        import docker

        try:
            client = docker.from_env(timeout=60).api
        except docker.errors.DockerException as e:
            raise NetworkRefused(
                f"No Docker engine answers ({e}): start it, or point DOCKER_HOST at it."
            ) from None
        try:
            bridge = ensure_network(client, policy.network_mode, policy.network_subnet)
        finally:
            client.close()
        if policy.host_firewall == "nftables":
            address = host_address(policy.network_subnet)
            try:
                firewall.install(bridge, policy.network_subnet, address,
                                 policy.network_proxy_port)
            except firewall.FirewallRefused as e:
                raise NetworkRefused(str(e)) from None
            self._firewalled_bridge = bridge
            self.log.info(
                "Host firewall for bridge %s: containers reach only %s:%s (`nft list table "
                "inet %s`, `nft list table bridge %s`)",
                bridge, address, policy.network_proxy_port,
                firewall.table_name(bridge), firewall.table_name(bridge),
            )
        else:
            self.log.warning(FIREWALL_OFF)
        self.log.info(
            "User network %s (%s, internal): containers reach the hub at %s only",
            policy.network_mode,
            policy.network_subnet,
            policy.network_proxy_url,
        )

    def _network_running(self) -> bool:
        return self._network_process is not None and self._network_process.poll() is None

    async def _start_network_proxy(self, policy: SpawnPolicy) -> None:
        public = urlsplit(self.public_url)
        command = list(self.command)
        if not command or shutil.which(command[0]) is None:
            raise NetworkRefused(
                f"configurable-http-proxy ({command[:1]}) is not installed: the network proxy "
                "for user containers cannot start."
            )
        address = host_address(policy.network_subnet)
        pid_file = self._network_pid_file()
        _stop_leftover(pid_file, address)
        argv = [
            *command,
            "--ip", address,
            "--port", str(policy.network_proxy_port),
            "--default-target", f"{public.scheme}://{public.netloc}",
            # its own (unused) API: loopback, random port, random token
            "--api-ip", "127.0.0.1",
            "--api-port", str(random_port()),
            "--log-level", "warn",
            "--pid-file", str(pid_file),
        ]
        # Only what node needs: every container talks to this process, and the hub's own
        # environment may hold its secrets (a master key, client secrets, Vault tokens).
        env = {k: v for k, v in os.environ.items() if k in _PROXY_ENV or k.startswith("LC_")}
        env["CONFIGPROXY_AUTH_TOKEN"] = secrets.token_hex(32)
        self._network_process = subprocess.Popen(  # noqa: S603 - the configured proxy command
            argv, env=env, start_new_session=True
        )
        for _ in range(100):
            if self._network_process.poll() is not None:
                raise NetworkRefused(
                    f"The network proxy on {address}:{policy.network_proxy_port} exited "
                    f"({self._network_process.returncode}); is the port taken? Choose "
                    "another SpawnPolicy.network_proxy_port."
                )
            try:
                _r, writer = await asyncio.wait_for(
                    asyncio.open_connection(address, policy.network_proxy_port), 1
                )
            except (OSError, TimeoutError):
                await asyncio.sleep(0.1)
                continue
            writer.close()
            self.log.info(
                "Network proxy for user containers on %s:%s (pid %s) -> %s",
                address, policy.network_proxy_port, self._network_process.pid, self.public_url,
            )
            return
        raise NetworkRefused(f"The network proxy on {address} did not start within 10 s.")

    def _network_pid_file(self) -> Path:
        """Next to the public proxy's pid file: a hub killed hard leaves it behind."""
        return Path(os.path.abspath(self.pid_file or "jupyterhub-proxy.pid")).with_name(
            "qustody-network-proxy.pid"
        )

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            self._stop_network_proxy()

    def _stop_network_proxy(self) -> None:
        proc = self._network_process
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        self._network_pid_file().unlink(missing_ok=True)

    async def check_running(self) -> None:
        await super().check_running()
        policy = self._policy()
        if policy is not None and not self._network_running():
            self.log.error("The network proxy for user containers stopped; restarting it")
            await self._start_network_proxy(policy)
        bridge = self._firewalled_bridge
        # a bridge that is gone (network removed) needs no rules: spawns re-check the network
        if policy is not None and bridge and Path("/sys/class/net", bridge).exists() and (
            await asyncio.to_thread(
                firewall.ensure, bridge, policy.network_subnet,
                host_address(policy.network_subnet), policy.network_proxy_port,
            )
        ):
            self.log.error(
                "The host firewall for bridge %s was removed (nft flush ruleset?); "
                "installed it again", bridge,
            )


__all__ = ["QustodyProxy"]


def _stop_leftover(pid_file: Path, address: str) -> None:
    """Stop a network proxy a previous hub left running (its pid file, and only if that
    process is a configurable-http-proxy on ``address``)."""
    try:
        pid = int(pid_file.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        pid_file.unlink(missing_ok=True)
        return
    if any(b"configurable-http-proxy" in a for a in cmdline) and address.encode() in cmdline:
        os.kill(pid, signal.SIGTERM)
        for _ in range(50):
            if not Path(f"/proc/{pid}").exists():
                break
            time.sleep(0.1)
    pid_file.unlink(missing_ok=True)
