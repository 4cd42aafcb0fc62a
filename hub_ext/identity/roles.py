"""The hub roles Qustody's authenticator manages, with least-privilege scopes.

``student``/``researcher``: their own servers (``self``); ``auditor``: reads who is
active and their server models, no access to servers or tokens; ``instructor``: one
``instructor-<course>`` role per course group, whose scopes are filtered to that hub
group; ``admin``: JupyterHub's admin flag (the built-in ``admin`` role), plus the role
``qustody-admin`` holding the custom scopes Qustody's services give admins (e.g.
``custom:qpu:admin``), which the built-in role does not include.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

BASE_SCOPES: dict[str, list[str]] = {
    "student": ["self"],
    "researcher": ["self"],
    "instructor": ["self"],
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

#: Scopes of an instructor over the users of one course (hub group ``course``).
COURSE_SCOPES = (
    "read:users!group={g}",
    "read:users:activity!group={g}",
    "read:servers!group={g}",
    "servers!group={g}",
    "access:servers!group={g}",
    "read:groups!group={g}",
)


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


def course_role(course: str) -> dict[str, Any]:
    return {
        "name": f"instructor-{course}",
        "description": f"Instructor of {course}: their course's users and servers only",
        "scopes": [s.format(g=course) for s in COURSE_SCOPES],
    }


def roles_for(
    roles: Iterable[str], courses: Iterable[str], extra_scopes: Mapping[str, Iterable[str]]
) -> list[dict[str, Any]]:
    """The auth model's ``roles`` (what ``User.sync_roles`` applies) for a decision."""
    from jupyterhub.roles import get_default_roles

    defaults = {r["name"]: r for r in get_default_roles()}
    wanted = set(roles)
    specs = {r["name"]: r for r in managed_roles(extra_scopes)}
    out = [defaults["user"]]
    if "admin" in wanted:
        out.append(defaults["admin"])
        if ADMIN_EXTRA in specs:
            out.append(specs[ADMIN_EXTRA])
    out += [specs[r] for r in sorted(wanted) if r in specs]
    if "instructor" in wanted:
        out += [course_role(c) for c in courses]
    return out
