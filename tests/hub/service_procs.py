"""The processes of a real hub's managed services, and a small job for its gateway (the
crash tests and benchmarks/bench_service_crash.py)."""

from __future__ import annotations

import base64
import io
from pathlib import Path

from hubtest import Hub


def service_process(hub: Hub, module: str) -> int:
    """The pid of the process the hub started for the service running ``module``: the one
    whose parent is the hub."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if module.encode() in argv and parent == hub.process.pid:
            return int(entry.name)
    raise AssertionError(f"no {module} process under the hub (pid {hub.process.pid})")


def children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def gone(pid: int) -> bool:
    """Exited (a zombie not yet reaped has closed its sockets too)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"


def bell_qpy() -> str:
    """A 2-qubit Bell circuit as the gateway takes it (base64 QPY)."""
    from qiskit import QuantumCircuit, qpy

    qc = QuantumCircuit(2)
    qc.h(0)
    qc.cx(0, 1)
    qc.measure_all()
    out = io.BytesIO()
    qpy.dump(qc, out)
    return base64.b64encode(out.getvalue()).decode()
