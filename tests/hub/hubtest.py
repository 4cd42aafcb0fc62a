"""Helpers for the hub tests (the fixtures are in conftest.py)."""

from __future__ import annotations

import ipaddress
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from ports import free_port
from waiting import wait_for

__all__ = ["free_port"]  # re-exported: the hub tests import it from here


def failed(request: pytest.FixtureRequest) -> bool:
    """Whether the test using this fixture failed (set by pytest_runtest_makereport)."""
    return any(
        getattr(getattr(request.node, f"rep_{when}", None), "failed", False)
        for when in ("setup", "call")
    )


def docker(*args: str, check: bool = True) -> str:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: {result.stderr}")
    return result.stdout


def docker_names(request: pytest.FixtureRequest | None = None) -> Iterator[str]:
    """A fixture body: a name prefix for a test's containers and volumes, all removed at
    teardown. With a test's own ``request``, its containers' logs are printed first when
    it failed (a module-scoped fixture's request knows no test's result)."""
    name = f"qtest{secrets.token_hex(3)}"
    yield name
    for cid in docker("ps", "-aq", "--filter", f"name={name}").split():
        if request is not None and failed(request):
            print(f"\n===== docker logs {cid} =====\n{docker('logs', cid, check=False)}")
        docker("rm", "-f", cid, check=False)
    for vol in docker("volume", "ls", "-q", "--filter", f"name={name}").split():
        docker("volume", "rm", "-f", vol, check=False)


class HubError(Exception):
    """The hub did not start; the message holds the end of its log."""


@dataclass
class Hub:
    """A running hub: ``url`` is the public (proxy) URL, ``token`` an admin API token."""

    url: str
    api_url: str
    token: str
    dir: Path
    log_path: Path
    process: subprocess.Popen[bytes]
    session: requests.Session = field(default_factory=requests.Session)

    def api(
        self,
        method: str,
        path: str,
        body: Any = None,
        token: str | None = None,
        timeout: float = 90,
    ) -> tuple[int, Any]:
        """Call the hub REST API; returns (status, parsed JSON or text). Never raises on status."""
        response = self.session.request(
            method,
            self.api_url + path,
            headers={"Authorization": f"token {token or self.token}"},
            data=None if body is None else json.dumps(body),
            timeout=timeout,
        )
        try:
            return response.status_code, response.json() if response.content else None
        except ValueError:
            return response.status_code, response.text

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(
        self, predicate: Callable[[], Any], timeout: float, interval: float = 0.5, what: str = ""
    ) -> Any:
        return wait_for(predicate, timeout, interval, what)

    def stop(self) -> None:
        """SIGTERM (the hub stops its servers and the proxy), then SIGKILL after 60 s."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)

    def start_server(
        self, user: str, name: str = "", body: dict[str, Any] | None = None, timeout: float = 120
    ) -> str:
        """Start ``user``'s server ``name`` (request ``body``: user options), wait until it
        is ready and return its URL behind the proxy."""
        path = f"/users/{user}/servers/{name}" if name else f"/users/{user}/server"
        code, reply = self.api("POST", path, body or {})
        assert code in (201, 202), reply
        self.wait_for(
            lambda: self.api("GET", f"/users/{user}")[1]["servers"].get(name, {}).get("ready"),
            timeout=timeout,
            what=f"{user}'s server {name!r}",
        )
        return f"{self.url}user/{user}/{name + '/' if name else ''}"

    def user_token(self, user: str) -> str:
        status, body = self.api("POST", f"/users/{user}/tokens", {"note": "test", "expires_in": 3600})
        assert status == 201, body
        return str(body["token"])


def stop_all_servers(hub: Hub) -> None:
    """Ask the hub to stop every server, named ones too (a test sharing the hub is done)."""
    for user in hub.api("GET", "/users")[1]:
        for name in user.get("servers") or {}:
            path = f"/users/{user['name']}/servers/{name}" if name else f"/users/{user['name']}/server"
            hub.api("DELETE", path)


def _admin_scopes() -> list[str]:
    from jupyterhub.roles import get_default_roles

    return next(r["scopes"] for r in get_default_roles() if r["name"] == "admin")


ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
NODE_BIN = ROOT / "tools" / "proxy" / "node_modules" / ".bin"


def launch_hub(
    hub_dir: Path,
    config: Path | str | None = ROOT / "jupyterhub_config.py",
    extra: str = "",
    env: dict[str, str] | None = None,
    timeout: float = 60,
    started: list[Hub] | None = None,
) -> Hub:
    """Start ``jupyterhub -f`` with ``config`` then ``extra`` on random loopback ports.

    Adds an admin service token; returns when the API answers (HubError otherwise).
    """
    hub_dir.mkdir(parents=True)
    port, hub_port, proxy_api = free_port(), free_port(), free_port()
    token = secrets.token_hex(32)
    proxy = shutil.which("configurable-http-proxy", path=f"{NODE_BIN}:{os.environ['PATH']}")
    if proxy is None:
        raise HubError("configurable-http-proxy is not installed: run `make proxy-deps`")
    head = f"""
        c = get_config()
        import os
        os.environ.setdefault("QUSTODY_STATE_DIR", {str(hub_dir)!r})
        os.environ.setdefault("QUSTODY_DEMO_PASSWORD", "harness-{secrets.token_hex(8)}")
        os.environ["QUSTODY_HUB_PORT"] = "{port}"
        os.environ["QUSTODY_HUB_API_PORT"] = "{hub_port}"
        os.environ.setdefault("QUSTODY_QPU_PORT", "{free_port()}")  # the QPU gateway service
        os.environ.setdefault("QUSTODY_AUDIT_PAGE_PORT", "{free_port()}")  # the auditor page
        os.environ.setdefault("QUSTODY_COURSES_PAGE_PORT", "{free_port()}")  # the instructor page
        os.environ.setdefault("QUSTODY_API_PORT", "{free_port()}")  # the qustody service
        # one gateway process (each holds its own Qiskit processes; the suite starts ~100
        # hubs on 2 cores): the product's default of 2 is tested in test_service_crash.py
        os.environ.setdefault("QUSTODY_QPU_WORKERS", "1")
        # no term keeper: tests write course files whose terms are over, and a keeper
        # closing them would stop servers and empty groups under other tests
        # (tests/hub/test_term_keeper.py runs it)
        os.environ.setdefault("QUSTODY_TERM_INTERVAL", "0")
    """
    load = f"load_subconfig({str(config)!r})\n" if config else ""
    tail = f"""
        c.JupyterHub.bind_url = "http://127.0.0.1:{port}"
        c.JupyterHub.hub_bind_url = "http://127.0.0.1:{hub_port}"
        c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_api}"
        c.ConfigurableHTTPProxy.command = [{proxy!r}]
        c.ConfigurableHTTPProxy.pid_file = {str(hub_dir / "proxy.pid")!r}
        c.JupyterHub.db_url = "sqlite:///{hub_dir}/jupyterhub.sqlite"
        c.JupyterHub.cookie_secret_file = {str(hub_dir / "cookie_secret")!r}
        c.JupyterHub.pid_file = {str(hub_dir / "jupyterhub.pid")!r}
        c.JupyterHub.log_level = "DEBUG"
        services = c.JupyterHub.services if isinstance(c.JupyterHub.services, list) else []
        c.JupyterHub.services = [*services, {{"name": "harness-admin", "api_token": {token!r}}}]
        roles = c.JupyterHub.load_roles if isinstance(c.JupyterHub.load_roles, list) else []
        c.JupyterHub.load_roles = [*roles, {{"name": "harness-admin", "scopes": {_admin_scopes()!r}, "services": ["harness-admin"]}}]
    """
    path = hub_dir / "jupyterhub_test_config.py"
    path.write_text(
        textwrap.dedent(head) + load + textwrap.dedent(extra) + "\n" + textwrap.dedent(tail)
    )
    log_path = hub_dir / "hub.log"
    run_env = {
        **os.environ,
        "PATH": f"{NODE_BIN}:{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "CONFIGPROXY_AUTH_TOKEN": secrets.token_hex(32),
        **(env or {}),
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(BIN / "jupyterhub"), "-f", str(path)],
            cwd=hub_dir,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=run_env,
            start_new_session=True,
        )
    hub = Hub(
        url=f"http://127.0.0.1:{port}/",
        api_url=f"http://127.0.0.1:{port}/hub/api",
        token=token,
        dir=hub_dir,
        log_path=log_path,
        process=process,
    )
    if started is not None:
        started.append(hub)
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise HubError(f"jupyterhub exited with {process.returncode}:\n{hub.log()[-6000:]}")
        try:
            if hub.api("GET", "/user", timeout=2)[0] == 200:
                return hub
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            hub.stop()
            raise HubError(f"jupyterhub did not answer within {timeout}s:\n{hub.log()[-6000:]}")
        time.sleep(0.25)


@dataclass(frozen=True)
class UserNetwork:
    """The internal network one test's hub creates: its name, subnet and bridge address."""

    name: str
    subnet: str

    @property
    def host_ip(self) -> str:
        return str(next(ipaddress.IPv4Network(self.subnet).hosts()))

    def config(self) -> str:
        """Hub config lines that put the servers on this network."""
        return (
            f"c.SpawnPolicy.network_mode = {self.name!r}\n"
            f"c.SpawnPolicy.network_subnet = {self.subnet!r}\n"
        )


