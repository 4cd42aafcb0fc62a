"""The one way a benchmark reaches the test harness (real hub, IdP and PostgreSQL launchers).

Benchmarks run as ``python benchmarks/bench_X.py`` from a fresh checkout, so this folder is
first on ``sys.path``; ``import harness`` then puts the repository root, ``tests/`` (as
pytest's ``pythonpath = ["tests"]`` does for the tests) and the harness folders
``tests/hub`` and ``tests/qpu`` after it, once.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"

for _folder in (ROOT, TESTS, TESTS / "hub", TESTS / "qpu"):
    if str(_folder) not in sys.path:
        sys.path.insert(1, str(_folder))


def pct(values: list[float], p: float) -> float:
    """The ``p``-th percentile (0-100) by nearest rank, as every benchmark prints it."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]
