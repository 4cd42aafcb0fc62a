"""The instructor page's Release now / Collect now jobs (hub_ext.courses.jobs): one run per
assignment at a time (shared with the term keeper), none for a closed course or without
an audit log, and the reasons said. The hub API here is a stand-in that blocks on demand
(a real hub cannot be made to hold a request open at a chosen moment); the real path is
tests/hub/test_course_page_jobs.py.

Then what a collect takes from each student's folder (hub_ext.courses.assignments), whom
it takes it from, and what the page says when the engine refuses: the volumes here are
tar streams built as Docker's archive API sends them (a hard link as a header naming its
file); the real engine is tests/hub/test_course_assignments.py. Last, which volume a
release reads and which volumes the end of retention deletes."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import secrets
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hub_ext.courses.assignments import MAX_ENTRIES, Collection, collect
from hub_ext.courses.jobs import AssignmentJobs, JobRefused
from hub_ext.courses.keeper import TermActions
from hub_ext.courses.live import LiveCatalog
from hub_ext.courses.model import DAY, Course, stamp
from hub_ext.courses.term import plan


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


def write_course(directory: Path, end: float, roster: str = "", staff: str = "") -> None:
    csv = 'csv = "course-101.roster.csv"\n' if roster else ""
    own = f'assignments_volume = "{staff}"\n' if staff else ""
    (directory / "course-101.toml").write_text(
        f'id = "course-101"\ntitle = "Intro"\n[term]\nstart = {stamp(end - 30 * DAY)}\n'
        f'end = {stamp(end)}\ngrace_days = 0\n[roster]\ngroup = "course-101"\n{csv}'
        f'[materials]\nvolume = "qustody-materials-c101"\n{own}'
        f'[[assignments]]\nname = "hw1"\nrelease = {stamp(end - 20 * DAY)}\n'
        f"due = {stamp(end - 10 * DAY)}\n")
    if roster:
        (directory / "course-101.roster.csv").write_text("username,role\n" + roster)


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
    assert job["message"] == "collect failed: RuntimeError, details in the log"
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


# -- what a collect takes, and from whom (hub_ext.courses.assignments) -----------------------

def folder(files: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    """``hw1/`` as Docker's archive API streams it: the folder, its files, then each hard
    link as a bare header naming the file it is another name of."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        top = tarfile.TarInfo("hw1")
        top.type = tarfile.DIRTYPE
        tar.addfile(top)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.LNKTYPE, target
            tar.addfile(info)
    return out.getvalue()


class Container:
    def __init__(self, tree: bytes) -> None:
        self.tree = tree

    def get_archive(self, path: str) -> tuple[Iterator[bytes], dict[str, Any]]:
        return iter([self.tree[i:i + 65536] for i in range(0, len(self.tree), 65536)]), {}


class ArchiveVolumes:
    """Stand-in for assignments.Volumes: a volume is the stream its folder reads as;
    ``refuse`` maps a volume to the error the engine answers for it."""

    home_mount = "/home/jovyan"
    materials_prefix = "qustody-materials-"

    def __init__(self, trees: dict[str, bytes], refuse: dict[str, Exception] | None = None,
                 owners: dict[str, str] | None = None):
        self.trees = trees
        self.refuse = refuse or {}
        self.owners = owners or {}

    def owner_of(self, name: str) -> str | None:
        return self.owners.get(name)

    def home_volume(self, student: str) -> str:
        return f"home-{student}"

    def has_volume(self, name: str) -> bool:
        if name in self.refuse:
            raise self.refuse[name]
        return name in self.trees

    @contextlib.contextmanager
    def mounted(self, mounts: dict[str, tuple[str, str]]) -> Iterator[Container]:
        (name,) = mounts
        yield Container(self.trees[name])


def course_101(directory: Path, roster: str = "", staff: str = "") -> Course:
    write_course(directory, time.time() + 30 * DAY, roster, staff)
    return LiveCatalog(directory, logging.getLogger("test"), recheck_seconds=0).current() \
        .courses["course-101"]


