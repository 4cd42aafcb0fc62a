"""The hub's delivery: configuration checked at start-up, policy applied to what the
broker returns, sessions for refresh, clean-up when a server stops."""

from __future__ import annotations

from pathlib import Path

import pytest
from traitlets.config import Config

from hub_ext.secrets.delivery import RoleLost, SecretDelivery
from hub_ext.secrets.model import SecretError, SecretExists
from hub_ext.secrets.tickets import TicketRefused, TicketSigner

#: The key the hub would sign tickets with; ``issue`` is the hub's side of a spawn.
KEY = b"k" * 32


def issue(user: str, server: str, token: str, profile: str, roles: tuple[str, ...]) -> str:
    return TicketSigner(KEY, 30).issue(user, server, token, profile, roles)[0]


def config(tmp_path: Path, **broker: object) -> Config:
    c = Config()
    c.SecretBroker.db_path = str(tmp_path / "s.sqlite")
    c.SecretBroker.master_key_file = str(tmp_path / "s.key")
    c.SecretBroker.create_master_key = True
    c.SecretClassPolicy.profile_classes = {"student": ["sandbox"], "researcher": ["*"]}
    c.SecretClassPolicy.role_classes = {"student": ["sandbox"], "researcher": ["*"]}
    for k, v in broker.items():
        setattr(c.SecretBroker, k, v)
    return c


def test_redeem_filters_by_class_and_refresh_follows_the_store(tmp_path: Path) -> None:
    d = SecretDelivery(config(tmp_path), ["student", "researcher"], ticket_key=KEY)
    store = d.broker
    store.put("user:alice", "SANDBOX", "sandbox", b"sandbox-value-1")  # type: ignore[attr-defined]
    store.put("user:alice", "PROD", "prod", b"prod-value-0001")  # type: ignore[attr-defined]
    both = ("researcher", "student")
    text = issue("alice", "", "tok-a", "student", ("student", "researcher"))
    _, got = d.redeem(text, "alice", "", "tok-a", None, both)
    assert [s.name for s in got] == ["SANDBOX"]  # a student profile never gets prod
    store.rotate("user:alice", "SANDBOX", b"sandbox-value-2")  # type: ignore[attr-defined]
    result = d.refresh("alice", "", "tok-a", None, both)
    assert result is not None and [s.value for s in result[1]] == ["sandbox-value-2"]
    assert d.refresh("alice", "", "another-token", None, both) is None
    d.server_stopped("alice", "")
    assert d.refresh("alice", "", "tok-a", None, both) is None


def test_refresh_follows_the_current_roles_not_those_at_spawn(tmp_path: Path) -> None:
    d = SecretDelivery(config(tmp_path), ["student", "researcher"], ticket_key=KEY)
    store = d.broker
    store.put("user:rita", "SANDBOX", "sandbox", b"sandbox-value-1")  # type: ignore[attr-defined]
    store.put("user:rita", "PROD", "prod", b"prod-value-0001")  # type: ignore[attr-defined]
    text = issue("rita", "", "tok", "researcher", ("researcher", "admin"))
    _, got = d.redeem(text, "rita", "", "tok", None, ("researcher", "student"))
    assert sorted(s.name for s in got) == ["PROD", "SANDBOX"]
    # demoted to student: the researcher profile is no longer hers; a rotated value
    # of a class she lost never reaches the server, and the session is gone
    store.rotate("user:rita", "PROD", b"prod-value-0002")  # type: ignore[attr-defined]
    with pytest.raises(RoleLost) as e:
        d.refresh("rita", "", "tok", None, ("student", "user"))
    assert (e.value.profile, str(e.value)) == (
        "researcher",
        "no current role allows profile 'researcher'",
    )
    assert d.refresh("rita", "", "tok", None, ("researcher",)) is None  # promoted back: restart
    # the same at redeem: roles lost between the spawn and the claim
    text = issue("rita", "", "tok2", "researcher", ("researcher",))
    with pytest.raises(RoleLost):
        d.redeem(text, "rita", "", "tok2", None, ("student",))
    assert d.refresh("rita", "", "tok2", None, ("researcher",)) is None


