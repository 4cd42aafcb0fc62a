"""Several gateway processes on one port: a small pre-fork supervisor.

Admission is Python work (HTTP, JSON, QPY decoding, policy) and one process uses one core;
``QpuGateway.workers`` forks that many processes after the listening socket is bound.
Each worker is a full replica with its own instance name: it admits, dispatches and runs
jobs, and every shared decision goes through the database exactly as for replicas on
different hosts, so nothing here is needed for correctness.

The first process only supervises:

- SIGTERM and SIGINT are passed to every worker, which then stops as a single gateway
  would; the supervisor exits when all have;
- SIGHUP (reload the policy) is passed on;
- a worker that dies is started again, at most ``MAX_RESTARTS`` times in
  ``RESTART_WINDOW`` seconds; beyond that the gateway stops (a crash loop must be seen,
  not hidden). A worker that exits with status 2 (a configuration error) stops the gateway
  at once;
- each worker asks the kernel to send it SIGTERM if the supervisor dies (even by
  SIGKILL), so no orphan keeps serving.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import time
from collections import deque
from collections.abc import Callable

MAX_RESTARTS = 5
RESTART_WINDOW = 60.0
CONFIG_ERROR = 2
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Linux: SIGTERM this process when its parent exits."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the supervisor's own stop still works
        pass


class Supervisor:
    """Fork ``count`` workers running ``serve(index)`` and look after them."""

    def __init__(self, count: int, serve: Callable[[int], int], log: logging.Logger) -> None:
        self.count = count
        self.serve = serve
        self.log = log
        self.children: dict[int, int] = {}  # pid -> worker index
        self.stopping = False
        self.restarts: deque[float] = deque()
        self.status = 0

    def run(self) -> int:
        """Start the workers, wait for them; the gateway's exit status."""
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        signal.signal(signal.SIGHUP, self._forward)
        for index in range(self.count):
            self._spawn(index)
        while self.children:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            if pid not in self.children:
                continue
            index = self.children.pop(pid)
            code = os.waitstatus_to_exitcode(status)
            if self.stopping:
                continue
            self._lost(index, pid, code)
        return self.status

    def _lost(self, index: int, pid: int, code: int) -> None:
        how = f"exit status {code}" if code >= 0 else f"signal {signal.Signals(-code).name}"
        if code == CONFIG_ERROR:
            self.log.critical("QPU gateway worker %d stopped with a configuration error; "
                              "stopping the gateway", index)
            self._shutdown(CONFIG_ERROR)
            return
        now = time.monotonic()
        while self.restarts and now - self.restarts[0] > RESTART_WINDOW:
            self.restarts.popleft()
        if len(self.restarts) >= MAX_RESTARTS:
            self.log.critical(
                "QPU gateway worker %d (pid %d) died (%s); %d restarts in %.0f s already: "
                "stopping the gateway (see the log above for the cause)",
                index, pid, how, MAX_RESTARTS, RESTART_WINDOW)
            self._shutdown(1)
            return
        self.restarts.append(now)
        self.log.error("QPU gateway worker %d (pid %d) died (%s); starting it again "
                       "(its running jobs are recovered through their leases)", index, pid, how)
        self._spawn(index)

    def _spawn(self, index: int) -> None:
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    signal.signal(sig, signal.SIG_DFL)
                _die_with_parent()
                if os.getppid() == 1:  # the supervisor died before prctl took effect
                    os._exit(1)
                code = self.serve(index)
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 1
            except BaseException:
                self.log.critical("QPU gateway worker %d failed", index, exc_info=True)
            finally:
                logging.shutdown()
                os._exit(code)
        self.children[pid] = index

    def _shutdown(self, status: int) -> None:
        self.status = status
        self._stop(signal.SIGTERM, None)

    def _stop(self, signum: int, _frame: object) -> None:
        self.stopping = True
        self._signal_all(signal.SIGTERM if signum == signal.SIGINT else signum)

    def _forward(self, signum: int, _frame: object) -> None:
        self._signal_all(signum)

    def _signal_all(self, signum: int) -> None:
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)
