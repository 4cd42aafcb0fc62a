"""Spawn latency: hub REST API request -> server ready, on the local Docker engine.

Hubs from the reference configuration, the same image and the same profile:

- ``hardened``: HardenedDockerSpawner, the whole policy (container verification, token on
  stdin, readiness wait), on its own internal network behind the network proxy;
- ``plain``: stock DockerSpawner as a JupyterHub deployment runs it, on a user-defined
  bridge network (each container in its own network namespace), reached on its internal
  address, with none of the hardening options. This is the baseline;
- ``host`` (with ``--host``): DockerSpawner on the host network, no network namespace at
  all. It shows what any per-container network costs (about 0.15 s of ``docker start``
  on this engine), which the hardened spawner pays as every bridge deployment does.

For each: N sequential spawns, then N concurrent spawns; p50 and p95 of the time from the
POST to the hub's server model saying ``ready``.

    python benchmarks/bench_spawn.py [-n 10] [--cpu 1.0] [--host] [--json out.json]

Needs the Docker engine and image (``make bench-spawn`` starts and builds them).
Targets: p50 <= 2 s, p95 <= 4 s, hardening costs <= 10 % of ``plain``.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import harness  # noqa: F401 - puts tests/ and its harness folders on sys.path
from hubtest import Hub, UserNetwork, launch_hub, subnets_in_use

PLAIN = '''
from dockerspawner import DockerSpawner
from jupyterhub.utils import random_port

import asyncio
from tornado.httpclient import AsyncHTTPClient

class PlainDockerSpawner(DockerSpawner):
    """DockerSpawner with no hardening (the baseline), on NETWORK.

    It waits for readiness the way HardenedDockerSpawner does (100 ms polls), so the
    comparison measures the hardening, not the hub's slower backoff polling."""
    async def start(self):
        if NETWORK == "host":
            self.port = random_port()
            self.ip = "127.0.0.1"
            self.extra_host_config = {"network_mode": "host"}
        self.use_internal_ip = True
        ip, port = await super().start()
        url = f"http://{ip}:{port}{self.server.base_url.rstrip('/')}/api"
        client = AsyncHTTPClient()
        while True:
            try:
                if (await client.fetch(url, request_timeout=2, raise_error=False)).code == 200:
                    return ip, port
            except OSError:
                pass
            await asyncio.sleep(0.1)
    async def get_ip_and_port(self):
        if NETWORK == "host":
            return "127.0.0.1", self.port
        return await super().get_ip_and_port()

