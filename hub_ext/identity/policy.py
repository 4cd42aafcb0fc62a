"""Who may log in, with which hub roles: IdP groups → roles, and MFA (amr / acr) rules.

Pure functions of the verified ID-token claims and the configuration, so the decision
table is tested without a hub. :func:`assurance` reads the level a login established
back out of ``auth_state`` for other components (e.g. the QPU gateway's step-up).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .factors import factors_in_words

#: The hub roles an IdP group can map to.
ROLES = ("student", "researcher", "instructor", "assistant", "observer", "admin", "auditor")

#: What an IdP course group name may look like (never a ``:``, see roles.students_group).
COURSE_NAME = re.compile(r"^[a-z0-9][a-z0-9\-_.]{0,60}[a-z0-9]$")


@dataclass(frozen=True)
class MfaRule:
    """Acceptable authentication: any of ``amr_values`` (empty: amr not checked) and an
    ``acr`` at least ``min_acr`` in the ordered ``acr_levels`` (empty: not checked);
    ``role_min_acr`` asks more of chosen roles."""

    amr_values: frozenset[str] = frozenset()
    acr_levels: tuple[str, ...] = ()
    min_acr: str = ""
    role_min_acr: Mapping[str, str] = field(default_factory=dict)

    def rank(self, acr: str) -> int:
        return self.acr_levels.index(acr) if acr in self.acr_levels else -1


@dataclass(frozen=True)
class Decision:
    """``allowed`` with ``roles`` and ``courses``; otherwise ``audit_type`` and ``reason``
    (audit enums) and ``message`` (shown to the user on the refusal page)."""

    allowed: bool
    roles: tuple[str, ...] = ()
    courses: tuple[str, ...] = ()
    audit_type: str = ""
    reason: str = ""
    message: str = ""


def claim_list(claims: Mapping[str, Any], key: str) -> list[str]:
    value = claims.get(key)
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def decide(
    claims: Mapping[str, Any],
    group_roles: Mapping[str, str],
    mfa: MfaRule,
    groups_claim: str = "groups",
    course_prefix: str = "course-",
) -> Decision:
    """The login decision for verified ``claims`` (deny unless a mapped group and MFA)."""
    groups = claim_list(claims, groups_claim)
    roles = tuple(sorted({group_roles[g] for g in groups if g in group_roles}))
    courses = tuple(
        sorted(
            g
            for g in groups
            if course_prefix and g.startswith(course_prefix) and COURSE_NAME.match(g)
        )
    )
    if not roles:
        return Decision(
            False,
            audit_type="login-refused",
            reason="no-role",
            message="Your account is not in any group allowed to use this hub. "
            "Ask your administrator to add you to a Qustody group at the identity provider.",
        )
    amr = set(claim_list(claims, "amr"))
    if mfa.amr_values and not amr & mfa.amr_values:
        return Decision(
            False,
            roles,
            audit_type="mfa-refused",
            reason="mfa-missing",
            message="Multi-factor authentication is required. Sign in again at the identity "
            "provider with " + factors_in_words(mfa.amr_values) + ".",
        )
    needed = [mfa.min_acr, *(mfa.role_min_acr.get(r, "") for r in roles)]
    needed = [level for level in needed if level]
    if needed:
        top = max(needed, key=mfa.rank)
        acr = claims.get("acr")
        if mfa.rank(acr if isinstance(acr, str) else "") < mfa.rank(top):
            return Decision(
                False,
                roles,
                audit_type="mfa-refused",
                reason="acr-too-low",
                message=f"Your role requires a stronger sign-in (authentication level {top}). "
                "Sign in again at the identity provider with that method.",
            )
    return Decision(True, roles, courses)


def assured_staff(
    mfa: MfaRule, staff: Mapping[str, str], claims: Mapping[str, Any]
) -> dict[str, str]:
    """The course staff kinds a course roster (CSV) gives (course -> ``instructor``,
    ``assistant``, ...) that this sign-in's ``acr`` is strong enough for
    (``role_min_acr``), as it must be for the same role from the IdP's groups: a roster
    line must not grant a TA's reach over a course on a weaker sign-in."""
    acr = claims.get("acr")
    have = mfa.rank(acr if isinstance(acr, str) else "")
    return {course: kind for course, kind in staff.items()
            if not mfa.role_min_acr.get(kind) or have >= mfa.rank(mfa.role_min_acr[kind])}


@dataclass(frozen=True)
class Assurance:
    """How a user's current session was authenticated."""

    amr: tuple[str, ...]
    acr: str
    auth_time: float
    roles: tuple[str, ...]


def assurance(auth_state: Mapping[str, Any] | None) -> Assurance | None:
    """The assurance recorded at the last verified login or refresh (None without one)."""
    record = (auth_state or {}).get("qustody")
    if not isinstance(record, Mapping):
        return None
    return Assurance(
        amr=tuple(record.get("amr", ())),
        acr=str(record.get("acr", "")),
        auth_time=float(record.get("auth_time", 0)),
        roles=tuple(record.get("roles", ())),
    )


def meets(auth_state: Mapping[str, Any] | None, rule: MfaRule, required_acr: str) -> bool:
    """Whether the session's acr is at least ``required_acr`` (step-up checks)."""
    level = assurance(auth_state)
    return level is not None and rule.rank(level.acr) >= rule.rank(required_acr) >= 0


def validate_group_roles(group_roles: Mapping[str, str]) -> None:
    bad = {g: r for g, r in group_roles.items() if r not in ROLES}
    if bad:
        raise ValueError(f"group_roles maps to unknown roles {bad}; use one of {', '.join(ROLES)}")


def validate_mfa(rule: MfaRule, allow_no_mfa: bool) -> None:
    levels: Sequence[str] = rule.acr_levels
    for level in [rule.min_acr, *rule.role_min_acr.values()]:
        if level and level not in levels:
            raise ValueError(f"acr level {level!r} is not in acr_levels {list(levels)}")
    unknown = set(rule.role_min_acr) - set(ROLES)
    if unknown:
        raise ValueError(f"role_min_acr names unknown roles {sorted(unknown)}")
    if not rule.amr_values and not rule.min_acr and not allow_no_mfa:
        raise ValueError(
            "no MFA requirement: set mfa_amr_values or min_acr (or allow_no_mfa = True, "
            "which lets single-factor logins in)"
        )
