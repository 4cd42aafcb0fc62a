"""Policy file checks and the pure policy decisions, as decision tables."""

from __future__ import annotations

import re
import textwrap

import pytest

from hub_ext.qpu import policy as pol
from hub_ext.qpu.errors import Refused
from hub_ext.qpu.policyfile import PolicyError, RateLimit, parse

BACKENDS = {"aer_simulator": "simulator", "fake_hw": "hardware"}
BASE = """
[projects.qchem]
members = { alice = "lead", bob = "member" }
backends = ["*"]
share = 1.0
[projects.astro]
members = { carol = "member" }
groups = { stargazers = "lead" }
backends = ["aer_simulator"]
share = 2.0
"""


def policy(extra: str = "") -> pol.Policy:  # type: ignore[name-defined]
    return parse(textwrap.dedent(BASE + extra), BACKENDS)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[projectz.x]\n", "unknown key(s) ['projectz']"),
        ("[projects.p]\nbackends = ['quantum_magic']\n", "unknown backend 'quantum_magic'"),
        ("[projects.p]\nmembers = { a = 'owner' }\n", "role 'owner'"),
        ("[projects.p]\nsensitivity = 'secret'\n", "is not in"),
        ("[quotas.user.gpu]\n", "unknown key(s) ['gpu']"),
        ("[quotas.user.simulator]\nday = { jobs = -1 }\n", "must be an integer >= 0"),
        ("[quotas.user.simulator]\nday = { job = 1 }\n", "unknown key(s) ['job']"),
        ("[quotas.user.simulator]\nsoft = 1.5\n", "between 0 and 1"),
        ("[quotas.projects.nope.simulator]\n", "no such project"),
        ("[rate_limits.simulator]\nburst = 2\n", "rate must be a number"),
        ("[priorities]\ndefault = 'urgent'\n", "is not one of the tiers"),
        ("[[reservations]]\nbackend='fake_hw'\nproject='p'\nstart=2025-01-01T00:00:00Z\n"
         "end=2025-01-01T01:00:00Z\n", "is neither in [projects] nor a course"),
        ("[identity]\ncourse_prefix = 'c:'\n", "without ':'"),
        ("[identity]\npersonal_backends = ['warp']\n", "identity.personal_backends: unknown"),
        ("[identity]\ncourse_purpose = 'fun'\n", "identity.course_purpose = 'fun'"),
        ("[identity]\npersonl_backends = []\n", "unknown key(s) ['personl_backends']"),
        ("[projects.p]\npurpose = 'fun'\n", "projects.p.purpose = 'fun'"),
        ("[projects.p]\n[[reservations]]\nbackend='fake_hw'\nproject='p'\n"
         "start=2025-01-01T00:00:00\nend=2025-01-01T01:00:00Z\n", "time zone"),
        ("[projects.p]\n[[reservations]]\nbackend='fake_hw'\nproject='p'\n"
         "start=2025-01-01T02:00:00Z\nend=2025-01-01T01:00:00Z\n", "end must be after start"),
        ("[sensitivity.rules.confidential]\nbackends = ['aer_simulator']\nroute_to = 'fake_hw'\n",
         "not in its own backends"),
        ("[tags]\npurposes = []\n", "tags.purposes is empty"),
        ("not toml = = 1", "not valid TOML"),
    ],
)
def test_invalid_policies_name_the_key(text, message):
    with pytest.raises(PolicyError) as e:
        parse(text, BACKENDS)
    assert message in str(e.value)


def test_a_valid_policy_and_membership():
    p = policy()
    assert p.projects.projects_of("alice") == {"qchem": "lead"}
    assert p.projects.projects_of("erin", ["stargazers"]) == {"astro": "lead"}
    assert p.projects.projects_of("mallory") == {}  # deny by default
    assert not p.projects.get("astro").allows_backend("fake_hw")


IDENTITY = """
[identity]
course_prefix = "course-"
course_backends = ["aer_simulator"]
course_purpose = "teaching"
personal_backends = ["aer_simulator"]
[projects.course-101]
backends = ["*"]
share = 3.0
[quotas.projects.course-101.hardware]
day = { jobs = 2 }
[[reservations]]
backend = "fake_hw"
project = "course-202"
start = 2025-01-01T00:00:00Z
end = 2025-01-01T01:00:00Z
"""


