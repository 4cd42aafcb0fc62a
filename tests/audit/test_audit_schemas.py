"""The event catalogue: every type declared as a described, versioned jupyter-events schema,
and a decision table of valid and invalid events that both validators agree on."""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import pytest
from audit_helpers import example
from jupyter_events.schema import EventSchema
from qtest import GITHUB_TOKEN

from hub_ext.audit import SchemaViolation, UnknownEventType, schema
from hub_ext.audit.errors import AuditError

TYPES = schema.names()
SCHEMA_DIR = Path(schema.__file__).parent / "schemas"

# The list of what must be recorded, by type name.
REQUIRED_TYPES = {
    "login",
    "login-refused",
    "mfa-refused",
    "role-changed",
    "token-issued",
    "token-revoked",
    "session-refreshed",
    "session-ended",
    "server-spawn-requested",
    "server-started",
    "server-spawn-failed",
    "server-stopped",
    "server-culled",
    "secret-delivered",
    "secret-withheld",
    "secret-stored",  # issue 16: "move to a secret" from JupyterLab
    "ticket-refused",
    "secret-store-tampered",
    "save-refused",
    "outputs-redacted",
    "file-finding",  # issue 13: the file watcher's findings
    "assignment-released",  # issue 14: course workspaces
    "assignment-collected",
    "qpu-job-submitted",
    "qpu-job-admitted",
    "qpu-job-queued",
    "qpu-job-rejected",
    "qpu-job-finished",
    "qpu-job-cancelled",
    "policy-changed",
    "break-glass",
    "audit-verified",
    "audit-space-low",  # issue 12: the audited refusal when the audit disk is nearly full
    "alert-raised",  # issue 17: the audit service's alert engine
    "course-term-step",  # issue 14: the term keeper
}


def test_catalogue_covers_every_required_event():
    assert set(TYPES) == REQUIRED_TYPES
    assert sorted(p.stem for p in SCHEMA_DIR.glob("*.yaml")) == sorted(TYPES)


def _properties(node, path="") -> list[tuple[str, dict]]:
    found = []
    for name, prop in node.get("properties", {}).items():
        found.append((f"{path}/{name}", prop))
        found.extend(_properties(prop, f"{path}/{name}"))
    if isinstance(node.get("items"), dict):
        found.append((f"{path}/items", node["items"]))
        found.extend(_properties(node["items"], f"{path}/items"))
    return found


@pytest.mark.parametrize("name", TYPES)
def test_schema_is_complete_and_closed(name):
    t = schema.get(name)
    doc = t.schema
    assert doc["$id"] == f"https://qustody.org/audit/{name}"
    assert doc["version"] == "1" and t.version == 1
    assert doc["title"] and len(doc["description"]) > 40
    for where, prop in [("", doc), *_properties(doc)]:
        assert prop.get("description"), f"{name}{where} has no description"
        if prop.get("type") == "object":
            assert prop.get("additionalProperties") is False, f"{name}{where} is open"
        if prop.get("type") == "string":
            assert "maxLength" in prop or "enum" in prop, f"{name}{where} is unbounded"
        if prop.get("type") == "array":
            assert "maxItems" in prop, f"{name}{where} is unbounded"
    EventSchema(copy.deepcopy(dict(doc)))  # jupyter-events accepts it, without warnings


@pytest.mark.parametrize("name", schema.names(schema.USER_SERVER))
def test_user_side_events_say_what_the_hub_cannot_vouch_for(name):
    description = schema.get(name).description
    assert "Limitations:" in description
    assert "Reported by the user's own server" in description


def test_types_with_known_limits_document_them():
    for name in ("login", "login-refused", "secret-delivered", "policy-changed"):
        assert "Limitations:" in schema.get(name).description, name


def _reference(name: str):
    """jupyter-events' own validator, the reference our compiled one must agree with."""
    return EventSchema(copy.deepcopy(dict(schema.get(name).schema)))


def _agree(name: str, event) -> bool:
    ours = True
    try:
        schema.get(name).validate(event)
    except SchemaViolation:
        ours = False
    theirs = True
    try:
        _reference(name).validate(event)
    except jsonschema.ValidationError:
        theirs = False
    assert ours == theirs, f"{name}: our validator says {ours}, jupyter-events says {theirs}"
    return ours


@pytest.mark.parametrize("name", TYPES)
def test_examples_are_valid(name):
    assert schema.get(name).examples
    for event in schema.get(name).examples:
        assert _agree(name, event)


