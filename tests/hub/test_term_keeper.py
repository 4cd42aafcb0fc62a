"""The term keeper (hub_ext.courses.keeper) on a real hub: the courses service, with its
own token, closes a course whose term is over (its students' servers stopped, its staff
out of its groups, each step audited and journaled); and, on real Docker volumes with a
patched clock, a whole term: release, collect, a crash in the middle of the term-end
archive, the resumed archive, and the deletion when retention ends."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import secrets
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from audit_hub import LOCAL_EXTRA, local_env, records
from hubtest import Hub, docker, failed, launch_hub

from hub_ext.audit.log import AuditLog
from hub_ext.audit.verify import verify
from hub_ext.courses.catalog import load_catalog
from hub_ext.courses.keeper import HubAPI, TermActions, TermKeeper
from hub_ext.courses.model import DAY, stamp
from hub_ext.courses.service import volumes_from
from hub_ext.courses.term import Journal, Step
from hub_ext.spawner import SpawnPolicy

ROOT = Path(__file__).resolve().parents[2]
HOME = "/home/jovyan"


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Hub]:
    base = tmp_path_factory.mktemp("term-keeper")
    hub = launch_hub(base / "hub", extra=LOCAL_EXTRA.format(home=base / "home"),
                     env={**local_env(), "QUSTODY_TERM_INTERVAL": "1"}, timeout=240)
    yield hub
    hub.stop()
    if failed(request):
        print(hub.log()[-20000:])


def closed_course(course_id: str, now: float) -> str:
    return (f'id = "{course_id}"\ntitle = "Quantum Chemistry"\n[term]\n'
            f"start = {stamp(now - 40 * DAY)}\nend = {stamp(now - 2 * DAY)}\n"
            f'grace_days = 1\nretention_days = 0\n[roster]\ngroup = "{course_id}"\n')


def test_the_courses_service_closes_an_ended_course_with_its_own_token(hub: Hub) -> None:
    course = "course-303"
    for group, user in ((f"{course}:students", "alice"), (f"{course}:instructors", "ivan")):
        assert hub.api("POST", f"/groups/{group}")[0] in (201, 409)
        assert hub.api("POST", "/users/ivan")[0] in (201, 409)
        code, body = hub.api("POST", f"/groups/{group}/users", {"users": [user]})
        assert code == 200, body
    # bob takes the course too, and another that is still open: his server stays
    hub.api("POST", f"/groups/{course}:students/users", {"users": ["bob"]})
    hub.api("POST", "/groups/course-404:students")
    hub.api("POST", "/groups/course-404:students/users", {"users": ["bob"]})
    hub.start_server("alice")
    hub.start_server("bob")
    courses = hub.dir / "courses"
    now = time.time()
    (courses / "course-404.toml").write_text(closed_course("course-404", now).replace(
        stamp(now - 2 * DAY), stamp(now + 30 * DAY)))
    (courses / f"{course}.toml").write_text(closed_course(course, now))

    def journal() -> dict[str, Any]:
        found = list((courses / ".term").glob(f"{course}@*.json"))
        return json.loads(found[0].read_text())["steps"] if found else {}

    steps = hub.wait_for(lambda: (j := journal()) and all(
        j.get(s, {}).get("state") in ("done", "skipped") for s in
        ("stop-servers", "archive-homes", "revoke-access")) and j,
        timeout=90, what="the course's term-end steps")
    # its retention is 0, yet its files are not deleted in the tick that archived them
    assert "delete-files" not in steps
    assert steps["stop-servers"]["detail"] == {"stopped": 1, "kept_open_elsewhere": 1}
    assert steps["archive-homes"]["state"] == "skipped"  # local processes: no home volumes
    assert "Docker volumes" in steps["archive-homes"]["detail"]["reason"]
    assert steps["revoke-access"]["detail"] == {"staff_removed": 1}
    alice = hub.wait_for(lambda: not (u := hub.api("GET", "/users/alice")[1])["servers"] and u,
                         timeout=60, what="alice's server to stop")
    assert course + ":students" in alice["groups"]  # kept: the spawner says why she can't start
    assert hub.api("GET", "/users/bob")[1]["servers"][""]["ready"]
    assert hub.api("GET", f"/groups/{course}:instructors")[1]["users"] == []
    # she cannot start it again: the term is over, and the message says so
    code, body = hub.api("POST", "/users/alice/server", {})
    assert code >= 400 and "has ended" in json.dumps(body), body

    audited = [r["data"] for r in records(hub, "course-term-step") if r["data"]["course"] == course]
    assert [(r["step"], r["outcome"], r["actor"]) for r in audited] == [
        ("stop-servers", "done", "courses"), ("archive-homes", "skipped", "courses"),
        ("revoke-access", "done", "courses")]
    stopped = [r["data"] for r in records(hub, "server-stopped") if r["data"]["user"] == "alice"]
    assert stopped, "the stop is the hub's own, audited as any other"

    status = subprocess.run(
        [sys.executable, "-m", "server_ext.cli", "course", "status", "--dir", str(courses)],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert status.returncode == 0, status.stderr
    block = status.stdout.split(f"{course}  ")[1]
    assert "closed" in block.splitlines()[0] or "expired" in block.splitlines()[0]
    assert "revoke-access          done" in block and "stopped 1" in block, block
    hub.api("DELETE", "/users/bob/server")


# --- a whole term on Docker volumes, with a patched clock and a crash --------------------------
T0 = 1_900_000_000.0


def _keeper(hub_url: str, token: str, courses: Path, spec: dict[str, Any],
            audit_paths: tuple[str, str]) -> tuple[TermKeeper, AuditLog]:
    audit = AuditLog(path=audit_paths[0], key_file=audit_paths[1])
    actions = TermActions(HubAPI(hub_url, token), lambda: load_catalog(courses),
                          courses / "archive", volumes_from(spec))
    return TermKeeper(lambda: load_catalog(courses), Journal(courses), actions, audit), audit


def _crash_in_the_second_student(hub_url: str, token: str, courses: Path, spec: dict[str, Any],
                                 audit_paths: tuple[str, str], now: float) -> None:
    """In a child process: the term-end archive dies (os._exit, no clean-up) after the
    first student's folder is in the partial archive."""
    import hub_ext.courses.assignments as assignments

    original = assignments._collect_one
    done: list[str] = []

    def first_then_crash(*args: Any, **kwargs: Any) -> Any:
        if done:
            os._exit(9)
        done.append("x")
        return original(*args, **kwargs)

    assignments._collect_one = first_then_crash  # type: ignore[assignment]
    keeper, _ = _keeper(hub_url, token, courses, spec, audit_paths)
    keeper.tick(now)
    os._exit(0)  # not reached: the archive step crashes


