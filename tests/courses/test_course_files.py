"""Course files: every bad input is refused with the file, the key and the fix; the
``qustody course`` command checks, applies (with a dry run) and reports terms."""

from __future__ import annotations

import json
import logging
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from hub_ext.courses.catalog import load_catalog
from hub_ext.courses.live import LiveCatalog, closed_courses, closed_message
from hub_ext.courses.model import DAY, MAX_BYTES, CourseError, parse_course, stamp

GOOD = """\
id = "course-101"
title = "Introduction to Quantum Computing"

[term]
start = 2026-09-01T00:00:00Z
end = 2027-01-31T00:00:00Z
grace_days = 7
retention_days = 180

[roster]
group = "course-101"

[profile]
name = "student"

[qpu]
backends = ["aer_simulator"]
purpose = "teaching"
per_student = { day = { jobs = 3, shots = 4000 } }
total = { day = { jobs = 10 }, month = { shots = 1000000 } }
[[qpu.reservations]]
backend = "aer_simulator"
start = 2026-10-01T09:00:00Z
end = 2026-10-01T11:00:00Z
note = "Lab 1"
"""


def test_a_good_file_reads_as_written():
    c = parse_course(GOOD, "course-101.toml")
    assert (c.id, c.group, c.profile) == ("course-101", "course-101", "student")
    assert c.term.grace_days == 7 and c.term.closes == c.term.end + 7 * DAY
    assert c.budget is not None and c.budget.backends == ("aer_simulator",)
    assert c.budget.per_student == {"day": {"jobs": 3, "shots": 4000}}
    assert c.budget.total["month"] == {"shots": 1000000}
    assert c.budget.reservations[0].note == "Lab 1"
    t = c.term
    assert [t.state(x) for x in (t.start - 1, t.start, t.end, t.closes, t.expires)] == [
        "upcoming", "active", "grace", "closed", "expired",
    ]


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda s: s.replace('id = "course-101"', 'id = "Course 101"'),
         "id: 'Course 101' is not a valid name; write it like 'course-101'"),
        (lambda s: s.replace('id = "course-101"\n', ""), "id: missing"),
        (lambda s: s.replace("end = 2027-01-31T00:00:00Z", "end = 2026-08-01T00:00:00Z"),
         "term.end: 2026-08-01T00:00:00Z is not after term.start"),
        (lambda s: s.replace("start = 2026-09-01T00:00:00Z", "start = 2026-09-01T00:00:00"),
         "term.start: give a time zone"),
        (lambda s: s.replace("start = 2026-09-01T00:00:00Z", "start = 2026-09-01"),
         "term.start: give a time and a time zone, e.g. 2026-09-01T00:00:00Z"),
        (lambda s: s.replace("start = 2026-09-01T00:00:00Z", 'start = "soon"'),
         "term.start: must be a TOML date-time"),
        (lambda s: s.replace("grace_days = 7", "grace_days = -1"),
         "term.grace_days: must be a number from 0 to 365, got -1"),
        (lambda s: s.replace("grace_days = 7", "grace_days = 1" + "0" * 400),
         "term.grace_days: must be a number from 0 to 365, got 1000"),
        (lambda s: s.replace("jobs = 3,", "jobs = 1" + "0" * 400 + ","),
         "qpu.per_student.day.jobs: must be a whole number from 0 to 1e+12"),
        (lambda s: s.replace("grace_days = 7", "grace_days = 1" + "0" * 5000),
         "not valid TOML: a number of more than 4,300 digits"),
        (lambda s: s.replace('group = "course-101"', 'group = "course-202"'),
         "roster.group: 'course-202' is not the course id 'course-101'"),
        (lambda s: s.replace('group = "course-101"', 'csv = "roster.csv"'),
         "roster.group: missing: the IdP group of the course"),
        (lambda s: s.replace('group = "course-101"', 'group = "course-101"\nlist = "x"'),
         "roster: unknown key(s) list; allowed: group, csv"),
        (lambda s: s.replace("jobs = 3,", "jobs = 3.5,"),
         "qpu.per_student.day.jobs: must be a whole number"),
        (lambda s: s.replace("per_student = { day", "per_student = { week"),
         "qpu.per_student: unknown key(s) week; allowed: day, month"),
        (lambda s: s.replace('backends = ["aer_simulator"]', "backends = []"),
         "qpu.backends: must list the backends"),
        (lambda s: s.replace('backend = "aer_simulator"\nstart', 'backend = "fake_5q"\nstart'),
         "qpu.reservations[0].backend: 'fake_5q' is not in qpu.backends"),
        (lambda s: s + '\n[[qpu.reservations]]\nbackend = "aer_simulator"\n'
         "start = 2026-10-01T10:00:00Z\nend = 2026-10-01T12:00:00Z\n",
         "qpu.reservations[1]: overlaps qpu.reservations[0]"),
        (lambda s: s.replace("title =", 'secrets = ["token"]\ntitle ='),
         "secrets: must be a table ([secrets]), got a list"),
        (lambda s: s + '[secrets]\nnames = []\n', "secrets.names: must list 1 to 64"),
        (lambda s: s + '[secrets]\nnames = ["IBM-TOKEN"]\n',
         "secrets.names[0]: 'IBM-TOKEN' is not a valid name"),
        (lambda s: s + '[secrets]\nnames = ["IBM_TOKEN"]\nvalue = "sk-live-1234"\n',
         "secrets: unknown key(s) value"),
        (lambda s: s + '[secrets]\nnames = ["IBM_TOKEN"]\nto = ["observers"]\n',
         "secrets.to: must list some of ['students', 'instructors', 'assistants']"),
        (lambda s: s + '[[assignments]]\nname = "hw1"\n'
         "release = 2026-09-15T00:00:00Z\ndue = 2026-09-29T00:00:00Z\n",
         "assignments: need [materials] volume"),
        (lambda s: s + '[materials]\nvolume = "qustody-materials-101"\n[[assignments]]\n'
         'name = "hw1"\nrelease = 2026-09-15T00:00:00Z\ndue = 2026-09-01T00:00:00Z\n',
         "assignments[0].due: must be after its release"),
        (lambda s: s + '[materials]\nvolume = "qustody-materials-101"\n[[assignments]]\n'
         'name = "../hw1"\nrelease = 2026-09-15T00:00:00Z\ndue = 2026-09-29T00:00:00Z\n',
         "assignments[0].name: '../hw1' is not a valid name"),
        (lambda s: s + '[materials]\nvolume = "qustody-materials-101"\n'
         'assignments_volume = "qustody-materials-101"\n',
         "materials.assignments_volume: 'qustody-materials-101' is materials.volume, which "
         "students can read; name a volume of its own, e.g. 'qustody-materials-course-101-staff'"),
        (lambda s: s + '[materials]\nvolume = "qustody-materials-101"\n'
         'assignments_volume = "../staff"\n',
         "materials.assignments_volume: '../staff' is not a valid name"),
        (lambda s: s + '[materials]\nvolume = "qustody-materials-101"\nstaff_volume = "x"\n',
         "materials: unknown key(s) staff_volume; allowed: volume, assignments_volume"),
        (lambda s: s.replace("title =", "titel ="),
         "(top level): unknown key(s) titel"),
        (lambda s: s.replace('[profile]\nname = "student"', "").replace("title =", "profile = 3\ntitle ="),
         "profile: must be a table ([profile]), got int"),
        (lambda s: s.replace("title = ", "title = = "), "not valid TOML"),
    ],
)
def test_bad_files_name_the_key_and_the_fix(change, words):
    with pytest.raises(CourseError) as e:
        parse_course(change(GOOD), "course-101.toml")
    assert str(e.value).startswith("course-101.toml: ") and words in str(e.value), str(e.value)


