"""The auditor web page: a hub-managed service (``python -m hub_ext.audit.web``).

Read-only. Users log in through the hub (HubOAuth); only those holding both
``access:services!service=<name>`` and ``custom:audit:read`` (the ``auditor`` role)
get in; anyone else gets a 403 page (or a JSON 403 on the API). Routes under the
service prefix:

- ``/``: per-user session timeline (filters ``user``, ``type``, ``since``, ``until``),
  the verification status and the export link;
- ``/api/events``: the same selection as JSON (``seq=`` selects records by number, as an
  alert's evidence link does);
- ``/api/alerts``: the last week's security alerts (``alerts.py``), also shown on ``/``;
- ``/api/verify``: the verification status (GET) or a new run (POST, XSRF-checked);
- ``/export``: the selection as a JSON-lines download in the SIEM format
  (``qustody-audit/1``, see ``export.py``).

The log is the one of the hub (``QUSTODY_AUDIT_LOG`` or ``QUSTODY_AUDIT_DB``, and
``QUSTODY_AUDIT_KEY_FILE``; ``audit_page`` passes them). Verification runs in the
background at start-up, every ``QUSTODY_AUDIT_VERIFY_SECONDS`` and on request, and is
recorded as an ``audit-verified`` event.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import json
import logging
import os
import secrets
import signal
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jupyterhub.services.auth import HubOAuthCallbackHandler
from jupyterhub.utils import url_path_join
from tornado import ioloop, netutil, web

from ..service_page import ServicePage
from ..supervisor import Supervisor, hold_port
from ..wiring import Fragment
from . import clock, schema
from .alert_watch import COURSES_ENV, AlertWatcher, CourseFolders
from .alerts import ALERT, MAX_EVIDENCE, USER_NOTICES, AlertRules, alert_owner
from .cli import Where, _hits
from .export import export_hits
from .hub import service_environment, service_settings
from .keys import load_key_file
from .query import REF, Filter, Hit, Stats
from .timeline import sessions

READ_SCOPE = "custom:audit:read"
#: where a user's server reaches this service (behind the hub's proxy)
AUDIT_URL_ENV = "QUSTODY_AUDIT_URL"
MAX_EVENTS = 5000
MAX_ALERTS = 50  # shown on the page (the last week's newest)
MAX_RECENT_ALERTS = 10_000  # kept for the users' notices
ALERT_POLL_SECONDS = 2
TEMPLATES = Path(__file__).with_name("web_templates")


def service_access_scope(name: str) -> str:
    return f"access:services!service={name}"


EMPTY_SUMMARY = (
    "No records yet: the log is created with its first event (a login, a spawn). "
    "There is nothing to verify."
)


class Verifier:
    """Runs ``verify`` in a worker thread and keeps the last result.

    What it keeps is shown to auditors, so it holds no server paths: files by name only,
    the log's directory cut from every message. A log with no record yet is shown as
    ``empty`` (not a failure) and not recorded, unless a run of this service saw records
    before: then the log was deleted and that is a failure; so is a log that no longer
    holds, unchanged, the last record an earlier run saw (deleted and started again, or
    replaced).
    """

    def __init__(self, where: Where, record: Any, anchor_file: Path | None = None) -> None:
        self.where = where
        self.record = record
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="audit-verify")
        self.state: dict[str, Any] = {"status": "not run yet"}
        self.running = False
        # (last seq, its record hash, when) of the last run that passed with records; kept
        # in ``anchor_file`` (next to the key, away from the log), MAC'd with the key, so a
        # restart of this service does not forget it
        self.anchor_file = anchor_file
        self.anchor_problem: str | None = None
        self.seen: tuple[int, str, str] | None = None

    def _anchor_mac(self, key: bytes, seq: int, hash_: str, when: str) -> str:
        return hmac.new(key, f"qustody-audit-anchor\n{seq}\n{hash_}\n{when}".encode(),
                        hashlib.sha256).hexdigest()

    def _read_anchor(self) -> tuple[int, str, str] | None:
        """The remembered record, read afresh each run (an admin who removed a bad file
        needs no restart); sets ``anchor_problem`` when the file is bad."""
        self.anchor_problem = None
        if self.anchor_file is None:
            return self.seen
        try:
            doc = json.loads(self.anchor_file.read_text())
            seq, hash_, when, mac = int(doc["seq"]), str(doc["hash"]), str(doc["when"]), doc["mac"]
        except FileNotFoundError:  # not written yet (or not writable): what this run knows
            return self.seen
        except (OSError, ValueError, KeyError, TypeError):
            self.anchor_problem = (
                f"the file that remembers the last verified record ({self.anchor_file.name}, "
                "next to the log's key) is unreadable. Check the log, then remove that file"
            )
            return None
        if not any(hmac.compare_digest(self._anchor_mac(k, seq, hash_, when), str(mac))
                   for k in self.where.keys):
            self.anchor_problem = (
                f"the file that remembers the last verified record ({self.anchor_file.name}, "
                "next to the log's key) does not verify with the log's key(s): it was altered, "
                "or written with a key no longer given. Check the log, then remove that file "
                "to start afresh"
            )
            return None
        return seq, hash_, when

    def _write_anchor(self) -> None:
        if self.anchor_file is None or self.seen is None or not self.where.keys:
            return
        seq, hash_, when = self.seen
        doc = {"seq": seq, "hash": hash_, "when": when,
               "mac": self._anchor_mac(self.where.keys[0], seq, hash_, when)}
        tmp = self.anchor_file.with_name(self.anchor_file.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.anchor_file)

    def start(self, actor: str) -> bool:
        """Start a run unless one is running; returns whether it started."""
        if self.running:
            return False
        self.running = True
        self.state = {**self.state, "status": "running", "started": clock.stamp()}
        asyncio.get_running_loop().run_in_executor(self.pool, self._run, actor)
        return True

    def _run(self, actor: str) -> None:
        from .verify import Problem, verify, verify_db

        self.seen = self._read_anchor()
        anchor = self.seen[:2] if self.seen else None
        try:
            if self.where.db:
                report = verify_db(self.where.db, self.where.keys, anchor=anchor)
            else:
                assert self.where.path is not None
                report = verify(self.where.path, self.where.keys, anchor=anchor)
            finished = clock.stamp()
            if self.anchor_problem:  # first: an empty log does not excuse a bad anchor
                report.ok, report.empty = False, False
                report.problem = Problem(self.anchor_problem)
            if report.empty and self.seen is None:
                self.state = {"status": "empty", "finished": finished, "summary": EMPTY_SUMMARY}
                return
            if report.empty and self.seen is not None:
                seq, _, when = self.seen
                report.empty = False
                report.problem = Problem(
                    f"the log held records up to seq {seq} when verified at {when}; now it "
                    "holds none: it was deleted or moved"
                )
            if report.ok and report.last_seq is not None and report.last_hash is not None:
                self.seen = (report.last_seq, report.last_hash, finished)
                try:
                    self._write_anchor()
                except OSError as e:  # the result stands; the next restart starts afresh
                    report.warnings.append(f"the last verified record was not saved: {e}")
            public = report.public()
            public["problem"] = self.hide_problem_paths(public["problem"])
            public["warnings"] = [self.hide_paths(str(w)) for w in public["warnings"]]
            state = {
                "status": "ok" if report.ok else "failed",
                "finished": finished,
                "summary": self.hide_paths(report.summary()),
                "report": public,
                "first_bad": public["problem"],
            }
            try:  # recorded before it is shown: a run shown as done has written all it writes
                self.record(report, actor)
            except Exception as e:  # the result stands even if recording it failed
                state["note"] = f"not recorded in the log: {type(e).__name__}"
            self.running = False  # before the result shows: a new request then starts a run
            self.state = state
        except Exception as e:
            self.state = {
                "status": "error",
                "finished": clock.stamp(),
                "summary": self.hide_paths(f"verification could not run: {type(e).__name__}: {e}"),
            }
        finally:
            self.running = False

    def hide_paths(self, text: str) -> str:
        """``text`` without the log's directory, the database URL or the key files' locations."""
        if self.where.db:
            text = text.replace(self.where.db, "the audit database")
        if self.where.path is not None:
            text = text.replace(str(self.where.path.parent) + os.sep, "")
        for key_file in self.where.key_files:
            text = text.replace(str(key_file), "the key file")
        return text

    def hide_problem_paths(self, problem: dict[str, Any] | None) -> dict[str, Any] | None:
        if problem is None:
            return None
        out = {**problem, "reason": self.hide_paths(str(problem["reason"]))}
        if out.get("file"):
            out["file"] = Path(str(out["file"])).name
        return out


class RecentAlerts:
    """The last week's alerts, read from the log at most every ``ttl`` seconds.

    Every user's JupyterLab asks for its notices each minute: one read of the log per
    ``ttl`` serves them all, instead of one per request."""

    def __init__(self, where: Where, ttl: float = 10.0) -> None:
        self.where = where
        self.ttl = ttl
        self._lock = threading.Lock()
        self._read = float("-inf")
        self._records: list[dict[str, Any]] = []

    def records(self, fresh: bool = False) -> list[dict[str, Any]]:
        """Oldest first (at most MAX_RECENT_ALERTS); ``fresh``: read the log now."""
        with self._lock:
            if fresh or time.monotonic() - self._read >= self.ttl:
                since = clock.stamp(datetime.fromtimestamp(time.time() - 7 * 86400, UTC))
                kept: deque[dict[str, Any]] = deque(maxlen=MAX_RECENT_ALERTS)
                for hit in _hits(self.where, Filter(types=frozenset({ALERT}), since=since),
                                 None, Stats()):
                    kept.append(hit.record)
                self._records, self._read = list(kept), time.monotonic()
            return self._records


class AuditHandler(ServicePage):
    """Base: hub login, and the auditor check on every request."""

    page_name = "the audit page"
    page_title = "Qustody audit"

    def allowed(self, model: dict[str, Any]) -> bool:
        # Both scopes, not either: the service's own access scope and the audit scope.
        return bool(self.hub_auth.check_scopes({READ_SCOPE}, model))

    def denied_message(self, name: str) -> str:
        return (
            f"{name} may not read the audit log: it is for the auditor role "
            f"({READ_SCOPE}). Ask a hub admin to grant you the auditor role."
        )

    def login_message(self) -> str:
        return (
            "Log in to the hub as an auditor, or send a token with "
            f"{READ_SCOPE}: Authorization: token <token>"
        )

    def selection(self) -> Filter:
        """The filter from the query string; 400 with what is wrong."""
        users = [u for u in self.get_arguments("user") if u.strip()]
        types = [t for t in self.get_arguments("type") if t.strip()]
        unknown = sorted(set(types) - set(schema.names()))
        if unknown:
            raise web.HTTPError(
                400,
                f"Unknown event type(s) {', '.join(unknown)}; known: {', '.join(schema.names())}",
            )
        times: dict[str, str | None] = {}
        for name in ("since", "until"):
            value = self.get_argument(name, "").strip()
            try:
                times[name] = clock.stamp(clock.parse(value)) if value else None
            except ValueError as e:
                raise web.HTTPError(400, f"{name}: {e}") from None
        refs = [r.strip().lower() for r in self.get_arguments("ref") if r.strip()]
        bad = [r for r in refs if not REF.fullmatch(r)]
        if bad:
            raise web.HTTPError(
                400, "A reference is the 12 hex digits a user was shown, e.g. 3f9a0c12b7e4"
            )
        try:
            seqs = frozenset(int(x) for x in self.get_arguments("seq") if x.strip())
        except ValueError:
            raise web.HTTPError(400, "seq: give record sequence numbers, e.g. seq=101") from None
        if len(seqs) > MAX_EVIDENCE:
            raise web.HTTPError(400, f"seq: at most {MAX_EVIDENCE} records at once")
        return Filter(
            users=frozenset(u.strip() for u in users),
            types=frozenset(types),
            since=times["since"],
            until=times["until"],
            refs=frozenset(refs),
            seqs=seqs,
        )

    def alerts(self) -> list[dict[str, Any]]:
        """The newest alerts of the last week, newest first, with their evidence links."""
        out = []
        recent = self.settings["recent_alerts"].records(fresh=True)  # auditors: no delay
        for record in reversed(recent[-MAX_ALERTS:]):
            data = record.get("data") or {}
            query = urllib.parse.urlencode(
                [("since", str(data.get("first_ts", ""))[:19])]
                + [("seq", str(n)) for n in data.get("evidence") or []])
            out.append({**data, "ts": record.get("ts"), "seq": record.get("seq"),
                        "evidence_url": f"{self.settings['prefix']}?{query}"})
        return out

    def records(self, flt: Filter) -> tuple[list[Hit], bool]:
        """The newest ``MAX_EVENTS`` matching records (oldest first) and whether more matched."""
        kept: deque[Hit] = deque(maxlen=MAX_EVENTS)
        seen = 0
        for hit in _hits(self.settings["where"], flt, None, Stats()):
            kept.append(hit)
            seen += 1
        return list(kept), seen > MAX_EVENTS


class PageHandler(AuditHandler):
    async def get(self) -> None:
        flt = self.selection()
        hits, truncated = await asyncio.to_thread(self.records, flt)
        alerts = await asyncio.to_thread(self.alerts)
        query = self.request.query
        self.render(
            "audit.html",
            alerts=alerts,
            user=self.current_user["name"],
            sessions=sessions(h.record for h in hits),
            count=len(hits),
            truncated=truncated,
            verification=self.settings["verifier"].state,
            types=schema.names(),
            chosen_types=set(flt.types),
            form={k: self.get_argument(k, "") for k in ("user", "since", "until", "ref")},
            export_url=url_path_join(self.settings["prefix"], "export")
            + (f"?{query}" if query else ""),
            verify_url=url_path_join(self.settings["prefix"], "verify"),
        )


class EventsAPIHandler(AuditHandler):
    api = True

    async def get(self) -> None:
        flt = self.selection()
        hits, truncated = await asyncio.to_thread(self.records, flt)
        self.set_header("Content-Type", "application/json")
        self.finish(
            json.dumps(
                {
                    "sessions": [s.public() for s in sessions(h.record for h in hits)],
                    "count": len(hits),
                    "truncated": truncated,
                }
            )
        )


class AlertsAPIHandler(AuditHandler):
    """The last week's alerts (newest first) as JSON, with their evidence links."""

    api = True

    async def get(self) -> None:
        alerts = await asyncio.to_thread(self.alerts)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"alerts": alerts}))


