"""Execution lanes, leases and crash recovery.

Each replica runs one dispatcher. For every backend with a free local lane it asks the
store to claim the next job (a database transaction that locks the backend's dispatch
row, so the backend's lane count holds across replicas), runs it in the backend's
thread pool and records the outcome. While a job runs its lease is renewed; a replica
that dies stops renewing, and once the lease expires any replica requeues the job (or
fails it and refunds its quota after ``max_attempts``). Nothing acknowledged vanishes.

The lease loop is also the gateway's periodic upkeep: it forgets expired Idempotency-Keys
(``Store.purge_keys``) every ``PURGE_SECONDS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

from .backends import BackendDriver, Cancelled, Execution, ExecutionError
from .circuits import decode_circuits, result_json
from .credentials import CredentialBroker
from .policyfile import Policy
from .sandbox import Outcome, SandboxPool, Task
from .store import Claimed, Store, StoreError

Emit = Callable[[str, dict[str, Any]], None]

PURGE_SECONDS = 600.0  # at most this long between purges of expired Idempotency-Keys
PURGE_CHUNK = 5000  # keys deleted per transaction: no long hold on SQLite's write lock


class Runner:
    def __init__(
        self,
        store: Store,
        drivers: dict[str, BackendDriver],
        policy: Callable[[], Policy],
        db: Executor,
        *,
        instance: str,
        lease_seconds: float,
        max_attempts: int,
        requeue_lost: bool,
        poll_seconds: float,
        limits: Any,
        emit: Emit,
        log: logging.Logger,
        scrub: CredentialBroker | None = None,
        specs: dict[str, Any] | None = None,
    ) -> None:
        self.scrub = scrub or CredentialBroker(lambda name: {})
        # each lane of a sandboxed backend has a warm sandbox worker
        self.specs = specs or {}
        sandboxed = sum(d.lanes for d in drivers.values() if d.sandboxed)
        self.sandbox = SandboxPool(sandboxed, log) if sandboxed else None
        self.store = store
        self.drivers = drivers
        self.policy = policy
        self.db = db
        self.instance = instance
        self.lease = lease_seconds
        self.max_attempts = max_attempts
        self.requeue_lost = requeue_lost
        self.poll = poll_seconds
        self.limits = limits
        self.emit = emit
        self.log = log
        self.pools = {
            name: ThreadPoolExecutor(d.lanes, thread_name_prefix=f"qpu-{name}")
            for name, d in drivers.items()
        }
        self.local = dict.fromkeys(drivers, 0)
        self.cancel_events: dict[str, threading.Event] = {}
        self.finished: dict[str, list[Any]] = {}
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._settling: set[asyncio.Task[None]] = set()
        self._next_purge = 0.0  # monotonic time; the first pass of the lease loop purges

    # -- public ----------------------------------------------------------------------------

    def start(self) -> None:
        """Dispatch jobs (the sandbox workers start with ``QpuGateway.warm``, or with the
        first job that needs one)."""
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._dispatch_loop()),
            loop.create_task(self._lease_loop()),
        ]

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        for task in self._tasks:
            task.cancel()
        for pool in self.pools.values():
            pool.shutdown(wait=False, cancel_futures=True)
        if self.sandbox is not None:
            self.sandbox.close()

    def wake(self) -> None:
        self._wake.set()

    def cancel_local(self, job_id: str) -> bool:
        event = self.cancel_events.get(job_id)
        if event is not None:
            event.set()
            return True
        return False

    async def wait_finished(
        self, job_id: str, timeout: float
    ) -> tuple[dict[str, Any] | None, bytes | None] | None:
        """Wait up to ``timeout`` for a job run here to finish. Returns (job as recorded,
        result) when it finished here, else None (callers then read the store)."""
        entry = self.finished.setdefault(job_id, [asyncio.Event(), 0, None])
        entry[1] += 1
        try:
            await asyncio.wait_for(entry[0].wait(), timeout)
            outcome: tuple[dict[str, Any] | None, bytes | None] | None = entry[2]
            return outcome
        except TimeoutError:
            return None
        finally:
            entry[1] -= 1
            if entry[1] <= 0 and self.finished.get(job_id) is entry:
                del self.finished[job_id]

    # -- loops ------------------------------------------------------------------------------

    async def _db(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.db, fn, *args)

    async def _dispatch_loop(self) -> None:
        while not self._stopping:
            self._wake.clear()
            try:
                await self._dispatch_once()
            except StoreError as e:
                self.log.error("QPU dispatch: %s", e)
            except Exception as e:
                self.log.error("QPU dispatch failed: %s", type(e).__name__, exc_info=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll)

    async def _dispatch_once(self) -> None:
        policy = self.policy()
        for name, driver in self.drivers.items():
            while self.local[name] < driver.lanes and not self._stopping:
                claimed: Claimed | None = await self._db(
                    self.store.claim_next, name, driver.lanes, self.instance, self.lease, policy
                )
                if claimed is None:
                    break
                self.local[name] += 1
                self.emit("qpu.job.started", {"job_id": claimed.job_id, "backend": name,
                                              "attempt": claimed.attempt})
                self._launch(driver, claimed)

    def _launch(self, driver: BackendDriver, claimed: Claimed) -> None:
        cancel = self.cancel_events.setdefault(claimed.job_id, threading.Event())
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self.pools[driver.name], self._execute, driver, claimed,
                                      cancel)

        async def settle() -> None:
            outcome = await future
            state, result, seconds = outcome.state, outcome.result, outcome.seconds
            try:
                recorded = await self._db(
                    lambda: self.store.finish(
                        claimed.job_id, self.instance, state, result=result, seconds=seconds,
                        error=outcome.error, policy=self.policy(), reason=outcome.reason,
                    )
                )
            except StoreError as e:
                # The lease lapses and another pass recovers the job: nothing is lost.
                self.log.error("QPU job %s: could not record its outcome: %s", claimed.job_id, e)
                recorded = None
            self.local[driver.name] -= 1
            self.cancel_events.pop(claimed.job_id, None)
            if recorded is not None:
                self.emit("qpu.job.finished", {"job_id": claimed.job_id,
                                               "state": recorded["state"],
                                               "backend": driver.name,
                                               # what was charged: a run its owner
                                               # stopped has no outcome seconds
                                               "backend_seconds": recorded["used_seconds"]
                                               or seconds})
            entry = self.finished.get(claimed.job_id)
            if entry is not None:
                # Waiting requests answer from this, without reading the database again.
                entry[2] = (recorded, result if recorded and recorded["state"] == "DONE"
                            else None)
                entry[0].set()
            self._wake.set()

        task = loop.create_task(settle())
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    def _execute(
        self, driver: BackendDriver, claimed: Claimed, cancel: threading.Event
    ) -> Outcome:
        limits = self.policy().run_limits_for(driver.name, driver.backend_class)
        options = dict(claimed.options)
        shots = int(options.pop("shots_per_circuit", claimed.shots))
        try:
            if cancel.is_set():
                raise Cancelled()
            if driver.sandboxed and self.sandbox is not None:
                outcome = self.sandbox.run(Task(
                    backend=driver.name, spec=self.specs.get(driver.name, {}),
                    job_id=claimed.job_id, circuits=claimed.circuits, shots=shots,
                    options=options, memory_mb=limits.memory_mb,
                    max_qubits=limits.max_qubits, limits=self.limits,
                ), limits.seconds, cancel)
                if outcome.state != "DONE" or outcome.seconds is None:
                    return outcome
                held = driver.hold(Execution({}, outcome.seconds), outcome.elapsed, cancel)
                return Outcome("DONE", "COMPLETED", self.scrub.scrub_bytes(outcome.result or b""),
                               held.seconds)
            return self._execute_here(driver, claimed, shots, options, limits.seconds, cancel)
        except Cancelled:
            return Outcome("CANCELLED", "CANCELLED", error="cancelled while running")
        except ExecutionError as e:
            # a provider SDK may quote the credential it was given: never pass it on
            return Outcome("FAILED", "EXECUTION_ERROR", error=self.scrub.scrub(str(e))[:500])
        except Exception as e:
            self.log.error("QPU job %s failed on %s: %s\n%s", claimed.job_id, driver.name,
                           type(e).__name__, self.scrub.scrub(traceback.format_exc()))
            return Outcome("FAILED", "EXECUTION_ERROR", error=(
                f"internal error in backend {driver.name!r}: {type(e).__name__}"))

    def _execute_here(
        self, driver: BackendDriver, claimed: Claimed, shots: int, options: dict[str, Any],
        seconds: float, cancel: threading.Event,
    ) -> Outcome:
        """A provider driver, in this thread; cancelled (it polls ``cancel``) when the run
        passes the policy's time cap."""
        timed_out = threading.Event()

        def expire() -> None:
            timed_out.set()
            cancel.set()

        timer = threading.Timer(seconds, expire)
        timer.daemon = True
        timer.start()
        try:
            circuits = decode_circuits(claimed.circuits, self.limits)
            execution = driver.execute(circuits, shots, options, cancel)
        except Cancelled:
            if not timed_out.is_set():
                raise
            execution = None
        finally:
            timer.cancel()
        if timed_out.is_set():
            return Outcome("FAILED", "TIME_LIMIT", error=(
                f"FAILED:TIME_LIMIT: the run took longer than the {seconds:g} s the policy "
                f"allows on {driver.name!r} and was cancelled (the time it ran is charged)"))
        assert execution is not None
        execution.result["job_id"] = claimed.job_id
        body = result_json(execution.result)
        return Outcome("DONE", "COMPLETED", self.scrub.scrub_bytes(body.encode()),
                       execution.seconds)

    async def _purge_keys(self) -> None:
        """Expired Idempotency-Keys go, a chunk per transaction (admissions run between)."""
        now = time.monotonic()
        if now < self._next_purge:
            return
        self._next_purge = now + min(PURGE_SECONDS, self.store.key_seconds / 4)
        purged = PURGE_CHUNK
        while purged >= PURGE_CHUNK and not self._stopping:
            purged = await self._db(self.store.purge_keys, PURGE_CHUNK)

    async def _lease_loop(self) -> None:
        interval = max(0.05, self.lease / 3)
        while not self._stopping:
            try:
                to_cancel = await self._db(self.store.renew_leases, self.instance, self.lease,
                                           list(self.cancel_events))
                for job_id in to_cancel:
                    self.cancel_local(job_id)
                recovered = await self._db(self.store.recover, self.max_attempts,
                                           self.requeue_lost)
                for job_id, code in recovered:
                    self.log.warning("QPU job %s: lease expired -> %s", job_id, code)
                    self.emit("qpu.job.recovered", {"job_id": job_id, "outcome": code})
                if recovered:
                    self._wake.set()
                await self._purge_keys()
            except StoreError as e:
                self.log.error("QPU lease renewal: %s", e)
            except Exception as e:
                self.log.error("QPU lease loop failed: %s", type(e).__name__, exc_info=True)
            await asyncio.sleep(interval)