def archived(done: Collection) -> dict[str, bytes]:
    with tarfile.open(done.archive) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def test_a_hard_linked_file_is_read_and_kept_once_under_its_first_name(tmp_path) -> None:
    """Each link is a ~512-byte header in the stream; read again per link, 60,000 links
    to a 30 MB file were gigabytes (and tarfile's link lookup is quadratic)."""
    course = course_101(tmp_path)
    data = secrets.token_bytes(32 * 1024)
    links = {f"hw1/copy{i:04}.bin": "hw1/data.bin" for i in range(2000)}
    volumes = ArchiveVolumes({"home-sam": folder({"hw1/data.bin": data}, links)})
    done = collect(volumes, course, course.assignments[0], ["sam"], tmp_path / "archive")  # type: ignore[arg-type]
    sam = done.manifest["students"]["sam"]
    assert sam["status"] == "submitted"
    assert [(f["path"], f["size"]) for f in sam["files"]] == [("data.bin", len(data))]
    assert archived(done).keys() == {"sam/data.bin", "manifest.json"}
    assert done.archive.stat().st_size < 100 * 1024


def test_a_folder_past_the_limits_or_the_scan_is_said_and_the_others_are_collected(
    tmp_path, monkeypatch, caplog
) -> None:
    """tom has more entries than a collect reads, una's file breaks the guard's scan, the
    engine refuses rex's home: each is said in their manifest entry (the engine's words
    only in the log), nothing of theirs is archived, and sue is collected all the same."""
    import docker.errors

    import hub_ext.courses.assignments as assignments

    course = course_101(tmp_path)
    scan = assignments.findings_in

    def findings_in(path: str, data: bytes) -> list[dict[str, Any]]:
        if path == "breaks-the-scan.py":
            raise RuntimeError("the scanner gave up")
        return scan(path, data)

    monkeypatch.setattr(assignments, "findings_in", findings_in)
    engine = docker.errors.APIError("500 Server Error for http+docker://localhost/v1.43/"
                                    "volumes/home-rex: /var/lib/docker/volumes/home-rex")
    volumes = ArchiveVolumes({
        "home-sue": folder({"hw1/answer.py": b"print('mine')\n"}),
        "home-tom": folder({f"hw1/f{i:05}.txt": b"" for i in range(MAX_ENTRIES)}),
        "home-una": folder({"hw1/answer.py": b"x = 1\n", "hw1/breaks-the-scan.py": b"y\n"}),
    }, refuse={"home-rex": engine})
    with caplog.at_level(logging.WARNING):
        done = collect(volumes, course, course.assignments[0], ["rex", "sue", "tom", "una"],  # type: ignore[arg-type]
                       tmp_path / "archive")
    students = done.manifest["students"]
    assert {s: e["status"] for s, e in students.items()} == {
        "rex": "not collected: APIError",
        "sue": "submitted",
        "tom": f"not collected: more than {MAX_ENTRIES:,} files, folders and links",
        "una": "not collected: RuntimeError",
    }
    assert students["una"]["files"] == [] and students["tom"]["files"] == []
    assert archived(done).keys() == {"sue/answer.py", "manifest.json"}
    assert "/var/lib/docker" not in json.dumps(done.manifest)
    assert "/var/lib/docker/volumes/home-rex" in caplog.text  # said to the admin


