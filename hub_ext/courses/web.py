"""The instructor page: a hub-managed service (``python -m hub_ext.courses.web``).

Instructors sign in through the hub (HubOAuth). The page acts with the instructor's own
token, which the hub limits to the students of the courses they teach
(hub_ext.identity.roles.COURSE_SCOPES): the hub, not this page, decides whom they see and
reach, and audits each start and stop with them as the actor. Routes under the prefix:

- ``/``: each course they teach: its term (from its course file), its students with
  their server (running, since when, last activity, time left) and QPU use today
  against the per-student budget, and Start/Stop buttons;
- ``/api/courses``: the same as JSON;
- ``/servers``: POST ``course``, ``user``, ``action`` (start|stop), XSRF-checked;
- ``/archive/<course>/<assignment>.tar``: the collected work (``qustody course collect``).

Anyone else gets a 403 page saying the page is for a course's instructors.

For admins, with their own API token holding ``custom:courses:admin`` (the
``course-admin`` role, given to the hub's admin users), the courses API
(``admin_api.py``): ``GET /api/admin/courses`` lists the course files, ``PUT
/api/admin/courses/<id>`` applies one (``?dry_run=1``: only says what would change), as
``qustody course apply`` does, each change recorded in the audit log.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime as dt
import json
import os
import re
import secrets
import signal
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from jupyterhub.services.auth import HubOAuthCallbackHandler
from jupyterhub.utils import url_path_join
from tornado import ioloop, web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from ..service_page import ServicePage
from .admin_api import MAX_BODY, CourseApplyHandler, CourseListHandler
from .catalog import Catalog
from .live import LiveCatalog
from .model import ASSIGNMENT, USER_NAME, stamp

TEMPLATES = Path(__file__).with_name("web_templates")
#: A request body past this is not read (tornado answers 400 and closes, before any handler
#: or authentication; its default buffers 100 MB). The courses API's own limit is lower,
#: so a body just past that gets its 413 that says why.
MAX_REQUEST_BODY = MAX_BODY + 1024 * 1024
#: The scope an instructor's course role holds for each course (COURSE_SCOPES).
COURSE_SCOPE = re.compile(r"servers!group=(?P<course>[a-z0-9][a-z0-9\-_.]{0,60}):students")
USER = USER_NAME
#: Scopes the page's tokens may carry: an instructor's course scopes (the hub keeps their
#: group filters) and submit, to read the course's QPU use from the gateway as its lead.
ALLOWED_SCOPES = [
    "read:users",
    "read:users:activity",
    "read:servers",
    "servers",
    "read:groups",
    "custom:qpu:submit",
    "access:services!service=qpu",
]
MAX_STUDENTS = 2000
CONCURRENCY = 16
#: Students per usage request to the gateway (its limit is 1000; a URL stays short).
USAGE_BATCH = 200


#: The scope an observer's course role holds for each course (OBSERVER_SCOPES).
READ_SCOPE = re.compile(r"read:servers!group=(?P<course>[a-z0-9][a-z0-9\-_.]{0,60}):students")


def courses_of(model: dict[str, Any]) -> list[str]:
    """The courses whose students' servers the token may manage (instructors, TAs)."""
    found = {
        m.group("course") for s in model.get("scopes", []) if (m := COURSE_SCOPE.fullmatch(s))
    }
    return sorted(found)


def observed_of(model: dict[str, Any]) -> list[str]:
    """The courses the token may only read (observers): their students' servers' state."""
    found = {
        m.group("course") for s in model.get("scopes", []) if (m := READ_SCOPE.fullmatch(s))
    }
    return sorted(found - set(courses_of(model)))


