"""What a course's calendar asks for, and the journal of what was done (no I/O but the
journal's own file).

A course's steps, each due at a time its file gives:

- ``release:<assignment>`` at its release time, ``collect:<assignment>`` at its due time;
- when the term closes (end + grace): ``stop-servers`` (its students' servers, when none
  of their courses is open), ``archive-homes`` (each student's ``~/<course>/`` into one
  archive with a manifest recorded in the audit log), ``revoke-access`` (the course's staff
  leave its instructor and TA groups; hub_ext.identity grants no staff role of a closed
  course at the next login or refresh);
- when retention ends: ``delete-files`` (the course's archives and its materials and
  assignments volumes).

The journal (``<courses dir>/.term/<id>@<term start>.json``, written atomically) records
each step as ``started``, ``done``, ``skipped`` or ``failed``. A failed step, or one left
``started`` by a crash, runs again after a back-off from its last attempt: every step is
safe to repeat (release never overwrites; collect and archive write a new file; the rest
only remove what is still there). A re-applied course file with a new term start begins
a new journal, so next term's steps are not taken for done.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .catalog import write_atomically
from .model import Course, stamp

CLOSE_STEPS = ("stop-servers", "archive-homes", "revoke-access")
EXPIRE_STEPS = ("delete-files",)
#: A failed step is tried again after this many seconds, doubling, up to a day.
RETRY_SECONDS = 60.0
MAX_RETRY_SECONDS = 86400.0


@dataclass(frozen=True)
class Step:
    course: str
    name: str
    due: float

    @property
    def assignment(self) -> str | None:
        kind, _, name = self.name.partition(":")
        return name if kind in ("release", "collect") else None


def plan(course: Course) -> list[Step]:
    """Every step of ``course``'s calendar, in the order they are due (ties: file order)."""
    steps = []
    for a in course.assignments:
        steps.append(Step(course.id, f"release:{a.name}", a.release))
        steps.append(Step(course.id, f"collect:{a.name}", a.due))
    steps += [Step(course.id, name, course.term.closes) for name in CLOSE_STEPS]
    steps += [Step(course.id, name, course.term.expires) for name in EXPIRE_STEPS]
    order = {s.name: i for i, s in enumerate(steps)}
    return sorted(steps, key=lambda s: (s.due, order[s.name]))


class Journal:
    """One JSON file per course term; thread-safe within a process, and one process (the
    courses service) writes it."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory / ".term"
        self._lock = threading.Lock()

    def path(self, course: Course) -> Path:
        return self.directory / f"{course.id}@{stamp(course.term.start).replace(':', '')}.json"

    def read(self, course: Course) -> dict[str, dict[str, Any]]:
        """step name -> its record (``state``, ``at``, ``attempts``, ``error``, ``detail``)."""
        try:
            data = json.loads(self.path(course).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            # fail closed: an unreadable journal never makes a done step run again
            raise JournalError(f"{self.path(course)}: unreadable ({e}); fix or remove it "
                               "(removing it repeats the steps already done)") from None
        steps = data.get("steps") if isinstance(data, dict) else None
        if not isinstance(steps, dict):
            raise JournalError(f"{self.path(course)}: not a term journal (no 'steps')")
        return steps

    def record(self, course: Course, step: Step, state: str, now: float,
               error: str = "", detail: dict[str, Any] | None = None) -> dict[str, Any]:
        with self._lock:
            steps = self.read(course)
            entry = dict(steps.get(step.name, {}))
            entry.update(state=state, at=stamp(now), due=stamp(step.due))
            if state == "started":
                entry["attempts"] = int(entry.get("attempts", 0)) + 1
            if error:
                entry["error"] = error[:500]
            else:
                entry.pop("error", None)
            if detail is not None:
                entry["detail"] = detail
            steps[step.name] = entry
            self._write(course, {"course": course.id, "term_start": stamp(course.term.start),
                                 "steps": steps})
            return entry

    def _write(self, course: Course, data: dict[str, Any]) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomically(self.path(course),
                         json.dumps(data, indent=1, sort_keys=True).encode(), mode=0o600)


class JournalError(Exception):
    pass


class StepSkipped(Exception):
    """A step that has nothing to do on this hub or for this course (said why); it counts
    as done."""


def retry_at(entry: dict[str, Any]) -> float:
    """When a failed or interrupted step may run again: back-off from its last attempt,
    doubling with each attempt (a step that crashes its process does not loop)."""
    attempts = max(1, int(entry.get("attempts", 1)))
    return _time(entry.get("at")) + min(MAX_RETRY_SECONDS, RETRY_SECONDS * 2.0 ** (attempts - 1))


def _time(text: Any) -> float:
    try:
        return dt.datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


#: What each close and expiry step waits for (done or skipped for its current time): no
#: archive while servers may still write, no deletion without the archive. Staff leave
#: the course's groups at the close whatever else fails.
PREREQUISITES = {
    "archive-homes": ("stop-servers",),
    "delete-files": ("archive-homes", "revoke-access"),
}
#: The course's files are deleted no sooner than this after its homes were archived, even
#: when retention is 0 or the course was first seen long after it expired (a late or
#: mistyped file): time to notice and fix it.
MIN_KEEP_SECONDS = 86400.0


def due_steps(course: Course, steps: dict[str, dict[str, Any]], now: float) -> list[Step]:
    """The steps to run now: due, not done for this due time (a due time moved later is
    acted on again), not backing off after a failed or interrupted attempt, and after
    their ``PREREQUISITES``."""
    out = []
    dues = {s.name: stamp(s.due) for s in plan(course)}
    for step in plan(course):
        if step.due > now:
            break
        entry = steps.get(step.name, {})
        state = entry.get("state")
        if state in ("done", "skipped") and str(entry.get("due", "")) >= stamp(step.due):
            continue
        if state in ("failed", "started") and now < retry_at(entry):
            continue
        if not all(_finished(steps.get(name, {}), dues[name])
                   for name in PREREQUISITES.get(step.name, ())):
            continue
        if step.name == "delete-files" and \
                now < _time(steps["archive-homes"].get("at")) + MIN_KEEP_SECONDS:
            continue
        out.append(step)
    return out


def _finished(entry: dict[str, Any], due: str) -> bool:
    return entry.get("state") in ("done", "skipped") and str(entry.get("due", "")) >= due


def status_lines(course: Course, steps: dict[str, dict[str, Any]], now: float) -> list[str]:
    """``qustody course status``: one line per step."""
    lines = []
    for step in plan(course):
        entry = steps.get(step.name)
        if entry is None:
            when = "due" if step.due <= now else "at"
            lines.append(f"{step.name:<22} pending   ({when} {stamp(step.due)})")
            continue
        state = entry.get("state", "?")
        note = f"attempt {entry.get('attempts', 1)}"
        if entry.get("error"):
            note += f": {entry['error']}"
        elif state == "done" and entry.get("detail"):
            note = ", ".join(f"{k} {v}" for k, v in sorted(entry["detail"].items())
                             if not isinstance(v, (dict, list)))
        lines.append(f"{step.name:<22} {state:<9} {entry.get('at', '')}  {note}")
    return lines