def test_projects_follow_identity_courses_and_personal_sandboxes():
    p = parse("[tags]\npurposes = ['research', 'teaching']\n" + BASE + IDENTITY, BACKENDS)
    reg = p.projects
    # a course is a project: its students are members, its instructors lead it
    assert reg.projects_of("sam", ["course-202", "course-202:students"]) == {
        "course-202": "member"
    }
    assert reg.projects_of("ivan", ["course-101", "course-101:instructors"]) == {
        "course-101": "lead"
    }
    # a researcher who takes the course is not in its project (the instructors would read
    # their jobs, the course would pay for them): their own sandbox instead
    assert reg.projects_of("rhea", ["course-101"]) == {"personal:rhea": "lead"}
    # another course's instructor is nobody here
    assert "course-101" not in reg.projects_of("tess", ["course-202:instructors"])
    # the file's entry adds limits to the course's own project
    c101 = reg.get("course-101")
    assert c101.allows_backend("fake_hw") and c101.share == 3.0 and c101.purpose == "teaching"
    assert p.quota_for("project", "course-101", "hardware").day.jobs == 2
    derived = reg.get("course-202")
    assert derived.backends == ("aer_simulator",) and derived.purpose == "teaching"
    # a student group is not a course of its own; nor is another prefix
    assert reg.find("course-101:students") is None and reg.find("chem-101") is None
    # someone in no project gets a personal sandbox; someone in one does not
    assert reg.projects_of("rita") == {"personal:rita": "lead"}
    assert reg.get("personal:rita").backends == ("aer_simulator",)
    assert reg.get("personal:rita").role_of("mallory") is None
    assert reg.projects_of("alice") == {"qchem": "lead"}
    # one person's sandbox weighs a tenth of a course or team in fair share, unless set
    assert reg.get("personal:rita").share == 0.1
    p = parse("[tags]\npurposes = ['research', 'teaching']\n" + BASE
              + IDENTITY.replace("[identity]\n", "[identity]\npersonal_share = 0.5\n"), BACKENDS)
    assert p.projects.get("personal:rita").share == 0.5
    with pytest.raises(PolicyError, match=r"identity.personal_share must be a number >= 1e-09"):
        parse("[tags]\npurposes = ['research', 'teaching']\n" + BASE
              + IDENTITY.replace("[identity]\n", "[identity]\npersonal_share = 0\n"), BACKENDS)


def test_a_course_entry_adds_to_the_course_and_keeps_its_backends():
    # an entry that only adds a teaching assistant or a share keeps the course's backends
    # and members (it used to leave the course with no backend at all)
    p = parse(
        "[tags]\npurposes = ['research', 'teaching']\n" + IDENTITY.split("[projects")[0]
        + "[projects.course-303]\nmembers = { tina = 'lead' }\nshare = 2.0\n",
        BACKENDS,
    )
    c303 = p.projects.get("course-303")
    assert c303.backends == ("aer_simulator",) and c303.share == 2.0
    assert p.projects.projects_of("tina") == {"course-303": "lead"}
    assert p.projects.projects_of("sam", ["course-303:students"]) == {"course-303": "member"}


def test_without_identity_settings_nothing_is_derived():
    reg = policy().projects
    assert reg.projects_of("sam", ["course-101"]) == {}
    assert reg.find("course-101") is None and reg.find("personal:sam") is None


@pytest.mark.parametrize(
    ("used", "request_", "outcome"),
    [
        (0, 1, "ok"),
        (7, 1, "ok"),
        (8, 1, "warn"),  # 9 of 10 passes the soft limit (0.8)
        (9, 1, "warn"),
        (10, 1, "PROJECT_QUOTA"),
        (0, 11, "PROJECT_QUOTA"),
    ],
)
def test_quota_soft_and_hard(used, request_, outcome):
    p = policy("[quotas.project.simulator]\nday = { jobs = 10 }\nsoft = 0.8\n")
    check = pol.QuotaCheck()
    req = pol.Request(jobs=request_, shots=1, seconds=0.1)
    if outcome == "PROJECT_QUOTA":
        with pytest.raises(Refused) as e:
            pol.check_quota(p, "project", "qchem", "simulator", {"day": {"jobs": used}}, req,
                            0.0, check)
        assert e.value.code == "PROJECT_QUOTA"
        assert "used" in e.value.message and "of 10 jobs" in e.value.message
        assert "quotas.projects.qchem.simulator.day.jobs" in e.value.message
    else:
        pol.check_quota(p, "project", "qchem", "simulator", {"day": {"jobs": used}}, req, 0.0,
                        check)
        assert bool(check.warnings) == (outcome == "warn")


