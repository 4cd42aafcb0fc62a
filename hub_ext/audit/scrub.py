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

from . import schema
from .errors import SecretInEvent, UnknownEventType
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
        # Values users chose themselves, by user: cut out of that user's own events only,
        # and never out of a field the hub stamps, a schema's property name or a field of
        # fixed form (see _own_applies). Anyone may store any string as a secret of their
        # own: a detector id, a secret's name, a class; those are other users' records.
        self._own: dict[str, set[str]] = {}
        self._own_re: dict[str, re.Pattern[str]] = {}
        self._lock = threading.Lock()
        # Exact strings the scanner and the known values found nothing in. Cleared when a
        # known value is added; only ever holds strings that are safe to record.
        self._clean: set[str] = set()
        # An ASCII string shorter than every detector's shortest match cannot hold a
        # finding (matches never cross strings), so the scanner is not asked about it.
        self._shortest = shortest_match(engine)

    def add_known(self, values: Iterable[str | bytes], owner: str | None = None) -> int:
        """Add exact secret values to redact (and their base64, hex, URL and JSON forms).

        Returns how many new values were added. Values shorter than 8 characters are
        refused: redacting them would shred unrelated text. An ``owner``'s values (secrets
        a user stored themselves) are looked for only in events whose ``user`` or
        ``actor`` is that owner, and there not in the fields the hub stamps (user, server,
        actor, ip), property names or fields of fixed form (an enum, a pattern): a user
        storing another's name, a detector id or a secret's name as a secret must not cut
        it out of records, theirs or anyone's.
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
            known = self._known if owner is None else self._own.setdefault(owner, set())
            before = len(known)
            known |= fresh
            if len(known) != before:
                pattern = re.compile("|".join(map(re.escape, sorted(known, key=len,
                                                                     reverse=True))))
                if owner is None:
                    self._known_re = pattern
                    self._clean = set()
                else:  # the clean cache never vouches for an owner's values
                    self._own_re[owner] = pattern
            return len(known) - before

    def _owners_patterns(self, data: Any) -> list[re.Pattern[str]]:
        """The own-value patterns of the users an event is about (its user and actor)."""
        if not self._own_re or type(data) is not dict:
            return []
        found = []
        for field_name in _OWNER_FIELDS:
            who = data.get(field_name)
            pattern = self._own_re.get(who) if isinstance(who, str) else None
            if pattern is not None and pattern not in found:
                found.append(pattern)
        return found

    def scrub(self, type_name: str, data: Any) -> tuple[Any, list[dict[str, str]]]:
        """``data`` with every credential redacted, and where; or raise SecretInEvent."""
        texts: list[str] = []
        _strings(data, texts)
        clean = self._clean
        fresh = [text for text in texts if text not in clean]
        own = self._owners_patterns(data)
        if not fresh and not own:
            return data, []
        known = self._known_re
        shortest = self._shortest
        scan = [t for t in fresh if len(t) >= shortest or not t.isascii()]
        findings = (
            self.engine.scan([_defang(text.encode("utf-8", "surrogatepass")) for text in scan])
            if scan
            else ()
        )
        joined = "\x00".join(fresh) if known is not None else ""
        if not any(findings) and not (known is not None and known.search(joined)):
            if len(clean) + len(fresh) > CLEAN_CACHE:
                clean.clear()
            clean.update(fresh)
            everything = "\x00".join(texts) if own else ""
            if not any(p.search(everything) for p in own):
                return data, []
        return self._redact(type_name, data, known, own)

    def _redact(
        self, type_name: str, data: Any, known: re.Pattern[str] | None,
        own: list[re.Pattern[str]],
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
            mine = own if own and _own_applies(type_name, path, is_key) else []
            for pattern in (known, *mine):
                if pattern is not None and pattern.search(cleaned):
                    cleaned = pattern.sub(f"[REDACTED:{KNOWN}]", cleaned)
                    if KNOWN not in detectors:
                        detectors.append(KNOWN)
            if detectors:
                node = None if is_key else _schema_node(type_name, path)
                if node is not None and _vocabulary(node, text):
                    continue  # one of the schema's own words, public in every record
                hits[(path, is_key)] = (_fitted(cleaned, node), detectors)
        if not hits:
            return data, []
        redactions: list[dict[str, str]] = []
        cleaned_data = _rebuild(data, (), hits, "", redactions)
        # A value the hub knows is always redacted, never refused: an event refused for
        # holding one would tell its sender that the value is someone's secret.
        if self.refuse and any(r["detector"] != KNOWN for r in redactions):
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
#: Whose own values apply to an event: the user it is about and the user who acted.
_OWNER_FIELDS = ("user", "actor")
#: Schema keywords that fix a string's form: such a field holds the hub's vocabulary
#: (detector ids, secret names, classes, states), which a redaction would only break.
_FIXED_FORM = ("enum", "const", "pattern", "format")


def _stamped(path: Path, is_key: bool) -> bool:
    """A schema's own property name, or a field the hub stamps."""
    return len(path) == 1 and (is_key or path[0] in _STAMPED)


def _own_applies(type_name: str, path: Path, is_key: bool) -> bool:
    """Whether a user's own values are looked for at ``path`` of an event of ``type_name``:
    not in a stamped field or property name, nor in a field whose schema fixes its form."""
    return not _stamped(path, is_key) and (is_key or not _fixed_form(type_name, path))


def _fixed_form(type_name: str, path: Path) -> bool:
    node = _schema_node(type_name, path)
    return node is not None and any(word in node for word in _FIXED_FORM)


def _schema_node(type_name: str, path: Path) -> dict[str, Any] | None:
    """The schema of the value at ``path`` of an event of ``type_name``, if it has one."""
    try:
        node: Any = schema.get(type_name).schema
    except UnknownEventType:
        return None
    for part in path:
        if not isinstance(node, dict):
            return None
        if isinstance(part, int):
            node = node.get("items")
        else:
            node = (node.get("properties") or {}).get(part, node.get("additionalProperties"))
    return node if isinstance(node, dict) else None


def _vocabulary(node: dict[str, Any], text: str) -> bool:
    """``text`` is one of the values the schema lists for the field (its enum or const):
    a word every record of the type may hold, so no one's secret to hide."""
    return text in (node.get("enum") or ()) or ("const" in node and text == node["const"])


#: What a redacted value becomes in a field whose schema fixes its form (a pattern, a
#: format), the first that fits: ``[REDACTED:...]`` would break the record, and a sender
#: whose event is then refused would learn that its value is someone's secret. The
#: record's ``redacted`` list says the field was redacted.
_FITTING = (
    "redacted", "REDACTED", "user:redacted", "release:redacted", "0" * 12, "0" * 64,
    "sha256:" + "0" * 64, "::", "1970-01-01T00:00:00Z",
)
_FORMATS = {"date-time": "1970-01-01T00:00:00Z"}


def _fitted(cleaned: str, node: dict[str, Any] | None) -> str:
    """The redacted text as the field's schema allows it: a fitting placeholder for a
    field of fixed form, and no longer than its ``maxLength`` (a short value redacted
    grows)."""
    if node is None:
        return cleaned
    pattern = node.get("pattern")
    if "format" in node:
        cleaned = _FORMATS.get(str(node["format"]), cleaned)
    elif isinstance(pattern, str):
        cleaned = next((m for m in _FITTING if re.search(pattern, m)), cleaned)
    limit = node.get("maxLength")
    if isinstance(limit, int) and len(cleaned) > limit:
        cleaned = cleaned[:limit]
    return cleaned


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