def test_classes_follow_the_current_roles(tmp_path: Path) -> None:
    c = config(tmp_path)
    c.SecretClassPolicy.profile_classes = {"researcher": ["*"]}
    c.SecretClassPolicy.role_classes = {"researcher": ["*"], "instructor": ["sandbox"]}
    d = SecretDelivery(c, ["researcher"], ticket_key=KEY)
    d.broker.put("user:ivan", "SANDBOX", "sandbox", b"sandbox-value-1")  # type: ignore[attr-defined]
    d.broker.put("user:ivan", "DEV", "dev", b"dev-value-00001")  # type: ignore[attr-defined]
    text = issue("ivan", "", "tok", "researcher", ("researcher", "instructor"))
    _, got = d.redeem(text, "ivan", "", "tok", None, ("instructor", "researcher"))
    assert sorted(s.name for s in got) == ["DEV", "SANDBOX"]
    # the profile is still allowed (instructor), but the dev class came with researcher
    result = d.refresh("ivan", "", "tok", None, ("instructor",))
    assert result is not None and [s.name for s in result[1]] == ["SANDBOX"]


def test_a_ticket_of_an_earlier_start_is_refused_to_the_next_one(tmp_path: Path) -> None:
    """A server's token is made at each start (and deleted at the stop): a ticket presented
    with a newer start's token belongs to a start that is over."""
    d = SecretDelivery(config(tmp_path), ["student", "researcher"], ticket_key=KEY)
    old = issue("alice", "", "tok-1", "student", ("student",))
    with pytest.raises(TicketRefused) as e:
        d.redeem(old, "alice", "", "tok-2", None, ("student",))
    assert e.value.reason == "server-stopped"


def test_a_forged_ticket_and_one_signed_with_another_key_are_unknown(tmp_path: Path) -> None:
    d = SecretDelivery(config(tmp_path), ["student", "researcher"], ticket_key=KEY)
    good = issue("alice", "", "tok", "student", ("student",))
    other = TicketSigner(b"o" * 32, 30).issue("alice", "", "tok", "student", ("student",))[0]
    body, _, mac = good.rpartition(".")
    # the claims of a student ticket rewritten to a researcher's, the MAC kept
    import base64
    import json

    tid, payload = body.split("_", 2)[1:]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["p"], claims["r"] = "researcher", ["researcher"]
    forged_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    forged = f"qtk_{tid}_{forged_payload}.{mac}"
    for text in (other, forged):
        with pytest.raises(TicketRefused) as e:
            d.redeem(text, "alice", "", "tok", None, ("student", "researcher"))
        assert e.value.reason == "unknown"
    assert d.redeem(good, "alice", "", "tok", None, ("student",))[0].profile == "student"


@pytest.mark.parametrize(
    ("broker", "message"),
    [
        ({"ticket_ttl": 61.0}, "between 1 and 60 seconds"),
        ({"ticket_ttl": 0.0}, "between 1 and 60 seconds"),
        ({"backend": "redis"}, "SecretBroker.backend='redis': use 'embedded'"),
        ({"backend": "vault"}, r"VaultBroker\.url is not set"),
        ({"create_master_key": False, "master_key_file": "/nonexistent/k"}, "does not exist"),
    ],
)
def test_bad_settings_stop_the_hub(tmp_path: Path, broker: dict[str, object], message: str) -> None:
    with pytest.raises((ValueError, SecretError), match=message):
        SecretDelivery(config(tmp_path, **broker), ["student", "researcher"], ticket_key=KEY)


def test_restricted_class_for_student_profile_stops_the_hub(tmp_path: Path) -> None:
    c = config(tmp_path)
    c.SecretClassPolicy.profile_classes = {"student": ["sandbox", "hardware"]}
    with pytest.raises(ValueError, match="restricted profile"):
        SecretDelivery(c, ["student"], ticket_key=KEY)


def _redeemed(d: SecretDelivery, user: str, profile: str, roles: tuple[str, ...]):  # type: ignore[no-untyped-def]
    text = issue(user, "", f"tok-{user}", profile, roles)
    d.redeem(text, user, "", f"tok-{user}", None, roles)
    session = d.session(user, "", f"tok-{user}")
    assert session is not None
    return session