def test_release_and_collect_reach_only_the_courses_reachable_students(tmp_path) -> None:
    """A roster's student whose IdP roles go beyond student (rhea, a researcher) is a member,
    not a reachable student: the groups of her login (roles.hub_groups) leave her out of
    course-101:students, and the steps leave her home alone."""
    from hub_ext.identity.roles import hub_groups

    course = course_101(tmp_path, roster="cara,student\nrhea,student\nnell,student\n")
    logins = {"sam": hub_groups(["student"], ["course-101"]),
              "cara": hub_groups(["student"], [], members=["course-101"]),
              "rhea": hub_groups(["researcher", "student"], [], members=["course-101"])}

    class GroupsHub:
        def group_members(self, group: str) -> list[str]:
            return sorted(user for user, groups in logins.items() if group in groups)

        def user(self, name: str) -> dict[str, Any] | None:
            return {"name": name} if name in logins else None  # nell has not signed in

    work = folder({"hw1/answer.py": b"print('mine')\n"})
    actions = TermActions(GroupsHub(), lambda: None, tmp_path / "archive",  # type: ignore[arg-type]
                          volumes=ArchiveVolumes({f"home-{u}": work for u in logins}))
    # nell is listed and has not signed in yet: her home gets the release before she does
    assert actions.students(course) == ["cara", "nell", "sam"]
    step = next(s for s in plan(course) if s.name == "collect:hw1")
    assert actions.collect(step, course, time.time())["students"] == 3
    (archive,) = (tmp_path / "archive" / "course-101" / "hw1").glob("hw1-*.tar")
    with tarfile.open(archive) as tar:
        names = sorted(m.name for m in tar.getmembers())
    assert names == ["cara/answer.py", "manifest.json", "sam/answer.py"]  # nell: missing


def test_a_docker_error_reaches_the_page_by_its_kind_only(setup, caplog) -> None:
    """The engine's words name host paths, volumes and its API's URLs: the job's message
    (shown to the course's TAs) says the kind, the service's log the rest."""
    import docker.errors

    jobs, hub, _, _ = setup
    hub.group_members = lambda group: ["sam"]  # type: ignore[method-assign]
    words = ("500 Server Error for http+docker://localhost/v1.43/volumes/qustody-home-sam: "
             "/var/lib/docker/volumes/qustody-home-sam/_data: read-only file system")
    jobs.actions.volumes = ArchiveVolumes({"qustody-materials-c101": folder({"hw1/a.py": b"1\n"})},
                                          refuse={"home-sam": docker.errors.APIError(words)})
    with caplog.at_level(logging.WARNING):
        jobs.start("course-101", "hw1", "release", "ivan")
        released = wait_state(jobs, "done")
        jobs.actions.volumes.refuse["qustody-materials-c101"] = docker.errors.APIError(words)
        jobs.start("course-101", "hw1", "release", "ivan")
        failed = wait_state(jobs, "failed")
    assert released["message"].endswith("; not released to sam (APIError, details in the log)")
    assert failed["message"] == "release failed: APIError, details in the log"
    assert "/var/lib/docker" not in released["message"] + failed["message"]
    assert caplog.text.count("/var/lib/docker/volumes/qustody-home-sam") == 2


# -- the staff's assignments volume ------------------------------------------------------------

STAFF = "qustody-materials-c101-staff"


class EmptyHome:
    """A new home as the archive API sees it: nothing there; what is put is kept."""

    def __init__(self) -> None:
        self.put: list[bytes] = []

    def get_archive(self, path: str) -> Any:
        import docker.errors

        raise docker.errors.NotFound(f"no {path}")

    def put_archive(self, path: str, data: bytes) -> None:
        self.put.append(data)


class ReleaseVolumes(ArchiveVolumes):
    """ArchiveVolumes whose homes (``home-*``) exist, empty unless given; records each
    mount."""

    uid = gid = 1000

    def __init__(self, trees: dict[str, bytes]) -> None:
        super().__init__(trees)
        self.homes: dict[str, EmptyHome] = {}
        self.mounts: list[str] = []

    def has_volume(self, name: str) -> bool:
        return name.startswith("home-") or super().has_volume(name)

    @contextlib.contextmanager
    def mounted(self, mounts: dict[str, tuple[str, str]]) -> Iterator[Any]:
        (name,) = mounts
        self.mounts.append(name)
        if name not in self.trees:
            yield self.homes.setdefault(name, EmptyHome())
        else:
            yield Container(self.trees[name])