def in_volume(image: str, volume: str, script: str, user: str = "1000") -> str:
    return docker("run", "--rm", "--network", "none", "--user", user, "--entrypoint", "sh",
                  "-v", f"{volume}:{HOME}", image, "-c", script)


@pytest.mark.docker
def test_a_whole_term_on_docker_volumes_survives_a_crash_in_the_term_end_archive(
    hub: Hub, singleuser_image: str, tmp_path: Path
) -> None:
    image = singleuser_image
    prefix = f"qtest{secrets.token_hex(3)}"
    template = f"{prefix}-home-{{username}}"
    policy = SpawnPolicy(home_volume_template=template)
    materials = f"qustody-materials-{prefix}"
    try:
        docker("volume", "create", materials)
        in_volume(image, materials, user="0", script=(
            f"mkdir -p {HOME}/assignments/hw1 && echo 'Prepare a Bell state.' > "
            f"{HOME}/assignments/hw1/README.md"))
        courses = tmp_path / "courses"
        courses.mkdir()
        (courses / "course-505.toml").write_text(
            f'id = "course-505"\ntitle = "Intro QC"\n[term]\nstart = {stamp(T0)}\n'
            f"end = {stamp(T0 + 10 * DAY)}\ngrace_days = 1\nretention_days = 30\n"
            f'[roster]\ngroup = "course-505"\ncsv = "course-505.roster.csv"\n'
            f'[materials]\nvolume = "{materials}"\n[[assignments]]\nname = "hw1"\n'
            f"release = {stamp(T0 + DAY)}\ndue = {stamp(T0 + 3 * DAY)}\n")
        (courses / "course-505.roster.csv").write_text("username,role\nsam,student\n"
                                                       "sue,student\nivan,instructor\n")
        key = tmp_path / "audit.key"
        key.write_text(secrets.token_hex(32))
        key.chmod(0o600)
        paths = (str(tmp_path / "audit" / "audit.jsonl"), str(key))
        spec = {"image": image, "home_volume_template": template, "home_mount": HOME,
                "run_as": "1000:1000"}
        keeper, audit = _keeper(hub.api_url, hub.token, courses, spec, paths)
        # the steps reach the course's reachable students: its students' group, which
        # sign-in fills from the roster (roles.hub_groups), not the roster alone
        for user in ("sam", "sue"):
            assert hub.api("POST", f"/users/{user}")[0] in (201, 409)
        assert hub.api("POST", "/groups/course-505:students")[0] in (201, 409)
        assert hub.api("POST", "/groups/course-505:students/users",
                       {"users": ["sam", "sue"]})[0] == 200

        assert keeper.tick(T0) == []
        assert keeper.tick(T0 + DAY + 1) == [("course-505", "release:hw1", "done")]
        assert "Bell" in in_volume(image, policy.volume_name("sam"),
                                   f"cat {HOME}/course-505/hw1/README.md")
        in_volume(image, policy.volume_name("sam"),
                  f"echo 'my answer' > {HOME}/course-505/hw1/README.md && "
                  f"echo notes > {HOME}/course-505/notes.txt")
        assert keeper.tick(T0 + 3 * DAY + 1) == [("course-505", "collect:hw1", "done")]
        assert keeper.tick(T0 + 3 * DAY + 2) == []  # once
        (collected,) = (courses / "archive" / "course-505" / "hw1").glob("hw1-*.tar")

        # the term closes; the keeper's process dies in the middle of the homes archive
        closes = T0 + 11 * DAY
        child = multiprocessing.get_context("fork").Process(
            target=_crash_in_the_second_student,
            args=(hub.api_url, hub.token, courses, spec, paths, closes + 1))
        child.start()
        child.join(120)
        assert child.exitcode == 9
        steps = Journal(courses).read(load_catalog(courses).courses["course-505"])
        assert steps["stop-servers"]["state"] == "done"
        assert steps["archive-homes"] == {"state": "started", "attempts": 1,
                                          "at": stamp(closes + 1), "due": stamp(closes)}
        term_end = courses / "archive" / "course-505" / "_term-end"
        assert [p.name.endswith(".tmp") for p in term_end.iterdir()] == [True]  # the partial one

        # the interrupted step backs off (a step that crashes its process does not loop);
        # the staff leave the course's groups meanwhile, whatever the archive does
        assert keeper.tick(closes + 30) == [("course-505", "revoke-access", "done")]
        # then it resumes: the archive again, whole
        assert keeper.tick(closes + 120) == [("course-505", "archive-homes", "done")]
        (homes,) = term_end.iterdir()  # the crashed writer's partial file is gone
        with tarfile.open(homes) as tar:
            files = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
        assert files["sam/notes.txt"] == b"notes\n"
        assert files["sam/hw1/README.md"] == b"my answer\n"
        manifest = json.loads(files["manifest.json"])
        assert sorted(manifest["students"]) == ["sam", "sue"]
        assert manifest["assignment"] == "_term-end"

        audit.close()
        log = Path(paths[0])
        report = verify(log, [key.read_bytes().strip()])
        assert report.ok, report
        events = [json.loads(line) for line in log.read_text().splitlines()]
        steps_audited = [(e["data"]["step"], e["data"]["outcome"], e["data"]["attempt"])
                         for e in events if e.get("type") == "course-term-step"]
        assert steps_audited == [("release:hw1", "done", 1), ("collect:hw1", "done", 1),
                                 ("stop-servers", "done", 1), ("revoke-access", "done", 1),
                                 ("archive-homes", "done", 2)]
        archived = next(e["data"] for e in events if e.get("type") == "course-term-step"
                        and e["data"]["step"] == "archive-homes")
        assert archived["manifest_sha256"] == hashlib.sha256(files["manifest.json"]).hexdigest()
        collected_event = next(e["data"] for e in events if e.get("type") ==
                               "assignment-collected")
        assert collected_event["actor"] == "courses" and collected_event["submitted"] == 1

        # retention ends: the archives and the materials volume go
        keeper, audit = _keeper(hub.api_url, hub.token, courses, spec, paths)
        assert keeper.tick(closes + 30 * DAY + 1) == [("course-505", "delete-files", "done")]
        audit.close()
        assert not (courses / "archive" / "course-505").exists()
        assert collected.exists() is False
        assert docker("volume", "ls", "-q", "--filter", f"name={materials}").strip() == ""
        # the students' homes are theirs: kept
        assert "my answer" in in_volume(image, policy.volume_name("sam"),
                                        f"cat {HOME}/course-505/hw1/README.md")
    finally:
        for vol in docker("volume", "ls", "-q", "--filter", f"name={prefix}").split():
            docker("volume", "rm", "-f", vol, check=False)