class CourseHandler(ServicePage):
    page_name = "the instructor page"
    page_title = "Qustody courses"

    def allowed(self, model: dict[str, Any]) -> bool:
        return bool(courses_of(model) or observed_of(model))

    def denied_message(self, name: str) -> str:
        return (
            f"{name} teaches no course here: this page is for the instructors, TAs and "
            "observers of a course (a role from your identity provider's groups with the "
            "course's group). Ask a hub admin if you should have one."
        )

    def login_message(self) -> str:
        return "Log in to the hub as an instructor, or send your token: Authorization: token <t>"

    def require_teaching(self, course: str, observers: str) -> None:
        """403 unless the caller is an instructor or TA of ``course``; an observer is told
        what an observer does (``observers``)."""
        if course not in courses_of(self.current_user):
            raise web.HTTPError(403, f"You do not teach {course[:64]!r}" + (
                f" (an observer {observers})." if course in observed_of(self.current_user)
                else "."))

    async def hub(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """Call the hub's API with the signed-in instructor's own token."""
        token = self.hub_auth.get_token(self) or ""
        request = HTTPRequest(
            url_path_join(self.hub_auth.api_url, path),
            method=method,
            headers={"Authorization": f"token {token}"},
            body=None if body is None and method in ("GET", "DELETE") else json.dumps(body or {}),
            request_timeout=30,
            allow_nonstandard_methods=True,
        )
        try:
            response = await AsyncHTTPClient().fetch(request)
        except HTTPClientError as e:
            text = e.response.body if e.response is not None else b""
            try:
                return e.code, json.loads(text or b"null")
            except ValueError:
                return e.code, None
        except OSError:
            return 502, None  # the hub is unreachable: said as such by the callers
        try:
            return response.code, json.loads(response.body or b"null")
        except ValueError:
            return 502, None

    async def usage(self, course: str, users: list[str]) -> dict[str, Any] | None:
        """The students' QPU use today from the gateway (the instructor leads the
        course's project); None when the gateway cannot say."""
        qpu = self.settings["qpu_url"]
        if not qpu or not users:
            return None
        token = self.hub_auth.get_token(self) or ""
        members: dict[str, Any] = {}
        for start in range(0, len(users), USAGE_BATCH):
            query = urlencode([("user", u) for u in users[start : start + USAGE_BATCH]])
            try:
                response = await AsyncHTTPClient().fetch(
                    f"{qpu}api/projects/{quote(course, safe='')}/usage?{query}",
                    headers={"Authorization": f"token {token}"},
                    request_timeout=15,
                )
                members.update(json.loads(response.body).get("members", {}))
            except (HTTPClientError, OSError, ValueError, AttributeError):
                return None
        return {"members": members}

    async def course(self, course: str, catalog: Catalog) -> dict[str, Any]:
        now = time.time()
        c = catalog.get(course)
        view: dict[str, Any] = {"id": course, "title": c.title if c else course, "students": []}
        jobs = self.settings.get("jobs")
        if c is not None:
            view.update(state=c.term.state(now), end=stamp(c.term.end), closes=stamp(c.term.closes),
                        profile=c.profile)
            view["assignments"] = [
                {
                    "name": a.name,
                    "release": stamp(a.release),
                    "due": stamp(a.due),
                    "state": "upcoming" if now < a.release else "open" if now < a.due else "due",
                    "collected": self.archive(course, a.name) is not None,
                    "job": jobs.state(course, a.name) if jobs is not None else None,
                }
                for a in c.assignments
            ]
            view["files"] = jobs is not None and jobs.available
            view["steps"] = self.steps(c, now)
        code, group = await self.hub("GET", f"groups/{quote(course + ':students', safe='')}")
        if code == 404:
            return view  # nobody has signed in as the course's student yet
        if code != 200 or not isinstance(group, dict):
            view["error"] = f"The hub did not list this course's students (HTTP {code}); reload."
            return view
        names = sorted(group.get("users", []))[:MAX_STUDENTS]
        gate = asyncio.Semaphore(CONCURRENCY)

        async def one(name: str) -> dict[str, Any]:
            async with gate:
                status, user = await self.hub("GET", f"users/{quote(name, safe='')}")
            return self.student(name, user if status == 200 else None, view, now)

        view["students"] = list(await asyncio.gather(*(one(n) for n in names)))
        await self.resources(view["students"])
        used = await self.usage(course, names)
        view["qpu"] = used is not None
        for s in view["students"]:
            s["jobs"] = jobs_text((used or {}).get("members", {}).get(s["name"])) \
                if used is not None else "n/a"
        return view

    async def resources(self, students: list[dict[str, Any]]) -> None:
        """Each running server's memory and CPU time, where the service reaches the Docker
        engine (hub_ext.courses.usage); "n/a" elsewhere."""
        from .usage import resource_use, use_text

        jobs = self.settings.get("jobs")
        volumes = jobs.actions.volumes if jobs is not None else None
        running = [s["name"] for s in students if s["server"] == "running"]
        use: dict[str, Any] = {}
        if volumes is not None and running:
            try:
                use = await asyncio.to_thread(resource_use, volumes.client, running)
            except Exception as e:  # the engine did not answer: the page still shows the rest
                self.log.warning("courses: resource use unavailable: %s", type(e).__name__)
                volumes = None
        for s in students:
            s["resources"] = use_text(use.get(s["name"])) if volumes is not None else "n/a"

    def student(self, name: str, user: dict[str, Any] | None, course: dict[str, Any],
                now: float) -> dict[str, Any]:
        server = ((user or {}).get("servers") or {}).get("") or {}
        state = "running" if server.get("ready") else (
            "starting" if server.get("pending") == "spawn" else
            "stopping" if server.get("pending") == "stop" else "stopped")
        started = server.get("started")
        profile = ((server.get("user_options") or {}).get("profile") or course.get("profile")
                   or "student")
        max_age = self.settings["profile_limits"].get(profile, {}).get("max_age")
        left = None
        if started and max_age and state == "running":
            begun = dt.datetime.fromisoformat(started.replace("Z", "+00:00")).timestamp()
            left = max(0, int(begun + max_age - now))
        return {
            "name": name,
            "server": state,
            "started": started,
            "last_activity": server.get("last_activity") or (user or {}).get("last_activity"),
            "seconds_left": left,
        }

    def steps(self, course: Any, now: float) -> list[dict[str, str]]:
        """The course's calendar as the term keeper has run it (term.py's journal)."""
        from .term import Journal, JournalError, plan

        directory = self.settings.get("courses_dir")
        try:
            done = Journal(directory).read(course) if directory is not None else {}
        except JournalError:
            done = {}
        return [{"name": s.name, "due": stamp(s.due),
                 "state": done.get(s.name, {}).get("state") or
                 ("due" if s.due <= now else "pending"),
                 "at": done.get(s.name, {}).get("at", "")}
                for s in plan(course)]

    def archive(self, course: str, assignment: str) -> Path | None:
        """The newest collected archive of an assignment (``qustody course collect``)."""
        root = self.settings["archive_dir"]
        if root is None or not ASSIGNMENT.fullmatch(assignment):
            return None
        try:
            found = sorted((root / course / assignment).glob(f"{assignment}-*.tar"))
            return found[-1] if found and found[-1].is_file() else None
        except OSError:  # e.g. collected by another user: said on the page as not there
            return None

    async def overview(self) -> list[dict[str, Any]]:
        """The caller's courses. One overview per user is worked out at a time: requests
        arriving while one is being built get a copy of it, so a loop of requests cannot
        multiply the hub, Docker and gateway calls an overview makes (one per student)."""
        name = str(self.current_user["name"])
        building: dict[str, asyncio.Future[list[dict[str, Any]]]] = self.settings["overviews"]
        running = building.get(name)
        if running is not None:
            return copy.deepcopy(await asyncio.shield(running))
        future = asyncio.ensure_future(self._overview())
        building[name] = future
        try:
            return await asyncio.shield(future)
        finally:
            if building.get(name) is future:
                del building[name]

    async def _overview(self) -> list[dict[str, Any]]:
        catalog: Catalog = self.settings["catalog"].current() if self.settings["catalog"] \
            else Catalog()
        managed = courses_of(self.current_user)
        mine = sorted({*managed, *observed_of(self.current_user)})
        views = list(await asyncio.gather(*(self.course(c, catalog) for c in mine)))
        for view in views:
            # observers read: no start or stop, no collected work
            view["manage"] = view["id"] in managed
            if not view["manage"]:
                view["files"] = False
                for a in view.get("assignments", []):
                    a["collected"] = False
                    a["job"] = None  # who pressed what, and students' problems: staff only
        return views


def jobs_text(usage: Any) -> str:
    """Jobs today by backend class (``used of limit`` where the course limits it)."""
    parts = []
    for backend_class, periods in (usage or {}).items():
        jobs = ((periods or {}).get("day") or {}).get("jobs") or {}
        used, limit = jobs.get("used") or 0, jobs.get("limit")
        if limit is not None or used:
            parts.append((backend_class, f"{used:g}" + ("" if limit is None else f" of {limit:g}")))
    if not parts:
        return "0"
    if len(parts) == 1:
        return parts[0][1]
    return ", ".join(f"{text} ({backend_class})" for backend_class, text in parts)


def left_text(seconds: int | None) -> str:
    if seconds is None:
        return ""
    hours, rest = divmod(seconds, 3600)
    return f"{hours} h {rest // 60:02d} min" if hours else f"{rest // 60} min"


def when_text(iso: str | None) -> str:
    """``2026-12-03T20:39:04.520794Z`` as ``2026-12-03 20:39 UTC``."""
    return f"{iso[:10]} {iso[11:16]} UTC" if iso and len(iso) >= 16 else ""


class PageHandler(CourseHandler):
    def done(self) -> str:
        """The note after a start or stop: made here from checked words, so a crafted link
        cannot put its own message on the page."""
        action, user = self.get_argument("done", ""), self.get_argument("user", "")
        if action in ("start", "stop") and USER.fullmatch(user):
            return f"{action} requested for {user}"
        assignment = self.get_argument("assignment", "")
        if action in ("release", "collect") and ASSIGNMENT.fullmatch(assignment):
            return f"{action} of {assignment} started"
        return ""

    async def get(self) -> None:
        self.render(
            "courses.html",
            user=self.current_user["name"],
            courses=await self.overview(),
            left_text=left_text,
            when_text=when_text,
            done=self.done(),
            action_url=url_path_join(self.settings["prefix"], "servers"),
            assignments_url=url_path_join(self.settings["prefix"], "assignments"),
            archive_url=url_path_join(self.settings["prefix"], "archive/"),
        )


class CoursesAPIHandler(CourseHandler):
    api = True

    async def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"courses": await self.overview()}))