class OwnAlertsAPIHandler(ServicePage):
    """``GET api/my-alerts``: the last week's alerts about the caller, for their JupyterLab.

    Any hub user may ask (their server asks with its own token); each sees only the alerts
    about themselves, of the rules ``AlertRules.user_rules`` names, with what to do: no
    evidence, no other user's record, nothing of the log itself."""

    api = True

    def allowed(self, model: dict[str, Any]) -> bool:
        return bool(model.get("kind", "user") == "user")

    def denied_message(self, name: str) -> str:
        return (f"{name} may not ask for alerts here: a hub user's token with the service's "
                f"access scope ({self.settings['access_scope']}, which every user holds) "
                "gets that user's own alerts.")

    def login_message(self) -> str:
        return "Send your hub token: Authorization: token <token>"

    def own(self, name: str) -> list[dict[str, Any]]:
        rules = self.settings["user_rules"]
        out: list[dict[str, Any]] = []
        for record in self.settings["recent_alerts"].records():
            data = record.get("data") or {}
            rule, subject = str(data.get("rule")), str(data.get("subject"))
            if rule not in rules or alert_owner(rule, subject) != name:
                continue
            count, window = int(data.get("count", 0)), int(data.get("window_seconds", 0))
            out.append({
                "seq": record.get("seq"), "ts": record.get("ts"), "rule": rule,
                "title": data.get("title"), "count": count,
                "first_ts": data.get("first_ts"), "last_ts": data.get("last_ts"),
                "message": USER_NOTICES[rule].format(count=count,
                                                     minutes=max(1, round(window / 60))),
            })
        return out[-MAX_ALERTS:][::-1]

    async def get(self) -> None:
        name = str(self.current_user["name"])
        notices = await asyncio.to_thread(self.own, name)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps({"user": name, "alerts": notices}))


