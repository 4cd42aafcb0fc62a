"""Export for a SIEM: one JSON object per line, stable field names (format version 1).

Each line::

    {"format": "qustody-audit/1",
     "@timestamp": "2025-03-01T12:00:00.000000Z",   # when the hub recorded the event (UTC)
     "seq": 41,                                      # position in the log, no gaps
     "type": "server-started",
     "schema": "https://qustody.org/audit/server-started", "schema_version": 1,
     "origin": "hub",                                # or "user-server": reported by a user's server
     "user": "alice", "actor": null,                 # copied from the event for indexing
     "event": {...},                                 # the event, as validated against its schema
     "redacted": [{"field": "/note", "detector": "github-token"}],   # only when something was
     "integrity": {"hash": "...", "prev": "...", "kid": "...", "mac": "..."}}

``integrity.hash`` is the SHA-256 of the stored line and ``integrity.prev`` the hash
of the one before, so the SIEM can check that it received every record in order
without the key. Keeping these hashes outside the host also anchors the log: a
rewrite of exported records on the host no longer matches what the SIEM holds.

Ship incrementally with ``--after-seq`` (the last ``seq`` the SIEM has).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import IO, Any

from . import chain
from .query import Filter, Hit, Stats, query

FORMAT = "qustody-audit/1"
SCHEMA_BASE = "https://qustody.org/audit/"


def siem_record(record: dict[str, Any], line: bytes) -> dict[str, Any]:
    data = record.get("data") if isinstance(record.get("data"), dict) else {}
    assert isinstance(data, dict)
    out: dict[str, Any] = {
        "format": FORMAT,
        "@timestamp": record.get("ts"),
        "seq": record.get("seq"),
        "type": record.get("type"),
        "schema": f"{SCHEMA_BASE}{record.get('type')}",
        "schema_version": record.get("v"),
        "origin": record.get("origin"),
        "user": data.get("user"),
        "actor": data.get("actor"),
        "event": data,
    }
    if record.get("redacted"):
        out["redacted"] = record["redacted"]
    out["integrity"] = {
        "hash": chain.line_hash(line),
        "prev": record.get("prev"),
        "kid": record.get("kid"),
        "mac": record.get("mac"),
    }
    return out


def export(
    path: str | os.PathLike[str],
    out: IO[str],
    flt: Filter | None = None,
    stats: Stats | None = None,
) -> int:
    """Write the selected records of a file log in the SIEM format; returns how many."""
    return export_hits(query(path, flt or Filter(), stats=stats), out)


def export_hits(hits: Iterable[Hit], out: IO[str]) -> int:
    """Write query hits (from a file log or the database) in the SIEM format."""
    count = 0
    for hit in hits:
        out.write(json.dumps(siem_record(hit.record, hit.line), separators=(",", ":")))
        out.write("\n")
        count += 1
    return count