class ArchiveHandler(CourseHandler):
    """``/archive/<course>/<assignment>.tar``: the collected work, for the course's
    instructors only."""

    async def get(self, course: str, assignment: str) -> None:
        self.require_teaching(course, "reads the roster, not the students' work")
        path = self.archive(course, assignment)
        if path is None:
            raise web.HTTPError(404, f"{assignment[:41]!r} of {course} has not been collected "
                                "(qustody course collect).")
        self.set_header("Content-Type", "application/x-tar")
        self.set_header("Content-Disposition",
                        f'attachment; filename="{course}-{assignment}.tar"')
        self.set_header("Cache-Control", "no-store")
        with open(path, "rb") as f:
            while chunk := f.read(1024 * 1024):
                self.write(chunk)
                await self.flush()
        self.finish()


class ServersHandler(CourseHandler):
    """Start or stop a student's server; the hub checks the instructor may."""

    async def post(self) -> None:
        course = self.get_body_argument("course", "")
        user = self.get_body_argument("user", "")
        action = self.get_body_argument("action", "")
        self.require_teaching(course, "reads the roster; only its instructors and TAs start "
                              "and stop servers")
        if not USER.fullmatch(user) or action not in ("start", "stop"):
            raise web.HTTPError(400, "Send a user name and action=start or action=stop.")
        path = f"users/{quote(user, safe='')}/server"
        if action == "start":
            code, body = await self.hub("POST", path, {})
        else:
            code, body = await self.hub("DELETE", path)
        if code == 404:  # the hub hides users out of the token's reach
            raise web.HTTPError(403, f"The hub refused to {action} {user}'s server: {user} is "
                                "not a student of a course you teach (or no such user).")
        if code not in (201, 202, 204):
            message = (body or {}).get("message") if isinstance(body, dict) else None
            raise web.HTTPError(code if 400 <= code < 500 else 502,
                                f"The hub refused to {action} {user}'s server: "
                                f"{message or f'HTTP {code}'}")
        self.redirect(self.settings["prefix"] + "?" + urlencode({"done": action, "user": user}),
                      status=303)


