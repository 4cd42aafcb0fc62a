"""The instructor page's Release now / Collect now jobs (hub_ext.courses.jobs): one run per
assignment at a time (shared with the term keeper), none for a closed course or without
an audit log, and the reasons said. The hub API here is a stand-in that blocks on demand
(a real hub cannot be made to hold a request open at a chosen moment); the real path is
tests/hub/test_course_page_jobs.py."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest

from hub_ext.courses.jobs import AssignmentJobs, JobRefused
from hub_ext.courses.keeper import TermActions
from hub_ext.courses.live import LiveCatalog
from hub_ext.courses.model import DAY, stamp


class BlockingHub:
    """Stand-in for HubAPI: lists the students once ``go`` is set."""

    def __init__(self) -> None:
        self.go = threading.Event()
        self.asked = threading.Event()

    def group_members(self, group: str) -> list[str]:
        self.asked.set()
        self.go.wait(30)
        raise RuntimeError("hub API GET /groups: HTTP 503")


class Audit:
    def __init__(self) -> None:
        self.records: list[tuple[str, dict]] = []

    def emit(self, kind: str, data: dict) -> None:
        self.records.append((kind, data))


def write_course(directory: Path, end: float) -> None:
    (directory / "course-101.toml").write_text(
        f'id = "course-101"\ntitle = "Intro"\n[term]\nstart = {stamp(end - 30 * DAY)}\n'
        f'end = {stamp(end)}\ngrace_days = 0\n[roster]\ngroup = "course-101"\n'
        '[materials]\nvolume = "qustody-materials-c101"\n'
        f'[[assignments]]\nname = "hw1"\nrelease = {stamp(end - 20 * DAY)}\n'
        f"due = {stamp(end - 10 * DAY)}\n")


@pytest.fixture
def setup(tmp_path: Path) -> tuple[AssignmentJobs, BlockingHub, Audit, Path]:
    write_course(tmp_path, time.time() + 30 * DAY)
    catalog = LiveCatalog(tmp_path, logging.getLogger("test"), recheck_seconds=0)
    hub = BlockingHub()
    actions = TermActions(hub, lambda: catalog.current(), tmp_path / "archive",  # type: ignore[arg-type]
                          volumes=object())
    audit = Audit()
    return AssignmentJobs(actions, audit, catalog), hub, audit, tmp_path


def wait_state(jobs: AssignmentJobs, state: str) -> dict:
    for _ in range(200):
        job = jobs.state("course-101", "hw1")
        if job and job["state"] == state:
            return job
        time.sleep(0.05)
    raise AssertionError(f"no {state} job: {jobs.state('course-101', 'hw1')}")


def test_a_second_press_while_one_runs_is_refused_and_a_failure_is_said(setup) -> None:
    jobs, hub, audit, _ = setup
    jobs.start("course-101", "hw1", "collect", "ivan")
    assert hub.asked.wait(10)
    with pytest.raises(JobRefused) as e:
        jobs.start("course-101", "hw1", "release", "tina")
    assert e.value.status == 409 and "already running (started by ivan)" in e.value.message
    # the keeper holds the same lock: a press during its collect is refused too
    hub.go.set()
    job = wait_state(jobs, "failed")
    assert job["message"] == "collect failed: RuntimeError: hub API GET /groups: HTTP 503"
    assert audit.records == []  # nothing moved, nothing recorded
    with jobs.actions.moving("course-101", "hw1"), pytest.raises(JobRefused,
                                                                 match="already running"):
        jobs.start("course-101", "hw1", "collect", "ivan")


@pytest.mark.parametrize(("course", "assignment", "action", "status", "words"), [
    ("course-101", "hw1", "delete", 400, "action=release or action=collect"),
    ("course-101", "hw9", "release", 404, "no assignment 'hw9'"),
    ("course-202", "hw1", "release", 404, "course-202 has no assignment"),
])
def test_bad_requests_are_refused_with_the_reason(setup, course, assignment, action, status,
                                                  words) -> None:
    jobs, _, _, _ = setup
    with pytest.raises(JobRefused) as e:
        jobs.start(course, assignment, action, "ivan")
    assert e.value.status == status and words in e.value.message


def test_nothing_runs_for_a_closed_course_without_volumes_or_without_an_audit_log(setup) -> None:
    jobs, _, _, directory = setup
    write_course(directory, time.time() - DAY)
    with pytest.raises(JobRefused, match="has closed") as e:
        jobs.start("course-101", "hw1", "collect", "ivan")
    assert e.value.status == 409
    write_course(directory, time.time() + 30 * DAY)
    no_audit = AssignmentJobs(jobs.actions, None, jobs.catalog)
    with pytest.raises(JobRefused, match="no audit log"):
        no_audit.start("course-101", "hw1", "collect", "ivan")
    jobs.actions.volumes = None
    assert not jobs.available
    with pytest.raises(JobRefused, match="do not keep their homes on Docker volumes"):
        jobs.start("course-101", "hw1", "collect", "ivan")
    assert jobs.state("course-101", "hw1") is None
