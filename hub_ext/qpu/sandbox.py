"""Simulations in sandbox processes, under the policy's memory and time caps.

A simulation's memory grows as 2^qubits, so one job run inside the gateway could take the
whole host down with it. Sandboxed drivers (Aer, emulated devices) therefore run each job
in a worker process:

- **memory**: the worker caps its own address space (``RLIMIT_AS``) at its size after
  start-up plus the job's ``memory_mb``, so an allocation past the cap fails inside the
  worker (Aer reports it, Python raises ``MemoryError``) instead of the kernel's OOM killer
  choosing a victim. An rlimit needs no privilege and no cgroup delegation (a
  hub-managed service has neither), binds at once, and is per process. It counts address
  space, not resident memory: the baseline it is added to is measured in the worker after
  Qiskit and Aer's thread pools exist, so ``memory_mb`` is what the job itself may add.
- **time**: the gateway waits at most ``seconds`` for the answer, then kills the worker.
- **a crash** (a signal, the OOM killer) fails only that job.

Workers are reused: a fork from a ``forkserver`` that has imported Qiskit and Aer once
costs milliseconds, not the second a fresh interpreter needs, and an idle worker answers
a small job with two pipe messages. A worker that was killed, crashed or kept more than
``RECYCLE_MB`` after a job is replaced by a fresh one. Over-limit jobs fail with
``MEMORY_LIMIT``, ``TIME_LIMIT`` or ``SANDBOX_CRASHED`` and the store refunds the job
(charging the time a run that overran its limits took).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import multiprocessing
import os
import resource
import signal
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from . import lifeline
from .backends import BackendDriver, Cancelled, ExecutionError, load_driver_class
from .circuits import decode_circuits, result_json
from .errors import Invalid
from .validation import Limits

#: A worker whose address space grew by more than this over a job is replaced.
RECYCLE_MB = 256
#: How long a new worker may take to start (import, warm-up) before it is given up.
START_SECONDS = 120.0
_MB = 1024 * 1024
_PR_SET_PDEATHSIG = 1
_M_ARENA_MAX = -8  # glibc mallopt parameter
#: What the fork server imports once for every sandbox and parse worker (one fork server
#: per gateway process: whichever pool starts first starts it).
FORKSERVER_PRELOAD = ["hub_ext.qpu.sandbox", "hub_ext.qpu.parsing", "hub_ext.qpu.submission",
                      "qiskit_aer"]
MEMORY_MARKERS = ("insufficient memory", "cannot allocate memory", "bad_alloc",
                  "std::bad_alloc", "out of memory")


@dataclass(frozen=True)
class Task:
    """One job for a worker: the backend's configuration and the job's stored form."""

    backend: str
    spec: Mapping[str, Any]  # the backend's QpuGateway.backends entry
    job_id: str
    circuits: bytes  # as stored (circuits.encode_circuits)
    shots: int
    options: Mapping[str, Any]
    memory_mb: int
    max_qubits: int
    limits: Limits


@dataclass(frozen=True)
class Outcome:
    """What a run ended as: ``state`` DONE, FAILED or CANCELLED and the reason code."""

    state: str
    reason: str
    result: bytes | None = None
    seconds: float | None = None
    error: str | None = None
    elapsed: float = 0.0


# -- the worker process ------------------------------------------------------------------------


def _address_space_mb() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE") // _MB


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _no_credentials(backend: str) -> dict[str, str]:
    return {}


def _warm_up() -> None:
    """Before the baseline is measured: few malloc arenas (each thread's arena reserves
    64 MiB of address space, which the cap would count against the job), and one
    statevector run wide enough (15 qubits, above Aer's parallel threshold of 14) that
    Aer's OpenMP threads and their stacks already exist."""
    from qiskit import QuantumCircuit  # type: ignore[import-untyped]
    from qiskit_aer import AerSimulator  # type: ignore[import-untyped]

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).mallopt(_M_ARENA_MAX, 2)
    qc = QuantumCircuit(15)
    qc.h(range(15))
    qc.t(0)
    qc.measure_all()
    AerSimulator(method="statevector").run(qc, shots=8).result()