def test_users_store_their_own_secrets_only_new_only_of_the_self_service_class(
    tmp_path: Path,
) -> None:
    """"Move to a secret": a new secret in the user's own namespace, of the configured
    class, delivered back at once; never an overwrite, a copy of a secret they receive,
    or past the per-user limit."""
    c = config(tmp_path, self_service_class="personal", self_service_limit=3)
    c.SecretClassPolicy.profile_classes = {"student": ["sandbox", "personal"], "researcher": ["*"]}
    c.SecretClassPolicy.role_classes = {"student": ["sandbox", "personal"], "researcher": ["*"]}
    d = SecretDelivery(c, ["student", "researcher"], ticket_key=KEY)
    d.broker.put("project:qc", "SHARED", "sandbox", b"shared-value-0001")  # type: ignore[attr-defined]
    d.broker.grant("project:qc", ["alice"])  # type: ignore[attr-defined]
    roles = ("student",)
    session = _redeemed(d, "alice", "student", roles)
    assert d.own_class(session, roles) == "personal"

    stored = d.store_own("alice", "", session, roles, None, "MY_TOKEN", "my-own-value-123")
    assert (str(stored.namespace), stored.name, stored.cls, stored.version) == (
        "user:alice",
        "MY_TOKEN",
        "personal",
        1,
    )
    result = d.refresh("alice", "", "tok-alice", None, roles)
    assert result is not None
    assert {s.name: s.value for s in result[1]}["MY_TOKEN"] == "my-own-value-123"

    with pytest.raises(SecretExists, match="already have a secret named MY_TOKEN"):
        d.store_own("alice", "", session, roles, None, "MY_TOKEN", "another-value-456")
    with pytest.raises(SecretExists, match=r"SHARED already reaches this server \(project:qc\)"):
        d.store_own("alice", "", session, roles, None, "SHARED", "another-value-456")
    with pytest.raises(SecretError, match=r'already your secret SHARED.*get_secret\("SHARED"\)'):
        d.store_own("alice", "", session, roles, None, "COPY", "shared-value-0001")
    for name, value, message in [
        ("1BAD", "long-enough-value", "not a secret name"),
        ("ghp_abcdef0123456789", "token ghp_abcdef0123456789", "the name is part of the value"),
        ("SHORT", "k3y!", "shorter than 8 bytes"),
        ("NUL", "has-a-\x00-nul", "NUL character"),
        ("HUGE", "x" * 70_000, "secrets are at most 65,536 bytes"),
    ]:
        with pytest.raises(SecretError, match=message) as e:
            d.store_own("alice", "", session, roles, None, name, value)
        assert value not in str(e.value)
    d.store_own("alice", "", session, roles, None, "SECOND", "second-value-1234")
    d.store_own("alice", "", session, roles, None, "THIRD", "third-value-12345")
    with pytest.raises(SecretError, match="self_service_limit = 3"):
        d.store_own("alice", "", session, roles, None, "FOURTH", "fourth-value-1234")
    # the old value of a name stays: nothing was overwritten
    assert d.broker.current("user:alice", "MY_TOKEN").value == "my-own-value-123"  # type: ignore[attr-defined]


def test_self_service_needs_the_class_delivered_back_and_is_off_by_default(
    tmp_path: Path,
) -> None:
    d = SecretDelivery(config(tmp_path), ["student", "researcher"], ticket_key=KEY)
    session = _redeemed(d, "bob", "researcher", ("researcher",))
    assert d.own_class(session, ("researcher",)) is None  # off: no class configured
    with pytest.raises(SecretError, match="not allowed"):
        d.store_own("bob", "", session, ("researcher",), None, "X_TOKEN", "value-12345678")
    # on, but the class is not one a student profile receives: nothing to store into
    d = SecretDelivery(config(tmp_path, self_service_class="personal"), ["student", "researcher"], ticket_key=KEY)
    student = _redeemed(d, "sam", "student", ("student",))
    assert d.own_class(student, ("student",)) is None
    assert d.own_class(_redeemed(d, "rita", "researcher", ("researcher",)), ("researcher",)) == (
        "personal"
    )


@pytest.mark.parametrize(
    ("broker", "message"),
    [
        ({"self_service_class": "prod"}, "is a restricted class"),
        ({"self_service_class": "Not A Class"}, "is not a class name"),
        ({"self_service_limit": 0}, "between 1 and 1000"),
    ],
)
def test_bad_self_service_settings_stop_the_hub(
    tmp_path: Path, broker: dict[str, object], message: str
) -> None:
    with pytest.raises((ValueError, SecretError), match=message):
        SecretDelivery(config(tmp_path, **broker), ["student", "researcher"], ticket_key=KEY)


