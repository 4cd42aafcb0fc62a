"""The term keeper: runs each course's calendar (hub_ext.courses.term) in the courses
service, every ``QUSTODY_TERM_INTERVAL`` seconds, with the service's own hub token.

Each step is journaled before and after it runs and audited as ``course-term-step``
(release and collect also as ``assignment-released`` / ``assignment-collected``, as
``qustody course`` records them, with ``courses`` as the actor). A step whose audit record
cannot be written is not marked done, so it runs again. On a hub whose servers do not live
on Docker volumes (local processes, Kubernetes), the steps that move files are recorded as
``skipped`` with the reason, and the rest still run.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests

from ..identity.roles import assistants_group, instructors_group, students_group
from .catalog import Catalog
from .live import closed_courses
from .model import Course, stamp
from .term import Journal, JournalError, Step, StepSkipped, due_steps

ACTOR = "courses"
log = logging.getLogger("qustody.courses.keeper")


class HubAPI:
    """The few hub API calls the keeper makes, with the courses service's token."""

    def __init__(self, url: str, token: str, timeout: float = 30) -> None:
        self.url = url.rstrip("/")
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"token {token}"
        self.timeout = timeout

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        r = self.session.request(method, self.url + path, timeout=self.timeout,
                                 data=None if body is None else json.dumps(body))
        if r.status_code == 404 and method == "GET":
            return None
        if r.status_code >= 400:
            raise RuntimeError(f"hub API {method} {path}: {r.status_code} {r.text[:200]}")
        return r.json() if r.content else None

    def group_members(self, group: str) -> list[str]:
        found = self._call("GET", f"/groups/{quote(group, safe='')}")
        return sorted(found.get("users", [])) if found else []

    def remove_members(self, group: str, users: list[str]) -> None:
        if users:
            self._call("DELETE", f"/groups/{quote(group, safe='')}/users", {"users": users})

    def user(self, name: str) -> dict[str, Any] | None:
        found = self._call("GET", f"/users/{quote(name, safe='')}")
        return found if isinstance(found, dict) else None

    def stop_server(self, name: str, server: str) -> None:
        path = f"/users/{quote(name, safe='')}/servers/{quote(server, safe='')}" if server \
            else f"/users/{quote(name, safe='')}/server"
        self._call("DELETE", path)


