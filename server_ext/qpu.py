"""Run ordinary Qiskit through the Qustody QPU gateway.

    from server_ext.qpu import gateway_backend, tags
    backend = gateway_backend("aer_simulator")
    isa = transpile(circuit, backend)            # the real backend's Target
    job = backend.run(isa, shots=1024, project="qchem", purpose="research")
    counts = job.result().get_counts()

    with tags(project="qchem", purpose="teaching", labels={"lab": "3"}):
        BackendSamplerV2(backend=backend).run([isa]).result()

The backend is a Qiskit ``BackendV2`` whose ``target`` is the gateway backend's real
Target, so ``transpile``, ``generate_preset_pass_manager``, ``backend.run`` and the
reference primitives ``BackendSamplerV2``/``BackendEstimatorV2`` work unchanged. Jobs
are Qiskit jobs (``status()``, ``result()``, ``cancel()``, ``job_id()``) and also say
why they wait (``job.gateway_status()``: state, reason code, queue position,
estimated start).

Each ``backend.run`` sends its job with a new ``Idempotency-Key`` and, if the gateway's
answer is lost (the connection failed or timed out, or the hub's proxy answered 502-504),
sends it again with the same key, twice at most: the gateway answers a repeat with the
job the first attempt made, if it made one, so a retry never makes a second job.

Authentication is the server's hub token (``JUPYTERHUB_API_TOKEN``); no provider
credential exists here. The owner of a job is whoever the token belongs to: there is no
client field for it. Tags come from run options, then ``tags(...)`` blocks, then the
workspace (``QUSTODY_QPU_PROJECT``, ``QUSTODY_QPU_PURPOSE``, ``QUSTODY_QPU_SENSITIVITY``).
The gateway's URL is ``QUSTODY_QPU_URL``.
"""

from __future__ import annotations

import base64
import contextlib
import contextvars
import hashlib
import io
import os
import platform
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import requests
from qiskit import QuantumCircuit, qpy  # type: ignore[import-untyped]
from qiskit.circuit import (  # type: ignore[import-untyped]
    BreakLoopOp,
    ContinueLoopOp,
    ForLoopOp,
    IfElseOp,
    SwitchCaseOp,
    WhileLoopOp,
)
from qiskit.circuit.library import get_standard_gate_name_mapping  # type: ignore[import-untyped]
from qiskit.exceptions import QiskitError  # type: ignore[import-untyped]
from qiskit.providers import BackendV2, JobError, JobStatus, JobV1, Options  # type: ignore[import-untyped]
from qiskit.result import Result  # type: ignore[import-untyped]
from qiskit.transpiler import InstructionProperties, Target  # type: ignore[import-untyped]

from .kernel_errors import QustodyRefusal

TAG_OPTIONS = ("project", "purpose", "sensitivity", "priority", "labels")
RUN_OPTIONS = ("shots", "memory", "seed_simulator", "transpile_seed")
CONTROL_FLOW = {
    "if_else": IfElseOp,
    "while_loop": WhileLoopOp,
    "for_loop": ForLoopOp,
    "switch_case": SwitchCaseOp,
    "break_loop": BreakLoopOp,
    "continue_loop": ContinueLoopOp,
}
STATUS = {
    "QUEUED": JobStatus.QUEUED,
    "HELD": JobStatus.QUEUED,
    "RUNNING": JobStatus.RUNNING,
    "DONE": JobStatus.DONE,
    "CANCELLED": JobStatus.CANCELLED,
    "FAILED": JobStatus.ERROR,
    "REJECTED": JobStatus.ERROR,
}
FINAL = {"DONE", "CANCELLED", "FAILED", "REJECTED"}
#: Pauses before asking a read again (see ``GatewayClient.call``): about 3.5 s in all,
#: beyond the replacement of a crashed gateway worker.
READ_RETRY_DELAYS = (0.5, 1.0, 2.0)
#: Pauses before sending a submission again with its Idempotency-Key (3 attempts in all).
SUBMIT_RETRY_DELAYS = (1.0, 2.0)

_TAGS: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "qustody_qpu_tags", default=None
)
# Primitives run jobs in worker threads, which do not inherit context variables: the
# innermost open ``tags`` block is also kept here for them.
_OPEN: list[dict[str, Any]] = []


