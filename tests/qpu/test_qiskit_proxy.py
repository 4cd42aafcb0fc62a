"""Ordinary Qiskit through server_ext.qpu and a real gateway, executed on real Aer."""

from __future__ import annotations

import pytest
from conftest import bell
from qiskit import QuantumCircuit, transpile
from qiskit.primitives import BackendEstimatorV2, BackendSamplerV2
from qiskit.providers import JobStatus
from qiskit.quantum_info import SparsePauliOp
from qiskit.transpiler import generate_preset_pass_manager
from qiskit_aer import AerSimulator

from server_ext.qpu import GatewayError, GatewayProvider, gateway_backend, tags


@pytest.fixture
def as_user(gateway, monkeypatch):
    def use(user: str):
        monkeypatch.setenv("QUSTODY_QPU_URL", gateway.url)
        monkeypatch.setenv("JUPYTERHUB_API_TOKEN", gateway.token(user))
        monkeypatch.setenv("QUSTODY_QPU_PURPOSE", "research")

    use("alice")
    return use


def test_run_gives_exactly_the_counts_of_aer(as_user):
    """Same circuit, same seed: the gateway's counts equal AerSimulator's in this process."""
    backend = gateway_backend("aer_simulator")
    circuit = transpile(bell(3), backend, seed_transpiler=1)
    job = backend.run(circuit, shots=1024, seed_simulator=42, project="qchem")
    result = job.result(timeout=120)
    direct = AerSimulator().run(circuit, shots=1024, seed_simulator=42).result()
    assert result.get_counts() == direct.get_counts()
    assert set(result.get_counts()) == {"000", "111"}
    assert job.status() is JobStatus.DONE
    assert len(job.job_id()) == 32


def test_emulated_device_target_transpile_and_noise(as_user):
    backend = gateway_backend("fake_hw", project="qchem")
    assert backend.num_qubits == 5
    assert backend.target.instruction_supported("cx", (0, 1)) or backend.target.instruction_supported(
        "cx", (1, 0)
    )
    assert backend.target["cx"][next(iter(backend.target["cx"]))].error is not None
    pm = generate_preset_pass_manager(optimization_level=1, backend=backend, seed_transpiler=3)
    isa = pm.run(bell(3))
    counts = backend.run(isa, shots=2000, seed_simulator=5).result().get_counts()
    assert sum(counts.values()) == 2000
    good = counts.get("000", 0) + counts.get("111", 0)
    assert good > 1500  # a Bell-like state on a noisy device: mostly right, not exactly
    assert len(counts) > 2  # noise is real


def test_non_isa_circuit_is_refused_with_the_fix(as_user):
    backend = gateway_backend("fake_hw", project="qchem")
    qc = QuantumCircuit(2)
    qc.h(0)  # not a basis gate of the device
    qc.measure_all()
    with pytest.raises(GatewayError) as e:
        backend.run(qc)
    assert e.value.status == 422 and "transpile" in e.value.message


def test_reference_primitives(as_user):
    backend = gateway_backend("aer_simulator")
    with tags(project="qchem", purpose="teaching", labels={"course": "qc101"}):
        pm = generate_preset_pass_manager(optimization_level=1, backend=backend)
        isa = pm.run(bell(2))
        sampler = BackendSamplerV2(backend=backend, options={"seed_simulator": 7})
        pub = sampler.run([isa], shots=500).result()[0]
        counts = pub.data.meas.get_counts()
        assert sum(counts.values()) == 500 and set(counts) <= {"00", "11"}

        qc = QuantumCircuit(2)
        qc.h(0)
        qc.cx(0, 1)
        isa = pm.run(qc)
        obs = SparsePauliOp("ZZ").apply_layout(isa.layout)
        estimator = BackendEstimatorV2(backend=backend, options={"default_precision": 0.02, "seed_simulator": 3})
        ev = estimator.run([(isa, obs)]).result()[0].data.evs
        assert abs(float(ev) - 1.0) < 1e-9  # <ZZ> of a Bell state is exactly 1
    jobs = GatewayProvider().jobs()
    teaching = [j for j in jobs if j["tags"]["purpose"] == "teaching"]
    assert teaching and teaching[0]["tags"]["labels"] == {"course": "qc101"}


def test_provider_lists_only_usable_backends(as_user):
    as_user("carol")  # astro may use aer_simulator and fake_hw
    names = sorted(b.name for b in GatewayProvider().backends())
    assert names == ["aer_simulator", "fake_hw"]
    as_user("nobody")  # has the scope, is in no project: nothing
    assert GatewayProvider().backends() == []


def test_quota_view_counts_what_ran(as_user, gateway):
    backend = gateway_backend("aer_simulator", project="qchem")
    before = backend.quota("qchem")["projects"]["qchem"]["quota"]["simulator"]["day"]
    jobs = [backend.run(bell(2), shots=300) for _ in range(3)]
    for j in jobs:
        j.result(timeout=120)
    after = backend.quota("qchem")["projects"]["qchem"]["quota"]["simulator"]["day"]
    assert after["jobs"]["used"] - before["jobs"]["used"] == 3
    assert after["shots"]["used"] - before["shots"]["used"] == 900
    assert after["jobs"]["limit"] is None  # no limit configured for this project


def test_missing_configuration_is_explained(monkeypatch):
    monkeypatch.delenv("QUSTODY_QPU_URL", raising=False)
    with pytest.raises(GatewayError) as e:
        gateway_backend("aer_simulator")
    assert "QUSTODY_QPU_URL" in e.value.message