def test_assignments_come_from_the_staff_volume_when_the_file_names_one():
    shared = GOOD + '[materials]\nvolume = "qustody-materials-101"\n'
    staff = shared + 'assignments_volume = "qustody-materials-101-staff"\n'
    c = parse_course(staff, "course-101.toml")
    assert (c.materials, c.assignments_volume) == ("qustody-materials-101",
                                                   "qustody-materials-101-staff")
    assert c.assignments_from == "qustody-materials-101-staff"
    assert c.settings()["materials.assignments_volume"] == "qustody-materials-101-staff"
    # without one, as before: from the materials students read
    old = parse_course(shared, "course-101.toml")
    assert (old.assignments_volume, old.assignments_from) == ("", "qustody-materials-101")


def test_not_utf8_and_huge_files_are_refused_cleanly(tmp_path):
    with pytest.raises(CourseError, match="not UTF-8 text"):
        parse_course(GOOD.encode().replace(b"Introduction", b"Intro\xff"), "c.toml")
    big = tmp_path / "course-101.toml"
    big.write_bytes(b"# " + b"x" * MAX_BYTES + b"\n")
    with pytest.raises(CourseError, match=r"the file is 262,147 bytes; a course file is at most"):
        load_catalog(tmp_path)


def test_the_catalog_loads_whole_or_not_at_all(tmp_path):
    (tmp_path / "course-101.toml").write_text(GOOD)
    assert list(load_catalog(tmp_path).courses) == ["course-101"]
    (tmp_path / "course-202.toml").write_text(GOOD)  # the file of 101 under 202's name
    with pytest.raises(CourseError, match=r"must be named course-101\.toml; rename it"):
        load_catalog(tmp_path)
    with pytest.raises(CourseError, match="does not exist; create it"):
        load_catalog(tmp_path / "missing")


