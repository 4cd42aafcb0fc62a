"""A course's calendar (hub_ext.courses.term): which steps are due when, and the journal
that makes them run once, resume after a crash, back off after a failure and start afresh
for a new term."""

from __future__ import annotations

import json
import os
import stat

import pytest

from hub_ext.courses.model import DAY, parse_course, stamp
from hub_ext.courses.term import (
    Journal,
    JournalError,
    Step,
    due_steps,
    plan,
    retry_at,
    status_lines,
)

T0 = 1_800_000_000.0  # a fixed "now" for the patched clock


def course(start: float = T0, end: float = T0 + 10 * DAY, grace: float = 2, keep: float = 30,
           assignments: str = "") -> object:
    text = (f'id = "course-101"\ntitle = "Intro"\n[term]\nstart = {stamp(start)}\n'
            f"end = {stamp(end)}\ngrace_days = {grace}\nretention_days = {keep}\n"
            f'[roster]\ngroup = "course-101"\n{assignments}')
    return parse_course(text.encode(), "course-101.toml")


HW = ('[materials]\nvolume = "qustody-materials-course-101"\n'
      f'[[assignments]]\nname = "hw1"\nrelease = {stamp(T0 + DAY)}\n'
      f"due = {stamp(T0 + 3 * DAY)}\n"
      f'[[assignments]]\nname = "hw2"\nrelease = {stamp(T0 + 2 * DAY)}\n'
      f"due = {stamp(T0 + 3 * DAY)}\n")


def names(steps: list[Step]) -> list[str]:
    return [s.name for s in steps]


def test_the_calendar_orders_every_step_by_its_time():
    c = course(assignments=HW)
    assert names(plan(c)) == [
        "release:hw1", "release:hw2", "collect:hw1", "collect:hw2",
        "stop-servers", "archive-homes", "revoke-access", "delete-files",
    ]
    closes = T0 + 12 * DAY
    assert [s.due for s in plan(c)][-4:] == [closes, closes, closes, closes + 30 * DAY]
    assert plan(c)[0].assignment == "hw1" and plan(c)[-1].assignment is None


@pytest.mark.parametrize(("at", "expected"), [
    (T0, []),
    (T0 + DAY, ["release:hw1"]),
    (T0 + 3 * DAY, ["release:hw1", "release:hw2", "collect:hw1", "collect:hw2"]),
    (T0 + 11 * DAY, ["release:hw1", "release:hw2", "collect:hw1", "collect:hw2"]),  # grace
    # the close: its first steps (the archive and the deletion follow them, test below)
    (T0 + 12 * DAY, ["release:hw1", "release:hw2", "collect:hw1", "collect:hw2",
                     "stop-servers", "revoke-access"]),
    (T0 + 42 * DAY, ["release:hw1", "release:hw2", "collect:hw1", "collect:hw2",
                     "stop-servers", "revoke-access"]),
])
def test_due_steps_follow_the_clock(at, expected):
    assert names(due_steps(course(assignments=HW), {}, at)) == expected


def test_a_done_or_skipped_step_never_runs_again_and_a_started_one_does(tmp_path):
    c = course(assignments=HW)
    journal = Journal(tmp_path)
    steps = plan(c)
    journal.record(c, steps[0], "started", T0 + DAY)
    journal.record(c, steps[0], "done", T0 + DAY, detail={"students": 3})
    journal.record(c, steps[1], "started", T0 + 2 * DAY)
    journal.record(c, steps[1], "skipped", T0 + 2 * DAY, detail={"reason": "no volumes"})
    # a crash after "started": no "done" follows
    journal.record(c, steps[2], "started", T0 + 3 * DAY)
    recorded = journal.read(c)
    assert recorded["release:hw1"]["state"] == "done"
    assert recorded["collect:hw1"] == {"state": "started", "attempts": 1,
                                       "at": stamp(T0 + 3 * DAY), "due": stamp(T0 + 3 * DAY)}
    # after a back-off from the interrupted attempt (a step that crashes does not loop)
    assert names(due_steps(c, recorded, T0 + 3 * DAY)) == ["collect:hw2"]
    assert names(due_steps(c, recorded, T0 + 3 * DAY + 60)) == ["collect:hw1", "collect:hw2"]
    journal.record(c, steps[2], "started", T0 + 3 * DAY + 60)
    assert journal.read(c)["collect:hw1"]["attempts"] == 2


def test_a_failed_or_interrupted_step_backs_off_doubling_then_runs_again(tmp_path):
    c = course(assignments=HW)
    journal = Journal(tmp_path)
    step = plan(c)[0]
    for attempt in (1, 2, 3):
        journal.record(c, step, "started", T0 + DAY)
        entry = journal.record(c, step, "failed", T0 + DAY, error="hub API 503")
        assert entry["attempts"] == attempt and entry["error"] == "hub API 503"
    assert retry_at(journal.read(c)[step.name]) == T0 + DAY + 240
    assert "release:hw1" not in names(due_steps(c, journal.read(c), T0 + DAY + 239))
    assert "release:hw1" in names(due_steps(c, journal.read(c), T0 + DAY + 240))
    # a step whose process died (left "started") backs off the same way: no crash loop
    journal.record(c, step, "started", T0 + DAY + 240)
    assert "release:hw1" not in names(due_steps(c, journal.read(c), T0 + DAY + 241))
    assert "release:hw1" in names(due_steps(c, journal.read(c), T0 + DAY + 240 + 480))
    done = journal.record(c, step, "done", T0 + DAY + 900, detail={"students": 1})
    assert "error" not in done


