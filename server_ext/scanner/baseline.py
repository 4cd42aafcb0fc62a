"""``qustody scan --baseline``: accept the findings a repository already has, report new ones.

A baseline lists findings by path, detector and fingerprint, never a value. Fingerprints
are keyed: the key is kept in the baseline file (random, made when the baseline is written)
unless the run takes one from the environment (``--fingerprint-key-env``), so a fingerprint
is the same on every CI run without being a plain hash of the value.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from .documents import Located

VERSION = 1


class BaselineError(ValueError):
    """The baseline file is missing or not one this version reads."""


@dataclass(frozen=True)
class Baseline:
    key: bytes | None  # None: the key comes from the environment on every run
    entries: frozenset[tuple[str, str, str]]

    def known(self, path: str, located: Located) -> bool:
        return _entry(path, located) in self.entries


def _entry(path: str, located: Located) -> tuple[str, str, str]:
    return (Path(path).as_posix(), located.finding.detector, located.finding.fingerprint)


def new_key() -> bytes:
    return os.urandom(32)


def load(file: str) -> Baseline:
    try:
        doc = json.loads(Path(file).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BaselineError(
            f"baseline {file} does not exist; record one with --write-baseline {file}"
        ) from None
    except (OSError, ValueError) as e:
        raise BaselineError(f"baseline {file} cannot be read ({type(e).__name__})") from None
    if not isinstance(doc, dict) or doc.get("version") != VERSION:
        raise BaselineError(
            f"baseline {file} is not a qustody baseline of version {VERSION}; "
            f"record it again with --write-baseline {file}"
        )
    try:
        key = bytes.fromhex(doc["key"]) if doc.get("key") is not None else None
        entries = frozenset(
            (str(f["path"]), str(f["detector"]), str(f["fingerprint"])) for f in doc["findings"]
        )
    except (KeyError, TypeError, ValueError):
        raise BaselineError(
            f"baseline {file} is damaged; record it again with --write-baseline {file}"
        ) from None
    return Baseline(key, entries)


def write(file: str, key: bytes | None, results: list[tuple[str, list[Located]]]) -> int:
    """Record every finding of ``results``; returns how many were recorded."""
    entries = sorted({_entry(path, loc) for path, found in results for loc in found})
    doc = {
        "version": VERSION,
        "about": "qustody scan baseline: findings accepted as known (no values are stored)",
        "key": key.hex() if key is not None else None,
        "findings": [{"path": p, "detector": d, "fingerprint": f} for p, d, f in entries],
    }
    tmp = Path(file + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    tmp.replace(file)
    return len(entries)