def test_the_live_catalog_keeps_the_last_good_courses(tmp_path, caplog):
    path = tmp_path / "course-101.toml"
    path.write_text(GOOD)
    live = LiveCatalog(tmp_path, logging.getLogger("test"), recheck_seconds=0)
    assert live.load_now().get("course-101").title.startswith("Introduction")
    path.write_text(GOOD.replace("Introduction", "Advanced"))
    assert live.current().get("course-101").title.startswith("Advanced")
    path.write_text(GOOD.replace("end = 2027-01-31T00:00:00Z", "end = 1"))  # a typo
    with caplog.at_level(logging.ERROR):
        kept = live.current()
    assert kept.get("course-101").title.startswith("Advanced") and "term.end" in live.error
    assert "keeping the previous courses" in caplog.text


def test_only_students_of_closed_courses_only_are_kept_out(tmp_path):
    (tmp_path / "course-101.toml").write_text(GOOD)
    catalog = load_catalog(tmp_path)
    course = catalog.get("course-101")
    after = course.term.closes + 1
    student = ["course-101", "course-101:students"]
    assert closed_courses(catalog, student, course.term.closes - 1) is None  # grace: open
    assert [c.id for c in closed_courses(catalog, student, after)] == ["course-101"]
    # another course with no file (no term) keeps them in; so does being nobody's student
    assert closed_courses(catalog, [*student, "course-202:students"], after) is None
    assert closed_courses(catalog, ["course-101"], after) is None
    message = closed_message(closed_courses(catalog, student, after))
    assert "course-101 (Introduction to Quantum Computing) has ended" in message
    assert "since 2027-02-07 00:00 UTC" in message and "kept until 2027-08-06 00:00 UTC" in message


def qustody(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server_ext.cli", *args], capture_output=True, text=True,
        timeout=60, env={**os.environ, **(env or {})},
    )


def test_apply_shows_what_changes_and_dry_run_writes_nothing(tmp_path):
    courses = tmp_path / "courses"
    courses.mkdir()
    src = tmp_path / "course-101.toml"
    src.write_text(GOOD)
    dry = qustody("course", "apply", "--dir", str(courses), "--dry-run", str(src))
    assert dry.returncode == 0, dry.stderr
    assert "new course" in dry.stdout and "qpu.per_student.day.jobs = 3" in dry.stdout
    assert "nothing was written" in dry.stdout and not list(courses.iterdir())
    applied = qustody("course", "apply", str(src), env={"QUSTODY_COURSES_DIR": str(courses)})
    assert applied.returncode == 0 and (courses / "course-101.toml").read_text() == GOOD
    again = qustody("course", "apply", "--dir", str(courses), str(src))
    assert "course-101: no change" in again.stdout and "0 course(s) changed" in again.stdout
    src.write_text(GOOD.replace("jobs = 3,", "jobs = 5,"))
    changed = qustody("course", "apply", "--dir", str(courses), str(src))
    lines = [line.strip() for line in changed.stdout.splitlines() if "->" in line]
    assert lines == ["qpu.per_student.day.jobs: 3 -> 5"], changed.stdout


