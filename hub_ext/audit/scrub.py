"""Keeps secret values out of audit records.

Every string in an event (keys and values, at any depth) goes through the Qustody
scanner, and is searched for the exact values the hub knows to be secret (for
example, secrets the broker delivered) in their common encodings. A hit is either
replaced by ``[REDACTED:<detector>]`` or refuses the event, as configured; either
way the value never reaches the store, an error message or a log line.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import threading
import urllib.parse
from collections.abc import Iterable
from typing import Any

from server_ext.scanner.engine import Engine
from server_ext.scanner.filters import INLINE_PRAGMAS, NEXTLINE_PRAGMA

from .errors import SecretInEvent
from .schema import IDENTITY_FIELDS

KNOWN = "known-secret"
MIN_KNOWN_LENGTH = 8
CLEAN_CACHE = 65536  # strings seen clean (user names, projects, images) are not scanned again

Path = tuple[str | int, ...]


class SecretScrubber:
    """Finds credentials in events; thread-safe."""

    def __init__(self, engine: Engine, refuse: bool = False) -> None:
        self.engine = engine
        self.refuse = refuse
        self._known: set[str] = set()
        self._known_re: re.Pattern[str] | None = None
        # Values users chose themselves: redacted too, but never in a field the hub stamps
        # or in a schema's property name (see _stamped).
        self._own: set[str] = set()
        self._own_re: re.Pattern[str] | None = None
        self._lock = threading.Lock()
        # Exact strings the scanner and the known values found nothing in. Cleared when a
        # known value is added; only ever holds strings that are safe to record.
        self._clean: set[str] = set()
        # An ASCII string shorter than every detector's shortest match cannot hold a
        # finding (matches never cross strings), so the scanner is not asked about it.
        self._shortest = shortest_match(engine)

    def add_known(self, values: Iterable[str | bytes], user_chosen: bool = False) -> int:
        """Add exact secret values to redact (and their base64, hex, URL and JSON forms).

        Returns how many new values were added. Values shorter than 8 characters are
        refused: redacting them would shred unrelated text. ``user_chosen`` values (a
        user's own secrets) are not looked for in the fields the hub stamps (user, server,
        actor, ip) nor in property names: a user storing another's name as a secret must
        not cut that name out of their records.
        """
        fresh: set[str] = set()
        for i, raw in enumerate(values):
            value = raw.decode("utf-8", "surrogateescape") if isinstance(raw, bytes) else raw
            if not isinstance(value, str) or len(value) < MIN_KNOWN_LENGTH:
                raise ValueError(
                    f"known secret #{i} is not a string of at least {MIN_KNOWN_LENGTH} characters"
                )
            fresh.update(_encodings(value))
        with self._lock:
            known = self._own if user_chosen else self._known
            before = len(known)
            known |= fresh
            if len(known) != before:
                pattern = re.compile("|".join(map(re.escape, sorted(known, key=len,
                                                                     reverse=True))))
                if user_chosen:
                    self._own_re = pattern
                else:
                    self._known_re = pattern
                self._clean = set()
            return len(known) - before

    def scrub(self, type_name: str, data: Any) -> tuple[Any, list[dict[str, str]]]:
        """``data`` with every credential redacted, and where; or raise SecretInEvent."""
        texts: list[str] = []
        _strings(data, texts)
        clean = self._clean
        fresh = [text for text in texts if text not in clean]
        if not fresh:
            return data, []
        known, own = self._known_re, self._own_re
        shortest = self._shortest
        scan = [t for t in fresh if len(t) >= shortest or not t.isascii()]
        findings = (
            self.engine.scan([_defang(text.encode("utf-8", "surrogatepass")) for text in scan])
            if scan
            else ()
        )
        joined = "\x00".join(fresh) if known is not None or own is not None else ""
        if not any(findings) and not any(
                p is not None and p.search(joined) for p in (known, own)):
            if len(clean) + len(fresh) > CLEAN_CACHE:
                clean.clear()
            clean.update(fresh)
            return data, []
        return self._redact(type_name, data, known, own)

    def _redact(
        self, type_name: str, data: Any, known: re.Pattern[str] | None,
        own: re.Pattern[str] | None = None,
    ) -> tuple[Any, list[dict[str, str]]]:
        """The slow path, once something was found: locate and replace each hit."""
        leaves: list[tuple[Path, bool, str]] = []
        _collect(data, (), leaves)
        segments = [text.encode("utf-8", "surrogatepass") for _, _, text in leaves]
        findings = self.engine.scan([_defang(segment) for segment in segments])
        hits: dict[tuple[Path, bool], tuple[str, list[str]]] = {}
        for (path, is_key, text), segment, found in zip(leaves, segments, findings, strict=True):
            detectors = [f.detector for f in found]
            cleaned = text
            if found:
                out = bytearray(segment)
                for f in sorted(found, key=lambda f: f.start, reverse=True):
                    out[f.start : f.end] = f"[REDACTED:{f.detector}]".encode()
                cleaned = out.decode("utf-8", "surrogatepass")
            for pattern in (known, None if _stamped(path, is_key) else own):
                if pattern is not None and pattern.search(cleaned):
                    cleaned = pattern.sub(f"[REDACTED:{KNOWN}]", cleaned)
                    if KNOWN not in detectors:
                        detectors.append(KNOWN)
            if detectors:
                hits[(path, is_key)] = (cleaned, detectors)
        if not hits:
            return data, []
        redactions: list[dict[str, str]] = []
        cleaned_data = _rebuild(data, (), hits, "", redactions)
        if self.refuse:
            where = ", ".join(f"{r['field']} ({r['detector']})" for r in redactions[:10])
            raise SecretInEvent(
                f"{type_name} event holds a credential in {where}; it was not recorded. "
                "Audit events carry names and fingerprints of secrets, never their values."
            )
        return cleaned_data, redactions


#: Top-level fields the hub itself fills in (who, which server, from where): a value a
#: user chose (their own secret) is not looked for there, so storing a name or an address
#: as a secret does not cut it out of other records. Admins' values and the scanner are.
_STAMPED = frozenset({*IDENTITY_FIELDS, "ip"})


def _stamped(path: Path, is_key: bool) -> bool:
    """A schema's own property name, or a field the hub stamps."""
    return len(path) == 1 and (is_key or path[0] in _STAMPED)


