"""The term keeper: runs each course's calendar (hub_ext.courses.term) in the courses
service (wired in hub_ext.courses.service), with the service's own hub token.

Each step is journaled before and after it runs and audited as ``course-term-step``
(release and collect also as ``assignment-released`` / ``assignment-collected``, as
``qustody course`` records them, with ``courses`` as the actor). A step whose audit record
cannot be written is journaled as failed and backs off, so it runs again later and never
in a loop. On a hub whose servers do not live on Docker volumes (local processes,
Kubernetes), the steps that move files are recorded as ``skipped`` with the reason, and
the rest still run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests

from ..identity.roles import assistants_group, instructors_group, students_group
from .catalog import Catalog
from .live import closed_courses
from .model import Course, materials_ok, stamp
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
            raise RuntimeError(f"hub API {method} {path[:100]}: HTTP {r.status_code}")
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
    (hub_ext.courses.assignments.Volumes), None when homes are not Docker volumes;
    ``volumes_error``: why they cannot be reached now (the steps fail and are retried).
    ``materials_prefix``: the only materials volumes ``delete-files`` may delete
    (``SpawnPolicy.materials_volume_prefix``)."""

    hub: HubAPI
    catalog: Callable[[], Catalog]
    archive_root: Path
    volumes: Any = None
    volumes_error: str = ""
    materials_prefix: str = "qustody-materials-"
    stop_timeout: float = 300
    #: makes ``volumes`` again after ``volumes_error`` (the engine answered no at start)
    reconnect: Callable[[], Any] | None = None
    _locks: dict[tuple[str, str], threading.Lock] = field(default_factory=dict)
    _locks_lock: threading.Lock = field(default_factory=threading.Lock)

    @contextlib.contextmanager
    def moving(self, course: str, assignment: str) -> Iterator[None]:
        """One release or collect of an assignment at a time (the keeper's and the page's
        buttons share this)."""
        with self._locks_lock:
            lock = self._locks.setdefault((course, assignment), threading.Lock())
        with lock:
            yield

    def busy(self, course: str, assignment: str) -> bool:
        with self._locks_lock:
            lock = self._locks.get((course, assignment))
        return lock is not None and lock.locked()

    def students(self, course: Course) -> list[str]:
        """Whom the steps release to, collect, stop and archive: the hub group of the
        course's reachable students, which sign-in fills, and the CSV roster's students who
        have not signed in yet (no hub user: their home gets the release before their first
        sign-in). A listed student who has signed in but is not in the group (their IdP
        roles go beyond student) is a member, not a reachable student: left out."""
        group = set(self.hub.group_members(students_group(course.id)))
        listed = {u for u, role in course.members.items() if role == "student"}
        return sorted(group | {u for u in listed - group if self.hub.user(u) is None})

    @property
    def has_files(self) -> bool:
        """Whether this hub keeps homes on Docker volumes (reachable now or not)."""
        return self.volumes is not None or bool(self.volumes_error)

    def files(self) -> Any:
        """The volumes, or why not: a hub without them skips; an engine that did not answer
        is asked again, and the step fails (and is retried) while it does not."""
        if self.volumes is None and self.volumes_error and self.reconnect is not None:
            try:
                self.volumes, self.volumes_error = self.reconnect(), ""
            except Exception as e:
                self.volumes_error = f"the Docker engine is not reachable ({type(e).__name__})"
        if self.volumes_error:
            raise RuntimeError(self.volumes_error)
        if self.volumes is None:
            raise StepSkipped("this hub's servers do not keep homes on Docker volumes")
        return self.volumes

    def run(self, step: Step, course: Course, now: float) -> dict[str, Any]:
        action = {"release": self.release, "collect": self.collect,
                  "stop-servers": self.stop_servers, "archive-homes": self.archive_homes,
                  "revoke-access": self.revoke_access, "delete-files": self.delete_files}
        return action[step.name.partition(":")[0]](step, course, now)

    def _assignment(self, step: Step, course: Course) -> Any:
        found = course.assignment(step.assignment or "")
        if found is None:  # removed from the file since: nothing to do
            raise StepSkipped(f"the course has no assignment {step.assignment!r} any more")
        return found

    def release(self, step: Step, course: Course, now: float) -> dict[str, Any]:
        from .assignments import release

        assignment = self._assignment(step, course)
        volumes = self.files()
        if not course.materials:
            raise StepSkipped("the course has no materials volume to release from")
        with self.moving(course.id, assignment.name):
            report = release(volumes, course, assignment, self.students(course))
        return report.figures()

    def collect(self, step: Step, course: Course, now: float) -> dict[str, Any]:
        from .assignments import collect

        assignment = self._assignment(step, course)
        volumes = self.files()
        with self.moving(course.id, assignment.name):
            done = collect(volumes, course, assignment, self.students(course),
                           self.archive_root, now)
        return done.figures()

    def stop_servers(self, step: Step, course: Course, now: float) -> dict[str, Any]:
        catalog = self.catalog()
        stopped, kept, waiting = 0, 0, []
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

        done = archive_homes(self.files(), course, self.students(course), self.archive_root, now)
        return done.figures()

    def revoke_access(self, step: Step, course: Course, now: float) -> dict[str, Any]:
        removed = 0
        for group in (instructors_group(course.id), assistants_group(course.id)):
            members = self.hub.group_members(group)
            self.hub.remove_members(group, members)
            removed += len(members)
        return {"staff_removed": removed}

    def delete_files(self, step: Step, course: Course, now: float) -> dict[str, Any]:
        # the volumes first: if the engine refuses one (in use, or not answering), the
        # archive is still there and the step is tried again (a volume already gone is fine)
        detail: dict[str, Any] = {}
        named = [(course.materials, "materials_volume_deleted"),
                 (course.assignments_volume, "assignments_volume_deleted")]
        if any(volume for volume, _ in named):
            try:
                volumes = self.files()
            except StepSkipped:
                volumes = None  # no Docker homes here: no course volumes either
            for volume, key in named:
                if volume:
                    detail[key] = volumes is not None and self._delete_volume(
                        volumes, course, volume)
        detail.setdefault("materials_volume_deleted", False)
        target = self.archive_root / course.id
        files = sum(1 for p in target.rglob("*") if p.is_file()) if target.is_dir() else 0
        if target.exists():
            shutil.rmtree(target)
        return {"archive_files_deleted": files, **detail}

    def _delete_volume(self, volumes: Any, course: Course, volume: str) -> bool:
        """Delete one of the course's volumes, unless it lacks the materials prefix or
        another course names it (as its materials or its assignments volume)."""
        others = [c.id for c in self.catalog().courses.values()
                  if c.id != course.id and volume in (c.materials, c.assignments_volume)]
        if not materials_ok(self.materials_prefix, volume) or others:
            log.warning("courses: %s: volume %s kept (%s)", course.id, volume,
                        f"also {others[0]}'s" if others else "not a materials volume")
            return False
        return bool(volumes.remove_volume(volume))