def test_apply_refuses_a_bad_file_and_leaves_the_directory_alone(tmp_path):
    courses = tmp_path / "courses"
    courses.mkdir()
    (courses / "course-101.toml").write_text(GOOD)
    bad = tmp_path / "course-101.toml"
    bad.write_text(GOOD.replace("grace_days = 7", "grace_days = 'a week'"))
    out = qustody("course", "apply", "--dir", str(courses), str(bad))
    assert out.returncode == 1 and "term.grace_days: must be a number" in out.stderr
    assert "Traceback" not in out.stderr and (courses / "course-101.toml").read_text() == GOOD
    missing = qustody("course", "apply", str(bad), env={"QUSTODY_COURSES_DIR": ""})
    assert missing.returncode == 1 and "give --dir or set $QUSTODY_COURSES_DIR" in missing.stderr


def test_apply_records_each_change_in_the_audit_log_or_undoes_it(tmp_path):
    """With the hub's audit log, each applied change is a policy-changed record (the actor,
    the changed keys and digests, never a value); a log that cannot be opened applies
    nothing; without a log it applies and says it is not recorded."""
    from hub_ext.audit.verify import verify

    courses = tmp_path / "courses"
    courses.mkdir()
    src = tmp_path / "course-101.toml"
    src.write_text(GOOD)
    key = tmp_path / "audit.key"
    key.write_text(secrets.token_hex(32))
    key.chmod(0o600)
    log = tmp_path / "audit" / "audit.jsonl"
    audited = ["--audit-log", str(log), "--audit-key-file", str(key), "--actor", "ada"]
    out = qustody("course", "apply", "--dir", str(courses), *audited, str(src))
    assert out.returncode == 0, out.stderr
    src.write_text(GOOD.replace("jobs = 3,", "jobs = 5,"))
    out = qustody("course", "apply", "--dir", str(courses), str(src),
                  env={"QUSTODY_AUDIT_LOG": str(log), "QUSTODY_AUDIT_KEY_FILE": str(key),
                       "USER": "ada"})
    assert out.returncode == 0 and "warning" not in out.stderr, out.stderr
    assert verify(log, [key.read_bytes().strip()]).ok
    records = [json.loads(line)["data"] for line in log.read_text().splitlines()]
    assert [(r["actor"], r["policy"], r["changed_keys"][:1]) for r in records] == [
        ("ada", "courses.course-101", ["new-course"]),
        ("ada", "courses.course-101", ["qpu.per_student.day.jobs"])]
    assert records[1]["previous_digest"] == records[0]["new_digest"]
    assert "through qustody course apply" in records[1]["summary"]
    assert "5" not in json.dumps(records[1]["changed_keys"])  # keys, never values

    src.write_text(GOOD.replace("jobs = 3,", "jobs = 7,"))
    key.write_text("not a key")
    out = qustody("course", "apply", "--dir", str(courses), *audited, str(src))
    assert out.returncode == 1 and "nothing was applied" in out.stderr, out.stderr
    assert "jobs = 5," in (courses / "course-101.toml").read_text()
    out = qustody("course", "apply", "--dir", str(courses), str(src),
                  env={"QUSTODY_AUDIT_LOG": "", "QUSTODY_AUDIT_KEY_FILE": ""})
    assert out.returncode == 0 and "not recorded in the hub's audit log" in out.stderr
    assert "jobs = 7," in (courses / "course-101.toml").read_text()


def test_a_change_whose_audit_record_fails_is_undone(tmp_path):
    """apply_audited: the write is undone when the record cannot be written. (The failing
    log is a stand-in: a full disk is what makes a real one fail, tests/hub's disk-full
    tests cover that.)"""
    from hub_ext.audit.errors import AuditError
    from hub_ext.courses.apply import apply_audited, plan, policy_record, read_course

    class FailingLog:
        def emit(self, kind: str, data: dict) -> None:
            raise AuditError("the audit disk is full")

    courses = tmp_path / "courses"
    courses.mkdir()
    (courses / "course-101.toml").write_text(GOOD)
    src = tmp_path / "course-101.toml"
    src.write_text(GOOD.replace("jobs = 3,", "jobs = 9,"))
    (change,) = plan(courses, [read_course(src)])
    with pytest.raises(AuditError):
        apply_audited(courses, change, FailingLog(), policy_record(change, "ada", "a test"))
    assert (courses / "course-101.toml").read_text() == GOOD