#: Test networks come from here; the reference default (198.18.7.0/24) is never used.
TEST_SUBNETS = ipaddress.IPv4Network("198.18.0.0/15")
_DEFAULT_SUBNET = ipaddress.IPv4Network("198.18.7.0/24")


def free_test_subnet(also_taken: list[ipaddress.IPv4Network] | None = None) -> str:
    """A /24 no Docker network uses now. Each pytest-xdist worker draws from its own
    share of the range: workers choose long before their hubs create the networks, so
    two of them drawing from one pool could pick the same subnet."""
    used = [*subnets_in_use(), *(also_taken or [])]
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    share = int(worker[2:]) % 8 if worker[2:].isdigit() else 0
    candidates = [
        n for i, n in enumerate(TEST_SUBNETS.subnets(new_prefix=24))
        if i % 8 == share and n != _DEFAULT_SUBNET and not any(n.overlaps(u) for u in used)
    ]
    if not candidates:
        raise AssertionError(f"no free /24 left in {TEST_SUBNETS} for worker {worker}")
    return str(random.choice(candidates))


def subnets_in_use() -> list[ipaddress.IPv4Network]:
    # one inspect per network: a network another worker (or test run) removes between
    # the listing and its inspect is skipped instead of failing this test's set-up
    lines = docker("network", "ls", "-q", "--no-trunc").split()
    infos = []
    for network_id in lines:
        out = docker("network", "inspect", network_id, check=False)
        if out.strip().startswith("["):
            infos += json.loads(out)
    used = []
    for info in infos:
        for cfg in (info.get("IPAM") or {}).get("Config") or []:
            try:
                used.append(ipaddress.IPv4Network(cfg.get("Subnet", ""), strict=False))
            except ValueError:
                continue
    return used
