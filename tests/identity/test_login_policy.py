"""Decision table: (groups, amr/acr, configuration) → allowed? roles? refusal reason."""

from __future__ import annotations

from typing import Any

import pytest

from hub_ext.identity.policy import (
    MfaRule,
    assurance,
    decide,
    meets,
    validate_group_roles,
    validate_mfa,
)
from hub_ext.identity.roles import hub_groups, roles_for

GROUPS = {
    "qustody-students": "student",
    "qustody-researchers": "researcher",
    "qustody-instructors": "instructor",
    "qustody-admins": "admin",
    "qustody-auditors": "auditor",
}
LEVELS = ("urn:acr:pwd", "urn:acr:mfa", "urn:acr:phr")
AMR = MfaRule(amr_values=frozenset({"mfa", "otp", "hwk"}))
AMR_ADMIN_PHR = MfaRule(
    amr_values=frozenset({"mfa", "otp", "hwk"}),
    acr_levels=LEVELS,
    role_min_acr={"admin": "urn:acr:phr"},
)
ACR_ONLY = MfaRule(acr_levels=LEVELS, min_acr="urn:acr:mfa")


@pytest.mark.parametrize(
    ("claims", "rule", "allowed", "roles", "reason"),
    [
        (
            {"groups": ["qustody-researchers"], "amr": ["pwd", "otp"]},
            AMR,
            True,
            ("researcher",),
            "",
        ),
        (
            {"groups": ["qustody-researchers"], "amr": ["pwd"]},
            AMR,
            False,
            ("researcher",),
            "mfa-missing",
        ),
        ({"groups": ["qustody-researchers"]}, AMR, False, ("researcher",), "mfa-missing"),
        ({"groups": ["qustody-researchers"], "amr": "otp"}, AMR, True, ("researcher",), ""),
        ({"groups": ["marketing"], "amr": ["mfa"]}, AMR, False, (), "no-role"),
        ({"groups": [], "amr": ["mfa"]}, AMR, False, (), "no-role"),
        ({"amr": ["mfa"]}, AMR, False, (), "no-role"),
        ({"groups": "qustody-admins", "amr": ["hwk"]}, AMR, True, ("admin",), ""),
        (
            {"groups": ["qustody-admins", "qustody-researchers"], "amr": ["hwk"]},
            AMR,
            True,
            ("admin", "researcher"),
            "",
        ),
        (
            {"groups": ["qustody-admins"], "amr": ["hwk"], "acr": "urn:acr:mfa"},
            AMR_ADMIN_PHR,
            False,
            ("admin",),
            "acr-too-low",
        ),
        (
            {"groups": ["qustody-admins"], "amr": ["hwk"]},
            AMR_ADMIN_PHR,
            False,
            ("admin",),
            "acr-too-low",
        ),
        (
            {"groups": ["qustody-admins"], "amr": ["hwk"], "acr": "urn:acr:phr"},
            AMR_ADMIN_PHR,
            True,
            ("admin",),
            "",
        ),
        (
            {"groups": ["qustody-researchers"], "amr": ["otp"], "acr": "urn:acr:pwd"},
            AMR_ADMIN_PHR,
            True,
            ("researcher",),
            "",
        ),
        ({"groups": ["qustody-auditors"], "acr": "urn:acr:mfa"}, ACR_ONLY, True, ("auditor",), ""),
        (
            {"groups": ["qustody-auditors"], "acr": "urn:acr:pwd"},
            ACR_ONLY,
            False,
            ("auditor",),
            "acr-too-low",
        ),
        (
            {"groups": ["qustody-auditors"], "acr": "urn:acr:unknown"},
            ACR_ONLY,
            False,
            ("auditor",),
            "acr-too-low",
        ),
        (
            {"groups": ["qustody-auditors"], "amr": ["mfa"]},
            ACR_ONLY,
            False,
            ("auditor",),
            "acr-too-low",
        ),
    ],
)
def test_decision_table(
    claims: dict[str, Any], rule: MfaRule, allowed: bool, roles: tuple[str, ...], reason: str
) -> None:
    decision = decide(claims, GROUPS, rule)
    assert (decision.allowed, decision.roles, decision.reason) == (allowed, roles, reason)
    if not allowed:
        assert decision.message and decision.audit_type in {"login-refused", "mfa-refused"}


