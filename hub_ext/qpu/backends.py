"""Execution backends and the plugin interface for real providers.

A backend driver owns one execution target. Built in:

- ``aer``: the qiskit-aer ``AerSimulator``, executed for real in the gateway process.
- ``emulated``: a noisy device built from Qiskit's ``GenericBackendV2`` (coupling map,
  basis gates, errors and durations), executed on Aer with its noise model, with one
  execution lane and accounted backend-seconds, standing in for a scarce QPU.

A real provider (IBM Runtime, Braket, ...) is a subclass of ``BackendDriver`` named in the
configuration as ``"driver": "package.module:ClassName"``. It receives its credentials
from ``QpuGateway.credentials`` (the secret broker), never from a user; see docs/qpu.md.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from qiskit import QuantumCircuit  # type: ignore[import-untyped]
from qiskit.transpiler import Target  # type: ignore[import-untyped]

from .credentials import CredentialError
from .errors import Invalid

CredentialSource = Callable[[str], Mapping[str, str]]
"""Called with a backend name; returns that backend's credentials (from the secret broker)."""

IGNORED_INSTRUCTIONS = frozenset({"barrier"})


class ExecutionError(Exception):
    """The backend could not run the job. The message is shown to the job's owner."""


class Cancelled(Exception):
    """The job was cancelled while running."""


@dataclass
class Execution:
    """What a run produced: a Qiskit ``Result`` as a dict, and backend-seconds used."""

    result: dict[str, Any]
    seconds: float


class BackendDriver(ABC):
    """One backend the gateway can run jobs on.

    Subclasses set ``backend_class`` (``"simulator"`` or ``"hardware"``: which quotas,
    rate limits and sensitivity rules apply) and implement ``build_target`` and
    ``execute``. ``execute`` runs in a worker thread, must return within the lease
    (the gateway renews it while it runs) and should poll ``cancel`` (a
    ``threading.Event``) between steps, raising ``Cancelled`` when it is set.
    """

    backend_class = "simulator"
    #: options a driver accepts from users; the gateway passes nothing else through.
    kind = ""
    #: True: the driver simulates on this host, so its runs go to a sandbox process
    #: (sandbox.py) through ``simulate``, under the policy's memory and time caps;
    #: ``execute`` is then not called. False (provider drivers): ``execute`` runs in a
    #: gateway thread and is cancelled when the time cap passes. A provider driver built
    #: on ``AerDriver`` sets it back to False: a sandbox has no credentials.
    sandboxed = False
    #: Attributes of this driver, beyond those every driver has (name, params, limits,
    #: ``target``, ``config_hash``), that its ``check_circuits`` and ``estimate_seconds``
    #: read. They are copied to the parse workers' credential-free stand-in of a driver
    #: that needs credentials to build (parsing.py): never list one that holds or
    #: derives from a credential.
    stand_in_attrs: tuple[str, ...] = ()

    def __init__(
        self, name: str, params: Mapping[str, Any], credentials: CredentialSource
    ) -> None:
        self.name = name
        self.params = dict(params)
        self._credentials = credentials
        self.lanes = int(self.params.pop("lanes", 1))
        self.max_shots = int(self.params.pop("max_shots", 100_000))
        self.description = str(self.params.pop("description", ""))
        if self.lanes < 1:
            raise ValueError(f"backend {name!r}: lanes must be at least 1")
        if self.max_shots < 1:
            raise ValueError(f"backend {name!r}: max_shots must be at least 1")
        self.target = self.build_target()
        self.public = describe_target(self.target)
        self.config_hash = hashlib.sha256(
            json.dumps(
                {"kind": self.kind, "params": self.params, "target": self.public},
                sort_keys=True,
                default=str,
            ).encode()
        ).hexdigest()

    def credentials(self) -> Mapping[str, str]:
        """This backend's credentials from the broker; never logged, never returned.

        ``ExecutionError`` (the job fails with the broker's message: which backend, what
        is missing) when the broker has none or cannot be read."""
        try:
            return self._credentials(self.name)
        except CredentialError as e:
            raise ExecutionError(str(e)) from None

    @abstractmethod
    def build_target(self) -> Target: ...

    @abstractmethod
    def execute(
        self,
        circuits: Sequence[QuantumCircuit],
        shots: int,
        options: Mapping[str, Any],
        cancel: threading.Event,
    ) -> Execution: ...

    def simulate(
        self, circuits: Sequence[QuantumCircuit], shots: int, options: Mapping[str, Any],
        memory_mb: int,
    ) -> Execution:
        """Run in a sandbox process (``sandboxed`` drivers): no cancel event, the sandbox
        is killed instead. ``memory_mb`` is the cap the process is held to."""
        raise NotImplementedError(f"backend {self.name!r} does not simulate")

    def hold(self, execution: Execution, elapsed: float, cancel: threading.Event) -> Execution:
        """After a sandboxed run, in the gateway: hold the lane if the device would be
        busy longer (emulated devices); the default holds nothing."""
        return execution

    def estimate_seconds(self, circuits: Sequence[QuantumCircuit], shots: int) -> float:
        """Backend-seconds held against quotas at admission (reconciled after the run)."""
        return 0.001 * len(circuits) + 2e-6 * shots * len(circuits)

    def check_circuits(self, circuits: Sequence[QuantumCircuit]) -> None:
        """Refuse circuits the backend cannot run (``Invalid``, with the fix)."""
        for i, circuit in enumerate(circuits):
            if circuit.num_qubits > (self.target.num_qubits or 0):
                raise Invalid(
                    422, "TOO_MANY_QUBITS",
                    f"circuits[{i}] has {circuit.num_qubits} qubits; backend {self.name!r} "
                    f"has {self.target.num_qubits}",
                )

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "backend_class": self.backend_class,
            "description": self.description,
            "num_qubits": self.target.num_qubits,
            "max_shots": self.max_shots,
            "lanes": self.lanes,
            "config_hash": self.config_hash,
        }