class VerifyAPIHandler(AuditHandler):
    api = True

    def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(self.settings["verifier"].state))

    def post(self) -> None:
        started = self.settings["verifier"].start(self.current_user["name"])
        self.set_status(202 if started else 409)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"started": started, **self.settings["verifier"].state}))


class VerifyFormHandler(AuditHandler):
    def post(self) -> None:
        self.settings["verifier"].start(self.current_user["name"])
        self.redirect(self.settings["prefix"])


class ExportHandler(AuditHandler):
    async def get(self) -> None:
        flt = self.selection()

        def write() -> str:
            out = io.StringIO()
            export_hits(_hits(self.settings["where"], flt, None, Stats()), out)
            return out.getvalue()

        body = await asyncio.to_thread(write)
        name = "qustody-audit-" + clock.stamp().replace(":", "")[:15] + ".jsonl"
        self.set_header("Content-Type", "application/x-ndjson; charset=utf-8")
        self.set_header("Content-Disposition", f'attachment; filename="{name}"')
        self.finish(body)


def where_from_env() -> tuple[Where, dict[str, str]]:
    """The log and key the hub passed in the environment (and the AuditLog settings for
    them); SystemExit saying what is missing."""
    settings = service_settings()
    if settings is None:
        raise SystemExit(
            "hub_ext.audit.web: set QUSTODY_AUDIT_LOG (or QUSTODY_AUDIT_DB) and "
            "QUSTODY_AUDIT_KEY_FILE (audit_page() passes the hub's c.AuditLog settings)"
        )
    try:
        keys = [load_key_file(settings["key_file"])]
    except ValueError as e:
        raise SystemExit(f"hub_ext.audit.web: {e}") from None
    path = settings.get("path")
    where = Where(
        Path(path) if path else None, settings.get("db_url"), keys, [settings["key_file"]]
    )
    return where, settings