def test_course_groups_and_instructor_roles_are_scoped_to_the_course() -> None:
    decision = decide(
        {"groups": ["qustody-instructors", "course-101", "course-BAD!", "other"], "amr": ["otp"]},
        GROUPS,
        AMR,
    )
    assert decision.courses == ("course-101",)
    specs = {r["name"]: r for r in roles_for(decision.roles, decision.courses, {})}
    assert set(specs) == {"user", "instructor", "instructor-course-101"}
    # the instructor's scopes reach the course's students, not every member of the course
    scopes = specs["instructor-course-101"]["scopes"]
    assert all(s.endswith("!group=course-101:students") for s in scopes)
    # students get the course as a hub group but no instructor role
    student = decide({"groups": ["qustody-students", "course-101"], "amr": ["otp"]}, GROUPS, AMR)
    assert student.courses == ("course-101",)
    assert {r["name"] for r in roles_for(student.roles, student.courses, {})} == {"user", "student"}


def test_tas_reach_what_instructors_reach_and_observers_only_read() -> None:
    groups = {**GROUPS, "qustody-tas": "assistant", "qustody-observers": "observer"}
    ta = decide({"groups": ["qustody-tas", "course-101"], "amr": ["otp"]}, groups, AMR)
    specs = {r["name"]: r for r in roles_for(ta.roles, ta.courses, {})}
    assert set(specs) == {"user", "assistant", "assistant-course-101"}
    instructor = roles_for(("instructor",), ("course-101",), {})
    assert specs["assistant-course-101"]["scopes"] == next(
        r["scopes"] for r in instructor if r["name"] == "instructor-course-101"
    )
    observer = decide({"groups": ["qustody-observers", "course-101"], "amr": ["otp"]}, groups, AMR)
    specs = {r["name"]: r for r in roles_for(observer.roles, observer.courses, {})}
    assert set(specs) == {"user", "observer", "observer-course-101"}
    scopes = specs["observer-course-101"]["scopes"]
    assert all(s.startswith("read:") and s.endswith("!group=course-101:students") for s in scopes)
    # neither joins the students' group (no one reaches them) nor leads the QPU project
    assert hub_groups(ta.roles, ta.courses) == ["course-101", "course-101:assistants"]
    assert hub_groups(observer.roles, observer.courses) == ["course-101"]


@pytest.mark.parametrize(
    ("groups", "hub"),
    [
        (["qustody-students", "course-101"], ["course-101", "course-101:students"]),
        (
            ["qustody-students", "course-101", "course-202"],
            ["course-101", "course-202", "course-101:students", "course-202:students"],
        ),
        # anyone with a role beyond student is a member of the course, never reachable
        (["qustody-researchers", "course-101"], ["course-101"]),
        (["qustody-students", "qustody-researchers", "course-101"], ["course-101"]),
        (["qustody-students", "qustody-auditors", "course-101"], ["course-101"]),
        (["qustody-students", "qustody-admins", "course-101"], ["course-101"]),
        (["qustody-instructors", "course-101"], ["course-101", "course-101:instructors"]),
        # an IdP group cannot pose as the students' hub group
        (["qustody-researchers", "course-101:students"], []),
        (["qustody-students", "course-101:instructors"], []),
        (["qustody-students"], []),
    ],
)
def test_students_and_instructors_join_their_course_groups(
    groups: list[str], hub: list[str]
) -> None:
    decision = decide({"groups": groups, "amr": ["otp"]}, GROUPS, AMR)
    assert decision.allowed
    assert hub_groups(decision.roles, decision.courses) == hub


def test_auditor_and_custom_scopes() -> None:
    specs = {r["name"]: r for r in roles_for(("auditor",), (), {"auditor": ["custom:audit:read"]})}
    scopes = set(specs["auditor"]["scopes"])
    assert "custom:audit:read" in scopes and "read:users:activity" in scopes
    assert not {s for s in scopes if s.startswith(("access:", "servers", "tokens", "admin"))}


def test_every_users_extra_scopes_survive_the_role_sync() -> None:
    """JupyterHub.extra_user_scopes reach the default user role the auth model carries
    (sync_roles writes it at each login), and reach nothing else."""
    from traitlets.config import Config

    from hub_ext.identity.hubconfig import hand_roles_to_authenticator

    c = Config()
    c.JupyterHub.extra_user_scopes = {"access:services!service=audit"}
    c.JupyterHub.load_roles = [{"name": "student", "scopes": ["self"]}]
    hand_roles_to_authenticator(c)
    extra = c.QustodyAuthenticator.role_extra_scopes
    assert extra["user"] == ["access:services!service=audit"]
    specs = {r["name"]: r for r in roles_for(("student",), (), extra)}
    assert specs["user"]["scopes"] == ["access:services!service=audit", "self"]
    assert "access:services!service=audit" not in specs["student"]["scopes"]
    assert {r["name"]: r for r in roles_for(("student",), (), {})}["user"]["scopes"] == ["self"]