@dataclass
class TermActions:
    """What each step does. ``volumes``: how to reach the servers' home volumes
    (hub_ext.courses.assignments.Volumes), or None when homes are not Docker volumes."""

    hub: HubAPI
    catalog: Callable[[], Catalog]
    archive_root: Path
    volumes: Any = None
    stop_timeout: float = 300

    def students(self, course: Course) -> list[str]:
        listed = {u for u, role in course.members.items() if role == "student"}
        return sorted(set(self.hub.group_members(students_group(course.id))) | listed)

    def _volumes(self) -> Any:
        if self.volumes is None:
            raise StepSkipped("this hub's servers do not keep homes on Docker volumes")
        return self.volumes

    def run(self, step: Step, course: Course, now: float) -> dict[str, Any]:
        kind = step.name.partition(":")[0]
        return getattr(self, kind.replace("-", "_"))(step, course, now)  # type: ignore[no-any-return]

    def release(self, step: Step, course: Course, now: float) -> dict[str, Any]:
        from .assignments import release

        assignment = course.assignment(step.assignment or "")
        if assignment is None:  # removed from the file since: nothing to do
            raise StepSkipped(f"the course has no assignment {step.assignment!r} any more")
        volumes = self._volumes()
        if not course.materials:
            raise StepSkipped("the course has no materials volume to release from")
        report = release(volumes, course, assignment, self.students(course))
        return {"students": len(report.written), "files": sum(report.written.values()),
                "kept": sum(report.kept.values()), "problems": len(report.problems)}

    def collect(self, step: Step, course: Course, now: float) -> dict[str, Any]:
        from .assignments import collect

        assignment = course.assignment(step.assignment or "")
        if assignment is None:
            raise StepSkipped(f"the course has no assignment {step.assignment!r} any more")
        done = collect(self._volumes(), course, assignment, self.students(course),
                       self.archive_root, now)
        return {**done.summary(), "manifest_sha256": done.manifest_sha256}

    def stop_servers(self, step: Step, course: Course, now: float) -> dict[str, Any]:
        catalog = self.catalog()
        stopped = kept = 0
        waiting: list[str] = []
        for name in self.students(course):
            user = self.hub.user(name)
            if user is None:
                continue
            if closed_courses(catalog, user.get("groups", []), now) is None:
                kept += 1  # another of their courses is still open
                continue
            for server, info in (user.get("servers") or {}).items():
                if not info.get("stopped"):
                    self.hub.stop_server(name, server)
                    stopped += 1
                    waiting.append(name)
        # the archive comes next: no student may still be writing
        deadline = time.monotonic() + self.stop_timeout
        for name in waiting:
            while (user := self.hub.user(name)) is not None and user.get("servers"):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name}'s server did not stop within "
                                       f"{self.stop_timeout:g} s")
                time.sleep(1)
        return {"stopped": stopped, "kept_open_elsewhere": kept}

    def archive_homes(self, step: Step, course: Course, now: float) -> dict[str, Any]:
        from .assignments import archive_homes

        done = archive_homes(self._volumes(), course, self.students(course),
                             self.archive_root, now)
        return {**done.summary(), "manifest_sha256": done.manifest_sha256}

    def revoke_access(self, step: Step, course: Course, now: float) -> dict[str, Any]:
        removed = 0
        for group in (instructors_group(course.id), assistants_group(course.id)):
            members = self.hub.group_members(group)
            self.hub.remove_members(group, members)
            removed += len(members)
        return {"staff_removed": removed}

    def delete_files(self, step: Step, course: Course, now: float) -> dict[str, Any]:
        target = self.archive_root / course.id
        files = sum(1 for p in target.rglob("*") if p.is_file()) if target.is_dir() else 0
        if target.exists():
            shutil.rmtree(target)
        volume = False
        if course.materials and self.volumes is not None:
            volume = self.volumes.remove_volume(course.materials)
        return {"archive_files_deleted": files, "materials_volume_deleted": volume}


class TermKeeper:
    """Runs the due steps of every course; one ``tick`` at a time."""

    def __init__(self, catalog: Callable[[], Catalog], journal: Journal, actions: TermActions,
                 audit: Any, clock: Callable[[], float] = time.time) -> None:
        self.catalog = catalog
        self.journal = journal
        self.actions = actions
        self.audit = audit
        self.clock = clock
        self._failed_at: dict[tuple[str, str], float] = {}

    def tick(self, now: float | None = None) -> list[tuple[str, str, str]]:
        """Run what is due; returns ``(course, step, outcome)`` for each step run."""
        now = self.clock() if now is None else now
        ran = []
        for course in self.catalog().courses.values():
            try:
                steps = self.journal.read(course)
            except JournalError as e:
                log.error("courses: %s: term steps not run: %s", course.id, e)
                continue
            failed = {name: t for (c, name), t in self._failed_at.items() if c == course.id}
            for step in due_steps(course, steps, now, failed):
                ran.append((course.id, step.name, self._run(course, step, now)))
        return ran

    def _run(self, course: Course, step: Step, now: float) -> str:
        entry = self.journal.record(course, step, "started", now)
        try:
            detail = self.actions.run(step, course, now)
            outcome = "done"
        except StepSkipped as e:
            detail, outcome = {"reason": str(e)}, "skipped"
        except Exception as e:
            self._failed_at[(course.id, step.name)] = now
            error = f"{type(e).__name__}: {e}"
            log.error("courses: %s %s failed (attempt %d): %s", course.id, step.name,
                      entry.get("attempts", 1), error)
            self._emit(course, step, "failed", int(entry.get("attempts", 1)), {"error": error})
            self.journal.record(course, step, "failed", now, error=error)
            return "failed"
        # audited, or not done: a step whose record fails runs again
        self._emit(course, step, outcome, int(entry.get("attempts", 1)), detail)
        self.journal.record(course, step, "done" if outcome == "done" else "skipped", now,
                            detail=detail)
        self._failed_at.pop((course.id, step.name), None)
        log.info("courses: %s %s %s %s", course.id, step.name, outcome, detail)
        return outcome

    def _emit(self, course: Course, step: Step, outcome: str, attempt: int,
              detail: dict[str, Any]) -> None:
        if outcome == "done" and step.assignment:
            kind = step.name.partition(":")[0]
            self.audit.emit(f"assignment-{kind}d" if kind == "release" else
                            "assignment-collected",
                            {"actor": ACTOR, "course": course.id,
                             "assignment": step.assignment, **detail})
        self.audit.emit("course-term-step", {
            "actor": ACTOR, "course": course.id, "step": step.name, "outcome": outcome,
            "attempt": attempt, "due": stamp(step.due),
            **{k: v for k, v in detail.items() if k in TERM_STEP_FIELDS},
        })