def describe_target(target: Target) -> dict[str, Any]:
    """A JSON form of a Target that ``server_ext.qpu`` rebuilds (standard gates only)."""
    instructions = []
    for name in sorted(target.operation_names):
        props = target[name]
        entries = []
        for qargs, p in props.items():
            entries.append(
                [
                    list(qargs) if qargs is not None else None,
                    None if p is None else [p.duration, p.error],
                ]
            )
        instructions.append({"name": name, "qargs": entries})
    return {
        "num_qubits": target.num_qubits,
        "dt": target.dt,
        "granularity": target.granularity,
        "min_length": target.min_length,
        "pulse_alignment": target.pulse_alignment,
        "acquire_alignment": target.acquire_alignment,
        "instructions": instructions,
    }


RESULT_METADATA = frozenset({
    "method", "noise", "measure_sampling", "num_qubits", "num_clbits",
    "active_input_qubits", "input_qubit_map", "time_taken",
})


def _result_dict(result: Any, name: str) -> dict[str, Any]:
    """The result for users: host details (memory, threads, devices) removed."""
    data: dict[str, Any] = result.to_dict()
    data.pop("metadata", None)
    data["backend_name"] = name
    for experiment in data.get("results", []):
        meta = experiment.get("metadata") or {}
        experiment["metadata"] = {k: v for k, v in meta.items() if k in RESULT_METADATA}
    return data


#: What may follow a circuit's measurements and still let Aer sample all shots from one
#: run of the circuit.
_FINAL = frozenset({"measure", "barrier"})


def _per_shot(circuit: QuantumCircuit) -> bool:
    """Whether Aer must run the circuit once per shot: a reset, or any gate after a
    measurement (mid-circuit measurement, feed-forward). Read from the operation counts
    and the circuit's tail, never a Python pass over its instructions (up to a million,
    at every admission): the circuit runs once exactly when all its measurements are in
    the tail of measurements and barriers."""
    ops = circuit.count_ops()
    if ops.get("reset"):
        return True
    measures = int(ops.get("measure", 0))
    data = circuit.data
    in_tail = 0
    for i in range(len(data) - 1, -1, -1):
        name = data[i].operation.name
        if name not in _FINAL:
            break
        in_tail += name == "measure"
    return in_tail < measures


