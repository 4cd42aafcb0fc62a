"""A real JupyterHub (subprocess) with the real configurable-http-proxy, for hub tests.

``start_hub(config=..., extra=...)`` writes a config that loads ``config`` (a hub config
file, the repository's ``jupyterhub_config.py`` by default) and then ``extra`` (Python
config text), puts the hub, its API and the proxy on random 127.0.0.1 ports with state in
a temporary directory, adds an admin service token, starts ``jupyterhub -f`` and waits
until the API answers. It returns a ``Hub`` with the base URL and the token, stops the hub
(and so its servers) at teardown, and prints the hub log when the test failed.

Docker fixtures: ``docker_engine`` (a reachable Docker engine, started with
tools/dockerd.sh if needed), ``singleuser_image`` (the image id, built if missing) and
``user_network`` (a unique name and free subnet for the hub's internal user network, which
the hub creates; the network, anything left on it and the host firewall tables the hub
installed for its bridge are removed at teardown; ``module_user_network`` is the same for
a hub a module's tests share). Request ``user_network`` before ``start_hub`` so it is
removed after the hub stopped.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hubtest import Hub, HubError, UserNetwork, docker, failed, free_test_subnet, launch_hub

from hub_ext import firewall

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
NODE_BIN = ROOT / "tools" / "proxy" / "node_modules" / ".bin"


@pytest.fixture
def start_hub(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., Hub]]:
    """Factory: ``start_hub(config=path, extra="c.X = ...", env={...}) -> Hub``."""
    started: list[Hub] = []

    def start(
        config: Path | str | None = ROOT / "jupyterhub_config.py",
        extra: str = "",
        env: dict[str, str] | None = None,
        timeout: float = 60,
    ) -> Hub:
        try:
            hub = launch_hub(
                tmp_path / f"hub{len(started)}", config=config, extra=extra, env=env,
                timeout=timeout, started=started,
            )
        except HubError as e:
            pytest.fail(str(e))
        return hub

    yield start

    for hub in started:
        hub.stop()
        if failed(request):
            print(f"\n===== hub log ({hub.log_path}) =====\n{hub.log()[-20000:]}")


# -- Docker ---------------------------------------------------------------------------------

DOCKER_SCRIPT = ROOT / "tools" / "dockerd.sh"


def _docker_ok() -> bool:
    try:
        return (
            subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def docker_engine() -> str:
    """A reachable Docker engine (DOCKER_HOST); starts Qustody's own dockerd if needed."""
    os.environ.setdefault("DOCKER_HOST", "unix:///tmp/qustody-docker/docker.sock")
    if not _docker_ok():
        if os.geteuid() == 0 and shutil.which("dockerd"):
            subprocess.run(["bash", str(DOCKER_SCRIPT), "start"], check=True, timeout=120)
        if not _docker_ok():
            pytest.fail(
                "No Docker engine: run `make dockerd` (as root, after `make system-deps`), "
                "or point DOCKER_HOST at an engine."
            )
    return os.environ["DOCKER_HOST"]


@pytest.fixture(scope="session")
def singleuser_image(docker_engine: str) -> str:
    """Id (sha256:...) of the Qustody single-user image; `make image` if missing or stale.

    QUSTODY_TEST_IMAGE=<image> uses that image as it is (no build).
    """
    given = os.environ.get("QUSTODY_TEST_IMAGE")
    if given:
        return docker("image", "inspect", "--format", "{{.Id}}", given).strip()
    subprocess.run(
        [sys.executable, str(ROOT / "images" / "build.py"), "build"],
        check=True,
        timeout=1500,
        stdout=subprocess.DEVNULL,
    )
    out = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Id}}", "qustody/singleuser:latest"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def _user_network(request: pytest.FixtureRequest) -> Iterator[UserNetwork]:
    net = UserNetwork(f"qtestnet-{secrets.token_hex(3)}", free_test_subnet())
    yield net

    # the host firewall the hub installed for the network's bridge (hubs never remove it)
    net_id = docker("network", "inspect", "--format", "{{.Id}}", net.name, check=False).strip()
    if net_id:
        firewall.remove(f"br-{net_id[:12]}")
    for cid in docker("ps", "-aq", "--filter", f"network={net.name}").split():
        if failed(request):
            print(f"\n===== docker logs {cid} =====\n{docker('logs', cid, check=False)}")
        docker("rm", "-f", cid, check=False)
    docker("network", "rm", net.name, check=False)


@pytest.fixture
def user_network(docker_engine: str, request: pytest.FixtureRequest) -> Iterator[UserNetwork]:
    """A unique network name and a /24 in 198.18.0.0/15 no other network uses (other test
    runs share this engine). The hub creates the network; teardown removes it and any
    container still attached to it (only this test's containers can be)."""
    yield from _user_network(request)


@pytest.fixture(scope="module")
def module_user_network(
    docker_engine: str, request: pytest.FixtureRequest
) -> Iterator[UserNetwork]:
    """``user_network`` for a hub the tests of one module share."""
    yield from _user_network(request)