class AssignmentsHandler(CourseHandler):
    """Release or collect an assignment now (course, assignment, action), for the course's
    instructors and TAs; the page shows its progress."""

    async def post(self) -> None:
        from .jobs import JobRefused

        course = self.get_body_argument("course", "")
        assignment = self.get_body_argument("assignment", "")
        action = self.get_body_argument("action", "")
        self.require_teaching(course, "reads the roster; only its instructors and TAs "
                              "release and collect")
        if not ASSIGNMENT.fullmatch(assignment):
            raise web.HTTPError(400, "Send the assignment's name as in the course file.")
        jobs = self.settings.get("jobs")
        if jobs is None:
            raise web.HTTPError(409, "This service cannot release or collect (it runs outside "
                                "a hub).")
        try:
            jobs.start(course, assignment, action, self.current_user["name"])
        except JobRefused as e:
            raise web.HTTPError(e.status, e.message) from None
        self.redirect(self.settings["prefix"] + "?" + urlencode(
            {"done": action, "assignment": assignment}), status=303)


def make_app(prefix: str, name: str, catalog: LiveCatalog | None, qpu_url: str,
             profile_limits: dict[str, dict[str, int]],
             archive_dir: Path | None = None, audit: Any = None,
             jobs: Any = None) -> web.Application:
    return web.Application(
        [
            (prefix, PageHandler),
            (url_path_join(prefix, "api/courses"), CoursesAPIHandler),
            (url_path_join(prefix, "servers"), ServersHandler),
            (url_path_join(prefix, "assignments"), AssignmentsHandler),
            (url_path_join(prefix, r"archive/([a-z0-9][a-z0-9\-_.]{0,60})/([^/]{1,64})\.tar"),
             ArchiveHandler),
            (url_path_join(prefix, "api/admin/courses"), CourseListHandler),
            (url_path_join(prefix, r"api/admin/courses/([^/]{1,80})"), CourseApplyHandler),
            (url_path_join(prefix, "oauth_callback"), HubOAuthCallbackHandler),
        ],
        cookie_secret=secrets.token_bytes(32),
        template_path=str(TEMPLATES),
        prefix=prefix,
        access_scope=f"access:services!service={name}",
        catalog=catalog,
        qpu_url=qpu_url,
        profile_limits=profile_limits,
        archive_dir=archive_dir,
        courses_dir=catalog.directory if catalog is not None else None,
        audit=audit,
        jobs=jobs,
        overviews={},  # user name -> the overview being built for them
        xsrf_cookies=False,  # checked after authentication (ServicePage.prepare)
    )


