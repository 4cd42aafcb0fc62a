"""Where a log's files live, named from the configured path (e.g. ``/var/log/qustody/audit.jsonl``).

* ``audit.jsonl``                   the live file new records are appended to
* ``audit.000000120000.jsonl``      a rotated file; the number is its first record's seq
* ``audit.head``                    sealed pointer to the last record (and the writers' lock)
* ``audit.checkpoints.jsonl``       sealed checkpoints, one line each
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

SEQ_DIGITS = 12


@dataclass(frozen=True)
class Layout:
    live: Path

    @property
    def head(self) -> Path:
        return self.live.with_name(self.live.stem + ".head")

    @property
    def checkpoints(self) -> Path:
        return self.live.with_name(self.live.stem + ".checkpoints" + self.live.suffix)

    def rotated(self, first_seq: int) -> Path:
        return self.live.with_name(f"{self.live.stem}.{first_seq:0{SEQ_DIGITS}d}{self.live.suffix}")

    def rotated_files(self) -> list[tuple[int, Path]]:
        """Rotated files in seq order, as (first seq, path)."""
        pattern = re.compile(
            re.escape(self.live.stem) + rf"\.(\d{{{SEQ_DIGITS}}})" + re.escape(self.live.suffix)
        )
        found: list[tuple[int, Path]] = []
        if self.live.parent.is_dir():
            for p in self.live.parent.iterdir():
                m = pattern.fullmatch(p.name)
                if m:
                    found.append((int(m.group(1)), p))
        return sorted(found)

    def data_files(self) -> list[Path]:
        """Every file holding records, oldest first (the live file last, if present)."""
        files = [p for _, p in self.rotated_files()]
        if self.live.exists():
            files.append(self.live)
        return files