def make_app(where: Where, record: Any, prefix: str, name: str,
             cookie_secret: bytes | None = None,
             user_rules: frozenset[str] = frozenset(USER_NOTICES)) -> web.Application:
    # where the page remembers the last record it verified: next to the key by default
    anchor_env = os.environ.get("QUSTODY_AUDIT_ANCHOR_FILE", "")
    anchor = Path(anchor_env) if anchor_env else (
        Path(where.key_files[0] + ".verified") if where.key_files else None)
    verifier = Verifier(where, record, anchor)
    routes: list[Any] = [
        (prefix, PageHandler),
        (url_path_join(prefix, "api/events"), EventsAPIHandler),
        (url_path_join(prefix, "api/alerts"), AlertsAPIHandler),
        (url_path_join(prefix, "api/my-alerts"), OwnAlertsAPIHandler),
        (url_path_join(prefix, "api/verify"), VerifyAPIHandler),
        (url_path_join(prefix, "verify"), VerifyFormHandler),
        (url_path_join(prefix, "export"), ExportHandler),
        (url_path_join(prefix, "oauth_callback"), HubOAuthCallbackHandler),
    ]
    return web.Application(
        routes,
        cookie_secret=cookie_secret or secrets.token_bytes(32),
        template_path=str(TEMPLATES),
        where=where,
        verifier=verifier,
        prefix=prefix,
        access_scope=service_access_scope(name),
        user_rules=user_rules,
        recent_alerts=RecentAlerts(where),
    )


