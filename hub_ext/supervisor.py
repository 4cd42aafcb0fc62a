"""Several processes of one service on one port: a small pre-fork supervisor.

A hub-managed service that runs as one process refuses every request from the moment it
crashes until the hub notices, which JupyterHub does by polling its services every 30 s.
Run as ``workers`` processes behind this supervisor, the crash of one worker costs only
the requests that worker held: the others keep accepting on the shared port (each has its
own ``SO_REUSEPORT`` socket, and the kernel sends new connections to live ones only),
and the supervisor starts a new worker at once. The QPU gateway (``QpuGateway.workers``)
and the auditor page (``hub_ext.audit.web``) run this way.

The first process only supervises; it runs no request, database or application code:

- SIGTERM and SIGINT are passed to every worker (as SIGTERM), which then stops as a
  single process would; the supervisor exits when all have;
- SIGHUP is passed on;
- a worker that dies is started again, at most ``MAX_RESTARTS`` times in
  ``RESTART_WINDOW`` seconds; beyond that the service stops (a crash loop must be seen,
  not hidden). A worker that exits with status 2 (a configuration error) stops the
  service at once;
- each worker asks the kernel to send it SIGTERM if the supervisor dies (even by
  SIGKILL), so no orphan keeps serving: the hub's restart of the service then starts a
  new set.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
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


def hold_port(ip: str, port: int) -> tuple[socket.socket, int]:
    """Bind (never listen on) ``ip:port`` with ``SO_REUSEPORT`` before any worker starts:
    the port stays this service's while workers come and go, and a port in use is reported
    once, by the supervisor. Returns the socket (keep it open) and the port bound (``port``
    0: a free one). Raises OSError."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    # first without SO_REUSEPORT: sockets of the same user that set it share a port
    # silently, so an earlier copy of this service still running (its hub killed) would
    # otherwise serve beside this one. SO_REUSEADDR: connections of an earlier run still
    # in TIME_WAIT do not hold the port (a listening socket still does)
    with socket.socket(family) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((ip, port))
        port = int(probe.getsockname()[1])
    holder = socket.socket(family)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        holder.bind((ip, port))
    except OSError:
        holder.close()
        raise
    return holder, int(holder.getsockname()[1])


class Supervisor:
    """Fork ``count`` workers running ``serve(index)`` and look after them. ``what`` names
    the service in the log ("QPU gateway", "audit page")."""

    def __init__(self, count: int, serve: Callable[[int], int], log: logging.Logger,
                 what: str = "service") -> None:
        self.what = what
        self.count = count
        self.serve = serve
        self.log = log
        self.children: dict[int, int] = {}  # pid -> worker index
        self.stopping = False
        self.restarts: deque[float] = deque()
        self.status = 0

    def run(self) -> int:
        """Start the workers, wait for them; the service's exit status."""
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
            self.log.critical("%s worker %d stopped with a configuration error; "
                              "stopping the %s", self.what, index, self.what)
            self._shutdown(CONFIG_ERROR)
            return
        now = time.monotonic()
        while self.restarts and now - self.restarts[0] > RESTART_WINDOW:
            self.restarts.popleft()
        if len(self.restarts) >= MAX_RESTARTS:
            self.log.critical(
                "%s worker %d (pid %d) died (%s); %d restarts in %.0f s already: "
                "stopping the %s (see the log above for the cause)",
                self.what, index, pid, how, MAX_RESTARTS, RESTART_WINDOW, self.what)
            self._shutdown(1)
            return
        self.restarts.append(now)
        self.log.error("%s worker %d (pid %d) died (%s); starting it again",
                       self.what, index, pid, how)
        self._spawn(index)

    def _spawn(self, index: int) -> None:
        # a stop that arrives while a worker is being forked is handled once it is in
        # ``children``, so it reaches that worker too
        stops = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
        signal.pthread_sigmask(signal.SIG_BLOCK, stops)
        try:
            if self.stopping:
                return
            pid = self._fork(index)
            self.children[pid] = index
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, stops)

    def _fork(self, index: int) -> int:
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    signal.signal(sig, signal.SIG_DFL)
                signal.pthread_sigmask(signal.SIG_UNBLOCK,
                                       {signal.SIGTERM, signal.SIGINT, signal.SIGHUP})
                _die_with_parent()
                if os.getppid() == 1:  # the supervisor died before prctl took effect
                    os._exit(1)
                code = self.serve(index)
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 1
            except BaseException:
                self.log.critical("%s worker %d failed", self.what, index, exc_info=True)
            finally:
                logging.shutdown()
                os._exit(code)
        return pid

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
