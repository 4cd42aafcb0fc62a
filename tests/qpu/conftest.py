"""The QPU gateway as a real process, a stand-in hub, and both databases.

- ``hub``: a real HTTP server implementing ``GET /hub/api/user`` for fixed tokens
  (tests/qpu/fakehub.py) with users alice (lead of qchem), bob (member of qchem), carol
  (member of astro), erin (member of astro via the group ``stargazers``), dave (no QPU
  scope), ops (``custom:qpu:admin``) and auditor (``custom:qpu:read-all``).
- ``db_url``: parametrized, a fresh SQLite file and a fresh database in a throwaway
  PostgreSQL cluster (tests/pgserver.py).
- ``start_gateway(db_url, policy=..., **traits)``: ``python -m hub_ext.qpu`` on a random
  127.0.0.1 port with a config file; waits for /api/health; stopped (and its log printed
  when the test failed) at teardown.
"""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from fakehub import FakeHub
from pgserver import pg_cluster, pg_url  # noqa: F401  (fixtures)
from ports import free_port

ROOT = Path(__file__).resolve().parents[2]

SUBMIT = "custom:qpu:submit"
READ_ALL = "custom:qpu:read-all"
ADMIN = "custom:qpu:admin"

POLICY = """
[tags]
purposes = ["research", "teaching", "testing"]

[priorities]
tiers = { low = 0, normal = 10, high = 20 }
default = "normal"

[sensitivity]
levels = ["public", "internal", "confidential"]
[sensitivity.rules.confidential]
backends = ["aer_simulator"]
route_to = "aer_simulator"

[projects.qchem]
members = { alice = "lead", bob = "member" }
backends = ["*"]
sensitivity = "internal"
max_tier = "high"

[projects.astro]
members = { carol = "member" }
groups = { stargazers = "member" }
backends = ["aer_simulator", "fake_hw"]
sensitivity = "public"
"""

# One course project for alice, every backend: the hub-level tests' policy.
QC101_POLICY = """
[tags]
purposes = ["research"]
[projects.qc101]
members = { alice = "member" }
backends = ["*"]
"""

BACKENDS = {
    "aer_simulator": {"driver": "aer", "lanes": 2, "max_shots": 100000},
    "aer_mps": {"driver": "aer", "method": "matrix_product_state"},
    "fake_hw": {"driver": "emulated", "num_qubits": 5, "seed": 11, "time_scale": 0.0,
                "max_shots": 20000},
}


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Any:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture(scope="session")
def hub() -> Iterator[FakeHub]:
    fake = FakeHub()
    fake.api_url = fake.start()  # type: ignore[attr-defined]
    fake.tokens = {  # type: ignore[attr-defined]
        "alice": fake.add("alice", [SUBMIT]),
        "bob": fake.add("bob", [SUBMIT]),
        "carol": fake.add("carol", [SUBMIT]),
        "erin": fake.add("erin", [SUBMIT], groups=["stargazers"]),
        "dave": fake.add("dave", ["read:users:name!user"]),
        "ops": fake.add("ops", [ADMIN]),
        "auditor": fake.add("auditor", [READ_ALL]),
        "nobody": fake.add("nobody", [SUBMIT]),
    }
    yield fake
    fake.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'qpu.sqlite'}"
    url: str = request.getfixturevalue("pg_url")
    return url


@dataclass
class Gateway:
    url: str
    port: int
    dir: Path
    log_path: Path
    policy_path: Path
    args: list[str]
    env: dict[str, str]
    hub: FakeHub
    process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> Gateway:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.args, cwd=self.dir, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"gateway exited {self.process.returncode}:\n{self.log()}")
            try:
                if requests.get(self.url + "api/health", timeout=2).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"gateway did not start:\n{self.log()}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)

    def kill(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-20000:]

    def audit_records(self) -> list[dict[str, Any]]:
        """The audit log's records after verifying its chain and MACs."""
        return audit_records(self.dir / "audit" / "audit.jsonl", self.dir / "audit.key")

    def token(self, user: str) -> str:
        return str(self.hub.tokens[user])  # type: ignore[attr-defined]

    def call(self, user: str | None, method: str, path: str, body: Any = None,
             timeout: float = 120, **params: Any) -> tuple[int, Any]:
        headers = {"Authorization": f"token {self.token(user)}"} if user else {}
        r = requests.request(method, self.url + path, headers=headers, timeout=timeout,
                             json=body, params=params or None)
        try:
            return r.status_code, r.json() if r.content else None
        except ValueError:
            return r.status_code, r.text

    def submit(self, user: str, circuits: list[Any] | None = None, **fields: Any) -> tuple[int, Any]:
        body = {
            "backend": "aer_simulator",
            "circuits": circuits if circuits is not None else [{"qpy": qpy_b64(bell())}],
            "shots": 100,
            "tags": {"project": PROJECT_OF.get(user, "qchem"), "purpose": "testing"},
            **fields,
        }
        return self.call(user, "POST", "api/jobs", body)

    def wait_final(self, user: str, job_id: str, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            status, job = self.call(user, "GET", f"api/jobs/{job_id}", wait=5)
            assert status == 200, job
            if job["state"] in ("DONE", "FAILED", "CANCELLED", "REJECTED"):
                return dict(job)
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} not final: {job}")