def test_a_closed_courses_secrets_are_withheld_from_then_on(tmp_path: Path) -> None:
    """A course's shared secrets (namespace course:<id>, granted to its students) reach
    their servers while the course is open; once its term closes, neither a new server nor
    a refresh of a running one gets them (the user's own secrets still come)."""
    d = SecretDelivery(config(tmp_path), ["student", "researcher"], ticket_key=KEY)
    closed: set[str] = set()
    d.course_closed = lambda course: course in closed
    store = d.broker
    store.put("course:course-101", "IBM_QUANTUM_TOKEN", "sandbox", b"course-value-001")  # type: ignore[attr-defined]
    store.put("user:sam", "MY_TOKEN", "sandbox", b"own-value-00001")  # type: ignore[attr-defined]
    store.grant("course:course-101", ["sam"])  # type: ignore[attr-defined]
    roles = ("student",)
    text = issue("sam", "", "tok", "student", roles)
    _, got = d.redeem(text, "sam", "", "tok", None, roles)
    assert sorted(s.name for s in got) == ["IBM_QUANTUM_TOKEN", "MY_TOKEN"]
    closed.add("course-101")
    result = d.refresh("sam", "", "tok", None, roles)
    assert result is not None and [s.name for s in result[1]] == ["MY_TOKEN"]
    text = issue("sam", "b", "tok-b", "student", roles)
    _, got = d.redeem(text, "sam", "b", "tok-b", None, roles)
    assert [s.name for s in got] == ["MY_TOKEN"]

    def unreadable(course: str) -> bool:
        raise OSError("the courses directory is gone")

    closed.clear()
    d.course_closed = unreadable  # fail closed: no course secret when terms cannot be read
    result = d.refresh("sam", "", "tok", None, roles)
    assert result is not None and [s.name for s in result[1]] == ["MY_TOKEN"]


def test_a_courses_shared_secrets_reach_its_members_without_a_grant(tmp_path: Path) -> None:
    """A course file's ``[secrets]`` names secrets of course:<id>: its members (by their
    hub groups) receive those, not the namespace's others, and only while it is open;
    their own secrets win a name clash; everyone else gets none."""
    from hub_ext.courses.hub import shared_secrets
    from hub_ext.courses.model import parse_course, stamp

    now = __import__("time").time()
    text = (f'id = "course-101"\ntitle = "Intro"\n[term]\nstart = {stamp(now - 86400)}\n'
            f'end = {stamp(now + 86400)}\ngrace_days = 0\n[roster]\ngroup = "course-101"\n'
            '[secrets]\nnames = ["IBM_QUANTUM_TOKEN", "SHARED"]\nto = ["students"]\n')
    courses = {"course-101": parse_course(text.encode(), "course-101.toml")}
    d = SecretDelivery(config(tmp_path), ["student", "researcher"], ticket_key=KEY)
    d.course_secrets = shared_secrets(lambda: courses)
    store = d.broker
    store.put("course:course-101", "IBM_QUANTUM_TOKEN", "sandbox", b"course-value-001")  # type: ignore[attr-defined]
    store.put("course:course-101", "SHARED", "sandbox", b"course-shared-01")  # type: ignore[attr-defined]
    store.put("course:course-101", "GRADER_KEY", "sandbox", b"grader-value-01")  # type: ignore[attr-defined]
    store.put("user:sam", "SHARED", "sandbox", b"sams-own-value1")  # type: ignore[attr-defined]
    roles = ("student",)
    text_ticket = issue("sam", "", "tok", "student", roles)
    _, got = d.redeem(text_ticket, "sam", "", "tok", None, roles,
                      ["course-101", "course-101:students"])
    assert {s.name: s.value for s in got} == {
        "SHARED": "sams-own-value1", "IBM_QUANTUM_TOKEN": "course-value-001"}
    assert {str(s.namespace) for s in got if s.name == "IBM_QUANTUM_TOKEN"} == {
        "course:course-101"}
    # a researcher who sits in (group course-101, not :students) and the instructor get none
    for groups in (["course-101"], ["course-101", "course-101:instructors"]):
        t = issue("rita", "", "tok-r", "researcher", ("researcher",))
        _, got = d.redeem(t, "rita", "", "tok-r", None, ("researcher",), groups)
        assert got == [], groups
    # the term closes: sam's next refresh no longer has it
    courses["course-101"] = parse_course(text.replace(
        f"end = {stamp(now + 86400)}", f"end = {stamp(now - 60)}").encode(), "course-101.toml")
    result = d.refresh("sam", "", "tok", None, roles, ["course-101:students"])
    assert result is not None and [s.name for s in result[1]] == ["SHARED"]


