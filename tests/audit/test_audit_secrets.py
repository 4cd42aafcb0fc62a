"""No secret value ever enters the log: known secrets fed through every emitting path,
then searched for in every file of the store, in every error and in the log output."""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import logging

import pytest
from audit_helpers import example
from qtest import AWS_KEY_ID, GITHUB_TOKEN, IBM_QUANTUM_TOKEN

from hub_ext.audit import AuditError, SecretInEvent, schema
from hub_ext.audit.verify import verify

URL_PASSWORD = "hunter2-Qx7vK9mPz"
URL_WITH_PASSWORD = f"https://alice:{URL_PASSWORD}@git.example.org/repo.git"
# Format credentials the scanner finds by itself, and a bare value only the broker knows.
FOUND_BY_SCANNER = {
    "github-token": GITHUB_TOKEN,
    "aws-access-key-id": AWS_KEY_ID,
    "url-password": URL_WITH_PASSWORD,
}
BROKER_SECRET = IBM_QUANTUM_TOKEN  # 128 hex digits: no detector flags it on its own
NEEDLES = [
    GITHUB_TOKEN,
    AWS_KEY_ID,
    URL_PASSWORD,
    BROKER_SECRET,
    base64.b64encode(BROKER_SECRET.encode()).decode(),
]


def string_fields(node, path=()):
    """Paths to every string in an event (values in dicts and lists)."""
    if isinstance(node, str):
        yield path
    elif isinstance(node, dict):
        for k, v in node.items():
            yield from string_fields(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from string_fields(v, (*path, i))


def put(event, path, value):
    event = copy.deepcopy(event)
    node = event
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return event


def leak_cases():
    for name in schema.names():
        event = example(name)
        if name in ("save-refused", "outputs-redacted"):
            event = {k: v for k, v in event.items() if k not in ("user", "server")}
        for path in string_fields(event):
            for secret in [*FOUND_BY_SCANNER.values(), BROKER_SECRET]:
                yield name, event, path, f"note {secret} end"
                yield name, event, path, secret


CASES = list(leak_cases())


def assert_nowhere(log_path, *texts):
    blob = b"".join(p.read_bytes() for p in log_path.parent.iterdir() if p.is_file())
    for needle in NEEDLES:
        assert needle.encode() not in blob, "a secret reached the audit store"
        for text in texts:
            assert needle not in text, "a secret reached an error or log message"


@pytest.mark.parametrize("policy", ["redact", "refuse"])
def test_secrets_in_any_field_of_any_event_never_reach_the_store(
    make_log, log_path, key, caplog, records, policy
):
    caplog.set_level(logging.DEBUG)
    audit = make_log(secret_policy=policy, fail_closed_types=["*"])
    audit.add_known_secrets([BROKER_SECRET])
    audit.emit("login", {"user": "before"})
    outcomes = {"recorded": 0, "refused": 0}
    recorded_values: set[str] = set()
    errors: list[str] = []
    for name, event, path, value in CASES:
        tainted = put(event, path, value)
        try:
            if schema.get(name).origin == schema.USER_SERVER:
                done = audit.record_user_event("alice", "", {"type": name, "data": tainted})
            else:
                done = audit.emit(name, tainted)
        except AuditError as e:
            outcomes["refused"] += 1
            errors.append(str(e))
            errors.append(repr(e))
        else:
            assert done is not None and done.redacted >= 1
            outcomes["recorded"] += 1
            recorded_values.add(value.split()[1] if value.startswith("note ") else value)
    assert len(CASES) > 400
    if policy == "refuse":
        # a value only the hub knows is redacted, never refused (a refusal would tell the
        # sender that it is someone's secret); what the scanner finds is refused
        assert recorded_values == {BROKER_SECRET}
    else:  # the event is kept, redacted (a field of fixed form gets a placeholder that
        # fits it); a user server's event that breaks its schema as sent is refused
        assert outcomes["recorded"] > 400 and outcomes["refused"] > 0
    assert_nowhere(log_path, caplog.text, *errors)
    assert verify(log_path, [key]).ok


def test_redaction_marks_the_field_and_detector(audit, records):
    event = {**example("break-glass"), "justification": f"rotating {GITHUB_TOKEN} after leak"}
    done = audit.emit("break-glass", event)
    (record,) = records()
    assert done.redacted == 1
    assert record["data"]["justification"] == "rotating [REDACTED:github-token] after leak"
    assert record["redacted"] == [{"field": "/justification", "detector": "github-token"}]


def test_known_secrets_are_redacted_in_their_encodings(audit, records):
    audit.add_known_secrets([BROKER_SECRET])
    encoded = base64.b64encode(BROKER_SECRET.encode()).decode()
    as_hex = BROKER_SECRET.encode().hex()
    for value in (BROKER_SECRET, encoded, encoded.rstrip("="), as_hex):
        audit.emit("login", {"user": "a", "user_agent": f"x {value} y"[:512]})
    for record in records():
        assert record["data"]["user_agent"] == "x [REDACTED:known-secret] y"
        assert record["redacted"] == [{"field": "/user_agent", "detector": "known-secret"}]


@pytest.mark.parametrize(
    "text",
    [
        f"{GITHUB_TOKEN}  # pragma: allowlist secret",
        f"gitleaks:allow {AWS_KEY_ID}",
        f"# pragma: allowlist nextline secret\n{GITHUB_TOKEN}",
    ],
)
def test_allowlist_pragmas_do_not_smuggle_secrets_into_the_log(audit, records, text):
    audit.emit("login", {"user": "a", "user_agent": text})
    stored = records()[0]["data"]["user_agent"]
    assert "[REDACTED:" in stored
    assert GITHUB_TOKEN not in stored and AWS_KEY_ID not in stored


def test_secret_in_a_field_name_is_never_reported(audit, log_path, records):
    with pytest.raises(AuditError) as info:
        audit.emit("login", {"user": "a", GITHUB_TOKEN: "x"})
    assert "1 unexpected field(s)" in info.value.message  # counted, not named
    assert GITHUB_TOKEN not in str(info.value)
    with pytest.raises(AuditError) as info:  # nor in a user server's event, checked first
        audit.record_user_event("alice", "", {"type": "save-refused", "data": {
            "path": "a.ipynb", "detectors": ["github-token"], "findings": 1, GITHUB_TOKEN: 1}})
    assert GITHUB_TOKEN not in str(info.value)
    assert records() == []


def test_refuse_policy_records_nothing(make_log, records):
    audit = make_log(secret_policy="refuse")
    with pytest.raises(SecretInEvent) as info:
        audit.emit("login", {"user": "a", "user_agent": GITHUB_TOKEN})
    assert "/user_agent (github-token)" in info.value.message
    assert GITHUB_TOKEN not in str(info.value)
    assert records() == []


def test_known_secrets_must_be_long_enough_to_redact_safely(audit):
    with pytest.raises(ValueError, match="#1 is not a string of at least 8 characters"):
        audit.add_known_secrets(["long-enough-value", "short"])
    assert audit.add_known_secrets([b"bytes-value-123"]) > 0


def test_redaction_survives_in_the_chain(audit, log_path, key):
    audit.emit("policy-changed", {**example("policy-changed"), "summary": f"key {AWS_KEY_ID}"})
    report = verify(log_path, [key], deep=True)
    assert report.ok, report.summary()


@pytest.mark.parametrize(
    "value",
    [
        "://u:x7Q@h",  # 10 ASCII characters: the shortest match of the default detectors
        "://u:éQ@h",  # 9 characters but 10 bytes: still scanned
    ],
)
def test_the_shortest_credentials_skip_no_scan(audit, records, value):
    """Strings too short for any detector are not scanned; the boundary is exact."""
    from hub_ext.audit.scrub import shortest_match

    assert shortest_match(audit.scrubber.engine) == len("://u:x7Q@h")
    done = audit.emit("login", {"user": "carol", "ip": "10.0.0.1", "idp": value})
    assert done is not None and done.redacted == 1
    (record,) = [r for r in records() if r["type"] == "login"]
    assert record["data"]["idp"] == "://u:[REDACTED:url-password]@h"
    assert record["redacted"] == [{"field": "/idp", "detector": "url-password"}]


def test_a_users_own_value_never_cuts_a_stamped_field_or_a_schema_key(audit, records):
    """A value a user stored that equals a user's name, an address or a schema's property
    name ("credential") leaves the hub's own fields and the event's shape alone: the
    record is written, whole. It is cut out of that user's free text; an admin's value is
    still cut out of every field."""
    audit.add_known_secrets(["credential", "alice-the-researcher", "10.0.0.77"],
                            owner="alice-the-researcher")
    audit.emit("server-spawn-requested", {**example("server-spawn-requested"),
                                          "user": "alice-the-researcher", "ip": "10.0.0.77",
                                          "credential": {"kind": "api-token"}})
    data = records()[-1]["data"]
    assert data["user"] == "alice-the-researcher" and data["ip"] == "10.0.0.77"
    assert data["credential"] == {"kind": "api-token"}
    assert "redacted" not in records()[-1]
    audit.emit("login", {"user": "alice-the-researcher", "user_agent": "curl 10.0.0.77"})
    assert records()[-1]["data"]["user_agent"] == "curl [REDACTED:known-secret]"
    audit.add_known_secrets([BROKER_SECRET])
    with contextlib.suppress(AuditError):  # redacted, or refused for its pattern
        audit.emit("login", {"user": BROKER_SECRET, "user_agent": "x"})
    assert BROKER_SECRET not in json.dumps(records())


def test_a_users_own_value_is_cut_out_of_their_events_only(audit, records):
    """What one user stores as a secret of their own never touches another user's
    records: storing a phrase another user's agent string holds changes nothing there."""
    audit.add_known_secrets(["curl/8.5.0 build-7781"], owner="mallory")
    audit.emit("login", {"user": "bob", "user_agent": "curl/8.5.0 build-7781"})
    assert records()[-1]["data"]["user_agent"] == "curl/8.5.0 build-7781"
    assert "redacted" not in records()[-1]
    audit.emit("login", {"user": "mallory", "user_agent": "curl/8.5.0 build-7781"})
    assert records()[-1]["data"]["user_agent"] == "[REDACTED:known-secret]"
    # an event's users are the one it is about and the one who acted
    audit.emit("token-issued", {**example("token-issued"), "user": "bob", "actor": "mallory",
                                "note": "for curl/8.5.0 build-7781"})
    assert records()[-1]["data"]["note"] == "for [REDACTED:known-secret]"


@pytest.mark.parametrize(
    "stored",
    ["aws-secret-access-key", "QISKIT_IBM_TOKEN", "qpu-provider-token", "user:sam-the-student"],
)
def test_storing_the_hubs_vocabulary_as_a_secret_loses_no_record(audit, records, stored):
    """A detector id, a secret's name, a class or a namespace stored as one's own secret:
    other users' save-refused and secret-delivered records are written whole, and so are
    the storing user's own (their fields of fixed form are the hub's words, not free text)."""
    audit.add_known_secrets([stored], owner="sam-the-student")
    delivered_secrets = [{"name": "QISKIT_IBM_TOKEN", "class": "qpu-provider-token",
                          "namespace": "user:sam-the-student"}]
    for user in ("rita", "sam-the-student"):
        done = audit.record_user_event(user, "", {"type": "save-refused", "data": {
            "path": "keys.ipynb", "detectors": ["aws-secret-access-key"], "findings": 1}})
        assert done is not None
        assert records()[-1]["data"]["detectors"] == ["aws-secret-access-key"]
        delivered = {**example("secret-delivered"), "user": user, "secrets": delivered_secrets}
        assert audit.emit("secret-delivered", delivered) is not None
        recorded = records()[-1]["data"]
        assert recorded["secrets"][0]["class"] == "qpu-provider-token"
        if user == "rita":
            assert recorded == delivered


def test_a_guess_at_someone_elses_secret_is_answered_as_any_value(audit, records):
    """A user's server reports events: one holding a value the hub delivered to another
    user (a guess) is recorded, redacted, as one holding any other value would be, never
    refused for it (the refusal would confirm the guess), whatever field it is put in."""
    audit.add_known_secrets(["bobs-course-pass-2024"])  # delivered to bob by the broker
    for guess in ("bobs-course-pass-2024", "bobs-course-pass-2025"):
        done = audit.record_user_event("alice", "", {"type": "outputs-redacted", "data": {
            "path": ("x " + guess).ljust(1024, "y"), "detectors": [guess, "github-token"],
            "redacted": 1}})
        assert done is not None  # both recorded; nothing in the answer tells them apart
        data = records()[-1]["data"]
        assert len(data["path"]) <= 1024
        assert data["detectors"][1] == "github-token"
    right, wrong = records()[-2], records()[-1]
    assert right["data"]["detectors"][0] == "redacted"  # fits the detector id pattern
    assert {r["field"] for r in right["redacted"]} == {"/path", "/detectors/0"}
    assert wrong["data"]["detectors"][0] == "bobs-course-pass-2025" and "redacted" not in wrong
    assert "bobs-course-pass-2024" not in json.dumps(records())


def test_a_known_value_in_a_hub_field_of_fixed_form_loses_no_record(audit, records):
    """Delivering a secret whose class, name or namespace equals a value the hub knows as
    someone's secret is recorded with a placeholder there, not refused: a refusal fails the
    delivery (redeem answers 503) for everyone with such a secret."""
    audit.add_known_secrets(["hardware", "QISKIT_IBM_TOKEN"])
    delivered = {**example("secret-delivered"), "user": "rita", "secrets": [
        {"name": "QISKIT_IBM_TOKEN", "class": "hardware", "namespace": "user:rita"}]}
    assert audit.emit("secret-delivered", delivered) is not None
    recorded = records()[-1]["data"]["secrets"][0]
    assert recorded["class"] == "redacted" and "QISKIT_IBM_TOKEN" not in recorded["name"]
    assert recorded["namespace"] == "user:rita"


def fixed_form_fields(node, path=()):
    """(path, schema) of every string field whose schema fixes its form."""
    if not isinstance(node, dict):
        return
    if node.get("type") == "string" and ("pattern" in node or "format" in node):
        yield path, node
    for name, child in (node.get("properties") or {}).items():
        yield from fixed_form_fields(child, (*path, name))
    if isinstance(node.get("items"), dict):
        yield from fixed_form_fields(node["items"], (*path, 0))


@pytest.mark.parametrize("name", schema.names())
def test_every_field_of_fixed_form_has_a_placeholder_that_fits_it(name):
    """What a redaction writes into a field with a pattern or format matches it: a new
    schema whose pattern none of the placeholders fits fails here, not at redaction."""
    import fastjsonschema

    from hub_ext.audit.scrub import _fitted

    for path, node in fixed_form_fields(schema.get(name).schema):
        placeholder = _fitted("[REDACTED:known-secret]", node)
        check = fastjsonschema.compile({**node, "type": "string"})
        check(placeholder)  # raises if it does not fit
        assert "[REDACTED" not in placeholder, (name, path)