c.JupyterHub.spawner_class = PlainDockerSpawner
c.DockerSpawner.image = IMAGE
c.DockerSpawner.remove = True
c.DockerSpawner.pull_policy = "never"
c.DockerSpawner.prefix = PREFIX
c.DockerSpawner.network_name = NETWORK
c.DockerSpawner.cpu_limit = CPU  # the profile's limits, as the hardened spawner applies them
c.DockerSpawner.mem_limit = "1G"
'''


def extra(
    kind: str, image: str, prefix: str, users: list[str], cpu: float, network: str = ""
) -> str:
    text = f"""
IMAGE = {image!r}
PREFIX = {prefix!r}
NETWORK = {network!r}
CPU = {cpu!r}
c.Authenticator.allow_all = True
c.JupyterHub.services = []
c.JupyterHub.load_roles = [{{"name": "student", "scopes": ["self"], "users": {users!r}}}]
c.JupyterHub.log_level = "INFO"
c.Spawner.start_timeout = 180
c.Spawner.http_timeout = 180
c.SpawnPolicy.profiles = {{"student": {{
    "roles": ["student"], "images": ["qustody"], "mem_limit": "1G", "cpu_limit": {cpu},
    "pids_limit": 512, "idle_timeout": 3600, "max_age": 3600, "kernel_idle_timeout": 600}}}}
c.SpawnPolicy.home_volume_template = PREFIX + "-home-{{username}}"
c.HardenedDockerSpawner.prefix = PREFIX
"""
    if kind != "hardened":
        text += PLAIN
    return text


def ready(hub: Hub, user: str) -> bool:
    status, model = hub.api("GET", f"/users/{user}", timeout=30)
    return status == 200 and bool(model["servers"].get("", {}).get("ready"))


def spawn_time(hub: Hub, user: str, timeout: float = 200) -> float:
    t0 = time.perf_counter()
    status, body = hub.api("POST", f"/users/{user}/server", timeout=timeout)
    if status not in (201, 202):
        raise RuntimeError(f"spawn of {user} failed: {status} {body}")
    while not ready(hub, user):
        model = hub.api("GET", f"/users/{user}")[1]
        if not model["servers"] and time.perf_counter() - t0 > 5:
            raise RuntimeError(f"{user}'s server stopped while starting")
        if time.perf_counter() - t0 > timeout:
            raise RuntimeError(f"{user} not ready after {timeout}s")
        time.sleep(0.1)  # resolution 0.1 s; faster polling loads the hub being measured
    return time.perf_counter() - t0


def stop_all(hub: Hub, users: list[str]) -> None:
    for user in users:
        hub.api("DELETE", f"/users/{user}/server", timeout=60)
    deadline = time.monotonic() + 120
    while any(hub.api("GET", f"/users/{u}")[1]["servers"] for u in users):
        if time.monotonic() > deadline:
            raise RuntimeError("servers did not stop")
        time.sleep(0.2)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def bench_network(prefix: str, also_taken: tuple[str, ...] = ()) -> UserNetwork:
    """A network name and a free subnet of its own (other runs may share the engine)."""
    used = subnets_in_use() + [ipaddress.IPv4Network(s) for s in also_taken]
    for net in ipaddress.IPv4Network("198.19.0.0/16").subnets(new_prefix=24):
        if not any(net.overlaps(u) for u in used):
            return UserNetwork(f"{prefix}-net", str(net))
    raise RuntimeError("no free /24 in 198.19.0.0/16 for the benchmark's network")


class HubRelay(threading.Thread):
    """A TCP relay from the plain servers' bridge to the hub's API on loopback.

    A stock deployment binds the hub's API where its servers reach it; the test harness
    binds it to 127.0.0.1, so the plain servers reach it through this relay (the hardened
    ones through Qustody's network proxy). ``target`` is set once the hub has its port."""

    def __init__(self, host: str) -> None:
        super().__init__(daemon=True)
        self.host, self.port, self.target = host, 0, 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()

    def run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            server = self._loop.run_until_complete(
                asyncio.start_server(self._pipe, self.host, 0)
            )
        except OSError:
            self._loop.close()
            return  # listen() reports it
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()
        for task in asyncio.all_tasks(self._loop):
            task.cancel()
        self._loop.run_until_complete(asyncio.sleep(0))
        self._loop.close()

    def listen(self) -> int:
        self.start()
        if not self._ready.wait(10):
            raise RuntimeError(f"the hub relay could not listen on {self.host}")
        return self.port

    def close(self) -> None:
        if self._ready.is_set():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self.join(10)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            hub_reader, hub_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return

        async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except OSError:
                pass
            finally:
                dst.close()

        await asyncio.gather(copy(reader, hub_writer), copy(hub_reader, writer))


def run(kind: str, image: str, n: int, cpu: float, workdir: Path) -> dict[str, list[float]]:
    prefix = f"qbench{kind}{os.getpid()}"
    users = [f"bench{i}" for i in range(n)]
    network = bench_network(prefix)
    bridge = f"{prefix}-bridge"  # the plain servers' network (the hub's own is internal)
    docker_network = {"plain": bridge, "host": "host"}.get(kind, "")
    config = extra(kind, image, prefix, users, cpu, docker_network) + network.config()
    relay: HubRelay | None = None
    hub: Hub | None = None
    try:
        if kind == "plain":
            subnet = bench_network(bridge, also_taken=(network.subnet,)).subnet
            subprocess.run(["docker", "network", "create", "--subnet", subnet, bridge],
                           capture_output=True, check=True)
            gateway = str(next(ipaddress.IPv4Network(subnet).hosts()))
            relay = HubRelay(gateway)
            config += f"c.DockerSpawner.hub_connect_url = 'http://{gateway}:{relay.listen()}'\n"
        hub = launch_hub(
            workdir / kind, extra=config, env={"QUSTODY_IMAGE_DIGEST": image}, timeout=180
        )
        if relay is not None:
            written = (hub.dir / "jupyterhub_test_config.py").read_text()
            found = re.search(r'hub_bind_url = "http://127\.0\.0\.1:(\d+)"', written)
            assert found, "the harness no longer binds the hub's API as this benchmark expects"
            relay.target = int(found.group(1))
        spawn_time(hub, users[0])  # warm-up: page cache, first container
        stop_all(hub, users[:1])
        sequential = []
        for user in users:
            sequential.append(spawn_time(hub, user))
        stop_all(hub, users)
        results: dict[str, float] = {}
        errors: list[BaseException] = []

        def one(user: str) -> None:
            try:
                results[user] = spawn_time(hub, user)
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=one, args=(u,)) for u in users]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        stop_all(hub, users)
        return {"sequential": sequential, "concurrent": [results[u] for u in users]}
    except Exception:
        if hub is not None:
            print(f"--- {kind} hub log (end) ---\n{hub.log()[-8000:]}", file=sys.stderr)
        raise
    finally:
        try:
            if hub is not None:
                hub.stop()
        finally:
            if relay is not None:
                relay.close()
            _remove(prefix, network.name, bridge)


def _remove(prefix: str, *networks: str) -> None:
    """The run's containers, volumes and networks, whatever state it ended in."""
    ids = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"name={prefix}"], capture_output=True, text=True
    ).stdout.split()
    if ids:
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)
    vols = subprocess.run(
        ["docker", "volume", "ls", "-q", "--filter", f"name={prefix}"],
        capture_output=True,
        text=True,
    ).stdout.split()
    if vols:
        subprocess.run(["docker", "volume", "rm", "-f", *vols], capture_output=True)
    subprocess.run(["docker", "network", "rm", *networks], capture_output=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("-n", type=int, default=10, help="spawns per phase (default 10)")
    p.add_argument("--cpu", type=float, default=1.0, help="profile CPU limit (default 1.0)")
    p.add_argument("--image", default="qustody/singleuser:latest")
    p.add_argument("--host", action="store_true",
                   help="also measure DockerSpawner on the host network (no network namespace)")
    p.add_argument("--json", help="also write the raw figures here")
    args = p.parse_args()
    os.environ.setdefault("DOCKER_HOST", "unix:///tmp/qustody-docker/docker.sock")
    image = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Id}}", args.image],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    print(f"spawn latency, POST /users/:name/server -> ready; image {image[:19]}, n={args.n}, "
          f"{os.cpu_count()} cores, profile cpu_limit={args.cpu}")
    figures: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-spawn-") as tmp:
        for kind in ("hardened", "plain", *(["host"] if args.host else [])):
            figures[kind] = run(kind, image, args.n, args.cpu, Path(tmp))
            for phase, values in figures[kind].items():
                print(f"  {kind} {phase}: " + " ".join(f"{v:.2f}" for v in values), flush=True)
    print(f"{'':10} {'phase':11} {'p50 s':>7} {'p95 s':>7} {'min s':>7} {'max s':>7}")
    for kind, phases in figures.items():
        for phase, values in phases.items():
            print(
                f"{kind:10} {phase:11} {statistics.median(values):7.2f} {pct(values, 0.95):7.2f} "
                f"{min(values):7.2f} {max(values):7.2f}"
            )
    for phase in ("sequential", "concurrent"):
        h = statistics.median(figures["hardened"][phase])
        b = statistics.median(figures["plain"][phase])
        print(f"hardening cost, {phase} p50: {100 * (h - b) / b:+.1f} % (against plain)")
        if "host" in figures:
            n = statistics.median(figures["host"][phase])
            print(f"  a network namespace at all, {phase} p50: plain {100 * (b - n) / n:+.1f} %, "
                  f"hardened {100 * (h - n) / n:+.1f} % (against host)")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
