"""Courses in a hub: the fragment ``courses(c, state_dir, ...)`` for ``hub_ext.wiring.apply``.

``courses_dir(state_dir)`` is the directory (``QUSTODY_COURSES_DIR``, or
``<state>/courses``); the fragment points ``SpawnPolicy.courses_dir`` and the
authenticator's CSV-roster lookup at it (the QPU gateway is given the same directory). A
demo gets one course, course-101 (ivan teaches, sam takes it), whose term runs around
today. It also adds the instructor page (hub_ext.courses.web) as a hub-managed service
at ``/services/courses/`` and lets the ``instructor``, ``assistant`` (TA) and
``observer`` roles use it.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from ..identity.roles import STAFF_EXTRA
from ..wiring import Fragment
from .catalog import SUFFIX
from .model import Course, stamp
from .roster import roster_lookup

ENV = "QUSTODY_COURSES_DIR"

DEMO_COURSE = """\
# The demo's course (written by hub_ext.courses.hub on the first start). Change it with
#   qustody course apply --dir {dir} FILE
# the hub and the QPU gateway pick it up without a restart (docs/courses.md).
id = "course-101"
title = "Introduction to Quantum Computing"

[term]
start = {start}
end = {end}
grace_days = 7
retention_days = 180

[roster]
group = "course-101"   # the IdP group: ivan is its instructor, sam a student

[profile]
name = "student"       # what ivan may start for sam

[qpu]
backends = ["aer_simulator"]
purpose = "teaching"
per_student = {{ day = {{ jobs = 200, shots = 400000 }} }}
total = {{ day = {{ jobs = 2000 }}, month = {{ shots = 20000000 }} }}
"""


def courses_dir(state_dir: str | os.PathLike[str]) -> Path:
    """The hub's courses directory: ``QUSTODY_COURSES_DIR``, or ``<state>/courses``."""
    return Path(os.environ.get(ENV) or Path(state_dir) / "courses").resolve()


def closed_lookup(current: Callable[[], Mapping[str, Course]]) -> Callable[[str], bool]:
    """``(course) -> bool``: whether the course has a file and its term has closed."""

    def closed(course_id: str) -> bool:
        course = current().get(course_id)
        return course is not None and not course.term.is_open(time.time())

    return closed


def shared_secrets(current: Callable[[], Mapping[str, Course]]
                   ) -> Callable[[Iterable[str]], list[tuple[str, tuple[str, ...]]]]:
    """``(hub groups) -> [(course, secret names)]``: the shared secrets (``[secrets]``)
    of the open courses the groups make the user a member of, as its file's ``to`` says
    (``<course>:students``, ``:instructors``, ``:assistants``)."""

    def lookup(groups: Iterable[str]) -> list[tuple[str, tuple[str, ...]]]:
        courses, now, out = current(), time.time(), {}
        for group in groups:
            course_id, _, kind = str(group).rpartition(":")
            course = courses.get(course_id)
            if course is not None and course.secrets and kind in course.secrets_to \
                    and course.term.is_open(now):
                out[course_id] = course.secrets
        return sorted(out.items())

    return lookup


def live_courses(directory: Path) -> Callable[[], Mapping[str, Course]]:
    """The hub's live courses (shared with the spawners), read when first asked."""
    import logging

    from .live import shared

    def current() -> Mapping[str, Course]:
        return shared(directory, logging.getLogger("qustody.courses")).current().courses

    return current


SERVICE = "courses"
#: What the term keeper does with the hub: read groups and users' servers, stop servers,
#: take staff out of a closed course's groups. (Courses come and go without a restart, so
#: no group filter can name them in advance.)
KEEPER_SCOPES = ["read:groups", "groups", "read:users:name", "read:users:groups",
                 "read:servers", "servers"]


def _volumes(c: Any) -> dict[str, Any]:
    """How the term keeper reaches the servers' homes: the policy's first allowed image
    (no container is ever started), volume template, home and user."""
    from ..volumes import HOME_MOUNT, HOME_VOLUME_TEMPLATE

    policy = c.SpawnPolicy
    images = dict(policy.get("allowed_images", {}) or {})
    return {
        "image": next(iter(images.values()), ""),
        "home_volume_template": policy.get("home_volume_template", HOME_VOLUME_TEMPLATE),
        "home_mount": policy.get("home_mount", HOME_MOUNT),
        "run_as": policy.get("run_as", "1000:1000"),
        "materials_prefix": policy.get("materials_volume_prefix", "qustody-materials-"),
    }