def _memory_failure(task: Task, detail: str = "") -> Outcome:
    return Outcome(
        "FAILED", "MEMORY_LIMIT",
        error=f"FAILED:MEMORY_LIMIT: the simulation needs more than the {task.memory_mb} MiB "
        f"the policy allows on {task.backend!r}{detail}; use fewer qubits or a "
        "matrix-product-state backend (the time it ran is charged)",
    )


def _run(task: Task, drivers: dict[str, BackendDriver]) -> Outcome:
    key = json.dumps([task.backend, task.spec], sort_keys=True, default=str)
    driver = drivers.get(key)
    if driver is None:
        params = dict(task.spec)
        cls = load_driver_class(str(params.pop("driver")))
        driver = drivers[key] = cls(task.backend, params, _no_credentials)
    started = time.perf_counter()
    try:
        circuits = decode_circuits(task.circuits, task.limits)
        width = max((c.num_qubits for c in circuits), default=0)
        if width > task.max_qubits:  # the policy may have been lowered since admission
            return Outcome("FAILED", "WIDTH_LIMIT", error=(
                f"FAILED:WIDTH_LIMIT: a circuit has {width} qubits; runs on {task.backend!r} "
                f"may now use at most {task.max_qubits} (quota refunded)"))
        execution = driver.simulate(circuits, task.shots, dict(task.options), task.memory_mb)
        execution.result["job_id"] = task.job_id
        body = result_json(execution.result)
    except MemoryError:
        return _memory_failure(task)
    except ExecutionError as e:
        if any(m in str(e).lower() for m in MEMORY_MARKERS):
            return _memory_failure(task)
        return Outcome("FAILED", "EXECUTION_ERROR", error=str(e)[:500])
    except Invalid as e:
        return Outcome("FAILED", "EXECUTION_ERROR", error=e.message[:500])
    return Outcome("DONE", "COMPLETED", result=body.encode(), seconds=execution.seconds,
                   elapsed=time.perf_counter() - started)


def serve(conn: Connection, gateway_pid: int) -> None:
    """The worker's loop: one task at a time, each under its own address-space cap."""
    _die_with_parent()  # the fork server
    lifeline.follow(gateway_pid)  # and the gateway, which the fork server outlives
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the gateway decides when workers stop
    _warm_up()
    base = _address_space_mb()
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    drivers: dict[str, BackendDriver] = {}
    conn.send(("ready", base))
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        cap = (base + task.memory_mb) * _MB
        unlimited = hard == resource.RLIM_INFINITY
        resource.setrlimit(resource.RLIMIT_AS, (cap if unlimited else min(cap, hard), hard))
        try:
            outcome = _run(task, drivers)
        except MemoryError:
            outcome = _memory_failure(task)
        except Exception as e:
            outcome = Outcome("FAILED", "EXECUTION_ERROR", error=(
                f"internal error in backend {task.backend!r}: {type(e).__name__}"))
        finally:
            resource.setrlimit(resource.RLIMIT_AS, (hard, hard))
        recycle = _address_space_mb() > base + RECYCLE_MB
        conn.send(("done", outcome, recycle))
        if recycle:
            return


# -- the gateway side --------------------------------------------------------------------------


