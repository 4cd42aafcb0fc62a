"""User containers on Qustody's internal network, tried the way a hostile student would.

Against a real hub (the reference configuration), the real proxy, a real Docker engine,
the real OpenID provider and a real PostgreSQL cluster, all on the host's loopback: from
inside a student's container none of their ports can be reached, the container has no
route off its subnet, and only the network proxy on the bridge answers; ports bound
inside a container change nothing for the hub, its services or another user. Start-up
refuses the host network outside demo mode, a network of the right name with the wrong
properties, and a silent fallback to local processes.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import re
import secrets
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from hubtest import (
    Hub,
    HubError,
    UserNetwork,
    docker,
    docker_names,
    failed,
    free_port,
    free_test_subnet,
    launch_hub,
    stop_all_servers,
)
from identity.idp import Idp, start_idp
from pgserver import PgCluster

from hub_ext import firewall

ROOT = Path(__file__).resolve().parents[2]
PYTHON = "/opt/qustody/venv/bin/python"

PROBE = """
import json, socket, sys
out = {}
for host, port in json.loads(sys.argv[1]):
    s = socket.socket()
    s.settimeout(3)
    try:
        s.connect((host, port))
        out[f"{host}:{port}"] = "open"
    except OSError as e:
        out[f"{host}:{port}"] = type(e).__name__
    finally:
        s.close()