def test_assurance_is_readable_for_step_up() -> None:
    state = {
        "qustody": {
            "amr": ["pwd", "hwk"],
            "acr": "urn:acr:mfa",
            "auth_time": 1.0,
            "roles": ["researcher"],
        }
    }
    level = assurance(state)
    assert level is not None and level.amr == ("pwd", "hwk") and level.roles == ("researcher",)
    assert meets(state, AMR_ADMIN_PHR, "urn:acr:mfa")
    assert not meets(state, AMR_ADMIN_PHR, "urn:acr:phr")
    assert assurance(None) is None and not meets({}, AMR_ADMIN_PHR, "urn:acr:pwd")


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: validate_group_roles({"g": "superuser"}), "unknown roles"),
        (lambda: validate_mfa(MfaRule(), allow_no_mfa=False), "no MFA requirement"),
        (
            lambda: validate_mfa(MfaRule(acr_levels=LEVELS, min_acr="urn:x"), False),
            "not in acr_levels",
        ),
        (
            lambda: validate_mfa(
                MfaRule(frozenset({"otp"}), LEVELS, role_min_acr={"root": "urn:acr:phr"}), False
            ),
            "unknown roles",
        ),
    ],
)
def test_bad_configuration_is_refused(call: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()
    validate_mfa(MfaRule(), allow_no_mfa=True)


def test_roster_courses_get_exactly_the_roster_role_never_a_global_one() -> None:
    """A global instructor listed as a student of course-303 (a CSV roster) is a member
    there, not its instructor; a student who is staff of one course is nobody's
    reachable student, in any course."""
    specs = {r["name"] for r in roles_for(("instructor",), ("course-101",), {}, staff={})}
    assert specs == {"user", "instructor", "instructor-course-101"}  # not course-303
    assert hub_groups(("instructor",), ("course-101",), {}, ["course-303"]) == [
        "course-101", "course-303", "course-101:instructors"
    ]
    # a global TA listed as an observer of course-303 observes it, and assists course-101 only
    specs = {
        r["name"]
        for r in roles_for(("assistant",), ("course-101",), {}, staff={"course-303": "observer"})
    }
    assert specs == {"user", "assistant", "assistant-course-101", "observer-course-303"}
    # a student who teaches course-303 by its roster is not reachable in course-101
    groups = hub_groups(("student",), ("course-101",), {"course-303": "instructor"})
    assert groups == ["course-101", "course-303", "course-303:instructors"]
    assert hub_groups(("student",), ("course-101",), {}, ["course-303"]) == [
        "course-101", "course-303", "course-101:students", "course-303:students"
    ]


def test_a_closed_course_keeps_its_members_but_has_no_staff_any_more() -> None:
    """At a closed course, its instructor and TA groups are not joined (its staff roles are
    not granted either: the authenticator passes only open courses to roles_for); its
    students stay in its groups, so the spawner can tell them why their server is refused."""
    assert hub_groups(("instructor",), ("course-101", "course-202"), {}, [], ["course-101"]) == [
        "course-101", "course-202", "course-202:instructors"]
    assert hub_groups(("assistant",), ("course-101",), {"course-303": "assistant"}, [],
                      ["course-303"]) == ["course-101", "course-303", "course-101:assistants"]
    assert hub_groups(("student",), ("course-101",), {}, [], ["course-101"]) == [
        "course-101", "course-101:students"]


def test_a_roster_gives_a_staff_role_only_on_a_sign_in_strong_enough_for_it() -> None:
    """role_min_acr asks a stronger sign-in of TAs: a course roster listing someone as a
    TA does not give that reach on a weaker one (the IdP's groups could not either)."""
    from hub_ext.identity.policy import assured_staff

    rule = MfaRule(acr_levels=LEVELS, role_min_acr={"assistant": "urn:acr:phr"})
    staff = {"course-101": "assistant", "course-202": "instructor"}
    assert assured_staff(rule, staff, {"acr": "urn:acr:mfa"}) == {"course-202": "instructor"}
    assert assured_staff(rule, staff, {}) == {"course-202": "instructor"}
    assert assured_staff(rule, staff, {"acr": "urn:acr:phr"}) == staff
    assert assured_staff(MfaRule(), staff, {}) == staff