@pytest.mark.docker
def test_deletion_takes_only_the_courses_own_materials_and_waits_for_the_engine(
    singleuser_image: str, tmp_path: Path
) -> None:
    """delete-files removes a course's materials volume only when its name has the
    materials prefix and no other course names it; with the engine not answering it
    deletes nothing and fails (to be retried), rather than half-running."""
    from hub_ext.courses.catalog import Catalog
    from hub_ext.courses.model import parse_course

    tag = secrets.token_hex(3)
    volumes = {"own": f"qustody-materials-{tag}-a", "shared": f"qustody-materials-{tag}-b",
               "home": f"qtest{tag}-home-sam"}

    def course(course_id: str, volume: str) -> Any:
        return parse_course(
            f'id = "{course_id}"\ntitle = "T"\n[term]\nstart = {stamp(T0)}\n'
            f'end = {stamp(T0 + DAY)}\n[roster]\ngroup = "{course_id}"\n'
            f'[materials]\nvolume = "{volume}"\n'.encode(), f"{course_id}.toml")

    courses = {c.id: c for c in (course("course-1", volumes["own"]),
                                 course("course-2", volumes["shared"]),
                                 course("course-3", volumes["shared"]),
                                 course("course-4", volumes["home"]))}
    spec = {"image": singleuser_image, "home_volume_template": f"qtest{tag}-home-{{username}}",
            "home_mount": HOME, "run_as": "1000:1000"}
    try:
        for name in volumes.values():
            docker("volume", "create", name)
        archive = tmp_path / "archive"
        for c in courses:
            (archive / c / "hw1").mkdir(parents=True)
            (archive / c / "hw1" / "hw1-x.tar").write_bytes(b"work")
        actions = TermActions(None, lambda: Catalog(courses), archive,  # type: ignore[arg-type]
                              volumes_from(spec))
        step = Step("course-1", "delete-files", T0)
        assert actions.delete_files(step, courses["course-1"], T0) == {
            "archive_files_deleted": 1, "materials_volume_deleted": True}
        # course-3 names course-2's volume too; course-4 names a home: both kept
        for c in ("course-2", "course-4"):
            got = actions.delete_files(Step(c, "delete-files", T0), courses[c], T0)
            assert got == {"archive_files_deleted": 1, "materials_volume_deleted": False}
        left = docker("volume", "ls", "-q", "--filter", f"name={tag}").split()
        assert sorted(left) == sorted([volumes["shared"], volumes["home"]])

        # the engine does not answer: nothing deleted, the step fails (and is retried)
        down = TermActions(None, lambda: Catalog(courses), archive,  # type: ignore[arg-type]
                           volumes_error="the Docker engine is not reachable (DockerException)",
                           reconnect=lambda: (_ for _ in ()).throw(OSError("refused")))
        with pytest.raises(RuntimeError, match="not reachable"):
            down.delete_files(Step("course-3", "delete-files", T0), courses["course-3"], T0)
        assert (archive / "course-3" / "hw1" / "hw1-x.tar").exists()
        # ... and once it answers again the step runs
        down.reconnect = lambda: volumes_from(spec)
        assert down.delete_files(Step("course-3", "delete-files", T0), courses["course-3"],
                                 T0)["archive_files_deleted"] == 1
    finally:
        for name in volumes.values():
            docker("volume", "rm", "-f", name, check=False)
