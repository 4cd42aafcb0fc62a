"""The sandbox pool without a warm-up: jobs that come before any request (a gateway that
restarted over queued jobs) start its workers themselves, and no more than its size."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

from conftest import bell, qpy_b64
from waiting import wait_for

from hub_ext.qpu.circuits import encode_circuits
from hub_ext.qpu.sandbox import SandboxPool, Task
from hub_ext.qpu.validation import Limits

LIMITS = Limits(max_payload_bytes=1 << 20, max_circuits=10, max_qubits=20, max_depth=1000,
                max_instructions=10_000, max_shots=10_000)


def task(n: int) -> Task:
    return Task(backend="aer_simulator", spec={"driver": "aer"}, job_id=f"job-{n}",
                circuits=encode_circuits([{"qpy": qpy_b64(bell())}]), shots=32, options={},
                memory_mb=1024, max_qubits=20, limits=LIMITS)


def test_jobs_before_any_warm_up_start_the_pool_once() -> None:
    pool = SandboxPool(2, logging.getLogger("test"))
    try:
        with ThreadPoolExecutor(2) as lanes:  # as the runner's lanes: one per worker
            outcomes = list(lanes.map(lambda n: pool.run(task(n), 120, threading.Event()),
                                      range(4)))
        assert [o.state for o in outcomes] == ["DONE"] * 4, outcomes
        pool.start()  # a warm-up after the jobs starts nothing more
        # every worker is back and idle (a recycled one replaced): as many as the pool's
        # size, never one more
        wait_for(lambda: pool._starting == 0, 60, 0.1, "replacements to start")
        assert len(pool._idle) == 2
    finally:
        pool.close()
