"""The host firewall for Qustody's user network: nftables tables the hub owns.

The internal network keeps containers off other networks, but the host's own address on
the bridge is still one hop away, and the Docker engine here adds no filtering
(``--iptables=false``). Without a firewall a container reaches every host service that
listens on all addresses (sshd, a database, ...) or on the bridge address, and every
other container on the bridge. ``install`` replaces, in one atomic ``nft -f -``
transaction, two tables named after the bridge:

- ``inet qustody_<bridge>``: what arrives on the bridge for the host is dropped unless it
  belongs to a connection already allowed (replies to the proxy's connections into the
  servers) or opens a TCP connection to the network proxy (bridge address, port
  ``SpawnPolicy.network_proxy_port``). IPv6 and ICMP from the bridge are dropped. Nothing
  is routed into or out of the bridge either, whatever ``forwarding`` says (a change of
  ``net.ipv4.ip_forward`` resets it on every interface).
- ``bridge qustody_<bridge>``: IPv4 frames from an address of the subnet that the bridge
  would forward from one port to another (container to container, broadcast and
  multicast too) are dropped, and ARP between two of its addresses. This kernel has no
  bridge-name match (``meta ibrname``), so the subnet is the match; containers hold no
  capability to forge frames (``cap_drop=ALL``), and the spawner starts them with IPv6
  disabled (``policy.NO_IPV6``; checked on each created container).

The hub checks with the proxy (every few seconds) that both tables are still there and
installs them again when something removed them. It never removes them itself: while it
is down, its containers may still run. ``remove`` is for tests and for an admin who
removes the network (``nft delete table``).
"""

from __future__ import annotations

import ipaddress
import re
import shutil
import subprocess

#: Where ``nft`` is looked for when it is not on PATH (services often run without sbin).
SBIN = "/usr/sbin:/sbin:/usr/bin:/bin"
_IFNAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")


class FirewallRefused(RuntimeError):
    """The host firewall could not be installed; the message says how to fix it."""


def table_name(bridge: str) -> str:
    """The name of Qustody's tables for ``bridge`` (nft names take no '-')."""
    return "qustody_" + bridge.replace("-", "_").replace(".", "_")


def ruleset(bridge: str, subnet: str, host_ip: str, port: int) -> str:
    """The nft script that (re)creates both tables for ``bridge`` in one transaction."""
    if not _IFNAME.fullmatch(bridge):
        raise ValueError(f"{bridge!r} is not an interface name")
    net = ipaddress.IPv4Network(subnet)
    address = ipaddress.IPv4Address(host_ip)
    if address not in net or not 1 <= int(port) <= 65535:
        raise ValueError(f"{host_ip}:{port} is not a TCP address on {subnet}")
    table = table_name(bridge)
    # "table X" then "delete table X" makes the delete valid when X does not exist yet;
    # nft applies the whole script as one transaction, so no packet sees a gap.
    return f"""\
table inet {table}
delete table inet {table}
table inet {table} {{
    chain input {{
        type filter hook input priority filter - 10; policy accept;
        iifname "{bridge}" ct state established,related accept
        iifname "{bridge}" meta nfproto ipv4 ip daddr {address} tcp dport {int(port)} \
ct state new accept
        iifname "{bridge}" drop
    }}
    chain forward {{
        type filter hook forward priority filter - 10; policy accept;
        iifname "{bridge}" drop
        oifname "{bridge}" drop
    }}
}}
table bridge {table}
delete table bridge {table}
table bridge {table} {{
    chain forward {{
        type filter hook forward priority filter - 10; policy accept;
        ether type ip ip saddr {net} drop
        ether type arp arp saddr ip {net} drop
        ether type arp arp daddr ip {net} drop
    }}
}}
"""


def nft_command() -> str | None:
    """The ``nft`` executable, or None when nftables is not installed."""
    return shutil.which("nft") or shutil.which("nft", path=SBIN)


def install(bridge: str, subnet: str, host_ip: str, port: int) -> None:
    """Install (or replace) the tables for ``bridge``; FirewallRefused says how to fix it."""
    script = ruleset(bridge, subnet, host_ip, port)
    how = (
        "Install the `nftables` package (`apt-get install nftables`) and start the hub as "
        "root (or with CAP_NET_ADMIN), or set SpawnPolicy.host_firewall = 'off' and accept "
        "that containers reach every service listening on the host and each other."
    )
    nft = nft_command()
    if nft is None:
        raise FirewallRefused(
            f"SpawnPolicy.host_firewall = 'nftables' but `nft` is not installed. {how}"
        )
    try:
        done = subprocess.run(  # noqa: S603 - fixed argv, script on stdin
            [nft, "-f", "-"], input=script, capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise FirewallRefused(f"Could not run {nft} ({e}). {how}") from None
    if done.returncode != 0:
        raise FirewallRefused(
            f"nft refused the firewall for the user network's bridge {bridge}: "
            f"{done.stderr.strip()[-500:]}. {how}"
        )


def present(bridge: str) -> bool:
    """Whether both tables for ``bridge`` are installed with exactly Qustody's rules (a
    ``flush ruleset`` removes them; a ``flush table`` empties them; an inserted rule,
    say an ``accept`` before the ``drop``, changes them)."""
    nft = nft_command()
    if nft is None:
        return False
    table = table_name(bridge)
    listed = {}
    for family in ("inet", "bridge"):
        done = subprocess.run(  # noqa: S603 - fixed argv
            [nft, "list", "table", family, table], capture_output=True, text=True,
            timeout=30, check=False,
        )
        if done.returncode != 0:
            return False
        listed[family] = _rules(done.stdout)
    inet, bridged = listed["inet"], listed["bridge"]
    return (
        len(inet) == 5
        and inet[0] == f'iifname "{bridge}" ct state established,related accept'
        and inet[1].startswith(f'iifname "{bridge}" ')
        and inet[1].endswith(" ct state new accept") and " tcp dport " in inet[1]
        and inet[2] == f'iifname "{bridge}" drop'
        and inet[3:] == [f'iifname "{bridge}" drop', f'oifname "{bridge}" drop']
        and len(bridged) == 3 and all(r.endswith(" drop") for r in bridged)
        and " daddr " not in bridged[0]
    )


def _rules(listing: str) -> list[str]:
    """The rule lines of an ``nft list table`` output (not the table, chain or hook)."""
    return [
        line.strip() for line in listing.splitlines()
        if line.strip() and not line.strip().startswith(("table ", "chain ", "type ", "}"))
    ]


def ensure(bridge: str, subnet: str, host_ip: str, port: int) -> bool:
    """Install the tables for ``bridge`` if they are missing; True when they were (the
    caller logs it). FirewallRefused when they cannot be installed."""
    if present(bridge):
        return False
    install(bridge, subnet, host_ip, port)
    return True


def remove(bridge: str) -> None:
    """Delete both tables for ``bridge`` (absent tables are fine)."""
    nft = nft_command()
    if nft is None:
        return
    table = table_name(bridge)
    for family in ("inet", "bridge"):
        subprocess.run(  # noqa: S603 - fixed argv
            [nft, "delete", "table", family, table], capture_output=True, timeout=30, check=False
        )