def test_status_reports_each_term_and_what_happens_at_its_end(tmp_path):
    (tmp_path / "course-101.toml").write_text(GOOD)
    now = qustody("course", "status", "--dir", str(tmp_path), "--at", "2026-11-01T00:00:00Z")
    assert "course-101  active" in now.stdout and "until 2027-02-07T00:00:00Z" in now.stdout
    assert "per student 3 jobs/day, 4,000 shots/day" in now.stdout
    states = [
        json.loads(qustody("course", "status", "--dir", str(tmp_path), "--json", "--at", at)
                   .stdout)["state"]
        for at in ("2026-08-01T00:00:00Z", "2027-02-01T00:00:00Z", "2027-03-01T00:00:00Z",
                   "2028-01-01T00:00:00Z")
    ]
    assert states == ["upcoming", "grace", "closed", "expired"]
    bad = qustody("course", "status", "--dir", str(tmp_path), "--at", "2027-03-01")
    assert bad.returncode == 1 and "give a time zone" in bad.stderr


def test_check_prints_every_setting(tmp_path: Path):
    src = tmp_path / "course-101.toml"
    src.write_text(GOOD)
    out = qustody("course", "check", str(src))
    assert out.returncode == 0 and "OK, course course-101" in out.stdout
    assert "qpu.reservations[0] = 'aer_simulator 2026-10-01T09:00:00Z..2026-10-01T11:00:00Z Lab 1'" \
        in out.stdout


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda s: s.replace("end = 2027-01-31T00:00:00Z", "end = 9999-12-31T00:00:00Z"),
         "term.end: 9999-12-31T00:00:00+00:00 is not a plausible date"),
        (lambda s: s.replace("start = 2026-09-01T00:00:00Z", "start = 0001-01-01T00:00:00+01:00"),
         "term.start: 0001-01-01T00:00:00+01:00 is not a plausible date"),
        (lambda s: s.replace('id = "course-101"', 'id = "course-101\\n"'), "id: 'course-101\\n'"),
    ],
)
def test_dates_out_of_range_and_names_with_a_newline_are_refused(change, words):
    with pytest.raises(CourseError) as e:
        parse_course(change(GOOD), "course-101.toml")
    assert words in str(e.value), str(e.value)


# -- the QPU gateway's view of course files (hub_ext.qpu) -------------------------------------

GATEWAY_POLICY = """
[tags]
purposes = ["teaching"]
[identity]
course_prefix = "course-"
[quotas.project.simulator]
day = { jobs = 100, shots = 5000 }
"""
BACKENDS = {"aer_simulator": "simulator", "fake_hw": "hardware"}


def test_a_course_budget_binds_the_classes_it_uses_and_keeps_unset_defaults():
    from hub_ext.qpu.policyfile import parse

    course = parse_course(GOOD, "course-101.toml")
    policy = parse(GATEWAY_POLICY, BACKENDS, courses={"course-101": course})
    sim = policy.quota_for("project", "course-101", "simulator")
    # the file's total jobs a day (10); shots a day left out: the policy's default (5000)
    assert (sim.day.jobs, sim.day.shots, sim.month.shots) == (10, 5000, 1000000)
    assert policy.quota_for("member", "course-101/sam", "simulator").day.jobs == 3
    # the course uses no hardware backend: no per-student limit is made up for it
    assert policy.quota_for("member", "course-101/sam", "hardware").day.jobs is None
    assert set(policy.member_overrides["course-101"]) == {"simulator"}