def courses(
    c: Any,
    state_dir: str | os.PathLike[str],
    *,
    demo: bool = False,
    port: int = 8083,
    qpu_url: str = "",
    python: str = sys.executable,
    docker: bool = False,
    term_interval: float = 60,
) -> Fragment:
    """The courses directory in the hub's settings, and the instructor page.

    ``qpu_url``: where the page reaches the QPU gateway (its students' usage); empty
    without one. Reads ``c.SpawnPolicy.profiles`` (the page shows their time limits).
    ``docker``: servers keep their homes on Docker volumes (``c.SpawnPolicy``'s image,
    volume template and user), so the term keeper releases, collects and archives
    there. ``term_interval``: how often the term keeper looks for due steps (0: never).
    """
    from ..audit.hub import service_environment
    from .admin_api import ADMIN_SCOPE
    from .web import ALLOWED_SCOPES

    directory = courses_dir(state_dir)
    directory.mkdir(parents=True, exist_ok=True)
    files = {}
    if demo and not any(directory.glob("*" + SUFFIX)):
        now = time.time()
        files[directory / ("course-101" + SUFFIX)] = DEMO_COURSE.format(
            dir=directory, start=stamp(now - 30 * 86400), end=stamp(now + 120 * 86400))
    profiles = c.SpawnPolicy.get("profiles", {}) or {}
    limits = {
        name: {k: int(spec[k]) for k in ("max_age", "idle_timeout") if k in spec}
        for name, spec in profiles.items()
    }
    service = {
        "name": SERVICE,
        "url": f"http://127.0.0.1:{port}",
        "command": [python, "-m", "hub_ext.courses.web"],
        "environment": {
            "QUSTODY_COURSES_DIR": str(directory),
            "QUSTODY_PROFILE_LIMITS": json.dumps(limits),
            "QUSTODY_QPU_URL": qpu_url,
            "QUSTODY_TERM_INTERVAL": str(float(term_interval)),
            "QUSTODY_TERM_VOLUMES": json.dumps(_volumes(c)) if docker else "",
            # the hub's Docker engine (a managed service inherits almost no environment)
            **({"DOCKER_HOST": os.environ["DOCKER_HOST"]}
               if docker and os.environ.get("DOCKER_HOST") else {}),
            # the courses API records each change (admin_api.py)
            **service_environment(c),
        },
        # the page acts with the instructor's own token: these scopes, cut by the hub to
        # what the instructor holds (their courses' students only)
        "oauth_client_allowed_scopes": ALLOWED_SCOPES,
        "oauth_no_confirm": True,
        "display": True,
    }
    access = f"access:services!service={SERVICE}"
    admins = sorted(c.Authenticator.admin_users) if "admin_users" in c.Authenticator else []
    return Fragment(
        "courses (hub_ext.courses.hub)",
        services=[service],
        # course staff use the page
        roles=[*({"name": staff, "description": f"Qustody {staff}", "scopes": [access]}
                 for staff in ("instructor", "assistant", "observer")),
               # the term keeper and the page's buttons (service.py): the course's
               # students, stopping their servers at the close, its staff groups emptied
               *([{"name": "courses-service", "description": "The courses service's term keeper",
                   "scopes": KEEPER_SCOPES, "services": [SERVICE]}] if term_interval > 0
                 or docker else []),
               # the courses API (admin_api.py), with the admin's own API token
               {"name": "course-admin", "description": "Apply course files (the courses API)",
                "scopes": [ADMIN_SCOPE, access], "users": admins}],
        custom_scopes={ADMIN_SCOPE: {"description": "Apply course files through the courses "
                                                    "API (hub_ext.courses.admin_api)"}},
        settings={
            "SpawnPolicy.courses_dir": str(directory),
            # CSV rosters: the authenticator asks at each login and refresh who else is in
            # a course
            "QustodyAuthenticator.course_rosters": roster_lookup(live_courses(directory)),
            # a closed course's staff get no role for it at their next login or refresh
            "QustodyAuthenticator.course_closed": closed_lookup(live_courses(directory)),
            # staff of one course only (from its CSV roster) hold no global role: their
            # course role carries the page's access scope
            "QustodyAuthenticator.role_extra_scopes": {STAFF_EXTRA: [access]},
        },
        files=files,
    )
