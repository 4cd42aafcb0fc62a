"""Spawn latency: hub REST API request -> server ready, on the local Docker engine.

Two hubs from the reference configuration, the same image and the same profile:
``hardened`` (HardenedDockerSpawner: the whole policy, container verification, token on
stdin, readiness wait, on its own internal network behind the network proxy) and ``plain``
(DockerSpawner on the host network with none of the hardening options). For each: N sequential spawns, then N concurrent spawns; p50 and
p95 of the time from the POST to the hub's server model saying ``ready``.

    python benchmarks/bench_spawn.py [-n 10] [--cpu 1.0] [--json out.json]

Needs the Docker engine and image (``make bench-spawn`` starts and builds them).
Targets: p50 <= 2 s, p95 <= 4 s, hardening costs <= 10 %.
"""

from __future__ import annotations

import argparse
import json
import os
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

class PlainHostDockerSpawner(DockerSpawner):
    """DockerSpawner with no hardening, on the host network (the baseline).

    It waits for readiness the way HardenedDockerSpawner does (100 ms polls), so the
    comparison measures the hardening, not the hub's slower backoff polling."""
    async def start(self):
        self.port = random_port()
        self.ip = "127.0.0.1"
        self.use_internal_ip = True
        self.extra_host_config = {"network_mode": "host"}
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
        return "127.0.0.1", self.port

c.JupyterHub.spawner_class = PlainHostDockerSpawner
c.DockerSpawner.image = IMAGE
c.DockerSpawner.remove = True
c.DockerSpawner.pull_policy = "never"
c.DockerSpawner.prefix = PREFIX
c.DockerSpawner.network_name = "host"
'''


def extra(kind: str, image: str, prefix: str, users: list[str], cpu: float) -> str:
    text = f"""
IMAGE = {image!r}
PREFIX = {prefix!r}
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
    if kind == "plain":
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


def bench_network(prefix: str) -> UserNetwork:
    """A network name and a free subnet of its own (other runs may share the engine)."""
    import ipaddress

    used = subnets_in_use()
    for net in ipaddress.IPv4Network("198.19.0.0/16").subnets(new_prefix=24):
        if not any(net.overlaps(u) for u in used):
            return UserNetwork(f"{prefix}-net", str(net))
    raise RuntimeError("no free /24 in 198.19.0.0/16 for the benchmark's network")


def run(kind: str, image: str, n: int, cpu: float, workdir: Path) -> dict[str, list[float]]:
    prefix = f"qbench{kind}{os.getpid()}"
    users = [f"bench{i}" for i in range(n)]
    network = bench_network(prefix)
    hub = launch_hub(
        workdir / kind,
        extra=extra(kind, image, prefix, users, cpu) + network.config(),
        env={"QUSTODY_IMAGE_DIGEST": image},
        timeout=180,
    )
    try:
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
        print(f"--- {kind} hub log (end) ---\n{hub.log()[-8000:]}", file=sys.stderr)
        raise
    finally:
        hub.stop()
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
        subprocess.run(["docker", "network", "rm", network.name], capture_output=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("-n", type=int, default=10, help="spawns per phase (default 10)")
    p.add_argument("--cpu", type=float, default=1.0, help="profile CPU limit (default 1.0)")
    p.add_argument("--image", default="qustody/singleuser:latest")
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
        for kind in ("hardened", "plain"):
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
        print(f"hardening cost, {phase} p50: {100 * (h - b) / b:+.1f} %")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
