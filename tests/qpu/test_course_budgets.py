"""A course's QPU budget and term come from its course file (hub_ext.courses), through a
real gateway process: per-student and course limits with refusals that name the course
file's key, a changed file applied without a restart, a bad edit ignored, a closed term."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import ROOT, SUBMIT, bell, launch, qpy_b64

from hub_ext.courses.model import stamp

POLICY = """
[tags]
purposes = ["research", "teaching", "testing"]
[identity]
course_prefix = "course-"
course_backends = ["aer_simulator"]
"""


def course(per_student_jobs: int = 2, total_jobs: int = 3, ended_days_ago: float | None = None,
           title: str = "Intro QC") -> str:
    now = time.time()
    end = now - ended_days_ago * 86400 if ended_days_ago is not None else now + 30 * 86400
    return f"""
id = "course-101"
title = "{title}"
[term]
start = {stamp(end - 90 * 86400)}
end = {stamp(end)}
grace_days = 7
[roster]
group = "course-101"
[qpu]
backends = ["aer_simulator"]
purpose = "teaching"
per_student = {{ day = {{ jobs = {per_student_jobs} }} }}
total = {{ day = {{ jobs = {total_jobs} }} }}
"""


@pytest.fixture
def students(hub: Any) -> None:
    for name in ("sam", "sue"):
        hub.tokens[name] = hub.add(name, [SUBMIT], groups=["course-101", "course-101:students"])
    hub.tokens["ivan"] = hub.add("ivan", [SUBMIT], groups=["course-101", "course-101:instructors"])


def submit(gw: Any, user: str, backend: str = "aer_simulator") -> tuple[int, Any]:
    # no project and no purpose: the course is the student's only project and has both
    body = {"backend": backend, "circuits": [{"qpy": qpy_b64(bell())}], "shots": 10}
    return gw.call(user, "POST", "api/jobs", body)


def health(gw: Any) -> dict[str, Any]:
    return dict(requests.get(gw.url + "api/health", timeout=10).json())


def wait_for_policy_change(gw: Any, digest: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while (now := health(gw))["policy"] == digest:
        assert time.monotonic() < deadline, "the gateway never reloaded the course file"
        time.sleep(0.1)
    return now


def apply(src: Path, courses: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "server_ext.cli", "course", "apply", "--dir", str(courses),
         str(src)],
        capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert out.returncode == 0, out.stderr


def test_a_course_budget_binds_each_student_and_the_course(students, start_gateway, tmp_path):
    courses = tmp_path / "courses"
    courses.mkdir()
    (courses / "course-101.toml").write_text(course(per_student_jobs=2, total_jobs=3))
    gw = start_gateway(f"sqlite:///{tmp_path / 'qpu.sqlite'}", policy=POLICY,
                       courses_dir=str(courses))
    for _ in range(2):
        status, body = submit(gw, "sam")
        assert status == 201, body
    _, job = gw.call("sam", "GET", f"api/jobs/{body['job_id']}")
    assert (job["tags"]["project"], job["tags"]["purpose"]) == ("course-101", "teaching"), job
    status, body = submit(gw, "sam")
    assert (status, body["reason"]) == (429, "REJECTED:MEMBER_QUOTA"), body
    assert "your per-student budget in 'course-101' has used 2 of 2 jobs" in body["message"]
    assert "qpu.per_student.day.jobs in course-101.toml" in body["message"]
    status, quota = gw.call("sam", "GET", "api/quota", backend_class="simulator")
    assert status == 200, quota
    mine = quota["projects"]["course-101"]
    assert mine["your_quota"]["simulator"]["day"]["jobs"] == {
        "limit": 2, "used": 2, "remaining": 0}, mine
    assert mine["quota"]["simulator"]["day"]["jobs"]["limit"] == 3
    assert submit(gw, "sue")[0] == 201  # the course's third job of the day
    # the instructor (the course's lead) reads each student's use; students may not
    status, usage = gw.call("ivan", "GET", "api/projects/course-101/usage?user=sam&user=sue")
    assert status == 200 and usage["limited"], usage
    assert {u: m["simulator"]["day"]["jobs"]["used"] for u, m in usage["members"].items()} == {
        "sam": 2, "sue": 1}
    status, body = gw.call("sam", "GET", "api/projects/course-101/usage?user=sue")
    assert (status, body["error"]) == (403, "NOT_A_LEAD"), body
    status, body = submit(gw, "sue")
    assert (status, body["reason"]) == (429, "REJECTED:PROJECT_QUOTA"), body
    assert "course 'course-101' (all its students together) has used 3 of 3" in body["message"]
    assert "qpu.total.day.jobs in course-101.toml" in body["message"]
    status, body = submit(gw, "sue", backend="fake_hw")
    assert (status, body["reason"]) == (403, "REJECTED:BACKEND_NOT_ALLOWED"), body

    # a changed file applies without a restart: more jobs for everyone
    digest = health(gw)["policy"]
    src = tmp_path / "course-101.toml"
    src.write_text(course(per_student_jobs=5, total_jobs=10))
    apply(src, courses)
    assert not wait_for_policy_change(gw, digest)["policy_reload_error"]
    assert submit(gw, "sam")[0] == 201

    # a bad edit is refused; the last good budget stays in force
    digest = health(gw)["policy"]
    (courses / "course-101.toml").write_text(course().replace("grace_days = 7", "grace = 7"))
    deadline = time.monotonic() + 30
    while not health(gw)["policy_reload_error"]:
        assert time.monotonic() < deadline, "the bad course file went unnoticed"
        time.sleep(0.1)
    assert health(gw)["policy"] == digest and submit(gw, "sam")[0] == 201
    assert "term: unknown key(s) grace" in gw.log()

    # once the term closes (end + grace), the course takes no more jobs
    src.write_text(course(10, 20, ended_days_ago=8))
    apply(src, courses)
    wait_for_policy_change(gw, digest)
    status, body = submit(gw, "sam")
    assert (status, body["reason"]) == (403, "REJECTED:COURSE_CLOSED"), body
    assert "the term of 'course-101' closed on" in body["message"]
    digest = health(gw)["policy"]
    src.write_text(course(10, 20, ended_days_ago=6))  # still in its grace week: open
    apply(src, courses)
    wait_for_policy_change(gw, digest)
    assert submit(gw, "sam")[0] == 201


def test_a_bad_course_file_stops_the_gateway_at_start_up(hub, tmp_path):
    courses = tmp_path / "courses"
    courses.mkdir()
    (courses / "course-101.toml").write_text(course().replace('"aer_simulator"]', '"qpu9"]'))
    gw = launch(hub, tmp_path / "gw", f"sqlite:///{tmp_path / 'qpu.sqlite'}", policy=POLICY,
                courses_dir=str(courses))
    with pytest.raises(AssertionError) as e:
        gw.start(timeout=60)
    assert "course-101.toml: qpu.backends: unknown backend 'qpu9'" in str(e.value)
    assert "Traceback" not in str(e.value)


def test_course_files_need_the_gateways_course_prefix(hub, tmp_path):
    courses = tmp_path / "courses"
    courses.mkdir()
    (courses / "course-101.toml").write_text(course())
    gw = launch(hub, tmp_path / "gw", f"sqlite:///{tmp_path / 'qpu.sqlite'}",
                policy='[tags]\npurposes = ["teaching"]\n', courses_dir=str(courses))
    with pytest.raises(AssertionError) as e:
        gw.start(timeout=60)
    assert "set identity.course_prefix" in str(e.value)