def _invalid_variants(name: str):
    """Generated invalid events: each required field missing, an extra field, wrong types."""
    good = example(name)
    doc = schema.get(name).schema
    for field in doc["required"]:
        bad = copy.deepcopy(good)
        bad.pop(field, None)
        yield f"{name}: without {field}", bad
    yield f"{name}: extra field", {**good, "unexpected": "x"}
    for field, prop in doc["properties"].items():
        wrong = {
            "string": 5,
            "integer": "5",
            "number": "5",
            "array": "x",
            "object": [],
            "boolean": "yes",
        }[prop["type"]]
        yield f"{name}: {field} of the wrong type", {**good, field: wrong}
        if prop["type"] == "string" and "enum" in prop:
            yield f"{name}: {field} outside its enum", {**good, field: "not-a-listed-value"}
        if prop["type"] == "string" and "maxLength" in prop:
            yield f"{name}: {field} too long", {**good, field: "a" * (prop["maxLength"] + 1)}
        if prop["type"] in ("integer", "number") and prop.get("minimum") == 0:
            yield f"{name}: {field} negative", {**good, field: -1}


INVALID = [case for name in TYPES for case in _invalid_variants(name)]
# Hand-written cases for rules the generator does not cover.
INVALID += [
    ("server-started: digest not sha256", {**example("server-started"), "image_digest": "md5:abc"}),
    (
        "server-started: boolean for an integer limit",
        {**example("server-started"), "limits": {"mem_bytes": True}},
    ),
    ("server-started: unknown limit", {**example("server-started"), "limits": {"gpus": 1}}),
    (
        "secret-delivered: secret without class",
        {**example("secret-delivered"), "secrets": [{"name": "TOKEN"}]},
    ),
    (
        "secret-delivered: secret with a value",
        {
            **example("secret-delivered"),
            "secrets": [{"name": "T", "class": "x", "value": "s3cr3t!"}],
        },
    ),
    ("token-issued: expiry not a date-time", {**example("token-issued"), "expires_at": "tomorrow"}),
    ("login: credential without kind", {**example("login"), "credential": {"id": "abc"}}),
    (
        "login: credential id with spaces",
        {**example("login"), "credential": {"kind": "api-token", "id": "a b"}},
    ),
    (
        "qpu-job-submitted: job id with slash first",
        {**example("qpu-job-submitted"), "job_id": "/etc"},
    ),
    ("break-glass: empty justification", {**example("break-glass"), "justification": ""}),
    ("login: empty user", {**example("login"), "user": ""}),
    (
        "save-refused: detector id with capitals",
        {**example("save-refused"), "detectors": ["GitHub"]},
    ),
]


@pytest.mark.parametrize(("case", "event"), INVALID, ids=[case for case, _ in INVALID])
def test_invalid_events_are_refused_by_both_validators(case, event):
    name = case.split(":")[0]
    assert not _agree(name, event)


VALID = [
    ("login", {"user": "alice"}),
    ("login-refused", {"reason": "invalid-token"}),
    ("server-spawn-requested", {"user": "alice", "server": ""}),
    ("server-started", {**example("server-started"), "limits": {}}),
    ("qpu-job-admitted", {**example("qpu-job-admitted"), "priority": -3}),
    ("session-refreshed", {"user": "alice", "tokens_renewed": False}),
    (
        "audit-verified",
        {
            "actor": "cli",
            "result": "failed",
            "mode": "quick",
            "records": 0,
            "bad_seq": 7,
            "reason": "its MAC does not match",
        },
    ),
]


@pytest.mark.parametrize(("name", "event"), VALID, ids=[n for n, _ in VALID])
def test_minimal_and_edge_events_are_valid(name, event):
    assert _agree(name, event)


def test_violation_names_field_and_rule_but_never_the_value():
    event = {**example("server-started"), "image_digest": f"sha256:{GITHUB_TOKEN}"}
    with pytest.raises(SchemaViolation) as info:
        schema.get("server-started").validate(event)
    assert "/image_digest does not match the pattern" in info.value.message
    assert GITHUB_TOKEN not in str(info.value)
    with pytest.raises(SchemaViolation) as info:
        schema.get("login").validate({"user": "alice", "note": GITHUB_TOKEN})
    assert "1 unexpected field(s)" in info.value.message
    assert GITHUB_TOKEN not in str(info.value)
    with pytest.raises(SchemaViolation) as info:  # a key name is the sender's text too
        schema.get("login").validate({"user": "alice", GITHUB_TOKEN: "x"})
    assert GITHUB_TOKEN not in str(info.value)
    with pytest.raises(SchemaViolation) as info:
        schema.get("login").validate({})
    assert info.value.message == "login event: the event lacks required field(s) user"


def test_unknown_and_misrouted_types_fail_loudly(audit):
    with pytest.raises(UnknownEventType, match="unknown audit event type 'logged-in'"):
        audit.emit("logged-in", {"user": "alice"})
    with pytest.raises(AuditError, match="use record_user_event"):
        audit.emit("save-refused", example("save-refused"))
    with pytest.raises(SchemaViolation, match="server-started event: the event lacks"):
        audit.emit("server-started", {})
