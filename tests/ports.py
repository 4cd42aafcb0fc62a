"""Loopback ports for the servers the tests start.

``bind(0)`` hands out ports from the kernel's ephemeral range, the same range every
outgoing connection on the machine draws its source port from. A port chosen that way
and bound a second later by a child process (a hub, its proxy, a database) can by then
be the source port of some connection, or the choice of another pytest-xdist worker:
CI once saw a hub's proxy fail with EADDRINUSE. So ports come from below the ephemeral
range instead, each worker cycling through its own slice, and each is checked free
before it is handed out.
"""

from __future__ import annotations

import itertools
import os
import random
import socket
from pathlib import Path

_LOW, _HIGH = 20000, 32000  # below Linux's default ephemeral range (32768-60999)
# (more than 16 xdist workers share slices; the bind check still keeps ports apart)
_SLICES = 16


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[:2]
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def _worker_slice() -> range:
    """This worker's ports: below the ephemeral range, or above it where a machine's
    widened range leaves no room below (then possibly none: ``free_port`` binds 0)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:]
    index = int(worker) % _SLICES if worker.isdigit() else 0
    low, high = _ephemeral_range()
    start, end = (_LOW, min(_HIGH, low)) if low - _LOW >= 64 * _SLICES else (high + 1, 65536)
    size = max(0, (end - start) // _SLICES)
    return range(start + index * size, start + (index + 1) * size)


def _cycle() -> itertools.cycle[int]:
    ports = list(_worker_slice())
    if not ports:
        return itertools.cycle([0])
    # start at a random place: two runs on one machine (a developer's and CI's) rarely meet
    start = random.randrange(len(ports))
    return itertools.cycle(ports[start:] + ports[:start])


_next_port = _cycle()


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A loopback port nothing listens on, from this worker's own slice."""
    if not _worker_slice():  # no room outside the ephemeral range: the kernel's choice
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])
    for _ in range(len(_worker_slice())):
        port = next(_next_port)
        if _bindable(port):
            return port
    raise RuntimeError("no free loopback port left in this worker's slice")


def free_port_pair() -> int:
    """A free port whose successor is free too (OpenBao's dev cluster listener takes port+1)."""
    if not _worker_slice():
        for _ in range(50):
            port = free_port()
            if _bindable(port + 1):
                return port
        raise RuntimeError("no two adjacent free loopback ports")
    for _ in range(len(_worker_slice())):
        port = free_port()
        if port + 1 in _worker_slice() and _bindable(port + 1):
            next(_next_port)  # never hand port+1 out separately
            return port
    raise RuntimeError("no free pair of loopback ports left in this worker's slice")