def test_user_override_replaces_the_default():
    p = policy("[quotas.user.hardware]\nday = { shots = 100 }\n"
               "[quotas.users.alice.hardware]\nday = { shots = 1000 }\n")
    assert p.quota_for("user", "alice", "hardware").day.shots == 1000
    assert p.quota_for("user", "bob", "hardware").day.shots == 100
    assert p.quota_for("user", "bob", "simulator").day.shots is None


def test_gcra_rate_limit():
    limit = RateLimit(rate=1.0, burst=3, max_delay=2.0)
    tat, now = None, 100.0
    waits = []
    for _ in range(5):
        tat, not_before = pol.rate_decision(limit, tat, now)
        waits.append(not_before - now)
    assert waits == [0.0, 0.0, 0.0, 1.0, 2.0]  # burst of 3, then one per second
    with pytest.raises(Refused) as e:
        pol.rate_decision(limit, tat, now)
    assert e.value.code == "RATE_LIMIT" and "Retry in" in e.value.message
    # Time passes: the bucket refills.
    assert pol.rate_decision(limit, tat, now + 10)[1] == now + 10


def q(id_, project, priority=10, at=0.0, not_before=0.0, est=1.0):
    return pol.Queued(id_, project, "u", priority, at, not_before, est, "QUEUED")


def test_order_priority_then_fair_share_then_time():
    p = policy()
    waiting = [q("a1", "qchem", at=1), q("b1", "astro", at=2), q("a2", "qchem", priority=20, at=3)]
    # qchem used 10 s (share 1), astro 10 s (share 2): astro is further below its share.
    placed = pol.order(p, "fake_hw", waiting, {"qchem": 10, "astro": 10}, False, [], [], 1, 50.0)
    assert [x.id for x in placed] == ["a2", "b1", "a1"]
    assert [x.reason for x in placed] == ["READY", "PRIORITY", "FAIR_SHARE"]
    assert [x.position for x in placed] == [1, 2, 3]
    assert placed[1].estimated_start == 51.0 and placed[2].estimated_start == 52.0


def test_order_blockers():
    p = policy(
        "[[reservations]]\nbackend='fake_hw'\nproject='astro'\n"
        "start=1970-01-01T00:01:00Z\nend=1970-01-01T00:02:00Z\n"
    )
    waiting = [q("a1", "qchem", est=30.0), q("b1", "astro", not_before=100.0), q("a2", "qchem", est=1)]
    # At t=50: a1 (30 s) would overrun into astro's window at 60; a2 fits; b1 waits for its rate slot.
    placed = {x.id: x for x in pol.order(p, "fake_hw", waiting, {}, False, [], [], 1, 50.0)}
    assert placed["a1"].reason == "RESERVATION"
    assert placed["b1"].reason == "RATE_LIMIT"
    assert placed["a2"].reason == "READY"
    # Inside the window only astro runs.
    placed = {x.id: x for x in pol.order(p, "fake_hw", waiting, {}, False, [], [], 1, 90.0)}
    assert placed["a2"].reason == "RESERVATION"
    # Paused backend or project: HELD.
    placed = {x.id: x for x in pol.order(p, "fake_hw", waiting, {}, True, [], [], 1, 0.0)}
    assert {x.state for x in placed.values()} == {"HELD"}
    placed = {x.id: x for x in pol.order(p, "fake_hw", waiting, {}, False, ["qchem"], [], 1, 0.0)}
    assert placed["a1"].reason == "PROJECT_PAUSED" and placed["b1"].state == "QUEUED"


