"""A deterministic credential corpus for measuring the save guard (issue 13).

Every sample is written here from public knowledge of each credential FORMAT
(prefix, alphabet, length, structure): no scanner's rule or test file is copied.
Random parts come from a RNG seeded by the format id, so the corpus is the same on
every run and on every machine, and no sample is anybody's real key.

    from benchmarks.guard_corpus import FORMATS, PLACEMENTS, cases, negatives

``cases()`` yields one :class:`~benchmarks.guard_corpus.placements.Case` per
(format, placement): a contents-API model (notebook or file), its path, and the
needles that must not reach disk. ``python -m benchmarks.guard_corpus`` writes
the corpus to ``benchmarks/out/guard_corpus/`` for other tools to read.
"""

from __future__ import annotations

from .formats import FORMATS, Format, Sample
from .negatives import negatives
from .placements import PLACEMENTS, Case, cases, leaked

__all__ = ["FORMATS", "PLACEMENTS", "Case", "Format", "Sample", "cases", "leaked", "negatives"]
