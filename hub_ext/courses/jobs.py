"""Release or collect an assignment now, from the instructor page: one job per course
assignment at a time, in a thread of the courses service, with its progress for the page.

The service's own Docker access and hub token do the work (hub_ext.courses.keeper's
``TermActions``); the instructor who pressed the button is the audit record's actor.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from .assignments import logged
from .catalog import Catalog
from .model import CourseError, stamp

ACTIONS = ("release", "collect")


class JobRefused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class AssignmentJobs:
    def __init__(self, actions: Any, audit: Any, catalog: Any) -> None:
        self.actions = actions  # keeper.TermActions
        self.audit = audit
        self.catalog = catalog  # live.LiveCatalog
        self._jobs: dict[tuple[str, str], dict[str, Any]] = {}
        self._lock = threading.Lock()

    @property
    def available(self) -> bool:
        """Whether assignments can be moved on this hub (homes on Docker volumes)."""
        return self.actions is not None and self.actions.has_files

    def state(self, course: str, assignment: str) -> dict[str, Any] | None:
        with self._lock:
            job = self._jobs.get((course, assignment))
            return dict(job) if job else None

    def start(self, course_id: str, assignment: str, action: str, actor: str) -> None:
        if action not in ACTIONS:
            raise JobRefused(400, "Send action=release or action=collect.")
        if not self.available:
            raise JobRefused(409, "This hub's servers do not keep their homes on Docker "
                             "volumes, so assignments cannot be released or collected here.")
        if self.audit is None:
            raise JobRefused(503, "This service has no audit log, so it releases and collects "
                             "nothing (each one is audited or not done).")
        catalog: Catalog = self.catalog.current()
        course = catalog.get(course_id)
        found = course.assignment(assignment) if course is not None else None
        if course is None or found is None:
            raise JobRefused(404, f"{course_id} has no assignment {assignment!r} in its "
                             "course file.")
        if not course.term.is_open(time.time()):
            raise JobRefused(409, f"The term of {course_id} has closed: its students' work "
                             "was archived then, and nothing is released or collected now.")
        with self._lock:
            job = self._jobs.get((course_id, assignment))
            if (job is not None and job["state"] == "running") or \
                    self.actions.busy(course_id, assignment):
                by = f" (started by {job['by']})" if job and job["state"] == "running" else ""
                raise JobRefused(409, f"A release or collect of {assignment} is already "
                                 f"running{by}; wait for it to finish.")
            self._jobs[(course_id, assignment)] = {
                "action": action, "state": "running", "done": 0, "of": 0, "by": actor,
                "started": stamp(time.time()), "message": f"{action} starting",
            }
        threading.Thread(target=self._run, args=(course, found, action, actor),
                         name=f"{action}-{course_id}-{assignment}", daemon=True).start()

    def _progress(self, key: tuple[str, str]) -> Any:
        def progress(done: int, of: int) -> None:
            with self._lock:
                self._jobs[key].update(done=done, of=of)
        return progress

    def _finish(self, key: tuple[str, str], state: str, message: str) -> None:
        with self._lock:
            self._jobs[key].update(state=state, message=message)

    def _run(self, course: Any, assignment: Any, action: str, actor: str) -> None:
        key = (course.id, assignment.name)
        try:
            with self.actions.moving(course.id, assignment.name):
                message = self._move(course, assignment, action, actor, key)
        except CourseError as e:  # written for staff (what to fix); the next press tries again
            self._finish(key, "failed", f"{action} failed: {e}"[:500])
            return
        except Exception as e:  # the page says its kind only: its words stay in the log
            why = logged(e, f"{action} of {course.id} {assignment.name}")
            self._finish(key, "failed", f"{action} failed: {why}, details in the log")
            return
        self._finish(key, "done", message)

    def _move(self, course: Any, assignment: Any, action: str, actor: str,
              key: tuple[str, str]) -> str:
        """Release or collect for every student; audited with ``actor``; the page's line."""
        from .assignments import collect, release

        students = self.actions.students(course)
        record = {"actor": actor, "course": course.id, "assignment": assignment.name}
        if action == "release":
            report = release(self.actions.files(), course, assignment, students,
                             self._progress(key))
            detail = report.figures()
            self.audit.emit("assignment-released", {**record, **detail})
            message = (f"released to {detail['students']} student(s): {detail['files']} "
                       f"file(s) written, {detail['kept']} kept (already there)")
            if report.problems:
                message += "; not released to " + ", ".join(
                    f"{s} ({why})" for s, why in sorted(report.problems.items()))
            return message
        done = collect(self.actions.files(), course, assignment, students,
                       self.actions.archive_root, progress=self._progress(key))
        summary = done.figures()
        self.audit.emit("assignment-collected", {**record, **summary})
        return (f"collected from {summary['students']} student(s): {summary['submitted']} "
                f"submitted, {summary['late']} late, {summary['findings']} credential "
                "finding(s)")
