"""Ordinary Qiskit in a hardened container's kernel runs through the hub's gateway, and
the container holds no provider credential (the gateway's driver does)."""

from __future__ import annotations

import importlib.util
import json
import secrets
import sys
from pathlib import Path

import pytest
from conftest import BACKENDS, QC101_POLICY
from hub.kernelws import run_in_kernel

HUB_TESTS = Path(__file__).resolve().parents[1] / "hub"
sys.path.append(str(HUB_TESTS))
import test_docker_spawner  # noqa: E402
from hubtest import HubError, docker, failed, free_port, launch_hub  # noqa: E402

_spec = importlib.util.spec_from_file_location("hub_conftest", HUB_TESTS / "conftest.py")
assert _spec is not None and _spec.loader is not None
hub_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(hub_conftest)
docker_engine = hub_conftest.docker_engine  # the hub tests' fixtures
singleuser_image = hub_conftest.singleuser_image
user_network = hub_conftest.user_network
prefix = test_docker_spawner.prefix  # names this test's containers and removes them after

pytestmark = pytest.mark.docker

KEY = "qk-" + secrets.token_hex(20)

OPERATOR_CONFIG = f"""
c = get_config()  # noqa
def credentials(backend):
    return {{"api_key": {KEY!r}}} if backend == "keyed" else {{}}
c.QpuGateway.credentials = credentials
c.QpuGateway.backends = {{**{BACKENDS!r},
    "keyed": {{"driver": "tests.qpu.keyed_driver:KeyedDriver"}}}}
"""


KERNEL_CODE = f"""
import json, os
from qiskit import QuantumCircuit, transpile
from qiskit.primitives import BackendSamplerV2
from server_ext.qpu import GatewayProvider, gateway_backend

names = sorted(b.name for b in GatewayProvider().backends())
qc = QuantumCircuit(2); qc.h(0); qc.cx(0, 1); qc.measure_all()
out = {{"backends": names}}
for name in ("aer_simulator", "keyed"):
    backend = gateway_backend(name, project="qc101", purpose="research")
    isa = transpile(qc, backend, seed_transpiler=1)
    out[name] = backend.run(isa, shots=400).result(timeout=180).get_counts()
pub = BackendSamplerV2(backend=gateway_backend("aer_simulator", project="qc101",
                                               purpose="research")).run([isa]).result()[0]
out["sampler"] = pub.data.meas.get_counts()
needle = {KEY[:3]!r} + {KEY[3:]!r}  # never written whole into the container's files
out["env_has_key"] = any(needle in v for v in os.environ.values())
out["has_token"] = bool(os.environ.get("JUPYTERHUB_API_TOKEN"))
print(json.dumps(out))
"""


@pytest.fixture
def docker_hub(tmp_path, request, user_network, prefix, singleuser_image):
    (tmp_path / "qpu_operator.py").write_text(OPERATOR_CONFIG)
    (tmp_path / "policy.toml").write_text(QC101_POLICY)
    extra = user_network.config() + f"""
c.Authenticator.allowed_users = {{"alice"}}
c.SpawnPolicy.home_volume_template = "{prefix}-home-{{username}}"
c.HardenedDockerSpawner.prefix = "{prefix}"
"""
    started: list = []
    try:
        hub = launch_hub(
            tmp_path / "hub", extra=extra, started=started,
            env={"QUSTODY_IMAGE_DIGEST": singleuser_image, "QUSTODY_QPU_PORT": str(free_port()),
                 "QUSTODY_QPU_CONFIG": str(tmp_path / "qpu_operator.py"),
                 "QUSTODY_QPU_POLICY": str(tmp_path / "policy.toml"),
                 "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        )
    except HubError as e:
        pytest.fail(str(e))
    hub.prefix = prefix
    yield hub
    hub.stop()
    if failed(request):
        print(f"\n===== hub log =====\n{hub.log()[-20000:]}")


def test_qiskit_in_a_container_runs_through_the_gateway_without_credentials(docker_hub):
    hub = docker_hub
    status, body = hub.api("POST", "/users/alice/server", {"user_options": {"profile": "student"}})
    assert status in (201, 202), body
    hub.wait_for(lambda: hub.api("GET", "/users/alice")[1]["servers"].get("", {}).get("ready"),
                 timeout=120, what="alice's container")
    token = hub.user_token("alice")
    out = run_in_kernel(f"{hub.url}user/alice/", token, KERNEL_CODE)
    got = json.loads(out.strip().splitlines()[-1])
    assert {"aer_simulator", "keyed"} <= set(got["backends"]), got
    for name in ("aer_simulator", "keyed"):  # keyed: the gateway's driver used the key
        assert set(got[name]) == {"00", "11"} and sum(got[name].values()) == 400, got
    assert set(got["sampler"]) == {"00", "11"}
    assert got["has_token"] and not got["env_has_key"]

    [cid] = docker("ps", "-q", "--filter", f"name={hub.prefix}").split()
    assert KEY not in docker("inspect", cid)  # not in the container's config or env
    found = docker("exec", cid, "bash", "-c",
                   f"grep -rlsF {KEY!r} /home /tmp /etc /opt 2>/dev/null; true")
    assert found.strip() == "", found