class GatewayError(QiskitError, QustodyRefusal):  # type: ignore[misc]
    """The gateway refused a request. ``code`` is its reason code; the message says why."""

    kind = "QPU gateway"

    def __init__(self, status: int, code: str, message: str, body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.body = body if isinstance(body, dict) else {}
        self.job_id = self.body.get("job_id")


@contextlib.contextmanager
def tags(**values: Any) -> Iterator[None]:
    """Default tags for every job submitted inside the block (run options still win)."""
    unknown = sorted(set(values) - set(TAG_OPTIONS))
    if unknown:
        raise ValueError(f"unknown tags {unknown}; tags are {', '.join(TAG_OPTIONS)}")
    merged = {**_active_tags(), **{k: v for k, v in values.items() if v is not None}}
    token = _TAGS.set(merged)
    _OPEN.append(merged)
    try:
        yield
    finally:
        _OPEN.remove(merged)
        _TAGS.reset(token)


def _active_tags() -> dict[str, Any]:
    return _TAGS.get() or (_OPEN[-1] if _OPEN else {})


def workspace_tags() -> dict[str, Any]:
    env = {
        "project": os.environ.get("QUSTODY_QPU_PROJECT"),
        "purpose": os.environ.get("QUSTODY_QPU_PURPOSE"),
        "sensitivity": os.environ.get("QUSTODY_QPU_SENSITIVITY"),
    }
    return {k: v for k, v in env.items() if v}


def _context() -> dict[str, str]:
    """What the kernel knows about where it runs (reported to the gateway as such)."""
    out: dict[str, str] = {}
    server = os.environ.get("JUPYTERHUB_SERVER_NAME")
    if server is not None:
        out["server_name"] = server
    path = os.environ.get("JPY_SESSION_NAME")
    if path:
        out["notebook_path"] = path[:1024]
        with contextlib.suppress(OSError):
            p = Path(path)
            if p.is_file() and p.stat().st_size <= 64 * 1024 * 1024:
                out["notebook_hash"] = "sha256:" + hashlib.sha256(p.read_bytes()).hexdigest()
    with contextlib.suppress(Exception):
        from ipykernel.connect import get_connection_file  # only inside a kernel

        name = Path(get_connection_file()).stem
        out["kernel_id"] = name.removeprefix("kernel-")
    return out


def _client_versions() -> dict[str, str]:
    import qiskit

    from . import __version__

    return {"qustody": __version__, "qiskit": qiskit.__version__,
            "python": platform.python_version()}


class GatewayClient:
    """HTTP access to the gateway with the hub token. Errors raise ``GatewayError``."""

    def __init__(self, url: str | None = None, token: str | None = None,
                 timeout: float = 60.0) -> None:
        url = url or os.environ.get("QUSTODY_QPU_URL")
        if not url:
            raise GatewayError(0, "NO_GATEWAY", "set QUSTODY_QPU_URL to the QPU gateway's URL "
                               "(e.g. https://hub.example/services/qpu-gateway/), or pass url=")
        token = token or os.environ.get("JUPYTERHUB_API_TOKEN")
        if not token:
            raise GatewayError(0, "NO_TOKEN", "no hub token: JUPYTERHUB_API_TOKEN is not set "
                               "(are you inside a hub server?); or pass token=")
        self.url = url.rstrip("/") + "/"
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"token {token}"

    def __repr__(self) -> str:  # never show the token
        return f"GatewayClient({self.url!r})"

    def call(self, method: str, path: str, *, json_body: Any = None,
             params: Mapping[str, Any] | None = None, timeout: float | None = None,
             idempotency_key: str | None = None) -> Any:
        # A request is asked again when it got no answer from the gateway itself: the
        # connection failed, or the hub's proxy answered 502-504 for a gateway process
        # that died (the gateway runs several; another one answers the next request).
        # A read always; a submission only with its Idempotency-Key (the gateway answers
        # a repeat with the job the first attempt made), and then after a timeout too.
        # Without a key a submission is never repeated: it may have been admitted.
        delays: tuple[float, ...] = (
            READ_RETRY_DELAYS if method == "GET" else
            SUBMIT_RETRY_DELAYS if idempotency_key else ())
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        for attempt in range(len(delays) + 1):
            try:
                response = self.session.request(
                    method, self.url + path, json=json_body, params=params,
                    timeout=timeout or self.timeout, headers=headers,
                )
            except requests.RequestException as e:
                # a read timeout: the gateway got the request and did not answer
                lost = isinstance(e, requests.ConnectionError) or (
                    idempotency_key is not None and isinstance(e, requests.Timeout))
                if lost and attempt < len(delays):
                    time.sleep(delays[attempt])
                    continue
                maybe = (f"; the job may have been admitted (Idempotency-Key "
                         f"{idempotency_key}): GatewayProvider().jobs() lists yours"
                         if idempotency_key else "")
                raise GatewayError(0, "UNREACHABLE",
                                   f"cannot reach the QPU gateway at {self.url}: "
                                   f"{type(e).__name__}{maybe}") from None
            try:
                body = response.json() if response.content else None
            except ValueError:
                body = None
            from_proxy = response.status_code in (502, 503, 504) and not (
                isinstance(body, dict) and "error" in body)
            if from_proxy and attempt < len(delays):
                time.sleep(delays[attempt])
                continue
            break
        if response.status_code >= 400:
            body = body if isinstance(body, dict) else {}
            raise GatewayError(response.status_code, str(body.get("error", "HTTP_ERROR")),
                               str(body.get("message", f"HTTP {response.status_code}")), body)
        return body


def target_from_description(desc: Mapping[str, Any]) -> Target:
    """Rebuild a gateway backend's Target (standard gates and control flow)."""
    target = Target(
        num_qubits=desc.get("num_qubits"),
        dt=desc.get("dt"),
        granularity=desc.get("granularity", 1),
        min_length=desc.get("min_length", 1),
        pulse_alignment=desc.get("pulse_alignment", 1),
        acquire_alignment=desc.get("acquire_alignment", 1),
    )
    gates = get_standard_gate_name_mapping()
    for inst in desc.get("instructions", []):
        name = inst["name"]
        props: dict[Any, InstructionProperties | None] = {}
        for qargs, p in inst["qargs"]:
            key = tuple(qargs) if qargs is not None else None
            props[key] = None if p is None else InstructionProperties(duration=p[0], error=p[1])
        if name in CONTROL_FLOW:
            target.add_instruction(CONTROL_FLOW[name], name=name)
        elif name in gates:
            if list(props) == [None]:
                target.add_instruction(gates[name], name=name)
            else:
                target.add_instruction(gates[name], props, name=name)
        # Simulator-only instructions (save_*, set_*, kraus, ...) are not offered.
    return target


class GatewayJob(JobV1):  # type: ignore[misc]
    """A job in the gateway. ``status()`` and ``result()`` ask the gateway."""

    def __init__(self, backend: GatewayBackend, job_id: str, info: Mapping[str, Any]) -> None:
        super().__init__(backend, job_id)
        self._gateway: GatewayBackend = backend
        self._info = dict(info)
        self._result: Result | None = None

    def submit(self) -> None:
        raise JobError("gateway jobs are submitted by backend.run()")

    def gateway_status(self, wait: float = 0.0) -> dict[str, Any]:
        """State, reason code, queue position, estimated start (UNIX time), backend-seconds."""
        info: dict[str, Any] = self._gateway.client.call(
            "GET", f"api/jobs/{self.job_id()}", params={"wait": wait} if wait else None,
            timeout=wait + 30,
        )
        self._info = info
        return info

    @property
    def warnings(self) -> list[dict[str, Any]]:
        """Soft-limit warnings the gateway gave at submission."""
        return list(self._info.get("warnings", []))

    def status(self) -> JobStatus:
        return STATUS[self.gateway_status()["state"]]

    def cancel(self) -> bool:
        info = self._gateway.client.call("DELETE", f"api/jobs/{self.job_id()}")
        return info.get("state") in ("CANCELLED", "RUNNING")

    def result(self, timeout: float | None = None) -> Result:
        if self._result is not None:
            return self._result
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = 30.0 if deadline is None else max(0.0, min(30.0, deadline - time.monotonic()))
            info = self._gateway.client.call(
                "GET", f"api/jobs/{self.job_id()}",
                params={"wait": wait, "include": "result"}, timeout=wait + 30,
            )
            self._info = info
            if info["state"] == "DONE":
                self._result = Result.from_dict(info["result"])
                return self._result
            if info["state"] in FINAL:
                raise JobError(
                    f"job {self.job_id()} ended {info['reason']}"
                    + (f": {info['error']}" if info.get("error") else "")
                )
            if deadline is not None and time.monotonic() >= deadline:
                raise JobError(f"job {self.job_id()} is still {info['reason']} after "
                               f"{timeout} s (position {info.get('queue_position')})")


class GatewayBackend(BackendV2):  # type: ignore[misc]
    """A gateway backend: the real backend's Target; runs go through the gateway."""

    def __init__(self, name: str, client: GatewayClient,
                 provider: GatewayProvider | None = None) -> None:
        self.client = client
        info = client.call("GET", f"api/backends/{name}")
        super().__init__(provider=provider, name=name,
                         description=info.get("description") or f"{name} via the QPU gateway",
                         backend_version=info.get("config_hash", "")[:12])
        self.info = info
        self._target = target_from_description(info["target"])
        self._max_circuits: int | None = info.get("max_circuits")
        self.options.set_validator("shots", (1, int(info.get("max_shots", 100_000))))

    @classmethod
    def _default_options(cls) -> Options:
        return Options(shots=1024, memory=False, seed_simulator=None, transpile_seed=None,
                       project=None, purpose=None, sensitivity=None, priority=None, labels=None)

    @property
    def target(self) -> Target:
        return self._target

    @property
    def max_circuits(self) -> int | None:
        return self._max_circuits

    def run(self, run_input: QuantumCircuit | Sequence[QuantumCircuit],
            **options: Any) -> GatewayJob:
        circuits = [run_input] if isinstance(run_input, QuantumCircuit) else list(run_input)
        if not all(isinstance(c, QuantumCircuit) for c in circuits):
            raise QiskitError("backend.run takes QuantumCircuit objects")
        unknown = sorted(set(options) - set(TAG_OPTIONS) - set(RUN_OPTIONS))
        if unknown:
            raise QiskitError(f"unsupported run options {unknown}; supported: "
                              f"{', '.join(RUN_OPTIONS + TAG_OPTIONS)}")
        merged = {**dict(self.options.items()), **{k: v for k, v in options.items()
                                                    if v is not None}}
        tag_values = {**workspace_tags(), **_active_tags()}
        tag_values.update({k: merged[k] for k in TAG_OPTIONS if merged.get(k) is not None})
        payload: dict[str, Any] = {
            "backend": self.name,
            "circuits": [{"qpy": _qpy(c)} for c in circuits],
            "shots": int(merged["shots"]),
            "options": {k: merged[k] for k in ("memory", "seed_simulator", "transpile_seed")
                        if merged.get(k) is not None},
            "tags": tag_values,
            "client": _client_versions(),
            "context": _context(),
        }
        # One key per submission, reused by the client's retries of it (and only those).
        info = self.client.call("POST", "api/jobs", json_body=payload,
                                idempotency_key=uuid.uuid4().hex)
        return GatewayJob(self, info["job_id"], info)

    def quota(self, project: str | None = None) -> dict[str, Any]:
        """Remaining quota for you and your project(s) on this backend's class."""
        params = {"backend_class": self.info.get("backend_class", "simulator")}
        if project:
            params["project"] = project
        result: dict[str, Any] = self.client.call("GET", "api/quota", params=params)
        return result


def _qpy(circuit: QuantumCircuit) -> str:
    buf = io.BytesIO()
    qpy.dump(circuit, buf)
    return base64.b64encode(buf.getvalue()).decode()


class GatewayProvider:
    """Lists the gateway backends your projects may use."""

    def __init__(self, url: str | None = None, token: str | None = None) -> None:
        self.client = GatewayClient(url, token)

    def backends(self, name: str | None = None) -> list[GatewayBackend]:
        names = [b["name"] for b in self.client.call("GET", "api/backends")["backends"]]
        return [GatewayBackend(n, self.client, self) for n in names if name in (None, n)]

    def get_backend(self, name: str) -> GatewayBackend:
        return GatewayBackend(name, self.client, self)

    def quota(self, project: str | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self.client.call(
            "GET", "api/quota", params={"project": project} if project else None)
        return result

    def jobs(self, **params: Any) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.client.call("GET", "api/jobs", params=params)["jobs"]
        return result


def gateway_backend(name: str, *, url: str | None = None, token: str | None = None,
                    **options: Any) -> GatewayBackend:
    """The gateway backend ``name`` as a Qiskit backend; ``options`` become its defaults."""
    backend = GatewayProvider(url, token).get_backend(name)
    if options:
        backend.set_options(**options)
    return backend