def main() -> None:
    """Serve the page as one worker process under a supervisor (hub_ext/supervisor.py):
    a crashed worker is replaced at once (its modules are already imported, so within a
    fraction of a second) instead of after the hub's 30 s poll of its services."""
    from urllib.parse import urlparse

    where, settings = where_from_env()
    name = os.environ.get("JUPYTERHUB_SERVICE_NAME", "audit")
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", f"/services/{name}/")
    url = urlparse(os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:8082"))
    try:
        rules = AlertRules(**json.loads(os.environ.get("QUSTODY_ALERT_RULES", "{}") or "{}"))
    except (ValueError, TypeError) as e:
        raise SystemExit(f"hub_ext.audit.web: QUSTODY_ALERT_RULES: {e}") from None
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="[%(levelname)1.1s %(asctime)s %(name)s] %(message)s")
    ip, port = url.hostname or "127.0.0.1", url.port or 8082
    try:
        _holder, port = hold_port(ip, port)
    except OSError as e:
        raise SystemExit(f"hub_ext.audit.web: cannot listen on {ip}:{port}: {e.strerror}") from None
    # one secret for every worker this supervisor starts: a restart keeps auditors signed in
    cookie_secret = secrets.token_bytes(32)

    def worker(_index: int) -> int:
        serve(where, settings, name, prefix, rules, cookie_secret,
              netutil.bind_sockets(port, ip, reuse_port=True))
        return 0

    print(f"audit page on {url.geturl()} (prefix {prefix})", file=sys.stderr, flush=True)
    sys.exit(Supervisor(1, worker, logging.getLogger("qustody.audit.web"), "audit page").run())