def shortest_match(engine: Engine) -> int:
    """Fewest bytes any of the engine's detectors can match (0 when unknown: scan all)."""
    try:
        from re import _parser  # type: ignore[attr-defined]

        widths = []
        for detector in engine.detectors:
            raw: str | bytes = detector.value.pattern
            # bytes patterns: one character per byte
            pattern = raw.decode("latin-1") if isinstance(raw, bytes) else raw
            widths.append(int(_parser.parse(pattern, detector.value.flags).getwidth()[0]))
    except Exception:  # a private parser changed shape: scan every string
        return 0
    return min(widths, default=0)


def _defang(segment: bytes) -> bytes:
    """Disarm the allow-list pragmas a notebook author may use (same length, so offsets hold).

    In a notebook, ``# pragma: allowlist secret`` marks a false positive the author owns.
    Event fields come from requests and user servers: honouring the pragma there would let
    anyone carry a credential into the log by writing the pragma next to it.
    """
    if b"allow" not in segment:
        return segment
    for pragma in (*INLINE_PRAGMAS, NEXTLINE_PRAGMA):
        segment = segment.replace(pragma, pragma.replace(b":", b";"))
    return segment


def _encodings(value: str) -> set[str]:
    raw = value.encode("utf-8", "surrogateescape")
    forms = {
        value,
        base64.b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode(),
        raw.hex(),
        raw.hex().upper(),
        urllib.parse.quote(value, safe=""),
        json.dumps(value)[1:-1],
    }
    forms |= {f.rstrip("=") for f in forms}
    return {f for f in forms if len(f) >= MIN_KNOWN_LENGTH}


def _strings(node: Any, out: list[str]) -> None:
    """Every string in ``node`` (dict keys included), in a fast walk without paths."""
    if type(node) is dict:
        for key, value in node.items():
            if isinstance(key, str):
                out.append(key)
            if type(value) is str:
                out.append(value)
            elif value is not None and type(value) not in (int, float, bool):
                _strings(value, out)
    elif type(node) is list or type(node) is tuple:
        for value in node:
            if type(value) is str:
                out.append(value)
            elif value is not None and type(value) not in (int, float, bool):
                _strings(value, out)
    elif isinstance(node, str):
        out.append(node)
    elif isinstance(node, dict | list | tuple):  # subclasses: take the careful path
        leaves: list[tuple[Path, bool, str]] = []
        _collect(node, (), leaves)
        out.extend(text for _, _, text in leaves)


def _collect(node: Any, path: Path, out: list[tuple[Path, bool, str]]) -> None:
    if isinstance(node, str):
        out.append((path, False, node))
    elif isinstance(node, dict):
        for key, value in node.items():
            if isinstance(key, str):
                out.append(((*path, key), True, key))
            _collect(value, (*path, key), out)
    elif isinstance(node, list | tuple):
        for i, value in enumerate(node):
            _collect(value, (*path, i), out)


def _rebuild(
    node: Any,
    path: Path,
    hits: dict[tuple[Path, bool], tuple[str, list[str]]],
    pointer: str,
    redactions: list[dict[str, str]],
) -> Any:
    if isinstance(node, str):
        hit = hits.get((path, False))
        if hit is None:
            return node
        redactions.extend({"field": pointer or "/", "detector": d} for d in hit[1])
        return hit[0]
    if isinstance(node, dict):
        result: dict[Any, Any] = {}
        for key, value in node.items():
            new_key = key
            key_hit = hits.get(((*path, key), True)) if isinstance(key, str) else None
            if key_hit is not None:
                new_key = key_hit[0]
            child = f"{pointer}/{_escape(str(new_key))}"
            if key_hit is not None:
                redactions.extend({"field": child, "detector": d} for d in key_hit[1])
            result[new_key] = _rebuild(value, (*path, key), hits, child, redactions)
        return result
    if isinstance(node, list | tuple):
        return [
            _rebuild(v, (*path, i), hits, f"{pointer}/{i}", redactions) for i, v in enumerate(node)
        ]
    return copy.copy(node)


def _escape(part: str) -> str:
    return part.replace("~", "~0").replace("/", "~1")