def main() -> None:
    import logging
    from urllib.parse import urlparse

    # the hub stops its services with SIGINT; a parent may have left SIGINT ignored, which
    # Python keeps (then every stop waits out the hub's interrupt timeout)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    name = os.environ.get("JUPYTERHUB_SERVICE_NAME", "courses")
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", f"/services/{name}/")
    url = urlparse(os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:8083"))
    directory = os.environ.get("QUSTODY_COURSES_DIR", "")
    catalog = LiveCatalog(Path(directory), logging.getLogger("courses")) if directory else None
    if catalog is not None:
        catalog.current()
    limits = json.loads(os.environ.get("QUSTODY_PROFILE_LIMITS", "{}") or "{}")
    archive = Path(directory) / "archive" if directory else None
    from ..audit.hub import service_settings
    from ..audit.log import AuditLog

    settings = service_settings()  # course changes are audited, or not made (admin_api.py)
    audit = AuditLog(**settings) if settings is not None else None
    from .jobs import AssignmentJobs
    from .service import start_keeper, term_actions

    actions = term_actions(catalog, archive) if catalog is not None and archive else None
    jobs = AssignmentJobs(actions, audit, catalog) if actions is not None else None
    app = make_app(prefix, name, catalog, os.environ.get("QUSTODY_QPU_URL", ""), limits,
                   archive, audit, jobs)
    # xheaders off: tornado would take X-Real-Ip from any caller (admin_api reads the
    # client's address through the hub's proxy, as the hub does)
    app.listen(url.port or 8083, url.hostname or "127.0.0.1", xheaders=False,
               max_body_size=MAX_REQUEST_BODY)
    print(f"instructor page on {url.geturl()} (prefix {prefix})", file=sys.stderr, flush=True)
    if actions is not None:
        start_keeper(catalog, actions, audit)
    with contextlib.suppress(KeyboardInterrupt):  # the hub stops its services with SIGINT
        ioloop.IOLoop.current().start()


if __name__ == "__main__":
    main()
