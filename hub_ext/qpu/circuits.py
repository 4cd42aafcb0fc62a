"""How a job's circuits are stored with its ticket, and how a result becomes JSON.

The store keeps the circuits as the client sent them (QPY or OpenQASM 3 text, already
validated), so a job re-run after a crash decodes exactly what was admitted. Both the
runner (in the gateway) and the sandbox (in a worker process) decode them here, with the
same limits as admission.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from qiskit import QuantumCircuit  # type: ignore[import-untyped]

from .validation import load_qasm3, load_qpy


def encode_circuits(raw: list[dict[str, str]]) -> bytes:
    """The validated ``[{"qpy": b64} | {"qasm3": text}]`` list, as the store keeps it."""
    return json.dumps(raw, separators=(",", ":")).encode()


def decode_circuits(data: bytes, limits: Any) -> list[QuantumCircuit]:
    out = []
    for item in json.loads(data):
        if "qpy" in item:
            out.append(load_qpy(base64.b64decode(item["qpy"]), limits))
        else:
            out.append(load_qasm3(item["qasm3"], limits))
    return out


def result_json(result: dict[str, Any]) -> str:
    """A Qiskit ``Result`` dict as compact JSON (NumPy arrays as lists, complex numbers
    as ``[re, im]``, anything else as its string)."""
    return json.dumps(result, default=_json_default, separators=(",", ":"))


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, complex):
        return [value.real, value.imag]
    return str(value)