#: Detail fields the ``course-term-step`` record carries (its schema lists them).
TERM_STEP_FIELDS = ("students", "files", "submitted", "late", "findings", "problems",
                    "manifest_sha256", "stopped", "kept_open_elsewhere", "staff_removed",
                    "archive_files_deleted", "materials_volume_deleted", "reason", "error")


def volumes_from(spec: dict[str, Any]) -> Any:
    """``Volumes`` for the hub's Docker homes (``QUSTODY_TERM_VOLUMES``, hub.py)."""
    import functools

    import docker

    from ..volumes import home_volume_name
    from .assignments import Volumes

    uid, gid = (int(x) for x in str(spec.get("run_as", "1000:1000")).split(":"))
    return Volumes(docker.from_env(), spec["image"], spec["home_mount"],
                   functools.partial(home_volume_name, spec["home_volume_template"]), uid, gid)


def term_actions(catalog: Any, archive: Path) -> TermActions | None:
    """What the courses service's keeper and buttons act with: its own hub token, and the
    hub's Docker homes when it has them (``QUSTODY_TERM_VOLUMES``). None outside a hub."""
    import os

    url, token = os.environ.get("JUPYTERHUB_API_URL"), os.environ.get("JUPYTERHUB_API_TOKEN")
    if not (url and token):
        return None
    spec = os.environ.get("QUSTODY_TERM_VOLUMES", "")
    volumes = volumes_from(json.loads(spec)) if spec else None
    return TermActions(HubAPI(url, token), lambda: catalog.current(), archive, volumes)


def start_keeper(catalog: Any, actions: TermActions, audit: Any) -> TermKeeper | None:
    """In the courses service: tick every ``QUSTODY_TERM_INTERVAL`` seconds, in a thread,
    never two at once. Without an audit log, the keeper does nothing (its steps are
    audited or not taken)."""
    import asyncio
    import os

    from tornado import ioloop

    interval = float(os.environ.get("QUSTODY_TERM_INTERVAL", "0") or 0)
    if interval <= 0:
        return None
    if audit is None:
        log.error("courses: no audit log, so the term keeper takes no step")
        return None
    keeper = TermKeeper(lambda: catalog.current(), Journal(catalog.directory), actions, audit)
    busy = asyncio.Lock()

    async def tick() -> None:
        if busy.locked():
            return
        async with busy:
            try:
                await asyncio.to_thread(keeper.tick)
            except Exception:
                log.exception("courses: the term keeper's tick failed")

    ioloop.PeriodicCallback(tick, interval * 1000).start()
    ioloop.IOLoop.current().add_callback(tick)
    return keeper