def test_a_courses_shared_secret_cannot_be_stored_as_ones_own(tmp_path: Path) -> None:
    """A student storing the course's value (or its name) as their own would keep it past
    the term; it is refused, as a copy of any secret they receive is."""
    from hub_ext.courses.hub import shared_secrets
    from hub_ext.courses.model import parse_course, stamp

    now = __import__("time").time()
    text = (f'id = "course-101"\ntitle = "Intro"\n[term]\nstart = {stamp(now - 86400)}\n'
            f'end = {stamp(now + 86400)}\ngrace_days = 0\n[roster]\ngroup = "course-101"\n'
            '[secrets]\nnames = ["IBM_QUANTUM_TOKEN"]\nto = ["students"]\n')
    courses = {"course-101": parse_course(text.encode(), "course-101.toml")}
    c = config(tmp_path, self_service_class="personal")
    c.SecretClassPolicy.profile_classes = {"student": ["sandbox", "personal"]}
    c.SecretClassPolicy.role_classes = {"student": ["sandbox", "personal"]}
    d = SecretDelivery(c, ["student"], ticket_key=KEY)
    d.course_secrets = shared_secrets(lambda: courses)
    d.broker.put("course:course-101", "IBM_QUANTUM_TOKEN", "sandbox", b"course-value-001")  # type: ignore[attr-defined]
    roles = ("student",)
    session = _redeemed(d, "sam", "student", roles)
    groups = ["course-101", "course-101:students"]
    with pytest.raises(SecretExists, match=r"already your secret IBM_QUANTUM_TOKEN"):
        d.store_own("sam", "", session, roles, None, "MINE", "course-value-001", groups)
    with pytest.raises(SecretExists, match=r"IBM_QUANTUM_TOKEN already reaches this server"):
        d.store_own("sam", "", session, roles, None, "IBM_QUANTUM_TOKEN", "other-value-0001",
                    groups)
    assert d.store_own("sam", "", session, roles, None, "MINE", "other-value-0001", groups)


@pytest.mark.parametrize(("value", "kept"), [
    ("credential", False),  # a schema's property name: 10 characters
    ("researcher", False),  # a profile name
    ("10.0.0.77", False),  # an address
    ("hunter2hunter2hunter2", False),  # long, but seven characters over and over
    ("a" * 20, False),
    ("x" * 4000 + "0123456789abcdefghij", False),  # too long: matched in every event
    ("ghp_a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8", True),
    ("Summer2024!Summer", True),
])
def test_a_users_own_value_joins_the_never_record_list_only_when_secret_like(value, kept):
    """What a user stores is cut out of their own events only when it looks like a
    secret: a common string would shred their records. Any value of their namespace is
    theirs (in Vault they may write it, and its class); a project's joins for everyone."""
    from types import SimpleNamespace

    from hub_ext.secrets.model import Secret, parse_namespace

    own = Secret(parse_namespace("user:alice"), "MINE", "personal", 1, value)
    admin = Secret(parse_namespace("user:alice"), "PROVISIONED", "sandbox", 1, value)
    shared = Secret(parse_namespace("project:qaoa"), "SHARED", "sandbox", 1, value)
    delivery = SimpleNamespace(settings=SimpleNamespace(self_service_class="personal"))
    everyone, users = SecretDelivery.known_values(delivery, [own, admin, shared], "alice")  # type: ignore[arg-type]
    assert everyone == [value]  # the project's
    assert users == ([value, value] if kept else [value])
    everyone, users = SecretDelivery.known_values(delivery, [own], "bob")  # type: ignore[arg-type]
    assert (everyone, users) == ([value], [])  # not bob's namespace: everyone's events


def test_storing_is_refused_while_the_course_files_cannot_be_read(tmp_path: Path) -> None:
    """What a student stores is checked against their courses' shared secrets: when the
    course files cannot be read, it cannot be, and storing waits (it is not let through)."""
    c = config(tmp_path, self_service_class="personal")
    c.SecretClassPolicy.profile_classes = {"student": ["sandbox", "personal"]}
    c.SecretClassPolicy.role_classes = {"student": ["sandbox", "personal"]}
    d = SecretDelivery(c, ["student"], ticket_key=KEY)

    def unreadable(groups):
        raise OSError("the courses directory is gone")

    d.course_secrets = unreadable
    roles = ("student",)
    session = _redeemed(d, "sam", "student", roles)
    with pytest.raises(SecretError, match="course files cannot be read now"):
        d.store_own("sam", "", session, roles, None, "MINE", "other-value-0001",
                    ["course-101:students"])
