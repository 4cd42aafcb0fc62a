"""The hub roles Qustody's authenticator manages, with least-privilege scopes.

``student``/``researcher``: their own servers (``self``); ``auditor``: reads who is
active and their server models, no access to servers or tokens; ``instructor``: one
``instructor-<course>`` role per course group, whose scopes are filtered to the hub
group of that course's *students* (``<course>:students``); ``assistant`` (a TA): the
same reach, as ``assistant-<course>`` (a TA starts, opens and stops the students' course
servers and reads their collected work, but does not lead the course's QPU project);
``observer``: ``observer-<course>``, read-only (who the students are, whether their
servers run, when they were last active; no server, no file, no archive); ``admin``: JupyterHub's
admin flag (the built-in ``admin`` role), plus the role ``qustody-admin`` holding the
custom scopes Qustody's services give admins (e.g. ``custom:qpu:admin``), which the
built-in role does not include.

Why a group of its own: JupyterHub filters scopes by user, server or group, never by a
member's role. Every IdP member of a course joins the course's hub group, researchers
and admins who take the course included, so scopes filtered to that group would let an
instructor start and open a researcher's server. Only users whose sole role is
``student`` join ``<course>:students``; the ``:`` cannot occur in a course group name
(:data:`hub_ext.identity.policy.COURSE_NAME`), so no IdP group can be mapped onto it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

BASE_SCOPES: dict[str, list[str]] = {
    "student": ["self"],
    "researcher": ["self"],
    "instructor": ["self"],
    "assistant": ["self"],
    "observer": ["self"],
    "auditor": [
        "read:users:name",
        "read:users:activity",
        "read:users:groups",
        "read:groups:name",
        "read:servers",
    ],
}

#: The managed role that carries admins' extra (custom) scopes.
ADMIN_EXTRA = "qustody-admin"

#: Roles that make a course member a student whom the course's instructors may reach.
STUDENT_ONLY = frozenset({"student"})

#: Scopes of an instructor over the students of one course (hub group ``g``, from
#: :func:`students_group`).
COURSE_SCOPES = (
    "read:users!group={g}",
    "read:users:activity!group={g}",
    "read:servers!group={g}",
    "servers!group={g}",
    "access:servers!group={g}",
    "read:groups!group={g}",
)


#: Scopes of an observer of one course: read the students and their servers' state.
OBSERVER_SCOPES = (
    "read:users!group={g}",
    "read:users:activity!group={g}",
    "read:servers!group={g}",
    "read:groups!group={g}",
)

#: Course staff roles: hub role -> (per-course role name prefix, scopes, description).
COURSE_STAFF: dict[str, tuple[str, tuple[str, ...], str]] = {
    "instructor": ("instructor-", COURSE_SCOPES, "Instructor of {c}: its students' servers"),
    "assistant": ("assistant-", COURSE_SCOPES, "TA of {c}: its students' servers"),
    "observer": ("observer-", OBSERVER_SCOPES, "Observer of {c}: reads its students' state"),
}
#: Key of ``role_extra_scopes`` whose scopes every per-course staff role also gets (the
#: instructor page's access scope: a TA from a course's CSV roster has no global role).
STAFF_EXTRA = "course-staff"
#: Key of ``role_extra_scopes`` whose scopes JupyterHub's default ``user`` role (every
#: user's) also gets: ``c.JupyterHub.extra_user_scopes``, which the authenticator's role
#: sync would otherwise reset at each login.
EVERY_USER = "user"
#: Prefixes of the per-course roles that may start, open and stop students' servers.
MANAGING_PREFIXES = ("instructor-", "assistant-")


def managed_roles(extra_scopes: Mapping[str, Iterable[str]]) -> list[dict[str, Any]]:
    """The static role definitions (``load_managed_roles``), with ``extra_scopes`` added
    (custom scopes other components declare, e.g. ``custom:qpu:submit``)."""
    roles = [
        {
            "name": name,
            "description": f"Qustody {name} (from identity-provider groups)",
            "scopes": sorted({*scopes, *extra_scopes.get(name, ())}),
        }
        for name, scopes in BASE_SCOPES.items()
    ]
    if extra_scopes.get("admin"):
        roles.append(
            {
                "name": ADMIN_EXTRA,
                "description": "Qustody services' scopes for hub admins (from IdP groups)",
                "scopes": sorted(set(extra_scopes["admin"])),
            }
        )
    return roles


def students_group(course: str) -> str:
    """The hub group of ``course``'s students (the only users its instructors reach)."""
    return f"{course}:students"


