"""The internal Docker network user containers run on, and what is checked about it.

Qustody owns one user-defined bridge network with ``internal=True`` and an explicit
subnet (``SpawnPolicy.network_mode`` / ``SpawnPolicy.network_subnet``). Containers on it
have no route off the subnet; the only host address they can reach is the bridge's own
address (the subnet's first address), where only Qustody's network proxy listens
(``hub_ext.proxy``). Everything on the host's loopback (the hub API, the QPU gateway,
the auditor page, the IdP, PostgreSQL, Vault) is out of their reach.

``ensure_network`` creates the network when it is missing and refuses one that exists
with other properties; ``network_problems`` is the check, on what Docker reports.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

LABEL = "io.qustody.network"
NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}")
#: Docker's own networks, and modes that are not a network of ours.
RESERVED = frozenset({"bridge", "none", "default", "nat", "ingress"})


class NetworkRefused(RuntimeError):
    """The user network is missing, misconfigured or unusable; the message says how to fix it."""


def parse_subnet(value: str) -> ipaddress.IPv4Network:
    """An IPv4 subnet for the user network; ValueError says what is wrong with it."""
    try:
        net = ipaddress.IPv4Network(value, strict=True)
    except ValueError as e:
        raise ValueError(
            f"{value!r} is not an IPv4 subnet with its host bits zero ({e}); "
            "write e.g. '198.18.7.0/24'"
        ) from None
    if not 16 <= net.prefixlen <= 28:
        raise ValueError(f"{value!r}: use a prefix between /16 and /28, e.g. /24")
    if net.is_loopback or net.is_link_local or net.is_multicast or net.is_unspecified:
        raise ValueError(f"{value!r} is a loopback, link-local or multicast range")
    if net.overlaps(ipaddress.IPv4Network("0.0.0.0/8")) or net.is_reserved:
        raise ValueError(f"{value!r} is not usable for a network")
    return net


def host_address(subnet: str) -> str:
    """The host's address on the network's bridge: the subnet's first address."""
    return str(next(parse_subnet(subnet).hosts()))


def network_problems(info: Mapping[str, Any], subnet: str) -> list[str]:
    """What differs between an inspected Docker network and Qustody's (empty: all good)."""
    problems: list[str] = []
    if info.get("Driver") != "bridge":
        problems.append(f"its driver is {info.get('Driver')!r}, not 'bridge'")
    if info.get("Internal") is not True:
        problems.append("it is not internal (containers could reach beyond the host)")
    if info.get("EnableIPv6"):
        problems.append("it has IPv6 enabled")
    configs = (info.get("IPAM") or {}).get("Config") or []
    subnets = [str(cfg.get("Subnet", "")) for cfg in configs]
    if subnets != [subnet]:
        problems.append(f"its subnets are {subnets or 'none'}, not [{subnet!r}]")
    gateway = host_address(subnet)
    for cfg in configs:
        if cfg.get("Gateway") not in (None, "", gateway):
            problems.append(f"its gateway is {cfg.get('Gateway')}, not {gateway}")
    return problems


def ensure_network(client: Any, name: str, subnet: str) -> str:
    """Create the network ``name`` when missing; refuse one with other properties; stop
    the host from forwarding what containers send off the subnet. Returns its bridge.

    ``client`` is a docker-py ``APIClient``. Raises NetworkRefused saying how to fix it.
    """
    import docker.errors
    from docker.types import IPAMConfig, IPAMPool

    info = _inspect(client, name)
    if info is None:
        pool = IPAMPool(subnet=subnet, gateway=host_address(subnet))
        try:
            client.create_network(
                name,
                driver="bridge",
                internal=True,
                ipam=IPAMConfig(pool_configs=[pool]),
                labels={f"{LABEL}.managed": "true"},
                check_duplicate=True,
            )
        except docker.errors.APIError as e:
            info = _inspect(client, name)  # another hub may have created it meanwhile
            if info is None:
                raise NetworkRefused(
                    f"Could not create the user network {name!r} ({subnet}): "
                    f"{e.explanation or e}. If the subnet overlaps another network, choose "
                    "a free one in SpawnPolicy.network_subnet."
                ) from None
        else:
            info = _inspect(client, name)
    problems = network_problems(info or {}, subnet)
    if problems:
        raise NetworkRefused(
            f"The Docker network {name!r} exists but is not Qustody's internal user network: "
            f"{'; '.join(problems)}. Remove it (`docker network rm {name}`, after stopping "
            "its containers) so the hub creates it, or choose another "
            "SpawnPolicy.network_mode / network_subnet."
        )
    check_host_address(subnet, name)
    bridge = bridge_of(info or {})
    stop_forwarding(bridge, name)
    return bridge


def bridge_of(info: Mapping[str, Any]) -> str:
    """The host's bridge interface of an inspected network."""
    options = info.get("Options") or {}
    return str(options.get("com.docker.network.bridge.name") or f"br-{str(info.get('Id'))[:12]}")


def forwarding_path(bridge: str) -> Path:
    return Path("/proc/sys/net/ipv4/conf") / bridge / "forwarding"


def forwarding_off(bridge: str) -> bool:
    """Whether the host refuses to route packets that arrive on ``bridge`` elsewhere."""
    try:
        return forwarding_path(bridge).read_text().strip() == "0"
    except OSError:
        return False


def stop_forwarding(bridge: str, name: str) -> None:
    """Docker gives containers a default route via the bridge even on an internal network;
    an engine without iptables (``--iptables=false``) then leaves the host forwarding
    their packets to any other network it reaches. Turning IPv4 forwarding off for packets
    that arrive on this bridge keeps them on the subnet (the host itself and the other
    containers are not forwarded to, so nothing else changes)."""
    if forwarding_off(bridge):
        return
    with contextlib.suppress(OSError):
        forwarding_path(bridge).write_text("0\n")
    if not forwarding_off(bridge):
        raise NetworkRefused(
            f"The host forwards packets from the user network {name!r} (bridge {bridge}) to "
            "other networks, and the hub could not turn that off (it needs root). Run "
            f"`sysctl -w net.ipv4.conf.{bridge}.forwarding=0` as root, then start the hub."
        )


def check_host_address(subnet: str, name: str) -> None:
    """The host must own the bridge address, or nothing could listen for containers there."""
    address = host_address(subnet)
    with socket.socket() as s:
        try:
            s.bind((address, 0))
        except OSError:
            raise NetworkRefused(
                f"The host has no address {address} on the network {name!r}: the Docker "
                "engine and the hub must run on the same machine (or the network was "
                "created without its gateway). Recreate the network."
            ) from None


def _inspect(client: Any, name: str) -> dict[str, Any] | None:
    import docker.errors

    try:
        info: dict[str, Any] = client.inspect_network(name)
    except docker.errors.NotFound:
        return None
    except docker.errors.APIError as e:
        raise NetworkRefused(f"Could not inspect the Docker network {name!r}: {e}") from None
    return info
