"""The courses API on the instructor page's service, for admins: course files over HTTP.

``GET  <prefix>api/admin/courses``: every course file (id, title, term, sha256).
``PUT  <prefix>api/admin/courses/<id>`` with ``{"course": "<TOML>", "roster": "<CSV>"}``
(``roster`` only when the course names a CSV roster): checked and applied as
``qustody course apply`` does (apply.py), no hub restart; ``?dry_run=1`` answers what
would change and writes nothing. Errors name the field and the fix (400), or the limit
(413, 415).

Callers send their own API token (``Authorization: token ...``) holding
``custom:courses:admin`` (the ``course-admin`` role; the hub's admin users get it); a
browser session of the instructor page never carries it. Each applied change is a
``policy-changed`` audit record (policy ``courses.<id>``, the changed keys and the file's
digests before and after) written before the answer: if it cannot be written the change
is undone and the answer is 503, so no course changes unrecorded.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

from tornado import web

from ..audit.errors import AuditError
from ..ratelimit import RequestLimits
from ..service_page import ServicePage
from .apply import Change, apply_audited, course_from_bytes, plan, policy_record
from .catalog import course_files
from .model import MAX_BYTES, CourseError, load_course, stamp
from .roster import MAX_BYTES as MAX_ROSTER_BYTES

#: The caller's address for audit records: the connection's, or, through the hub's proxy
#: on loopback, the entry it added to X-Forwarded-For (never X-Real-Ip, which any caller
#: sets).
_CLIENT = RequestLimits()

ADMIN_SCOPE = "custom:courses:admin"
COURSE_ID = re.compile(r"[a-z0-9][a-z0-9\-_.]{0,60}")
#: the JSON body: both documents, escaped, and room for the keys
MAX_BODY = 2 * (MAX_BYTES + MAX_ROSTER_BYTES) + 1024


class CourseAdminHandler(ServicePage):
    api = True
    page_name = "the courses API"
    page_title = "Qustody courses"

    def allowed(self, model: dict[str, Any]) -> bool:
        return bool(self.hub_auth.check_scopes({ADMIN_SCOPE}, model))

    def denied_message(self, name: str) -> str:
        return (f"{name} may not change courses: the courses API needs the scope "
                f"{ADMIN_SCOPE} (the course-admin role, which the hub's admin users hold), "
                "sent as your own API token: Authorization: token <t>.")

    def login_message(self) -> str:
        return f"Send an API token holding {ADMIN_SCOPE}: Authorization: token <t>"

    @property
    def directory(self) -> Path:
        directory = self.settings["courses_dir"]
        if directory is None:
            raise web.HTTPError(404, "This hub has no courses directory.")
        return Path(directory)

    def clean(self, message: str) -> str:
        """An error without the server's paths: files by name only."""
        return message.replace(str(self.directory) + "/", "")

    def reply(self, status: int, body: dict[str, Any]) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(body))


class CourseListHandler(CourseAdminHandler):
    async def get(self) -> None:
        directory = self.directory

        def listing() -> list[dict[str, Any]]:
            out: list[dict[str, Any]] = []
            for path in course_files(directory):
                try:
                    course = load_course(path)
                except CourseError as e:
                    out.append({"file": path.name, "error": self.clean(str(e))})
                    continue
                change = Change(course, path.read_bytes(), b"", (), None, None)
                out.append({"id": course.id, "title": course.title, "file": path.name,
                            "term": {"start": stamp(course.term.start),
                                     "end": stamp(course.term.end)},
                            "sha256": change.digests[1]})
            return out

        try:
            courses = await asyncio.to_thread(listing)
        except CourseError as e:
            raise web.HTTPError(500, self.clean(str(e))) from None
        self.reply(200, {"courses": courses})


class CourseApplyHandler(CourseAdminHandler):
    async def put(self, course_id: str) -> None:
        if not COURSE_ID.fullmatch(course_id):
            raise web.HTTPError(400, "A course id is lowercase letters, digits, '-', '_' and "
                                "'.', starting with a letter or digit (e.g. course-101).")
        dry_run = self.get_argument("dry_run", "0").lower() in ("1", "true", "yes")
        data, roster = self.documents()
        source = f"course {course_id}"
        directory = self.directory
        try:
            course, roster_bytes = course_from_bytes(data, roster, source)
            if course.id != course_id:
                raise CourseError(f"{source}: id: the file says {course.id!r}; PUT it at "
                                  f"api/admin/courses/{course.id}, or change its id")
            (change,) = await asyncio.to_thread(plan, directory, [(course, data, roster_bytes)])
        except CourseError as e:
            raise web.HTTPError(400, self.clean(str(e))) from None
        applied = False
        if change.lines and not dry_run:
            await self.apply(directory, change)
            applied = True
        self.reply(200, {"course": course.id, "changes": list(change.lines),
                         "applied": applied, "dry_run": dry_run})

    def documents(self) -> tuple[bytes, bytes | None]:
        """The course file and the roster from the JSON body (400, 413, 415 otherwise)."""
        raw = self.request.body or b""
        if len(raw) > MAX_BODY:
            raise web.HTTPError(413, f"The request is {len(raw):,} bytes; a course file is at "
                                f"most {MAX_BYTES:,} and a roster {MAX_ROSTER_BYTES:,}.")
        kind = self.request.headers.get("Content-Type", "application/json").lower()
        if not kind.startswith("application/json"):
            raise web.HTTPError(415, 'Send {"course": "<the TOML file>", "roster": "<CSV, if '
                                'the course names one>"} as Content-Type: application/json.')
        try:
            body = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise web.HTTPError(400, "The request body is not UTF-8 text.") from None
        except ValueError as e:
            raise web.HTTPError(400, f"The request body is not JSON (line "
                                f"{getattr(e, 'lineno', '?')}); send "
                                '{"course": "<the TOML file>"}.') from None
        if not isinstance(body, dict) or not isinstance(body.get("course"), str):
            raise web.HTTPError(400, 'Send {"course": "<the TOML file as text>"} (and '
                                '"roster": "<CSV text>" when the course names a roster).')
        unknown = sorted(set(body) - {"course", "roster"})
        if unknown:
            raise web.HTTPError(400, f"Unknown field {unknown[0][:64]!r}: the body holds "
                                '"course" and, optionally, "roster".')
        roster = body.get("roster")
        if roster is not None and not isinstance(roster, str):
            raise web.HTTPError(400, '"roster" is the CSV file as text (username,role lines).')
        return body["course"].encode(), None if roster is None else roster.encode()

    async def apply(self, directory: Path, change: Change) -> None:
        """Write the course, then its audit record; undo the write if that fails."""
        audit = self.settings["audit"]
        if audit is None:
            raise web.HTTPError(503, "This service has no audit log, so it changes no course "
                                "(course changes are audited or not made).")
        record = policy_record(change, self.current_user["name"], "the courses API",
                               _CLIENT.client_ip(self.request))
        try:
            await asyncio.to_thread(apply_audited, directory, change, audit, record)
        except CourseError as e:
            raise web.HTTPError(500, self.clean(str(e))) from None
        except (AuditError, ValueError) as e:
            self.log.error("course %s: not applied, the audit record failed: %s",
                           change.course.id, e)
            raise web.HTTPError(503, "The change could not be recorded in the audit log, so "
                                "it was undone; try again later.") from None


__all__ = ["ADMIN_SCOPE", "CourseApplyHandler", "CourseListHandler"]