def test_a_course_file_the_gateway_refuses_does_not_hold_back_policy_edits(tmp_path, monkeypatch):
    import logging

    from hub_ext.qpu.config import PolicyHolder

    policy_path, courses = tmp_path / "policy.toml", tmp_path / "courses"
    courses.mkdir()
    policy_path.write_text(GATEWAY_POLICY)
    (courses / "course-101.toml").write_text(GOOD)
    holder = PolicyHolder(policy_path, BACKENDS, logging.getLogger("test"), courses)
    assert holder.policy.quota_for("project", "course-101", "simulator").day.jobs == 10
    # a course now names a backend the gateway lacks, and the policy file lowers a quota
    (courses / "course-101.toml").write_text(GOOD.replace('"aer_simulator"', '"qpu9"'))
    policy_path.write_text(GATEWAY_POLICY.replace("shots = 5000", "shots = 50"))
    assert not holder.maybe_reload()  # a change is read once the next poll finds it settled
    assert holder.maybe_reload() and holder.failed_now
    assert "unknown backend 'qpu9'" in holder.error and "previous course files" in holder.error
    assert holder.policy.quota_for("project", "course-101", "simulator").day.shots == 50
    assert holder.policy.quota_for("project", "course-101", "simulator").day.jobs == 10
    # nothing changed since: no new failure to report on the next poll
    assert not holder.maybe_reload() and not holder.failed_now
    (courses / "course-101.toml").write_text(GOOD)  # fixed: nothing left to report
    holder.maybe_reload()
    holder.maybe_reload()
    assert holder.error is None and not holder.failed_now

    # an unexpected failure (a file gone between listing and reading) is reported, and the
    # reload loop lives on with the policy in force
    def vanished(directory):
        raise FileNotFoundError(2, "No such file or directory")

    monkeypatch.setattr("hub_ext.qpu.config.load_catalog", vanished)
    (courses / "course-101.toml").write_text(GOOD + "\n")
    digest = holder.policy.digest
    assert holder.maybe_reload() is False and not holder.failed_now  # settling
    assert holder.maybe_reload() is False and holder.failed_now
    assert holder.error.startswith("FileNotFoundError") and holder.policy.digest == digest


WITH_ROSTER = GOOD.replace(
    'group = "course-101"', 'group = "course-101"\ncsv = "course-101.roster.csv"'
)
ROSTER = "username,role\ncara,student\n\n# staff\ntina,assistant\notto,observer\n"


def test_a_csv_roster_is_applied_with_its_course_and_reported_member_by_member(tmp_path):
    courses = tmp_path / "courses"
    courses.mkdir()
    src = tmp_path / "course-101.toml"
    src.write_text(WITH_ROSTER)
    (tmp_path / "course-101.roster.csv").write_text(ROSTER)
    new = qustody("course", "apply", "--dir", str(courses), str(src))
    assert new.returncode == 0, new.stderr
    assert "roster.members: 3 from course-101.roster.csv" in new.stdout
    assert (courses / "course-101.roster.csv").read_text() == ROSTER
    catalog = load_catalog(courses)
    assert dict(catalog.get("course-101").members) == {
        "cara": "student", "tina": "assistant", "otto": "observer"
    }
    # a changed roster: only the members that changed are reported, and the digest moves
    (tmp_path / "course-101.roster.csv").write_text(
        ROSTER.replace("otto,observer", "otto,assistant") + "dina,student\n"
    )
    changed = qustody("course", "apply", "--dir", str(courses), str(src))
    lines = sorted(line.strip() for line in changed.stdout.splitlines() if "->" in line)
    assert lines == [
        "roster.members.dina: '(unset)' -> 'student'",
        "roster.members.otto: 'observer' -> 'assistant'",
    ], changed.stdout
    assert load_catalog(courses).digest != catalog.digest


def test_the_roster_lookup_answers_per_user_from_the_live_catalog(tmp_path):
    from hub_ext.courses.roster import roster_lookup

    (tmp_path / "course-101.toml").write_text(WITH_ROSTER)
    (tmp_path / "course-101.roster.csv").write_text(ROSTER)
    live = LiveCatalog(tmp_path, logging.getLogger("test"), recheck_seconds=0)
    lookup = roster_lookup(lambda: live.current().courses)
    assert lookup("tina") == {"course-101": "assistant"}
    assert lookup("nobody") == {}
    (tmp_path / "course-101.roster.csv").write_text("username,role\n")
    assert lookup("tina") == {}  # removed from the roster: out at the next login or refresh


