"""Event types: one versioned jupyter-events schema per type, in ``schemas/<type>.yaml``.

The schemas ship inside the package (nobody configures new ones), so their check against
the jupyter-events metaschema runs in the tests, not at every start: importing
jupyter-events pulls in jsonschema's format checkers, which cost the gateway and audit
service seconds of start-up. Events are validated with a compiled validator
(fastjsonschema) because the audit log sits on hot paths; a test keeps it in agreement
with jupyter-events' own validator.

Extra top-level keys a schema carries:

* ``x-qustody-origin``: ``hub`` (emitted by hub components) or ``user-server``
  (reported by a user's server through the hub, which stamps ``user`` and ``server``).
* ``examples``: valid events, used by the documentation and the tests.
"""

from __future__ import annotations

import copy
import functools
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import fastjsonschema
import yaml

from .errors import SchemaViolation, UnknownEventType

SCHEMA_BASE = "https://qustody.org/audit/"
HUB = "hub"
USER_SERVER = "user-server"
ORIGINS = (HUB, USER_SERVER)
# Fields the hub stamps on events from user servers; a server may not set them.
IDENTITY_FIELDS = ("user", "server", "actor")
# libyaml's safe loader where PyYAML was built with it (it is, in the wheels we pin).
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class EventType:
    name: str
    version: int
    title: str
    description: str
    origin: str
    schema: Mapping[str, Any] = field(repr=False)
    _compiled: list[Callable[[Any], Any]] = field(default_factory=list, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def schema_id(self) -> str:
        return SCHEMA_BASE + self.name

    @property
    def examples(self) -> list[dict[str, Any]]:
        return copy.deepcopy(list(self.schema.get("examples", [])))

    def validate(self, data: Any) -> None:
        """Raise SchemaViolation naming the field and rule (never the value)."""
        if not self._compiled:
            with self._lock:
                if not self._compiled:
                    self._compiled.append(fastjsonschema.compile(dict(self.schema)))
        try:
            self._compiled[0](data)
        except fastjsonschema.JsonSchemaValueException as e:
            raise SchemaViolation(f"{self.name} event: {_describe(e, data)}") from None


def _describe(e: Any, data: Any) -> str:
    """What rule a field broke, in words that never repeat the offending value."""
    path: list[str] = [str(p) for p in e.path[1:]]
    where = "/" + "/".join(path) if path else "the event"
    rule = str(e.rule)
    definition = e.rule_definition
    node = data
    for part in path:
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
    if rule == "required":
        present = node if isinstance(node, dict) else {}
        missing = [name for name in definition if name not in present]
        return f"{where} lacks required field(s) {', '.join(missing)}"
    if rule == "additionalProperties":
        known = set((e.definition or {}).get("properties", {}))
        # counted, not named: a name is the sender's text (a pasted key would be logged)
        extra = sum(1 for k in (node if isinstance(node, dict) else {}) if k not in known)
        allowed = ", ".join(sorted(known))
        return f"{where} has {extra} unexpected field(s); allowed: {allowed}"
    if rule == "type":
        return f"{where} must be of type {definition}"
    if rule == "enum":
        return f"{where} must be one of {', '.join(map(str, definition))}"
    if rule in ("pattern", "format"):
        return f"{where} does not match the {rule} {definition!s}"
    return f"{where} breaks the rule {rule} = {definition!s}"


@functools.cache
def event_types() -> dict[str, EventType]:
    """Every declared event type, by name."""
    types: dict[str, EventType] = {}
    folder = resources.files(__package__) / "schemas"
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if not entry.name.endswith(".yaml"):
            continue
        name = entry.name[: -len(".yaml")]
        doc = yaml.load(entry.read_text(encoding="utf-8"), Loader=_Loader)  # noqa: S506
        types[name] = _load(name, doc)
    return types


def _load(name: str, doc: dict[str, Any]) -> EventType:
    where = f"audit schema {name}.yaml"
    if not isinstance(doc, dict) or doc.get("type") != "object":
        raise RuntimeError(f"{where}: must describe an object")
    if doc.get("$id") != SCHEMA_BASE + name:
        raise RuntimeError(f"{where}: $id must be {SCHEMA_BASE}{name}")
    origin = doc.get("x-qustody-origin")
    if origin not in ORIGINS:
        raise RuntimeError(f"{where}: x-qustody-origin must be one of {ORIGINS}")
    version = doc.get("version")
    if not isinstance(version, str) or not version.isdigit():
        raise RuntimeError(f"{where}: version must be a string of digits")
    return EventType(
        name=name,
        version=int(version),
        title=str(doc.get("title", name)),
        description=str(doc.get("description", "")),
        origin=str(origin),
        schema=doc,
    )


def get(name: str) -> EventType:
    try:
        return event_types()[name]
    except (KeyError, TypeError):
        raise UnknownEventType(
            f"unknown audit event type {str(name)[:64]!r}; known types: {', '.join(event_types())}"
        ) from None


def names(origin: str | None = None) -> list[str]:
    return [t.name for t in event_types().values() if origin is None or t.origin == origin]