@pytest.mark.parametrize(
    ("project_level", "declared", "backend", "expected"),
    [
        ("internal", None, "fake_hw", ("internal", "fake_hw", False)),
        ("internal", "confidential", "fake_hw", ("confidential", "aer_simulator", True)),
        ("internal", "confidential", "aer_simulator", ("confidential", "aer_simulator", False)),
        ("internal", "public", "fake_hw", "SENSITIVITY_TOO_LOW"),
        ("internal", "topsecret", "fake_hw", "UNKNOWN_SENSITIVITY"),
    ],
)
def test_sensitivity_routing(project_level, declared, backend, expected):
    p = policy(
        "[sensitivity]\nlevels = ['public', 'internal', 'confidential']\n"
        "[sensitivity.rules.confidential]\nbackends = ['aer_simulator']\n"
        "route_to = 'aer_simulator'\n"
    )
    from hub_ext.qpu.projects import Project

    project = Project("x", sensitivity=project_level, backends=("*",), max_tier="normal")
    if isinstance(expected, str):
        with pytest.raises(Refused) as e:
            pol.route_sensitivity(p, project, declared, backend)
        assert e.value.code == expected
    else:
        assert pol.route_sensitivity(p, project, declared, backend) == expected


def test_sensitivity_without_route_refuses():
    p = policy("[sensitivity.rules.confidential]\nbackends = ['aer_simulator']\n")
    from hub_ext.qpu.projects import Project

    project = Project("x", sensitivity="confidential", backends=("*",), max_tier="normal")
    with pytest.raises(Refused) as e:
        pol.route_sensitivity(p, project, None, "fake_hw")
    assert e.value.code == "SENSITIVITY" and "aer_simulator" in e.value.message


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("[run_limits.simulator]\nmemory = 1\n", "run_limits.simulator: unknown key"),
        ("[run_limits.quantum]\nseconds = 1\n", "run_limits: unknown key(s) ['quantum']"),
        ("[run_limits.simulator]\nmemory_mb = 8\n", "run_limits.simulator.memory_mb must be"),
        ("[run_limits.simulator]\nmax_qubits = 0\n", "run_limits.simulator.max_qubits must be"),
        ("[run_limits.hardware]\nseconds = -1\n", "run_limits.hardware.seconds must be"),
        ("[run_limits.backends.nope]\nseconds = 5\n", "unknown backend 'nope'"),
    ],
)
def test_bad_run_limits_name_the_key(extra, message):
    with pytest.raises(PolicyError, match=re.escape(message)):
        policy(extra)


def test_run_limits_default_per_class_and_a_backend_overrides_its_class():
    p = policy("[run_limits.simulator]\nmemory_mb = 512\n"
               "[run_limits.backends.aer_simulator]\nmax_qubits = 20\n")
    own = p.run_limits_for("aer_simulator", "simulator")
    assert (own.max_qubits, own.memory_mb, own.seconds) == (20, 512, 120.0)
    other = p.run_limits_for("aer_mps", "simulator")
    assert (other.max_qubits, other.memory_mb) == (24, 512)
    with pytest.raises(Refused) as wide:
        pol.check_run_limits(p, "aer_simulator", "simulator", 21, 0.1)
    assert wide.value.code == "WIDTH_LIMIT"
    assert "run_limits.backends.aer_simulator.max_qubits" in wide.value.message
    with pytest.raises(Refused) as slow:
        pol.check_run_limits(p, "aer_mps", "simulator", 2, 121.0)
    assert slow.value.code == "TIME_LIMIT" and "run_limits.simulator.seconds" in slow.value.message
    assert pol.check_run_limits(p, "aer_mps", "simulator", 24, 120.0) == other


def test_period_left_is_the_share_of_the_period_still_to_run():
    import datetime as dt

    six_am = dt.datetime(2026, 12, 4, 6, 0, tzinfo=dt.UTC).timestamp()
    assert pol.period_left("day", six_am) == 0.75
    assert pol.period_left("month", dt.datetime(2026, 12, 4, tzinfo=dt.UTC).timestamp()) \
        == round(28 / 31, 4)
    assert pol.period_end("day", six_am) == "2026-12-05T00:00Z"