PROJECT_OF = {"alice": "qchem", "bob": "qchem", "carol": "astro", "erin": "astro"}


def bell(n: int = 2) -> Any:
    from qiskit import QuantumCircuit

    qc = QuantumCircuit(n)
    qc.h(0)
    for i in range(n - 1):
        qc.cx(i, i + 1)
    qc.measure_all()
    return qc


def qpy_b64(circuit: Any) -> str:
    from qiskit import qpy

    buf = io.BytesIO()
    qpy.dump(circuit, buf)
    return base64.b64encode(buf.getvalue()).decode()


def launch(hub: FakeHub, d: Path, db_url: str, policy: str = POLICY,
           backends: dict[str, Any] | None = None, port: int | None = None,
           extra_config: str = "", **traits: Any) -> Gateway:
    d.mkdir(parents=True, exist_ok=True)
    policy_path = d / "policy.toml"
    policy_path.write_text(textwrap.dedent(policy))
    port = port or free_port()
    settings = {
        "hub_api_url": hub.api_url,  # type: ignore[attr-defined]
        "db_url": db_url,
        "policy_file": str(policy_path),
        "backends": backends if backends is not None else BACKENDS,
        "ip": "127.0.0.1",
        "port": port,
        "base_url": "/services/qpu-gateway/",
        "lease_seconds": 2.0,
        "dispatch_poll_seconds": 0.2,
        "policy_reload_seconds": 0.2,
        "auth_cache_seconds": 5.0,
        "sqlite_synchronous": "NORMAL",
        **traits,
    }
    audit = {"path": str(d / "audit" / "audit.jsonl"), "key_file": str(d / "audit.key"),
             "create_key_file": True}
    config = d / f"qpu_config_{port}.py"
    config.write_text(
        "c = get_config()  # noqa\n"
        + "".join(f"c.QpuGateway.{k} = {v!r}\n" for k, v in settings.items())
        + "".join(f"c.AuditLog.{k} = {v!r}\n" for k, v in audit.items())
        + textwrap.dedent(extra_config)
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTERHUB_")}
    gw = Gateway(
        url=f"http://127.0.0.1:{port}/services/qpu-gateway/",
        port=port,
        dir=d,
        log_path=d / f"gateway_{port}.log",
        policy_path=policy_path,
        args=[sys.executable, "-m", "hub_ext.qpu", f"--config={config}"],
        env={**env, "PYTHONPATH": str(ROOT)},
        hub=hub,
    )
    return gw


def _failed(request: pytest.FixtureRequest) -> bool:
    return any(
        getattr(getattr(request.node, f"rep_{w}", None), "failed", False)
        for w in ("setup", "call")
    )


@pytest.fixture
def start_gateway(
    hub: FakeHub, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Gateway]]:
    """Factory: a fresh gateway process per call (``start_gateway(db_url, policy=...)``)."""
    started: list[Gateway] = []

    def start(db_url: str, **kwargs: Any) -> Gateway:
        gw = launch(hub, tmp_path / f"gw{len(started)}", db_url, **kwargs)
        started.append(gw)
        return gw.start()

    yield start
    for gw in started:
        gw.stop()
        if _failed(request):
            print(f"\n===== gateway log ({gw.log_path}) =====\n{gw.log()}")


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def gateway(
    hub: FakeHub, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Gateway]:
    """One gateway per test module and database, for tests that change no global state."""
    d = tmp_path_factory.mktemp("gateway")
    if request.param == "sqlite":
        url = f"sqlite:///{d / 'qpu.sqlite'}"
    else:
        url = request.getfixturevalue("pg_cluster").create_database()
    gw = launch(hub, d, url).start()
    yield gw
    gw.stop()


def audit_records(path: Path, key_file: Path) -> list[dict[str, Any]]:
    """Verify the audit log (hash chain, MACs, sealed head), then return its records."""
    from hub_ext.audit import verify
    from hub_ext.audit.keys import load_key_file

    report = verify.verify(path, [load_key_file(key_file)])
    assert report.ok, report.summary()
    return [json.loads(line) for p in sorted(path.parent.glob("audit*.jsonl"))
            if "checkpoints" not in p.name for line in p.read_text().splitlines()]


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=1, default=str)
