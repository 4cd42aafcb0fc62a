"""The hub's courses directory and the instructor page, set in ``jupyterhub_config.py``.

``course_settings(c, state_dir, demo=...)`` picks the directory (``QUSTODY_COURSES_DIR``,
or ``<state>/courses``), creates it, and points ``SpawnPolicy.courses_dir`` at it; the QPU
gateway's settings (hub_ext.qpu.hub) read the same value. A demo gets one course,
course-101 (ivan teaches, sam takes it), whose term runs around today.

``courses_service(c, port=...)`` adds the instructor page (hub_ext.courses.web) as a
hub-managed service at ``/services/courses/`` and lets the ``instructor``, ``assistant``
(TA) and ``observer`` roles use it.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..identity.roles import STAFF_EXTRA
from .catalog import SUFFIX, write_atomically
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


def course_settings(c: Any, state_dir: str | os.PathLike[str], *, demo: bool = False) -> Path:
    directory = Path(os.environ.get(ENV) or Path(state_dir) / "courses").resolve()
    directory.mkdir(parents=True, exist_ok=True)
    if demo and not any(directory.glob("*" + SUFFIX)):
        now = time.time()
        write_atomically(
            directory / ("course-101" + SUFFIX),
            DEMO_COURSE.format(dir=directory, start=stamp(now - 30 * 86400),
                               end=stamp(now + 120 * 86400)).encode(),
        )
    c.SpawnPolicy.courses_dir = str(directory)
    # CSV rosters: the authenticator asks at each login and refresh who else is in a course
    c.QustodyAuthenticator.course_rosters = roster_lookup(_live_courses(directory))
    return directory


def _live_courses(directory: Path) -> Callable[[], Mapping[str, Course]]:
    """The hub's live courses (shared with the spawners), read when first asked."""
    import logging

    from .live import shared

    def current() -> Mapping[str, Course]:
        return shared(directory, logging.getLogger("qustody.courses")).current().courses

    return current


SERVICE = "courses"


def courses_service(c: Any, *, port: int = 8083, python: str = sys.executable) -> dict[str, Any]:
    """Add the instructor page to ``c`` (after ``course_settings`` and ``qpu_service``)."""
    from .web import ALLOWED_SCOPES

    profiles = c.SpawnPolicy.get("profiles", {}) or {}
    limits = {
        name: {k: int(spec[k]) for k in ("max_age", "idle_timeout") if k in spec}
        for name, spec in profiles.items()
    }
    env = c.Spawner.environment if isinstance(c.Spawner.environment, dict) else {}
    service = {
        "name": SERVICE,
        "url": f"http://127.0.0.1:{port}",
        "command": [python, "-m", "hub_ext.courses.web"],
        "environment": {
            "QUSTODY_COURSES_DIR": str(c.SpawnPolicy.get("courses_dir", "")),
            "QUSTODY_PROFILE_LIMITS": json.dumps(limits),
            "QUSTODY_QPU_URL": str(env.get("QUSTODY_QPU_URL", "")),
        },
        # the page acts with the instructor's own token: these scopes, cut by the hub to
        # what the instructor holds (their courses' students only)
        "oauth_client_allowed_scopes": ALLOWED_SCOPES,
        "oauth_no_confirm": True,
        "display": True,
    }
    services = c.JupyterHub.services if isinstance(c.JupyterHub.services, list) else []
    c.JupyterHub.services = [*services, service]
    roles = c.JupyterHub.load_roles if isinstance(c.JupyterHub.load_roles, list) else []
    access = f"access:services!service={SERVICE}"
    for staff in ("instructor", "assistant", "observer"):  # course staff use the page
        for role in roles:
            if role.get("name") == staff:
                role["scopes"] = sorted({*role.get("scopes", []), access})
                break
        else:
            roles.append({"name": staff, "description": f"Qustody {staff}", "scopes": [access]})
    c.JupyterHub.load_roles = roles
    # staff of one course only (from its CSV roster) hold no global role: their course
    # role carries the page's access scope
    a = c.QustodyAuthenticator
    extra = dict(a.role_extra_scopes) if "role_extra_scopes" in a else {}
    extra[STAFF_EXTRA] = sorted({*extra.get(STAFF_EXTRA, []), access})
    a.role_extra_scopes = extra
    return service