class _Worker:
    def __init__(self, process: Any, conn: Connection, base_mb: int) -> None:
        self.process = process
        self.conn = conn
        self.base_mb = base_mb

    def kill(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.process.kill()
        self.process.join(10)
        self.conn.close()


class SandboxPool:
    """Reusable sandbox workers. ``run`` blocks (call it from a lane's thread)."""

    def __init__(self, size: int, log: logging.Logger) -> None:
        self.size = size
        self.log = log
        self._ctx = multiprocessing.get_context("forkserver")
        # the fork server imports Qiskit and Aer once; every worker forks from it
        self._ctx.set_forkserver_preload(FORKSERVER_PRELOAD)
        self._idle: list[_Worker] = []
        self._cond = threading.Condition()
        self._closed = False
        self._starting = 0
        self._started = False

    def start(self) -> None:
        """Start the workers in the background, once (the first job waits for one if
        needed, and starts them if nothing did)."""
        with self._cond:
            if self._started or self._closed:
                return
            # reserved under the lock: a job taking a worker meanwhile waits for these
            # instead of starting one more
            self._started = True
            self._starting += self.size
        for _ in range(self.size):
            self._launch()

    def _spawn(self) -> _Worker:
        parent, child = self._ctx.Pipe()
        process = self._ctx.Process(target=serve, args=(child, os.getpid()), daemon=True,
                                    name="qpu-sandbox")
        process.start()
        child.close()
        if not parent.poll(START_SECONDS):
            process.kill()
            raise ExecutionError("the sandbox process did not start in time")
        try:
            _, base = parent.recv()
        except (EOFError, OSError):
            raise ExecutionError(
                f"the sandbox process failed to start (exit code {process.exitcode})"
            ) from None
        return _Worker(process, parent, int(base))

    def _replace(self) -> None:
        """Start one fresh worker in a thread and put it in the idle list."""
        with self._cond:
            if self._closed:
                return
            self._starting += 1
        self._launch()

    def _launch(self) -> None:
        """Start a worker already counted in ``_starting``, in a thread."""

        def start() -> None:
            try:
                worker = self._spawn()
            except Exception as e:
                if not self._closed:
                    self.log.error("QPU sandbox: a worker failed to start: %s", e)
                worker = None
            with self._cond:
                self._starting -= 1
                if worker is not None and not self._closed:
                    self._idle.append(worker)
                elif worker is not None:
                    worker.kill()
                self._cond.notify_all()

        threading.Thread(target=start, name="qpu-sandbox-start", daemon=True).start()

    def _take(self) -> _Worker:
        self.start()
        with self._cond:
            while True:
                while self._idle:
                    worker = self._idle.pop()
                    if worker.process.is_alive():
                        return worker
                    worker.conn.close()
                if self._closed:
                    raise ExecutionError("the gateway is stopping")
                if self._starting == 0:
                    break
                self._cond.wait(1.0)
        return self._spawn()  # nothing idle and nothing on its way: start one here

    def _give_back(self, worker: _Worker) -> None:
        with self._cond:
            if self._closed:
                worker.kill()
                return
            self._idle.append(worker)
            self._cond.notify_all()

    def run(self, task: Task, seconds: float, cancel: threading.Event) -> Outcome:
        """Run ``task`` in a worker; stop it after ``seconds`` or when ``cancel`` is set."""
        worker = self._take()
        outcome: Outcome
        started = time.monotonic()
        deadline = started + seconds
        try:
            worker.conn.send(task)
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    worker.kill()
                    self._replace()
                    return Outcome("FAILED", "TIME_LIMIT", error=(
                        f"FAILED:TIME_LIMIT: the run took longer than the {seconds:g} s the "
                        f"policy allows on {task.backend!r} and was stopped; use fewer shots, "
                        "qubits or gates (the time it ran is charged)"),
                        elapsed=time.monotonic() - started)
                if worker.conn.poll(min(left, 0.1)):
                    _, outcome, recycle = worker.conn.recv()
                    break
                if cancel.is_set():
                    worker.kill()
                    self._replace()
                    raise Cancelled()
        except (EOFError, OSError):
            worker.kill()
            self._replace()
            code = worker.process.exitcode
            how = (f"was killed by signal {-code}" if code is not None and code < 0
                   else f"exited with status {code}")
            self.log.warning("QPU sandbox: the worker running job %s %s", task.job_id, how)
            return Outcome("FAILED", "SANDBOX_CRASHED", error=(
                f"FAILED:SANDBOX_CRASHED: the simulation process {how} (for example the host "
                "ran out of memory); quota refunded"), elapsed=time.monotonic() - started)
        if recycle:
            worker.process.join(10)
            worker.conn.close()
            self._replace()
        else:
            self._give_back(worker)
        return outcome

    def close(self) -> None:
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._cond.notify_all()
        for worker in idle:
            with contextlib.suppress(OSError, ValueError):
                worker.conn.send(None)
            worker.kill()


__all__ = ["Outcome", "SandboxPool", "Task"]