class AerDriver(BackendDriver):
    """The Aer simulator (ideal, or with ``method``), executed in the gateway."""

    kind = "aer"
    backend_class = "simulator"
    sandboxed = True

    def build_target(self) -> Target:
        from qiskit_aer import AerSimulator  # type: ignore[import-untyped]

        self._local = threading.local()
        self._options = {
            k: self.params[k] for k in ("method", "max_parallel_threads") if k in self.params
        }
        unknown = set(self.params) - {"method", "max_parallel_threads"}
        if unknown:
            raise ValueError(f"backend {self.name!r}: unknown aer parameters {sorted(unknown)}")
        target: Target = AerSimulator(**self._options).target
        return target

    def _simulator(self) -> Any:
        sim = getattr(self._local, "sim", None)
        if sim is None:
            from qiskit_aer import AerSimulator

            sim = self._local.sim = AerSimulator(**self._options)
        return sim

    def estimate_seconds(self, circuits: Sequence[QuantumCircuit], shots: int) -> float:
        """Sampling cost per shot, plus the gates' cost: a statevector simulator touches
        every amplitude for each gate (about a nanosecond each), so a wide, long circuit
        is estimated as what it costs and a quota or run limit refuses it at admission,
        not after it has held a lane until its time limit (a failed job is refunded)."""
        width = max((c.num_qubits for c in circuits), default=1)
        sampling = shots * 2e-6 * max(1.0, 2.0 ** max(0, width - 20))
        gates = sum(len(c.data) * 2.0 ** c.num_qubits * (shots if _per_shot(c) else 1)
                    for c in circuits) * 1e-9
        return float(len(circuits) * (0.002 + sampling) + gates)

    def simulate(
        self, circuits: Sequence[QuantumCircuit], shots: int, options: Mapping[str, Any],
        memory_mb: int,
    ) -> Execution:
        # Aer's own memory check refuses a too-wide statevector with a clear message; the
        # sandbox's address-space cap stops everything else (e.g. a density matrix).
        return self.execute(circuits, shots, {**options, "max_memory_mb": memory_mb},
                            threading.Event())

    def execute(
        self,
        circuits: Sequence[QuantumCircuit],
        shots: int,
        options: Mapping[str, Any],
        cancel: threading.Event,
    ) -> Execution:
        run_opts = {k: v for k, v in options.items()
                    if k in ("seed_simulator", "memory", "max_memory_mb")}
        started = time.perf_counter()
        result = self._simulator().run(list(circuits), shots=shots, **run_opts).result()
        if cancel.is_set():
            raise Cancelled()
        if not result.success:
            raise ExecutionError(f"the simulator failed: {str(result.status)[:200]}")
        return Execution(_result_dict(result, self.name), time.perf_counter() - started)