#: Name prefix of the per-course instructor roles (``instructor-<course>``).
INSTRUCTOR_PREFIX = "instructor-"


def instructor_role_name(course: str) -> str:
    return f"{INSTRUCTOR_PREFIX}{course}"


def instructors_group(course: str) -> str:
    """The hub group of ``course``'s instructors (the QPU gateway's course leads: a
    server's token shows its user's groups, not their roles)."""
    return f"{course}:instructors"


def assistants_group(course: str) -> str:
    """The hub group of ``course``'s TAs (their servers get the course's materials; not
    the QPU project's leads)."""
    return f"{course}:assistants"


def hub_groups(
    roles: Iterable[str],
    courses: Iterable[str],
    staff: Mapping[str, str] | None = None,
    members: Iterable[str] = (),
    closed: Iterable[str] = (),
) -> list[str]:
    """The hub groups of a login decision: every course, plus ``<course>:students`` for
    each course when the user's only role is student (a researcher, instructor, admin or
    auditor who also takes a course is not reachable through it), and
    ``<course>:instructors`` for each course of an instructor, ``<course>:assistants`` for
    each course of a TA.

    ``courses`` are the IdP's course groups, where the user's global roles apply; from
    course rosters (CSV), ``members`` are courses the user takes and ``staff`` maps a
    course to the user's staff kind there, for that course only. Staff of any course are
    nobody's reachable student. ``closed`` courses (their term is over) keep their
    members but have no instructors or TAs any more."""
    staff = dict(staff or {})
    ended = set(closed)
    idp = set(courses)
    everything = sorted(idp | set(members) | set(staff))
    student = set(roles) == STUDENT_ONLY and not staff
    return (
        everything
        + ([students_group(c) for c in everything] if student else [])
        + [
            instructors_group(c)
            for c in everything
            if c not in ended
            and ((c in idp and "instructor" in set(roles)) or staff.get(c) == "instructor")
        ]
        + [
            assistants_group(c)
            for c in everything
            if c not in ended
            and ((c in idp and "assistant" in set(roles)) or staff.get(c) == "assistant")
        ]
    )


def course_role(course: str, kind: str = "instructor", extra: Iterable[str] = ()) -> dict[str, Any]:
    """The per-course role of a course's staff: ``kind`` is instructor, assistant or
    observer; ``extra``: scopes every staff role gets (``role_extra_scopes[STAFF_EXTRA]``)."""
    prefix, scopes, description = COURSE_STAFF[kind]
    return {
        "name": f"{prefix}{course}",
        "description": description.format(c=course),
        "scopes": [*(s.format(g=students_group(course)) for s in scopes), *extra],
    }


def roles_for(
    roles: Iterable[str],
    courses: Iterable[str],
    extra_scopes: Mapping[str, Iterable[str]],
    staff: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """The auth model's ``roles`` (what ``User.sync_roles`` applies) for a decision: the
    global staff roles act in ``courses`` (the IdP's course groups) only; ``staff``
    (course → kind, from course rosters) adds exactly that course's staff role."""
    from jupyterhub.roles import get_default_roles

    defaults = {r["name"]: r for r in get_default_roles()}
    wanted = set(roles)
    specs = {r["name"]: r for r in managed_roles(extra_scopes)}
    # every user's role, with the scopes the hub adds to it (JupyterHub.extra_user_scopes,
    # handed over as role_extra_scopes["user"]): sync_roles writes the role as given here
    user = defaults["user"]
    out = [{**user, "scopes": sorted({*user["scopes"], *extra_scopes.get(EVERY_USER, ())})}]
    if "admin" in wanted:
        out.append(defaults["admin"])
        if ADMIN_EXTRA in specs:
            out.append(specs[ADMIN_EXTRA])
    out += [specs[r] for r in sorted(wanted) if r in specs]
    courses = sorted(set(courses))
    extra = sorted(set(extra_scopes.get(STAFF_EXTRA, ())))
    for kind in sorted(wanted & COURSE_STAFF.keys()):
        out += [course_role(c, kind, extra) for c in courses]
    have = {r["name"] for r in out}
    for course, kind in sorted((staff or {}).items()):
        role = course_role(course, kind, extra)
        if role["name"] not in have:
            out.append(role)
            have.add(role["name"])
    return out