def test_release_and_collect_read_the_staff_volume_when_the_course_names_one(tmp_path) -> None:
    """The students' materials may hold anything (here: last year's answer); the released
    files, and the template a collection compares with, are the staff volume's."""
    from hub_ext.courses.assignments import release

    course = course_101(tmp_path, staff=STAFF)
    volumes = ReleaseVolumes({
        "qustody-materials-c101": folder({"hw1/answer.py": b"print('answer')\n"}),
        STAFF: folder({"hw1/answer.py": b"# your answer here\n"}),
    })
    report = release(volumes, course, course.assignments[0], ["sam"])  # type: ignore[arg-type]
    assert report.written == {"sam": 1} and not report.problems
    assert "qustody-materials-c101" not in volumes.mounts
    (put,) = volumes.homes["home-sam"].put
    with tarfile.open(fileobj=io.BytesIO(put)) as tar:
        got = tar.extractfile("course-101/hw1/answer.py").read()  # type: ignore[union-attr]
    assert got == b"# your answer here\n"

    volumes.trees["home-sam"] = folder({"hw1/answer.py": b"# your answer here\n"})
    done = collect(volumes, course, course.assignments[0], ["sam"], tmp_path / "archive")  # type: ignore[arg-type]
    assert done.manifest["students"]["sam"]["files"][0]["as_released"] is True


class DeletingVolumes:
    """Stand-in for assignments.Volumes at the end of retention."""

    def __init__(self, present: set[str], refuse: dict[str, Exception] | None = None) -> None:
        self.present = present
        self.refuse = refuse or {}
        self.removed: list[str] = []

    def remove_volume(self, name: str) -> bool:
        if name in self.refuse:
            raise self.refuse[name]
        if name not in self.present:
            return False
        self.present.discard(name)
        self.removed.append(name)
        return True


def test_the_end_of_retention_deletes_the_staff_volume_under_the_same_rules(tmp_path) -> None:
    """The staff volume goes with the materials: only with the materials prefix, never one
    another course names, and a refusal by the engine fails the step (retried) with the
    archive kept."""
    import docker.errors

    from hub_ext.courses.catalog import Catalog
    from hub_ext.courses.model import parse_course
    from hub_ext.courses.term import Step

    def course(course_id: str, staff: str) -> Course:
        return parse_course(
            f'id = "{course_id}"\ntitle = "T"\n[term]\nstart = {stamp(DAY)}\n'
            f'end = {stamp(2 * DAY)}\n[roster]\ngroup = "{course_id}"\n'
            f'[materials]\nvolume = "qustody-materials-{course_id}"\n'
            f'assignments_volume = "{staff}"\n', f"{course_id}.toml")

    courses = {c.id: c for c in (course("c1", "qustody-materials-c1-staff"),
                                 course("c2", "qustody-materials-shared-staff"),
                                 course("c3", "qustody-materials-shared-staff"),
                                 course("c4", "qustody-home-sam"))}
    volumes = DeletingVolumes({"qustody-materials-c1", "qustody-materials-c1-staff",
                               "qustody-materials-shared-staff", "qustody-home-sam"})
    archive = tmp_path / "archive"
    for c in courses:
        (archive / c).mkdir(parents=True)
        (archive / c / "x.tar").write_bytes(b"work")
    actions = TermActions(None, lambda: Catalog(courses), archive, volumes=volumes)  # type: ignore[arg-type]

    def delete(c: str) -> dict[str, Any]:
        return actions.delete_files(Step(c, "delete-files", 0), courses[c], 0)

    deleted = delete("c1")
    assert deleted == {"archive_files_deleted": 1, "materials_volume_deleted": True,
                       "assignments_volume_deleted": True}
    from hub_ext.courses.keeper import TERM_STEP_FIELDS
    assert set(deleted) <= set(TERM_STEP_FIELDS)  # the audit record carries all of it
    for c in ("c2", "c4"):  # c3 names c2's staff volume too; c4 names a home
        assert delete(c)["assignments_volume_deleted"] is False
    assert volumes.present == {"qustody-materials-shared-staff", "qustody-home-sam"}
    volumes.refuse["qustody-materials-shared-staff"] = docker.errors.APIError("volume in use")
    courses.pop("c2")  # now c3's own, but a TA's server still holds it
    with pytest.raises(docker.errors.APIError):
        delete("c3")
    assert (archive / "c3" / "x.tar").exists()