class EmulatedDevice(BackendDriver):
    """A noisy device from ``GenericBackendV2``, one lane, modelled backend-seconds.

    Parameters: ``num_qubits`` (5), ``seed`` (the device's calibration), ``basis_gates``,
    ``shot_seconds`` (modelled time per shot, 0.0002), ``job_seconds`` (overhead per job,
    0.5), ``circuit_seconds`` (per circuit, 0.05) and ``time_scale``: the lane is held for
    ``time_scale`` times the modelled time (1.0 behaves like a real device; 0 runs as fast
    as Aer can). Backend-seconds accounted are always the modelled time.
    """

    kind = "emulated"
    backend_class = "hardware"
    sandboxed = True

    def build_target(self) -> Target:
        from qiskit.providers.fake_provider import GenericBackendV2  # type: ignore[import-untyped]

        allowed = {
            "num_qubits", "seed", "basis_gates", "shot_seconds", "job_seconds",
            "circuit_seconds", "time_scale",
        }
        unknown = set(self.params) - allowed
        if unknown:
            raise ValueError(
                f"backend {self.name!r}: unknown emulated parameters {sorted(unknown)}; "
                f"allowed: {sorted(allowed)}"
            )
        kwargs: dict[str, Any] = {
            "num_qubits": int(self.params.get("num_qubits", 5)),
            "seed": int(self.params.get("seed", 1234)),
            "noise_info": True,
        }
        if "basis_gates" in self.params:
            kwargs["basis_gates"] = list(self.params["basis_gates"])
        self.shot_seconds = float(self.params.get("shot_seconds", 0.0002))
        self.job_seconds = float(self.params.get("job_seconds", 0.5))
        self.circuit_seconds = float(self.params.get("circuit_seconds", 0.05))
        self.time_scale = float(self.params.get("time_scale", 1.0))
        for field in ("shot_seconds", "job_seconds", "circuit_seconds", "time_scale"):
            value = getattr(self, field)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"backend {self.name!r}: {field} must be >= 0")
        self.device = GenericBackendV2(**kwargs)
        self._sim: Any = None
        self._sim_lock = threading.Lock()
        self._run_lock = threading.Lock()
        target: Target = self.device.target
        return target

    def _simulator(self) -> Any:
        """The noisy simulator, made at the first run: its noise model takes a second or
        more to compute, and the gateway and parse workers, which only admit, never run."""
        with self._sim_lock:
            if self._sim is None:
                from qiskit_aer import AerSimulator

                self._sim = AerSimulator.from_backend(self.device)
            return self._sim

    def estimate_seconds(self, circuits: Sequence[QuantumCircuit], shots: int) -> float:
        return (
            self.job_seconds
            + len(circuits) * self.circuit_seconds
            + len(circuits) * shots * self.shot_seconds
        )

    def check_circuits(self, circuits: Sequence[QuantumCircuit]) -> None:
        super().check_circuits(circuits)
        for i, circuit in enumerate(circuits):
            for inst in circuit.data:
                name = inst.operation.name
                if name in IGNORED_INSTRUCTIONS:
                    continue
                qargs = tuple(circuit.find_bit(q).index for q in inst.qubits)
                if not self.target.instruction_supported(name, qargs):
                    raise Invalid(
                        422, "NOT_ISA",
                        f"circuits[{i}]: {name} on qubits {list(qargs)} is not supported by "
                        f"{self.name!r}; transpile for the backend first "
                        "(transpile(circuit, backend) or generate_preset_pass_manager)",
                    )

    def simulate(
        self, circuits: Sequence[QuantumCircuit], shots: int, options: Mapping[str, Any],
        memory_mb: int,
    ) -> Execution:
        run_opts = {k: v for k, v in options.items() if k in ("seed_simulator", "memory")}
        result = self._simulator().run(list(circuits), shots=shots, max_memory_mb=memory_mb,
                               **run_opts).result()
        if not result.success:
            raise ExecutionError(f"the device emulation failed: {str(result.status)[:200]}")
        return Execution(_result_dict(result, self.name), self.estimate_seconds(circuits, shots))

    def hold(self, execution: Execution, elapsed: float, cancel: threading.Event) -> Execution:
        # One lane, held for the modelled device time, waking early on cancel.
        with self._run_lock:
            remaining = execution.seconds * self.time_scale - elapsed
            if remaining > 0 and cancel.wait(remaining):
                raise Cancelled()
        return execution

    def execute(
        self,
        circuits: Sequence[QuantumCircuit],
        shots: int,
        options: Mapping[str, Any],
        cancel: threading.Event,
    ) -> Execution:
        modelled = self.estimate_seconds(circuits, shots)
        run_opts = {k: v for k, v in options.items() if k in ("seed_simulator", "memory")}
        with self._run_lock:
            started = time.monotonic()
            result = self._simulator().run(list(circuits), shots=shots, **run_opts).result()
            # Hold the lane for the modelled device time, waking early on cancel.
            remaining = modelled * self.time_scale - (time.monotonic() - started)
            if remaining > 0 and cancel.wait(remaining):
                raise Cancelled()
        if cancel.is_set():
            raise Cancelled()
        if not result.success:
            raise ExecutionError(f"the device emulation failed: {str(result.status)[:200]}")
        return Execution(_result_dict(result, self.name), modelled)


BUILTIN: dict[str, type[BackendDriver]] = {"aer": AerDriver, "emulated": EmulatedDevice}


def load_driver_class(spec: str) -> type[BackendDriver]:
    if spec in BUILTIN:
        return BUILTIN[spec]
    module_name, _, class_name = spec.partition(":")
    if not module_name or not class_name:
        raise ValueError(
            f"driver {spec!r} must be one of {sorted(BUILTIN)} or 'package.module:ClassName'"
        )
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"driver {spec!r} cannot be imported: {type(e).__name__}") from None
    if not (isinstance(cls, type) and issubclass(cls, BackendDriver)):
        raise ValueError(f"driver {spec!r} is not a subclass of hub_ext.qpu.BackendDriver")
    return cls


def build(
    specs: Mapping[str, Mapping[str, Any]], credentials: CredentialSource
) -> dict[str, BackendDriver]:
    drivers: dict[str, BackendDriver] = {}
    for name, spec in specs.items():
        params = dict(spec)
        driver = params.pop("driver", None)
        if not isinstance(driver, str):
            raise ValueError(f"backend {name!r}: give a 'driver' (aer, emulated or module:Class)")
        drivers[name] = load_driver_class(driver)(name, params, credentials)
    return drivers