print(json.dumps(out))
"""

SQUATTER = """
import socket, sys, threading
def serve(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen()
    while True:
        c, _ = s.accept()
        c.recv(65536)
        c.sendall(b"HTTP/1.0 200 OK\\r\\nContent-Length: 5\\r\\n\\r\\nSQUAT")
        c.close()
for p in sys.argv[1:]:
    threading.Thread(target=serve, args=(int(p),), daemon=True).start()
threading.Event().wait()
"""

FETCH = """
import json, sys, urllib.request, urllib.error
out = {}
for url in sys.argv[1:]:
    try:
        with urllib.request.urlopen(url, timeout=20) as r:
            out[url] = [r.status, r.read(300).decode("utf-8", "replace")]
    except urllib.error.HTTPError as e:
        out[url] = [e.code, e.read(300).decode("utf-8", "replace")]
    except OSError as e:
        out[url] = [0, type(e).__name__]
print(json.dumps(out))
"""


def _answers(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(3)
        return s.connect_ex((host, port)) == 0


#: Listens for UDP on a port, appending what arrives to a file (run in the background).
UDP_LISTENER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
while True:
    data, peer = s.recvfrom(512)
    with open(sys.argv[2], "ab") as f:
        f.write(data + b"\\n")
"""
#: Sends a datagram to each address (broadcast allowed); then what the container's IPv6 is.
UDP_SENDER = """
import json, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
sent = {}
for host in sys.argv[2:]:
    try:
        s.sendto(b"from-alice " + host.encode(), (host, int(sys.argv[1])))
        sent[host] = "sent"
    except OSError as e:
        sent[host] = type(e).__name__
sent["disable_ipv6"] = open("/proc/sys/net/ipv6/conf/all/disable_ipv6").read().strip()
sent["ipv6_addresses"] = open("/proc/net/if_inet6").read().strip()
print(json.dumps(sent))
"""


def in_container(cid: str, script: str, *args: str) -> dict:
    return json.loads(docker("exec", cid, PYTHON, "-c", script, *args).strip().splitlines()[-1])


def container_of(prefix: str, user: str) -> str:
    [cid] = docker(
        "ps", "-q", "--filter", f"name={prefix}", "--filter", f"label=io.qustody.user={user}"
    ).split()
    return cid


def hub_ports(hub: Hub) -> dict[str, int]:
    """The loopback ports of this hub's own listeners, from the config the harness wrote."""
    text = (hub.dir / "jupyterhub_test_config.py").read_text()

    def port(pattern: str) -> int:
        match = re.search(pattern, text)
        assert match, pattern
        return int(match.group(1))

    return {
        "hub API": port(r'hub_bind_url = "http://127\.0\.0\.1:(\d+)"'),
        "proxy API": port(r'ConfigurableHTTPProxy\.api_url = "http://127\.0\.0\.1:(\d+)"'),
        "public proxy": int(hub.url.rstrip("/").rsplit(":", 1)[1]),
    }


@pytest.fixture(scope="module")
def services() -> Iterator[dict[str, int]]:
    """A real OpenID provider and a real PostgreSQL cluster on the host's loopback, and
    free ports for the hub's QPU gateway, auditor page and instructor page."""
    idp: Idp = start_idp({"probe": {"password": secrets.token_hex(8), "groups": [], "amr": ["pwd"]}})
    pg = PgCluster().start()
    try:
        yield {
            "QPU gateway": free_port(),
            "auditor page": free_port(),
            "instructor page": free_port(),
            "qustody service": free_port(),
            "IdP": int(idp.issuer.rstrip("/").rsplit(":", 1)[1]),
            "PostgreSQL": pg.port,
        }
    finally:
        idp.stop()
        pg.stop()


@pytest.fixture(scope="module")
def shared_hub(
    module_user_network: UserNetwork, shared_prefix: str, singleuser_image: str,
    services: dict[str, int], tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Hub]:
    """The reference configuration with Docker, its gateway and auditor page on the
    ``services`` ports, on the module's own internal network."""
    hub = launch_hub(
        tmp_path_factory.mktemp("user-network") / "hub",
        extra=module_user_network.config()
        + f'c.SpawnPolicy.home_volume_template = "{shared_prefix}-home-{{username}}"\n'
        + f'c.HardenedDockerSpawner.prefix = "{shared_prefix}"\n',
        env={
            "QUSTODY_IMAGE_DIGEST": singleuser_image,
            "QUSTODY_QPU_PORT": str(services["QPU gateway"]),
            "QUSTODY_AUDIT_PAGE_PORT": str(services["auditor page"]),
            "QUSTODY_COURSES_PAGE_PORT": str(services["instructor page"]),
            "QUSTODY_API_PORT": str(services["qustody service"]),
        },
        timeout=180,  # the machine is shared: starting the gateway can take a while
    )
    yield hub
    hub.stop()


@pytest.fixture
def hub(shared_hub: Hub, shared_prefix: str, request: pytest.FixtureRequest) -> Iterator[Hub]:
    """``shared_hub``, whose servers are stopped after each test that used it (and whose
    log of the test is printed if it failed)."""
    start = len(shared_hub.log())
    yield shared_hub
    if failed(request):
        print(f"\n===== hub log, this test =====\n{shared_hub.log()[start:][-20000:]}")
    stop_all_servers(shared_hub)
    shared_hub.wait_for(lambda: not docker("ps", "-q", "--filter", f"name={shared_prefix}"),
                        timeout=60, what="the test's containers gone")


@pytest.fixture
def prefix(request: pytest.FixtureRequest, docker_engine: str) -> Iterator[str]:
    yield from docker_names(request)


@pytest.fixture(scope="module")
def shared_prefix(request: pytest.FixtureRequest, docker_engine: str) -> Iterator[str]:
    yield from docker_names(request)


class _OtherNetwork:
    """A second network of this test's own with a listener container on it."""

    def __init__(self, name: str, container: str, ip: str) -> None:
        self.name, self.container, self.ip = name, container, ip

    @classmethod
    def start(cls, net: UserNetwork, prefix: str, image: str) -> _OtherNetwork:
        name = f"{net.name}-other"
        docker("network", "create", "--subnet", _other_subnet(net.subnet), name)
        cid = docker(
            "run", "-d", "--name", f"{prefix}-other", "--network", name, "--user", "1000:1000",
            "--entrypoint", PYTHON, image, "-c", SQUATTER, "9000",
        ).strip()
        [info] = json.loads(docker("inspect", cid))
        return cls(name, cid, info["NetworkSettings"]["Networks"][name]["IPAddress"])

    def remove(self) -> None:
        docker("rm", "-f", self.container, check=False)
        docker("network", "rm", self.name, check=False)


@pytest.mark.docker
def test_spawn_is_refused_when_the_network_is_no_longer_internal(
    user_network: UserNetwork, start_hub, prefix: str, singleuser_image: str
) -> None:
    hub = start_hub(
        extra=user_network.config() + f'c.HardenedDockerSpawner.prefix = "{prefix}"\n'
        + f'c.SpawnPolicy.home_volume_template = "{prefix}-home-{{username}}"\n',
        env={"QUSTODY_IMAGE_DIGEST": singleuser_image},
        timeout=180,
    )
    old_id = docker("network", "inspect", "--format", "{{.Id}}", user_network.name).strip()
    docker("network", "rm", user_network.name)
    firewall.remove(f"br-{old_id[:12]}")  # the fixture removes only the new network's
    docker("network", "create", "--subnet", user_network.subnet, user_network.name)
    code, body = hub.api("POST", "/users/alice/server", {})
    assert code == 500, body
    assert "network for servers is not as the security policy requires" in body["message"]
    assert not docker("ps", "-aq", "--filter", f"name={prefix}").split()
    assert "it is not internal" in hub.log()


def _other_subnet(taken: str) -> str:
    import ipaddress

    return free_test_subnet([ipaddress.IPv4Network(taken)])


@pytest.mark.docker
@pytest.mark.parametrize("kind", ["not internal", "other subnet"])
def test_hub_refuses_to_start_on_a_network_that_is_not_its_own(
    user_network: UserNetwork, tmp_path: Path, kind: str
) -> None:
    if kind == "not internal":
        docker("network", "create", "--subnet", user_network.subnet, user_network.name)
        expected = "it is not internal"
    else:
        docker("network", "create", "--internal", "--subnet", _other_subnet(user_network.subnet),
               user_network.name)
        expected = f"not [{user_network.subnet!r}]"
    started: list[Hub] = []
    with pytest.raises(HubError) as refused:
        launch_hub(tmp_path / "hub", extra=user_network.config(), started=started,
                   env={"QUSTODY_IMAGE_DIGEST": "sha256:" + "1" * 64}, timeout=180)
    for hub in started:
        hub.stop()
    message = str(refused.value)
    assert "is not Qustody's internal user network" in message and expected in message, message


# -- start-up refusals: host network and local processes outside demo mode ----------------

OIDC = {
    "QUSTODY_OIDC_CLIENT_ID": "hub",
    "QUSTODY_OIDC_CLIENT_SECRET": "s-" + secrets.token_hex(16),
    "JUPYTERHUB_CRYPT_KEY": secrets.token_hex(32),
    "QUSTODY_DEMO_MODE": "",
    "QUSTODY_SPAWNER": "",
}


def oidc_env(**changes: str) -> dict[str, str]:
    # never contacted: these hubs refuse at start-up, or are only asked for their API
    return {"QUSTODY_OIDC_ISSUER": f"http://127.0.0.1:{free_port()}", **OIDC, **changes}


HOST_NETWORK = {
    "QUSTODY_IMAGE_DIGEST": "sha256:" + "1" * 64,
    "QUSTODY_USER_NETWORK": "host",
    "QUSTODY_ALLOW_HOST_NETWORK": "1",
}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (HOST_NETWORK, "for demos only, and this hub is not in demo mode"),
        (
            {**HOST_NETWORK, "QUSTODY_ALLOW_HOST_NETWORK": ""},
            "network_mode = 'host' shares the host's network",
        ),
        (
            {"QUSTODY_IMAGE_DIGEST": ""},
            "QUSTODY_IMAGE_DIGEST is not set, so servers would run as local processes",
        ),
    ],
    ids=["host-network", "host-network-without-opt-in", "local-fallback"],
)
def test_start_up_refuses_outside_demo_mode(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    started: list[Hub] = []
    with pytest.raises(HubError) as refused:
        launch_hub(tmp_path / "hub", env=oidc_env(**env), started=started, timeout=120)
    for hub in started:
        hub.stop()
    assert message in str(refused.value), str(refused.value)[-3000:]


@pytest.mark.parametrize("case", ["host-network", "local-fallback"])
def test_demo_mode_may_use_them(tmp_path: Path, case: str) -> None:
    env = oidc_env(QUSTODY_DEMO_MODE="1", QUSTODY_IMAGE_DIGEST="")
    if case == "host-network":
        env.update(HOST_NETWORK)
    hub = launch_hub(tmp_path / "hub", env=env, timeout=120)
    try:
        assert hub.api("GET", "/")[0] == 200
        log = hub.log()
        if case == "local-fallback":
            assert "LOCAL PROCESSES" in log
        else:
            assert "Network proxy for user containers" not in log
    finally:
        hub.stop()


@pytest.mark.docker
def test_make_demo_uses_the_internal_network(
    user_network: UserNetwork, singleuser_image: str, tmp_path: Path
) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    env = {k: v for k, v in os.environ.items() if not k.startswith(("QUSTODY_", "JUPYTERHUB_"))}
    env.update(
        PATH=f"{Path(sys.executable).parent}:{env['PATH']}",
        QUSTODY_IMAGE_DIGEST=singleuser_image,
        QUSTODY_USER_NETWORK=user_network.name,
        QUSTODY_USER_SUBNET=user_network.subnet,
    )
    out = tmp_path / "demo.out"
    with out.open("w") as sink:
        demo = subprocess.Popen(
            [sys.executable, "-m", "hub_ext.demo", "--state", str(tmp_path / "state"),
             "--port", "0"],
            cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True,
        )
    proxy = f"http://{user_network.host_ip}:8000/hub/api/"
    try:
        deadline = time.monotonic() + 240
        answered = False
        # the banner comes once the hub answers on its public port, a moment after this
        while time.monotonic() < deadline and demo.poll() is None and not (
            answered and "Stop with Ctrl-C" in out.read_text()
        ):
            with contextlib.suppress(requests.RequestException):
                answered = answered or requests.get(proxy, timeout=2).status_code == 200
            time.sleep(0.5)
        text = out.read_text()
        assert answered, text[-4000:]
        assert f"on the internal network {user_network.name} ({user_network.subnet})" in text
        [info] = json.loads(docker("network", "inspect", user_network.name))
        assert info["Internal"] is True
    finally:
        os.killpg(demo.pid, signal.SIGINT)
        try:
            demo.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()
    # Ctrl-C stops the network proxy with the hub
    with socket.socket() as probe:
        assert probe.connect_ex((user_network.host_ip, 8000)) != 0, "the network proxy outlived it"


# -- the host firewall (SpawnPolicy.host_firewall) ----------------------------------------


def _listener(host: str) -> socket.socket:
    """A TCP listener on the host (connections complete in its backlog, no accept)."""
    s = socket.socket()
    s.bind((host, 0))
    s.listen(16)
    return s


@pytest.mark.docker
@pytest.mark.parametrize("setting", ["nftables", "off"])
def test_the_host_firewall_lets_containers_reach_only_the_network_proxy(
    user_network: UserNetwork, start_hub, prefix: str, singleuser_image: str, setting: str
) -> None:
    hub = start_hub(
        extra=user_network.config() + f'c.HardenedDockerSpawner.prefix = "{prefix}"\n'
        + f'c.SpawnPolicy.home_volume_template = "{prefix}-home-{{username}}"\n'
        + f'c.SpawnPolicy.host_firewall = "{setting}"\n',
        env={"QUSTODY_IMAGE_DIGEST": singleuser_image, "QUSTODY_TEST_HUB_ONLY": "s3cr3t"},
        timeout=180,
    )
    bridge = user_network.host_ip
    # the network proxy every container talks to runs without the hub's environment
    pid = int((hub.dir / "qustody-network-proxy.pid").read_text().strip())
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    assert not any(e.startswith(b"QUSTODY_TEST_HUB_ONLY=") for e in environ)
    assert any(e.startswith(b"CONFIGPROXY_AUTH_TOKEN=") for e in environ)
    # host services the way a careless admin runs them: on every address, on the bridge
    anywhere, on_bridge = _listener("0.0.0.0"), _listener(bridge)
    try:
        hub.start_server("alice")
        hub.start_server("bob")
        alice, bob = container_of(prefix, "alice"), container_of(prefix, "bob")
        docker("exec", "-d", bob, PYTHON, "-c", SQUATTER, "9000")
        [info] = json.loads(docker("inspect", bob))
        bob_ip = info["NetworkSettings"]["Networks"][user_network.name]["IPAddress"]
        # the listeners are real: the host reaches all three
        hub.wait_for(lambda: _answers(bob_ip, 9000), timeout=60, what="bob's listener")
        host_ports = [anywhere.getsockname()[1], on_bridge.getsockname()[1]]
        for port in host_ports:
            assert _answers(bridge, port)

        targets = [[bridge, p] for p in host_ports] + [[bob_ip, 9000]]
        seen = in_container(alice, PROBE, json.dumps([*targets, [bridge, 8000]]))
        assert seen.pop(f"{bridge}:8000") == "open", seen  # the one way to the hub
        if setting == "off":  # the attack works without the firewall
            assert set(seen.values()) == {"open"}, seen
            assert "SECURITY: SpawnPolicy.host_firewall = 'off'" in hub.log()
            return
        assert "open" not in seen.values(), seen
        # nor by broadcast, multicast or IPv6: bob listens for UDP; alice's datagrams to
        # him, to the subnet's broadcast, to everyone and to a multicast group never arrive
        docker("exec", "-d", bob, PYTHON, "-c", UDP_LISTENER, "9001", "/tmp/udp-got")
        time.sleep(1)
        subnet = ipaddress.ip_network(user_network.subnet)
        sent = in_container(alice, UDP_SENDER, "9001", bob_ip, str(subnet.broadcast_address),
                            "255.255.255.255", "224.0.0.1")
        assert sent.pop("disable_ipv6") == "1" and sent.pop("ipv6_addresses") == "", sent
        assert set(sent.values()) == {"sent"}, sent  # they left alice's container
        time.sleep(2)
        got = docker("exec", bob, "sh", "-c", "cat /tmp/udp-got 2>/dev/null || true")
        assert got.strip() == "", got
        # and the network proxy still serves the hub API
        proxy = f"http://{bridge}:8000/hub/api/"
        status, body = in_container(alice, FETCH, proxy)[proxy]
        assert status == 200 and "version" in json.loads(body), body
        # the tables are there for an admin to inspect
        net_id = docker("network", "inspect", "--format", "{{.Id}}", user_network.name).strip()
        listed = subprocess.run(
            ["nft", "list", "table", "inet", f"qustody_br_{net_id[:12]}"],
            capture_output=True, text=True, check=True,
        ).stdout
        assert f"ip daddr {bridge} tcp dport 8000" in listed, listed

        # tables removed behind the hub's back (a `nft flush ruleset` when the nftables
        # service reloads its config) come back: the hub notices and installs them again
        br = f"br-{net_id[:12]}"
        firewall.remove(br)
        assert not firewall.present(br)
        hub.wait_for(lambda: firewall.present(br), timeout=60, what="the firewall back")
        seen = in_container(alice, PROBE, json.dumps(targets))
        assert "open" not in seen.values(), seen
        assert "The host firewall for bridge" in hub.log()
    finally:
        anywhere.close()
        on_bridge.close()


def test_an_unknown_host_firewall_stops_the_hub(tmp_path: Path) -> None:
    started: list[Hub] = []
    with pytest.raises(HubError) as refused:
        launch_hub(tmp_path / "hub", env=oidc_env(QUSTODY_IMAGE_DIGEST="sha256:" + "1" * 64),
                   extra='c.SpawnPolicy.host_firewall = "iptables"\n', started=started,
                   timeout=120)
    for hub in started:
        hub.stop()
    message = str(refused.value)
    assert "SpawnPolicy.host_firewall='iptables': use 'nftables'" in message, message[-3000:]


def test_without_nft_the_firewall_is_refused_with_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A host where nftables is not installed: `nft` is on neither PATH nor sbin."""
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(firewall, "SBIN", str(tmp_path))
    assert firewall.nft_command() is None
    with pytest.raises(firewall.FirewallRefused) as refused:
        firewall.install("br-0123456789ab", "198.18.0.0/24", "198.18.0.1", 8000)
    message = str(refused.value)
    assert "`nft` is not installed" in message
    assert "apt-get install nftables" in message
    assert "SpawnPolicy.host_firewall = 'off'" in message
    # the periodic re-check and the network's removal do not fail on such a host
    assert firewall.present("br-0123456789ab") is False
    firewall.remove("br-0123456789ab")


@pytest.mark.docker
def test_a_spawn_puts_back_a_removed_firewall_before_the_container_joins(
    user_network: UserNetwork, start_hub, prefix: str, singleuser_image: str
) -> None:
    """The proxy re-checks the tables only every few seconds: a container started in that
    gap must not run unprotected. The periodic check is switched off here, so only the
    spawn's own check can put the tables back."""
    hub = start_hub(
        extra=user_network.config() + f'c.HardenedDockerSpawner.prefix = "{prefix}"\n'
        + f'c.SpawnPolicy.home_volume_template = "{prefix}-home-{{username}}"\n'
        + "c.ConfigurableHTTPProxy.check_running_interval = 3600\n",
        env={"QUSTODY_IMAGE_DIGEST": singleuser_image},
        timeout=180,
    )
    net_id = docker("network", "inspect", "--format", "{{.Id}}", user_network.name).strip()
    br = f"br-{net_id[:12]}"
    assert firewall.present(br)
    host_service = _listener(user_network.host_ip)
    try:
        firewall.remove(br)
        assert not firewall.present(br)
        hub.start_server("alice")
        assert firewall.present(br)
        assert f"The host firewall for bridge {br} was missing; installed it again" in hub.log()
        target = [user_network.host_ip, host_service.getsockname()[1]]
        seen = in_container(container_of(prefix, "alice"), PROBE, json.dumps([target]))
        assert "open" not in seen.values(), seen
    finally:
        host_service.close()


def test_emptied_or_loosened_tables_count_as_missing_and_go_back() -> None:
    """`present` checks the rules, not only the tables: `nft flush table` leaves empty
    tables, and a rule inserted before the drop (an `accept`) loosens them."""
    bridge = f"qt{secrets.token_hex(4)}"  # nft filters on the name; no such link is needed
    table = firewall.table_name(bridge)
    firewall.install(bridge, "198.18.250.0/24", "198.18.250.1", 8000)
    try:
        assert firewall.present(bridge)
        assert firewall.ensure(bridge, "198.18.250.0/24", "198.18.250.1", 8000) is False
        subprocess.run(["nft", "flush", "table", "inet", table], check=True)
        assert not firewall.present(bridge)
        assert firewall.ensure(bridge, "198.18.250.0/24", "198.18.250.1", 8000) is True
        assert firewall.present(bridge)
        subprocess.run(["nft", "insert", "rule", "inet", table, "input", "iifname", bridge,
                        "tcp", "dport", "5432", "accept"], check=True)
        assert not firewall.present(bridge)
        assert firewall.ensure(bridge, "198.18.250.0/24", "198.18.250.1", 8000) is True
        listed = subprocess.run(["nft", "list", "table", "inet", table], capture_output=True,
                                text=True, check=True).stdout
        assert "5432" not in listed and firewall.present(bridge)
    finally:
        firewall.remove(bridge)
    assert not firewall.present(bridge)


# Last in the file: the module's shared hub, provider and cluster stop when they end.


@pytest.mark.docker
def test_a_student_container_reaches_nothing_on_the_host_but_the_network_proxy(
    hub: Hub, module_user_network: UserNetwork, shared_prefix: str, services: dict[str, int],
    singleuser_image: str,
) -> None:
    # the hub created its network: internal, with the configured subnet
    [info] = json.loads(docker("network", "inspect", module_user_network.name))
    assert info["Internal"] is True and info["Driver"] == "bridge"
    assert [c["Subnet"] for c in info["IPAM"]["Config"]] == [module_user_network.subnet]

    hub.start_server("alice")
    cid = container_of(shared_prefix, "alice")
    targets = {**services, **hub_ports(hub)}
    # the listeners are real and answer on the host's loopback (so the probe can fail)
    for port in targets.values():
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass

    bridge = module_user_network.host_ip
    probes = [[host, port] for port in targets.values() for host in (bridge, "127.0.0.1")]
    proxy = f"{bridge}:8000"
    seen = in_container(cid, PROBE, json.dumps([*probes, [bridge, 8000]]))
    assert seen.pop(proxy) == "open"  # the one way to the hub
    for name, port in targets.items():
        # the host firewall drops what is not for the network proxy; in the container's
        # own namespace, its loopback has nothing there
        assert seen[f"{bridge}:{port}"] == "TimeoutError", (name, seen)
        assert seen[f"127.0.0.1:{port}"] == "ConnectionRefusedError", (name, seen)

    # nothing off the subnet: a server on another network this host reaches (a container
    # of this test's own) answers the host, but not alice's container (no forwarding)
    other = _OtherNetwork.start(module_user_network, shared_prefix, singleuser_image)
    try:
        hub.wait_for(lambda: _answers(other.ip, 9000), timeout=60, what="the other listener")
        seen = in_container(cid, PROBE, json.dumps([[other.ip, 9000]]))
        assert seen[f"{other.ip}:9000"] != "open", seen
    finally:
        other.remove()
    bridge_name = f"br-{info['Id'][:12]}"
    forwarding = Path(f"/proc/sys/net/ipv4/conf/{bridge_name}/forwarding")
    assert forwarding.read_text().strip() == "0"
    # should something turn forwarding on again (a change of net.ipv4.ip_forward resets it
    # on every interface), the firewall's forward chain still routes nothing
    other = _OtherNetwork.start(module_user_network, shared_prefix, singleuser_image)
    try:
        hub.wait_for(lambda: _answers(other.ip, 9000), timeout=60, what="the other listener")
        forwarding.write_text("1")
        seen = in_container(cid, PROBE, json.dumps([[other.ip, 9000]]))
        assert seen[f"{other.ip}:9000"] != "open", seen
    finally:
        forwarding.write_text("0")
        other.remove()

    # the server got hub URLs on the network proxy, and they work
    env = dict(e.split("=", 1) for e in json.loads(docker("inspect", cid))[0]["Config"]["Env"])
    assert env["JUPYTERHUB_API_URL"] == f"http://{proxy}/hub/api"
    assert env["JUPYTERHUB_ACTIVITY_URL"].startswith(f"http://{proxy}/hub/api/users/alice/")
    assert env["QUSTODY_QPU_URL"] == f"http://{proxy}/services/qpu/"
    assert env["QUSTODY_API_URL"] == f"http://{proxy}/services/qustody/"
    got = in_container(cid, FETCH, f"http://{proxy}/hub/api/")
    status, body = got[f"http://{proxy}/hub/api/"]
    assert status == 200 and "version" in json.loads(body), got

    # and through the public proxy, the server itself works
    token = hub.user_token("alice")
    r = requests.get(f"{hub.url}user/alice/api/status",
                     headers={"Authorization": f"token {token}"}, timeout=30)
    assert r.status_code == 200, r.text


@pytest.mark.docker
def test_ports_bound_in_a_container_change_nothing_for_others(
    hub: Hub, module_user_network: UserNetwork, shared_prefix: str, services: dict[str, int]
) -> None:
    hub.start_server("alice")
    hub.start_server("bob")
    alice, bob = container_of(shared_prefix, "alice"), container_of(shared_prefix, "bob")
    ports = {**services, **hub_ports(hub)}
    spare = free_port()  # free on the host now; a hub service restarting would want it
    squatted = [ports["QPU gateway"], ports["auditor page"], ports["hub API"],
                ports["public proxy"], 8000, spare]
    docker("exec", "-d", alice, PYTHON, "-c", SQUATTER, *map(str, squatted))

    # the squatter is up inside alice's container (the attack runs)
    local = [f"http://127.0.0.1:{p}/" for p in squatted]
    hub.wait_for(
        lambda: all(v == [200, "SQUAT"] for v in in_container(alice, FETCH, *local).values()),
        timeout=30, what="the squatter in alice's container",
    )

    # the host's services still answer on loopback, themselves
    for port in squatted[:-2]:
        r = requests.get(f"http://127.0.0.1:{port}/", timeout=10, allow_redirects=False)
        assert r.text != "SQUAT", port
    assert hub.api("GET", "/")[0] == 200
    # a hub service restarting could still bind its port
    with socket.socket() as s:
        s.bind(("127.0.0.1", spare))

    # bob's server still reaches the real hub and gateway through the network proxy
    proxy = f"http://{module_user_network.host_ip}:8000"
    got = in_container(bob, FETCH, f"{proxy}/hub/api/", f"{proxy}/services/qpu/")
    status, body = got[f"{proxy}/hub/api/"]
    assert status == 200 and "version" in json.loads(body), got
    status, body = got[f"{proxy}/services/qpu/"]
    assert status != 0 and body != "SQUAT", got
    # and alice's own server is still reached by the proxy, as before
    token = hub.user_token("bob")
    r = requests.get(f"{hub.url}user/bob/api/status",
                     headers={"Authorization": f"token {token}"}, timeout=30)
    assert r.status_code == 200, r.text
