"""The gateway's REST API (Tornado). Every handler authenticates; errors are JSON.

Paths are relative to ``QpuGateway.base_url``; docs/qpu.md lists them with their scopes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST
from tornado import web
from tornado.log import access_log

from . import metrics, provenance
from .auth import SCOPE_ADMIN, SCOPE_READ_ALL, SCOPE_SUBMIT, HubUnavailable, Identity
from .errors import GatewayError
from .models import FINAL_STATES
from .policy import (
    period_keys,
    remaining,
    usage_key,
)
from .policyfile import CLASSES, PERIODS, Policy
from .store import StoreError

if TYPE_CHECKING:
    from .app import QpuGateway

JOB_ID = r"(?P<job_id>[0-9a-f]{32})"
NAME = r"(?P<name>[A-Za-z0-9][A-Za-z0-9_.:\-]{0,254})"  # ':' for personal:<user>
MAX_WAIT = 60.0
#: ``Idempotency-Key`` of ``POST api/jobs``: a client's name for one submission (a UUID fits).
IDEMPOTENCY_KEY = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
SCOPE_METRICS = "read:metrics"  # JupyterHub's scope for /hub/metrics


class BaseHandler(web.RequestHandler):
    gateway: QpuGateway
    identity: Identity
    #: a request here readies the sandbox and parse workers (QpuGateway.warm_up)
    warms = True

    def initialize(self, gateway: QpuGateway) -> None:
        self.gateway = gateway

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Content-Type-Options", "nosniff")

    def check_xsrf_cookie(self) -> None:
        """Token-authenticated API: no cookies are accepted, so there is nothing to forge."""

    def write_json(self, status: int, body: Any) -> None:
        self.set_status(status)
        self.finish(json.dumps(body, default=str))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, GatewayError):
            # tornado answers 500 for any exception that is not its HTTPError
            self.set_status(exc.status)
            body = {"error": exc.code, "message": exc.message,
                    **json.loads(json.dumps(exc.detail, default=str))}
            if "retry_after" in exc.detail:
                self.set_header("Retry-After", str(exc.detail["retry_after"]))
        elif isinstance(exc, web.HTTPError) and exc.log_message and status_code < 500:
            body = {"error": "HTTP_ERROR", "message": exc.log_message % exc.args}
        elif status_code >= 500:
            # Never the exception text: it could carry anything.
            body = {"error": "INTERNAL", "message": "internal error; nothing was changed"}
        else:
            body = {"error": "HTTP_ERROR", "message": self._reason}
        self.finish(json.dumps(body))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, GatewayError | web.HTTPError):  # answered, not a fault
            return
        self.gateway.log.error(
            "QPU %s %s failed: %s", self.request.method, self.request.path, typ.__name__,
            exc_info=(typ, value, tb),
        )

    async def prepare(self) -> None:
        header = self.request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() not in ("token", "bearer") or not token.strip():
            raise GatewayError(
                401, "NO_TOKEN",
                "send your hub API token as 'Authorization: token <token>' (in a notebook, "
                "JUPYTERHUB_API_TOKEN; server_ext.qpu does this)",
            )
        try:
            identity = await self.gateway.resolver.resolve(token.strip())
        except HubUnavailable:
            raise GatewayError(503, "HUB_UNAVAILABLE",
                           "the hub could not confirm your token; try again shortly") from None
        if identity is None:
            raise GatewayError(403, "BAD_TOKEN", "the hub does not know this token (expired or "
                           "revoked?); get a new one from the hub's token page")
        self.identity = identity
        if self.warms:
            self.gateway.warm()

    def require(self, *scopes: str) -> None:
        if not any(self.identity.has(s) for s in scopes):
            raise GatewayError(
                403, "MISSING_SCOPE",
                f"this needs the scope {' or '.join(scopes)}; ask an admin for a role that "
                "grants it (and, for a server token, add it to Spawner.server_token_scopes)",
            )

    def json_body(self) -> Any:
        try:
            return json.loads(self.request.body or b"{}")
        except (ValueError, UnicodeDecodeError):
            raise GatewayError(400, "BAD_JSON", "the body is not valid JSON") from None

    def policy(self) -> Policy:
        return self.gateway.policies.policy

    async def db(self, fn: Any, *args: Any) -> Any:
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self.gateway.db_executor, fn, *args
            )
        except StoreError as e:
            raise GatewayError(503, "DATABASE", f"{e}; nothing was changed, try again") from None

    def can_see(self, job: Mapping[str, Any], *, cancel: bool = False) -> bool:
        if job["owner"] == self.identity.name:
            return True
        if not cancel and self.identity.has(SCOPE_READ_ALL):
            return True
        if self.identity.has(SCOPE_ADMIN):
            return True
        project = self.policy().projects.find(job["project"])
        return bool(project and project.role_of(self.identity.name, self.identity.groups)
                    == "lead")

    async def visible_job(self, job_id: str, *, cancel: bool = False) -> dict[str, Any]:
        job = await self.db(self.gateway.store.job, job_id)
        if job is None or not self.can_see(job, cancel=cancel):
            # The same answer for "no such job" and "not yours": ids are not probed.
            raise GatewayError(404, "NO_SUCH_JOB", f"no job {job_id} among the jobs you can see")
        visible: dict[str, Any] = job
        return visible


class HealthHandler(web.RequestHandler):
    def initialize(self, gateway: QpuGateway) -> None:
        self.gateway = gateway

    def get(self) -> None:
        status = self.gateway.policies.status()
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({
            "status": "ok",
            "policy": status.digest,
            "policy_reload_error": status.error is not None,
        }))


class BackendsHandler(BaseHandler):
    async def get(self, name: str | None = None) -> None:
        self.require(SCOPE_SUBMIT, SCOPE_READ_ALL, SCOPE_ADMIN)
        policy = self.policy()
        mine = policy.projects.projects_of(self.identity.name, self.identity.groups)
        controls = await self.db(self.gateway.store.controls)

        def info(driver_name: str) -> dict[str, Any]:
            d = self.gateway.drivers[driver_name]
            out = d.info()
            out["projects"] = sorted(
                p for p in mine if policy.projects.get(p).allows_backend(driver_name)
            )
            out["max_shots"] = min(d.max_shots, self.gateway.max_shots)
            out["max_circuits"] = self.gateway.max_circuits
            out["paused"] = bool(controls.get(f"backend:{driver_name}", {}).get("active"))
            res = policy.reservation_at(driver_name, time.time())
            out["reserved_for"] = res.project if res else None
            return out

        if name is None:
            usable = [n for n in self.gateway.drivers if info(n)["projects"]
                      or self.identity.has(SCOPE_READ_ALL) or self.identity.has(SCOPE_ADMIN)]
            self.write_json(200, {"backends": [info(n) for n in usable]})
            return
        if name not in self.gateway.drivers:
            raise GatewayError(404, "UNKNOWN_BACKEND", self.gateway.unknown_backend(name))
        body = info(name)
        body["target"] = self.gateway.drivers[name].public
        self.write_json(200, body)


@web.stream_request_body
class JobsHandler(BaseHandler):
    _chunks: list[bytes]
    _size: int

    async def prepare(self) -> None:
        self._chunks, self._size = [], 0
        if self.request.method == "POST":
            limit = self.gateway.max_payload_bytes
            claimed = self.request.headers.get("Content-Length")
            if claimed is not None:
                try:
                    size = int(claimed)
                except ValueError:
                    raise GatewayError(400, "BAD_LENGTH",
                                       "Content-Length is not a number") from None
                if size > limit:
                    raise GatewayError(
                        413, "PAYLOAD_TOO_LARGE",
                        f"the request claims {size} bytes; the limit is {limit} bytes "
                        "(QpuGateway.max_payload_bytes): split the job",
                        limit=limit, size=size,
                    )
            # A little above the limit, so data_received refuses with a message first.
            self.request.connection.set_max_body_size(  # type: ignore[union-attr]
                limit + 1024 * 1024
            )
        await super().prepare()

    def data_received(self, chunk: bytes) -> None:
        if self._finished:
            return
        self._size += len(chunk)
        if self._size > self.gateway.max_payload_bytes:
            # A body without Content-Length (chunked) that grows past the limit: answer now
            # and let the connection close; nothing is kept.
            self._chunks = []
            self.set_status(413)
            self.finish(json.dumps({
                "error": "PAYLOAD_TOO_LARGE",
                "message": f"the body exceeds the limit of {self.gateway.max_payload_bytes} "
                "bytes (QpuGateway.max_payload_bytes): split the job",
            }))
            return
        self._chunks.append(chunk)

    async def get(self) -> None:
        self.require(SCOPE_SUBMIT, SCOPE_READ_ALL, SCOPE_ADMIN)
        policy = self.policy()
        project = self.get_argument("project", None)
        state = self.get_argument("state", None)
        everyone = self.get_argument("all", "") == "1"
        mine = self.get_argument("mine", "") == "1"  # the caller's own, even as a lead
        try:
            limit = min(1000, max(1, int(self.get_argument("limit", "100"))))
        except ValueError:
            raise GatewayError(400, "BAD_FIELD", "limit must be a number") from None
        if everyone:
            self.require(SCOPE_READ_ALL, SCOPE_ADMIN)
            rows = await self.db(lambda: self.gateway.store.jobs(everyone=True, state=state,
                                                                  limit=limit))
        else:
            led = [] if mine else [
                p for p, role in policy.projects.projects_of(
                    self.identity.name, self.identity.groups).items() if role == "lead"
            ]
            if project:
                if project not in led and not self.identity.has(SCOPE_READ_ALL):
                    raise GatewayError(403, "NOT_PROJECT_LEAD",
                                   f"only leads of {project!r} list its jobs")
                led = [project]
            rows = await self.db(lambda: self.gateway.store.jobs(
                owner=None if project else self.identity.name, projects=led, state=state,
                limit=limit))
        self.write_json(200, {"jobs": [public_job(r) for r in rows]})

    async def post(self) -> None:
        if self._finished:
            return
        self.require(SCOPE_SUBMIT)
        if not self.request.headers.get("Content-Type", "").startswith("application/json"):
            raise GatewayError(415, "BAD_CONTENT_TYPE", "send the job as application/json")
        key = self.idempotency_key()
        data, self._chunks = b"".join(self._chunks), []
        admitted = await self.gateway.submit(self.identity, data, key)
        # With a key, every answer says whether it is the first one (docs/qpu.md).
        replay = {} if key is None else {"replayed": admitted.replayed}
        if admitted.replayed:
            self.set_header("Idempotent-Replayed", "true")
        if admitted.refused is not None:
            r = admitted.refused
            self.write_json(r.status, {
                "error": r.code, "message": r.message, "job_id": admitted.job_id or None,
                "state": "REJECTED", "reason": f"REJECTED:{r.code}", **provenance_safe(r.detail),
                **replay,
            })
            return
        # A repeat created nothing: 200, with the job as it stands now.
        self.write_json(200 if admitted.replayed else 201, {
            "job_id": admitted.job_id,
            "state": admitted.state,
            "reason": f"{admitted.state}:{admitted.reason}",
            "warnings": admitted.warnings,
            "ignored": admitted.ignored,
            **replay,
        })

    def idempotency_key(self) -> str | None:
        values = self.request.headers.get_list("Idempotency-Key")
        if not values:
            return None
        if len(values) > 1 or not IDEMPOTENCY_KEY.fullmatch(values[0]):
            value = values[0]
            got = (f"{len(values)} Idempotency-Key headers" if len(values) > 1 else
                   "an empty value" if not value else
                   f"{len(value)} characters" if len(value) > 128 else
                   "a character outside that set")
            raise GatewayError(
                400, "BAD_IDEMPOTENCY_KEY",
                "send one Idempotency-Key of 1-128 characters from A-Z, a-z, 0-9 and "
                f"'.', '_', ':', '-' (a UUID is a good key), or none; got {got}",
            )
        return values[0]


def provenance_safe(detail: Mapping[str, Any]) -> dict[str, Any]:
    return {"detail": json.loads(json.dumps(dict(detail), default=str))}


def public_job(row: Mapping[str, Any], placement: Any = None) -> dict[str, Any]:
    out = {
        "job_id": row["id"],
        "owner": row["owner"],
        "project": row["project"],
        "backend": row["backend"],
        "requested_backend": row["requested_backend"],
        "state": row["state"],
        "reason": f"{row['state']}:{row['reason']}",
        "tier": row["tier"],
        "sensitivity": row["sensitivity"],
        "shots": row["shots"],
        "circuits": row["n_circuits"],
        "submitted_at": row["submitted_at"],
        "started_at": row["started_at"],
        "finished_at": row["finished_at"],
        "backend_seconds": row["used_seconds"],
        "held": {"jobs": row["held_jobs"], "shots": row["held_shots"],
                 "seconds": row["held_seconds"]},
        "tags": row["tags"],
        "error": row["error"],
        "queue_position": None,
        "estimated_start": None,
    }
    if placement is not None:
        out["state"] = placement.state
        out["reason"] = f"{placement.state}:{placement.reason}"
        out["queue_position"] = placement.position
        out["estimated_start"] = placement.estimated_start
    return out


class JobHandler(BaseHandler):
    async def get(self, job_id: str) -> None:
        self.require(SCOPE_SUBMIT, SCOPE_READ_ALL, SCOPE_ADMIN)
        job = await self.visible_job(job_id)
        try:
            wait = min(MAX_WAIT, max(0.0, float(self.get_argument("wait", "0"))))
        except ValueError:
            raise GatewayError(400, "BAD_FIELD", "wait must be a number of seconds") from None
        start = time.monotonic()
        deadline = start + wait
        result: bytes | None = None
        while job["state"] not in FINAL_STATES and time.monotonic() < deadline:
            # Woken at once when this process finishes it; another worker or replica may
            # run it, so re-read at a quarter of the time waited so far (5 ms to 0.25 s):
            # an answer comes at most ~25% late, at a few cheap reads per job.
            now = time.monotonic()
            poll = min(0.25, max(0.005, (now - start) / 4))
            outcome = await self.gateway.runner.wait_finished(job_id, min(poll, deadline - now))
            recorded = outcome[0] if outcome is not None else None
            if outcome is not None and recorded is not None:
                job, result = recorded, outcome[1]
            else:
                job = await self.db(self.gateway.store.job, job_id)
        placement = None
        if job["state"] in ("QUEUED", "HELD"):
            driver = self.gateway.drivers.get(job["backend"])
            if driver is not None:
                placements = await self.db(
                    self.gateway.store.placements, job["backend"], driver.lanes, self.policy()
                )
                placement = placements.get(job_id)
        out = public_job(job, placement)
        include = self.get_argument("include", "")
        if include in ("provenance", "decisions"):
            out["provenance"] = job["provenance"]
            out["decisions"] = await self.db(self.gateway.store.decisions, job_id)
        if include == "result" and job["state"] == "DONE":
            # The stored result is JSON already: splice it in rather than parse and re-dump.
            data = result or await self.db(self.gateway.store.result, job_id)
            head = json.dumps(out, default=str)
            self.set_status(200)
            self.finish(head[:-1].encode() + b', "result": ' + (data or b"null") + b"}")
            return
        self.write_json(200, out)

    async def delete(self, job_id: str) -> None:
        self.require(SCOPE_SUBMIT, SCOPE_ADMIN)
        await self.visible_job(job_id, cancel=True)
        reason = self.get_argument("reason", "cancelled by the user")[:500]
        await self.gateway.cancel(job_id, self.identity.name, reason)
        job = await self.db(self.gateway.store.job, job_id)
        self.write_json(200, public_job(job))


class ResultHandler(BaseHandler):
    async def get(self, job_id: str) -> None:
        self.require(SCOPE_SUBMIT, SCOPE_READ_ALL, SCOPE_ADMIN)
        job = await self.visible_job(job_id)
        if job["state"] != "DONE":
            raise GatewayError(409, "NOT_DONE", f"job {job_id} is {job['state']}:{job['reason']}; "
                           "results exist only for DONE jobs", state=job["state"])
        data = await self.db(self.gateway.store.result, job_id)
        self.set_status(200)
        self.finish(data or b"null")


class QuotaHandler(BaseHandler):
    async def get(self) -> None:
        self.require(SCOPE_SUBMIT, SCOPE_READ_ALL, SCOPE_ADMIN)
        policy = self.policy()
        mine = policy.projects.projects_of(self.identity.name, self.identity.groups)
        project = self.get_argument("project", None)
        user = self.get_argument("user", self.identity.name)
        if user != self.identity.name:
            self.require(SCOPE_READ_ALL, SCOPE_ADMIN)
        projects = [project] if project else sorted(mine)
        for p in projects:
            if p not in mine and not self.identity.has(SCOPE_READ_ALL):
                raise GatewayError(403, "NOT_A_MEMBER", f"{p!r} is not one of your projects "
                               f"({', '.join(sorted(mine)) or 'none'})")
        classes = [self.get_argument("backend_class")] if self.get_argument(
            "backend_class", None) else list(CLASSES)
        if any(c not in CLASSES for c in classes):
            raise GatewayError(400, "BAD_FIELD", f"backend_class is one of {CLASSES}")
        periods = period_keys(time.time())
        # a course limits each student too (its per-student budget: "member" usage)
        members = [f"{p}/{user}" for p in projects if p in policy.member_overrides]
        keys = [
            usage_key(kind, subject, c, period, periods[period])
            for kind, subjects in (("user", [user]), ("project", projects), ("member", members))
            for subject in subjects for c in classes for period in PERIODS
        ]
        used = await self.db(self.gateway.store.usage, keys)

        def block(kind: str, subject: str) -> dict[str, Any]:
            return {
                c: remaining(policy, kind, subject, c, {
                    period: used.get(usage_key(kind, subject, c, period, periods[period]), {})
                    for period in PERIODS
                })
                for c in classes
            }

        self.write_json(200, {
            "user": {"name": user, "quota": block("user", user)},
            "projects": {
                p: {
                    "role": mine.get(p),
                    "quota": block("project", p),
                    **({"your_quota": block("member", f"{p}/{user}")}
                       if p in policy.member_overrides else {}),
                }
                for p in projects
            },
            "periods": periods,
        })


class ProjectsHandler(BaseHandler):
    async def get(self) -> None:
        self.require(SCOPE_SUBMIT, SCOPE_READ_ALL, SCOPE_ADMIN)
        policy = self.policy()
        mine = policy.projects.projects_of(self.identity.name, self.identity.groups)
        self.write_json(200, {
            "user": self.identity.name,
            "projects": {
                name: {
                    "role": role,
                    "backends": list(policy.projects.get(name).backends),
                    "sensitivity": policy.projects.get(name).sensitivity,
                    "max_tier": policy.projects.get(name).max_tier,
                    "purpose": policy.projects.get(name).purpose or None,
                }
                for name, role in mine.items()
            },
            "purposes": list(policy.purposes),
            "tiers": dict(policy.tiers),
            "default_tier": policy.default_tier,
            "sensitivity_levels": list(policy.levels),
        })


ADMIN_ACTIONS = re.compile(r"^(pause|resume|drain|revoke|restore|cancel)$")


class AdminHandler(BaseHandler):
    """Break-glass actions. Each needs a ``reason`` and is recorded with who and when."""

    async def post(self, kind: str, name: str, action: str) -> None:
        self.require(SCOPE_ADMIN)
        body = self.json_body()
        reason = body.get("reason") if isinstance(body, dict) else None
        if not isinstance(reason, str) or not reason.strip() or len(reason) > 1000:
            raise GatewayError(400, "REASON_REQUIRED",
                           "give a 'reason' (1-1000 characters): it goes into the record")
        result = await self.gateway.operate(self.identity.name, kind, name, action, reason)
        self.write_json(200, result)

    async def get(self, kind: str, name: str, action: str) -> None:
        raise GatewayError(405, "METHOD", "use POST")


class AdminListHandler(BaseHandler):
    async def get(self, what: str) -> None:
        if what == "export":
            self.require(SCOPE_READ_ALL, SCOPE_ADMIN)
            try:
                since = float(self.get_argument("since", "0"))
            except ValueError:
                raise GatewayError(400, "BAD_FIELD", "since is a UNIX time") from None
            self.set_header("Content-Type", "application/x-ndjson")
            lines = await self.db(lambda: list(provenance.jsonl(
                self.gateway.store.export(since))))
            for line in lines:
                self.write(line)
            self.finish()
            return
        self.require(SCOPE_ADMIN, SCOPE_READ_ALL)
        if what == "actions":
            self.write_json(200, {"actions": await self.db(self.gateway.store.actions)})
        elif what == "controls":
            self.write_json(200, {"controls": await self.db(self.gateway.store.controls)})
        elif what == "stats":
            self.write_json(200, {"jobs": await self.db(self.gateway.store.counts),
                                  "instance": self.gateway.instance_name,
                                  "decoding": self.gateway.decoding})
        else:
            raise GatewayError(404, "NOT_FOUND", f"no admin listing {what!r}")

    async def post(self, what: str) -> None:
        self.require(SCOPE_ADMIN)
        if what != "reload":
            raise GatewayError(404, "NOT_FOUND", f"no admin action {what!r}")
        changed = self.gateway.reload_policy(force=True, by=self.identity.name)
        status = self.gateway.policies.status()
        await self.db(self.gateway.store.record_action, self.identity.name, "reload-policy",
                      "policy", "manual reload", {"digest": status.digest,
                                                  "error": status.error})
        self.write_json(200 if status.error is None else 422, {
            "policy": status.digest, "changed": changed, "error": status.error,
        })


def log_request(handler: web.RequestHandler) -> None:
    """Access log: answered requests at DEBUG (the audit log records every job, and a line
    per submission would cost more than admitting it), refusals at INFO, failures at
    ERROR."""
    status = handler.get_status()
    level = logging.DEBUG if status < 400 else logging.INFO if status < 500 else logging.ERROR
    if access_log.isEnabledFor(level):
        request = handler.request
        access_log.log(level, "%d %s %s (%s) %.2fms", status, request.method, request.path,
                       request.remote_ip, 1000.0 * request.request_time())


class MetricsHandler(BaseHandler):
    """``GET metrics``: Prometheus text format, for a token with ``read:metrics``."""

    warms = False  # a scrape is not a user of the QPU

    async def get(self) -> None:
        self.require(SCOPE_METRICS)
        body = await self.db(metrics.exposition)
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(body)


class MemberUsageHandler(BaseHandler):
    """``GET api/projects/<project>/usage?user=a&user=b``: each member's own usage and
    limits in the project (a course's per-student budget), for the project's leads (its
    instructors) and readers of everything. A member's usage elsewhere is not shown."""

    MAX_USERS = 1000

    async def get(self, name: str) -> None:
        self.require(SCOPE_SUBMIT, SCOPE_READ_ALL, SCOPE_ADMIN)
        policy = self.policy()
        mine = policy.projects.projects_of(self.identity.name, self.identity.groups)
        if mine.get(name) != "lead" and not self.identity.has(SCOPE_READ_ALL):
            raise GatewayError(403, "NOT_A_LEAD", f"only the leads of {name!r} (a course's "
                               "instructors) may read its members' usage")
        users = sorted({u for u in self.get_arguments("user") if u})
        if len(users) > self.MAX_USERS:
            raise GatewayError(400, "BAD_FIELD", f"at most {self.MAX_USERS} users per request")
        periods = period_keys(time.time())
        subjects = [f"{name}/{u}" for u in users]
        keys = [usage_key("member", s, c, period, periods[period])
                for s in subjects for c in CLASSES for period in PERIODS]
        used = await self.db(self.gateway.store.usage, keys)
        self.write_json(200, {
            "project": name,
            "limited": name in policy.member_overrides,
            "periods": periods,
            "members": {
                u: {c: remaining(policy, "member", s, c, {
                    period: used.get(usage_key("member", s, c, period, periods[period]), {})
                    for period in PERIODS
                }) for c in CLASSES}
                for u, s in zip(users, subjects, strict=True)
            },
        })


def routes(gateway: QpuGateway, base: str) -> list[Any]:
    kw = {"gateway": gateway}
    return [
        (rf"{base}api/health", HealthHandler, kw),
        (rf"{base}metrics", MetricsHandler, kw),
        (rf"{base}api/backends", BackendsHandler, kw),
        (rf"{base}api/backends/{NAME}", BackendsHandler, kw),
        (rf"{base}api/jobs", JobsHandler, kw),
        (rf"{base}api/jobs/{JOB_ID}", JobHandler, kw),
        (rf"{base}api/jobs/{JOB_ID}/result", ResultHandler, kw),
        (rf"{base}api/quota", QuotaHandler, kw),
        (rf"{base}api/projects", ProjectsHandler, kw),
        (rf"{base}api/projects/{NAME}/usage", MemberUsageHandler, kw),
        (rf"{base}api/admin/(?P<what>export|actions|controls|stats|reload)", AdminListHandler,
         kw),
        (rf"{base}api/admin/(?P<kind>backends|projects|users|jobs)/{NAME}/"
         r"(?P<action>pause|resume|drain|revoke|restore|cancel)", AdminHandler, kw),
    ]