def serve(where: Where, settings: dict[str, str], name: str, prefix: str, rules: AlertRules,
          cookie_secret: bytes, sockets: list[Any]) -> None:
    """One worker: the page, the alert engine and the periodic verification, until
    SIGTERM (the supervisor passes the hub's stop on)."""
    from tornado.httpserver import HTTPServer

    from .log import AuditLog

    audit = AuditLog(**settings)

    def record(report: Any, actor: str) -> None:
        audit.record_verification(report, actor)

    app = make_app(where, record, prefix, name, cookie_secret, frozenset(rules.user_rules))
    server = HTTPServer(app, xheaders=False)
    server.add_sockets(sockets)
    courses = os.environ.get(COURSES_ENV)
    watcher = AlertWatcher(where, lambda datas: audit.emit_many([(ALERT, d) for d in datas]),
                           rules, logging.getLogger("qustody.alerts"),
                           shared=CourseFolders(Path(courses)) if courses else None)
    busy = threading.Lock()

    def watch() -> None:
        def run() -> None:
            try:
                watcher.poll()
            except Exception:  # a read or write error: logged, tried again next time
                watcher.log.exception("alert engine: reading or writing the audit log failed")
            finally:
                busy.release()

        if busy.acquire(blocking=False):  # one poll at a time, never on the event loop
            threading.Thread(target=run, name="qustody-alerts", daemon=True).start()

    ioloop.PeriodicCallback(watch, ALERT_POLL_SECONDS * 1000).start()
    every = int(os.environ.get("QUSTODY_AUDIT_VERIFY_SECONDS", "3600"))
    verifier: Verifier = app.settings["verifier"]
    loop = ioloop.IOLoop.current()
    loop.add_callback(verifier.start, f"service-{name}")
    if every > 0:

        def periodic() -> None:
            verifier.start(f"service-{name}")

        ioloop.PeriodicCallback(periodic, every * 1000).start()
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the supervisor passes it on; nothing to reload
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.asyncio_loop.add_signal_handler(sig, loop.stop)  # type: ignore[attr-defined]
    loop.start()
    server.stop()
    # an alert being written finishes (its records are one append); then leave
    if busy.acquire(timeout=10):
        busy.release()
    audit.close()  # what was emitted reaches the log before the worker exits


def audit_page(
    config: Any,
    *,
    name: str = "audit",
    port: int = 8082,
    verify_seconds: int = 3600,
    python: str = sys.executable,
    courses_dir: str | None = None,
    server_max_age: dict[str, int] | None = None,
) -> Fragment:
    """The auditor page: its service, the ``auditor`` role and the read scope.

    The service reads the hub's log with the hub's key (``config.AuditLog``). The
    ``auditor`` role may use the page and read users' activity; it has no server access.
    ``courses_dir`` (the course files) tells the alert engine which folders of a home a
    course's staff collect; ``server_max_age`` (``SpawnPolicy.server_max_ages()``) how long
    each profile's servers may live, unless ``c.AlertRules.server_max_age`` says.
    """
    rules = AlertRules(config=config)  # a bad c.AlertRules setting stops the hub here
    if server_max_age and not rules.server_max_age:
        rules.server_max_age = server_max_age
    env = {
        **service_environment(config),
        "QUSTODY_AUDIT_VERIFY_SECONDS": str(verify_seconds),
        "QUSTODY_ALERT_RULES": json.dumps(rules.settings()),
        **({COURSES_ENV: courses_dir} if courses_dir else {}),
    }
    service = {
        "name": name,
        "url": f"http://127.0.0.1:{port}",
        "command": [python, "-m", "hub_ext.audit.web"],
        "environment": env,
        "oauth_client_allowed_scopes": [READ_SCOPE],
        "oauth_no_confirm": True,
        "display": True,
    }
    role = {
        "name": "auditor",
        "description": "Read the audit log and users' activity (read-only; no server access)",
        "scopes": [
            READ_SCOPE,
            service_access_scope(name),
            "list:users",
            "read:users:name",
            "read:users:activity",
        ],
    }
    scopes = {READ_SCOPE: {"description": "Read the Qustody audit log (the auditor page)"}}
    # Every user's server asks the service for the alerts about its user (api/my-alerts),
    # so its token needs the service's access scope, which a server token gets only when
    # its user holds it: all users do (the pages still need the auditor's READ_SCOPE).
    access = service_access_scope(name)
    public = str(config.JupyterHub.get("bind_url") or "http://127.0.0.1:8000").rstrip("/")
    return Fragment("the auditor page (hub_ext.audit.web)", services=[service], roles=[role],
                    custom_scopes=scopes, server_token_scopes=[access],
                    environment={AUDIT_URL_ENV: f"{public}/services/{name}/"},
                    settings={"JupyterHub.extra_user_scopes": {access}})


if __name__ == "__main__":
    main()
