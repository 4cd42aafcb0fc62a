"""The hub's courses directory, set once in ``jupyterhub_config.py``.

``course_settings(c, state_dir, demo=...)`` picks the directory (``QUSTODY_COURSES_DIR``,
or ``<state>/courses``), creates it, and points ``SpawnPolicy.courses_dir`` at it; the QPU
gateway's settings (hub_ext.qpu.hub) read the same value. A demo gets one course,
course-101 (ivan teaches, sam takes it), whose term runs around today.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from .catalog import SUFFIX, write_atomically
from .model import stamp

ENV = "QUSTODY_COURSES_DIR"

DEMO_COURSE = """\
# The demo's course (written by hub_ext.courses.hub on the first start). Change it with
# `qustody course apply FILE --dir {dir}`; the hub and the QPU gateway pick it up without
# a restart. docs/courses.md describes every key.
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
    return directory
