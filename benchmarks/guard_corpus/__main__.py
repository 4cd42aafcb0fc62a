"""Write the corpus as JSON lines, for tools that do not import Python.

    python -m benchmarks.guard_corpus [--out benchmarks/out/guard_corpus]

``cases.jsonl``: one object per (format, placement) with ``path``, ``model`` (the
contents-API body) and ``needles``; ``negatives.jsonl``: one per hard negative.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from . import FORMATS, PLACEMENTS, cases, negatives


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parent.parent / "out" / "guard_corpus"
    )
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(args.out / "cases.jsonl", "w") as f:
        for case in cases():
            f.write(json.dumps(asdict(case)) + "\n")
            n += 1
    m = 0
    with open(args.out / "negatives.jsonl", "w") as f:
        for neg in negatives():
            f.write(json.dumps(asdict(neg)) + "\n")
            m += 1
    families = sorted({fmt.family for fmt in FORMATS})
    print(f"{len(FORMATS)} formats x {len(PLACEMENTS)} placements = {n} cases; {m} negatives")
    print(f"families: {', '.join(families)}")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