def test_a_file_changed_after_the_due_time_is_late_whatever_its_time_says(tmp_path) -> None:
    """A student sets file times as they like (``touch -d``): once a collection at the due
    time exists, lateness is what differs from it. Pressing Collect now in a loop keeps
    the newest collections and the due-time one, not all."""
    from hub_ext.courses.assignments import KEEP_COLLECTIONS

    course = course_101(tmp_path)
    hw1 = course.assignments[0]
    root = tmp_path / "archive"

    def collected(answer: bytes, at: float) -> dict[str, Any]:
        volumes = ArchiveVolumes({"home-sam": folder({"hw1/answer.py": answer})})  # mtime 1970
        done = collect(volumes, course, hw1, ["sam"], root, now=at)  # type: ignore[arg-type]
        return done.manifest

    first = collected(b"v = 1\n", hw1.due + 60)  # the keeper's, at the due time
    assert first["late_by"] == "file times" and first["students"]["sam"]["late"] is False
    later = collected(b"v = 2\n", hw1.due + 3600)  # edited after, its time set back
    assert later["late_by"].startswith("the due-time collection hw1-")
    assert later["students"]["sam"]["late"] is True
    assert later["students"]["sam"]["files"][0]["late"] is True
    same = collected(b"v = 1\n", hw1.due + 7200)  # as it was at the due time
    assert same["students"]["sam"]["late"] is False

    # the due-time collection ran late (the hub was down) and found a late file: later
    # collections keep it late, even unchanged
    late_root = tmp_path / "late-archive"
    volumes = ArchiveVolumes({"home-sam": folder({"hw1/answer.py": b"v = 9\n"})})
    first_late = collect(volumes, course, hw1, ["sam"], late_root, now=hw1.due + 86400)  # type: ignore[arg-type]
    first_late.manifest["students"]["sam"]["files"][0]["late"] = True  # as its times said
    redo = first_late.archive.with_name(first_late.archive.name)
    with tarfile.open(first_late.archive) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    members["manifest.json"] = json.dumps(first_late.manifest).encode()
    with tarfile.open(redo, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    again = collect(volumes, course, hw1, ["sam"], late_root, now=hw1.due + 90000)  # type: ignore[arg-type]
    assert again.manifest["students"]["sam"]["late"] is True

    for i in range(KEEP_COLLECTIONS + 3):
        collected(b"v = 3\n", hw1.due + 10_000 + i * 60)
    kept = sorted(p.name for p in (root / "course-101" / "hw1").glob("hw1-*.tar"))
    assert len(kept) == KEEP_COLLECTIONS + 1
    assert kept[0] == later["late_by"].rsplit(" ", 1)[-1]  # the due-time one stays


def test_a_home_labelled_for_another_account_is_neither_collected_nor_released_to(
    tmp_path,
) -> None:
    """A home's name holds 32 bits of a hash of the user name: one labelled for another
    user (a chosen name that collides) is not read as the student's, nor written."""
    course = course_101(tmp_path)
    work = folder({"hw1/answer.py": b"alice's work\n"})
    volumes = ArchiveVolumes({"home-sam": work, "home-sue": work},
                             owners={"home-sam": "alice", "home-sue": "sue"})
    done = collect(volumes, course, course.assignments[0], ["sam", "sue"],  # type: ignore[arg-type]
                   tmp_path / "archive")
    students = done.manifest["students"]
    assert students["sam"]["status"] == ("not collected: their home volume belongs to "
                                         "another account")
    assert students["sue"]["status"] == "submitted"
    assert archived(done).keys() == {"sue/answer.py", "manifest.json"}


def test_a_release_leaves_a_home_labelled_for_another_account_alone(tmp_path) -> None:
    from hub_ext.courses.assignments import release

    course = course_101(tmp_path, staff=STAFF)
    volumes = ReleaseVolumes({STAFF: folder({"hw1/answer.py": b"# your answer here\n"})})
    volumes.owners = {"home-sam": "alice"}
    report = release(volumes, course, course.assignments[0], ["sam", "sue"])  # type: ignore[arg-type]
    assert report.problems == {"sam": "their home volume belongs to another account: left alone"}
    assert "home-sam" not in volumes.mounts and report.written == {"sue": 1}
