"""Deterministic synthetic notebooks for the benchmarks: code, text outputs, images."""

from __future__ import annotations

import base64
import json
import random

CODE = """import os
import numpy as np
from qiskit import QuantumCircuit, transpile
from qiskit_aer import AerSimulator

token = os.environ["QISKIT_IBM_TOKEN"]
def ghz(n: int) -> QuantumCircuit:
    qc = QuantumCircuit(n)
    qc.h(0)
    for i in range(n - 1):
        qc.cx(i, i + 1)
    qc.measure_all()
    return qc

backend = AerSimulator()
result = backend.run(transpile(ghz({n}), backend), shots=1024).result()
print(result.get_counts())
"""


def _table(rng: random.Random, rows: int) -> str:
    lines = ["      shots   counts_0   counts_1   fidelity   backend"]
    for i in range(rows):
        lines.append(
            f"{i:4d}  {rng.randint(100, 9000):6d}  {rng.randint(0, 5000):8d}  {rng.randint(0, 5000):8d}"
            f"  {rng.random():9.6f}  aer_simulator_{rng.choice(['statevector', 'density', 'mps'])}"
        )
    return "\n".join(lines) + "\n"


def generate(size_bytes: int, image_share: float = 0.3, seed: int = 1) -> dict:
    """A notebook of about ``size_bytes`` of JSON: code cells, text outputs, PNG-like images."""
    rng = random.Random(seed)
    cells = []
    total = 0
    i = 0
    while total < size_bytes:
        outputs: list[dict] = [
            {"output_type": "stream", "name": "stdout", "text": _table(rng, 200)},
            {
                "output_type": "execute_result",
                "execution_count": i,
                "metadata": {},
                "data": {
                    "text/plain": _table(rng, 40),
                    "text/html": "<table>"
                    + "".join(f"<tr><td>{rng.random():.5f}</td></tr>" for _ in range(80))
                    + "</table>",
                },
            },
        ]
        if rng.random() < image_share:
            png = base64.b64encode(rng.randbytes(60_000)).decode()
            outputs.append(
                {
                    "output_type": "display_data",
                    "metadata": {},
                    "data": {"image/png": png, "text/plain": "<Figure>"},
                }
            )
        cell = {
            "cell_type": "code",
            "id": f"cell-{i}",
            "metadata": {},
            "execution_count": i,
            "source": CODE.replace("{n}", str(3 + i % 20)),
            "outputs": outputs,
        }
        cells.append(cell)
        total += len(json.dumps(cell))
        i += 1
    return {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
        "cells": cells,
    }