def test_the_close_runs_in_order_and_deletion_waits_for_a_day_after_the_archive(tmp_path):
    """No archive while servers may still write (stop-servers first), staff out of the
    groups whatever else fails, no deletion without an archive, and never in the tick that
    archived, even for a course first seen long after it expired (a late or mistyped file)."""
    c = course(keep=0)
    journal = Journal(tmp_path)
    steps = {s.name: s for s in plan(c)}
    late = T0 + 400 * DAY
    assert names(due_steps(c, {}, late)) == ["stop-servers", "revoke-access"]
    journal.record(c, steps["stop-servers"], "failed", late, error="a server did not stop")
    journal.record(c, steps["revoke-access"], "done", late)
    assert names(due_steps(c, journal.read(c), late + 3600)) == ["stop-servers"]
    journal.record(c, steps["stop-servers"], "done", late + 3600)
    assert names(due_steps(c, journal.read(c), late + 3600)) == ["archive-homes"]
    journal.record(c, steps["archive-homes"], "failed", late + 3600, error="disk full")
    # a failed archive: deletion waits, however long
    assert names(due_steps(c, journal.read(c), late + 100 * DAY)) == ["archive-homes"]
    journal.record(c, steps["archive-homes"], "done", late + 100 * DAY)
    assert names(due_steps(c, journal.read(c), late + 101 * DAY - 1)) == []
    assert names(due_steps(c, journal.read(c), late + 101 * DAY)) == ["delete-files"]


def test_a_due_time_moved_later_is_acted_on_again(tmp_path):
    c = course(assignments=HW)
    journal = Journal(tmp_path)
    collect = next(s for s in plan(c) if s.name == "collect:hw1")
    journal.record(c, collect, "done", T0 + 3 * DAY)
    extended = course(assignments=HW.replace(f"due = {stamp(T0 + 3 * DAY)}\n[[",
                                                f"due = {stamp(T0 + 5 * DAY)}\n[[", 1))
    assert "collect:hw1" not in names(due_steps(extended, journal.read(c), T0 + 4 * DAY))
    assert "collect:hw1" in names(due_steps(extended, journal.read(c), T0 + 5 * DAY))
    assert "collect:hw1" not in names(due_steps(c, journal.read(c), T0 + 5 * DAY))
    # a due time moved earlier (a typo fixed after the collect) is not collected again
    earlier = course(assignments=HW.replace(f"due = {stamp(T0 + 3 * DAY)}\n[[",
                                               f"due = {stamp(T0 + 2.5 * DAY)}\n[[", 1))
    assert "collect:hw1" not in names(due_steps(earlier, journal.read(c), T0 + 4 * DAY))


def test_the_journal_is_private_and_written_whole(tmp_path):
    c = course()
    journal = Journal(tmp_path)
    journal.record(c, plan(c)[0], "started", T0)
    path = journal.path(c)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert json.loads(path.read_text())["course"] == "course-101"
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left


def test_an_unreadable_journal_stops_the_course_instead_of_repeating_steps(tmp_path):
    c = course()
    journal = Journal(tmp_path)
    journal.record(c, plan(c)[0], "done", T0)
    journal.path(c).write_text("{not json")
    with pytest.raises(JournalError, match="unreadable"):
        journal.read(c)
    journal.path(c).write_text('{"course": "course-101"}')
    with pytest.raises(JournalError, match="no 'steps'"):
        journal.read(c)


def test_a_new_term_of_the_same_course_starts_a_new_journal(tmp_path):
    journal = Journal(tmp_path)
    autumn = course(assignments=HW)
    for step in plan(autumn):
        journal.record(autumn, step, "done", T0 + 50 * DAY)
    spring = course(start=T0 + 100 * DAY, end=T0 + 110 * DAY)
    assert journal.path(spring) != journal.path(autumn)
    assert journal.read(spring) == {}
    assert names(due_steps(spring, journal.read(spring), T0 + 112 * DAY)) == [
        "stop-servers", "revoke-access"]
    journal.record(spring, plan(spring)[0], "started", T0 + 112 * DAY)
    assert journal.read(autumn)["stop-servers"]["state"] == "done"  # last term's, kept
    assert sorted(os.listdir(journal.directory)) == sorted(
        [journal.path(autumn).name, journal.path(spring).name])


def test_status_says_each_steps_state_and_time(tmp_path):
    c = course(assignments=HW)
    journal = Journal(tmp_path)
    journal.record(c, plan(c)[0], "done", T0 + DAY, detail={"students": 2, "files": 6})
    journal.record(c, plan(c)[1], "failed", T0 + 2 * DAY, error="Docker refused")
    lines = status_lines(c, journal.read(c), T0 + 2 * DAY)
    assert lines[0].split()[:2] == ["release:hw1", "done"] and "files 6, students 2" in lines[0]
    assert lines[1].split()[:2] == ["release:hw2", "failed"] and "Docker refused" in lines[1]
    assert lines[2].split()[:2] == ["collect:hw1", "pending"]
    assert f"(at {stamp(T0 + 3 * DAY)})" in lines[2]


def test_the_term_step_record_carries_exactly_the_fields_its_schema_lists():
    from hub_ext.audit import schema
    from hub_ext.courses.keeper import TERM_STEP_FIELDS

    props = set(schema.get("course-term-step").schema["properties"])
    assert set(TERM_STEP_FIELDS) == props - {"actor", "course", "step", "outcome", "attempt",
                                              "due"}