class TermKeeper:
    """Runs the due steps of every course; one ``tick`` at a time."""

    def __init__(self, catalog: Callable[[], Catalog], journal: Journal, actions: TermActions,
                 audit: Any, clock: Callable[[], float] = time.time) -> None:
        self.catalog = catalog
        self.journal = journal
        self.actions = actions
        self.audit = audit
        self.clock = clock

    def tick(self, now: float | None = None) -> list[tuple[str, str, str]]:
        """Run what is due, each step at most once; returns ``(course, step, outcome)``
        for each step run. One course's trouble never keeps the others from their steps."""
        now = self.clock() if now is None else now
        ran: list[tuple[str, str, str]] = []
        for course in self.catalog().courses.values():
            try:
                self._course(course, now, ran)
            except JournalError as e:
                log.error("courses: %s: term steps not run: %s", course.id, e)
            except Exception:  # one course's trouble: said in full, the next course goes on
                log.exception("courses: %s: term steps not run", course.id)
        return ran

    def _course(self, course: Course, now: float, ran: list[tuple[str, str, str]]) -> None:
        tried: set[str] = set()
        while True:  # after each step the next one of its chain may be due
            due = [s for s in due_steps(course, self.journal.read(course), now)
                   if s.name not in tried]
            if not due:
                return
            step = due[0]
            tried.add(step.name)
            ran.append((course.id, step.name, self._run(course, step, now)))

    def _run(self, course: Course, step: Step, now: float) -> str:
        entry = self.journal.record(course, step, "started", now)
        attempt = int(entry.get("attempts", 1))
        try:
            detail = self.actions.run(step, course, now)
            outcome = "done"
        except StepSkipped as e:
            detail, outcome = {"reason": str(e)}, "skipped"
        except Exception as e:
            return self._failed(course, step, now, attempt, f"{type(e).__name__}: {e}")
        try:
            self._emit(course, step, outcome, attempt, detail)
        except Exception as e:  # not audited, so not done: tried again after a back-off
            return self._failed(course, step, now, attempt,
                                f"the audit record failed ({type(e).__name__})", emit=False)
        self.journal.record(course, step, outcome, now, detail=detail)
        log.info("courses: %s %s %s %s", course.id, step.name, outcome, detail)
        return outcome

    def _failed(self, course: Course, step: Step, now: float, attempt: int, error: str,
                emit: bool = True) -> str:
        error = error[:500]
        log.error("courses: %s %s failed (attempt %d): %s", course.id, step.name, attempt, error)
        if emit:
            with contextlib.suppress(Exception):  # the journal says it either way
                self._emit(course, step, "failed", attempt, {"error": error})
        self.journal.record(course, step, "failed", now, error=error)
        return "failed"

    def _emit(self, course: Course, step: Step, outcome: str, attempt: int,
              detail: dict[str, Any]) -> None:
        if outcome == "done" and step.assignment:
            kind = {"release": "assignment-released", "collect": "assignment-collected"}
            self.audit.emit(kind[step.name.partition(":")[0]],
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
                    "archive_files_deleted", "materials_volume_deleted",
                    "assignments_volume_deleted", "reason", "error")