@pytest.mark.parametrize(
    ("roster", "words"),
    [
        ("user,role\nx,student\n", "line 1: the first line must be the header"),
        ("username,role\ncara,teacher\n", "line 2: role 'teacher'; use one of student"),
        ("username,role\ncara,student\ncara,observer\n", "line 3: cara is listed twice"),
        ("username,role\nbad name,student\n", "'bad name' is not a hub user name"),
        ("username,role\nCara,student\n", "hub user names are lowercase; write 'cara'"),
        ("username,role\ncara,student,extra\n", "line 2: 3 fields"),
        ("", "empty; the first line must be the header"),
    ],
)
def test_a_bad_roster_names_the_line_and_the_fix(tmp_path, roster, words):
    courses = tmp_path / "courses"
    courses.mkdir()
    src = tmp_path / "course-101.toml"
    src.write_text(WITH_ROSTER)
    (tmp_path / "course-101.roster.csv").write_text(roster)
    out = qustody("course", "apply", "--dir", str(courses), str(src))
    assert out.returncode == 1 and words in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and not list(courses.iterdir())


def test_a_roster_line_csv_cannot_read_is_named():
    from hub_ext.courses.roster import parse_roster

    long_field = b"username,role\ncara,student\n" + b"x" * 200_000 + b",student\n"
    with pytest.raises(CourseError, match=r"^r\.csv: line 3: not a CSV line \(field larger "):
        parse_roster(long_field, "r.csv")


def test_roster_files_that_are_missing_misnamed_huge_or_not_utf8_are_refused(tmp_path):
    src = tmp_path / "course-101.toml"
    src.write_text(WITH_ROSTER)
    out = qustody("course", "check", str(src))
    assert out.returncode == 1 and "does not exist; put the roster beside" in out.stderr
    src.write_text(WITH_ROSTER.replace('csv = "course-101.roster.csv"', 'csv = "../x.csv"'))
    out = qustody("course", "check", str(src))
    assert out.returncode == 1 and "name the roster 'course-101.roster.csv'" in out.stderr
    src.write_text(WITH_ROSTER)
    roster = tmp_path / "course-101.roster.csv"
    roster.write_bytes(b"username,role\ncaf\xe9,student\n")
    out = qustody("course", "check", str(src))
    assert out.returncode == 1 and "not UTF-8 text" in out.stderr
    roster.write_bytes(b"username,role\n" + b"u,student\n" * 300_000)
    out = qustody("course", "check", str(src))
    assert out.returncode == 1 and "a roster is at most" in out.stderr


def test_a_courses_shared_secrets_go_to_the_members_its_file_names_while_it_is_open(tmp_path):
    """``[secrets]`` names the course's own secrets (never a value): the hub gives them to
    the members ``to`` lists, through their hub groups, while the term is open."""
    import time

    from hub_ext.courses.hub import shared_secrets

    now = time.time()
    dated = GOOD.replace("start = 2026-09-01T00:00:00Z", f"start = {stamp(now - 30 * DAY)}") \
        .replace("end = 2027-01-31T00:00:00Z", f"end = {stamp(now + 30 * DAY)}")
    text = dated + '[secrets]\nnames = ["IBM_QUANTUM_TOKEN", "IBM_QUANTUM_TOKEN"]\n' \
        'to = ["students"]\n'
    course = parse_course(text.encode(), "course-101.toml")
    assert course.secrets == ("IBM_QUANTUM_TOKEN",) and course.secrets_to == ("students",)
    assert course.settings()["secrets.names"] == ["IBM_QUANTUM_TOKEN"]
    courses = {"course-101": course}
    lookup = shared_secrets(lambda: courses)
    assert lookup(["course-101", "course-101:instructors"]) == []
    assert lookup(["course-101:students"]) == [("course-101", ("IBM_QUANTUM_TOKEN",))]
    # the term closes: nobody gets them any more
    courses["course-101"] = parse_course(text.replace(
        f"end = {stamp(now + 30 * DAY)}", f"end = {stamp(now - 8 * DAY)}").encode(), "c.toml")
    assert lookup(["course-101:students"]) == []
    everyone = parse_course((dated + '[secrets]\nnames = ["A_TOKEN"]\n').encode(), "c.toml")
    assert everyone.secrets_to == ("students", "instructors", "assistants")
