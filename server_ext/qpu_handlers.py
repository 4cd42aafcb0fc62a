"""``/qustody/api/qpu``: the QPU gateway as the researcher's JupyterLab panel sees it.

The browser never holds a gateway credential: these handlers ask the gateway with this
server's own hub token (``JUPYTERHUB_API_TOKEN``, the token kernels use too), so they can
do nothing the user's kernels cannot. Reads: the backends the user's projects may use,
the quota left (user and projects, today and this month), the user's jobs and one job's
provenance (what the gateway recorded and every decision it took); one write: cancel one
of them. Gateway refusals pass through with their reason code. (Not through
``server_ext.qpu.GatewayClient``: that one is for kernels, blocking and loads Qiskit, which
the server's event loop must neither wait on nor import.)
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from tornado import web

from .hub_services import ServiceUnavailable, ask_service

MAX_JOBS = 50
JOB_ID = re.compile(r"[0-9a-f]{32}")
MAX_PLACED = 5  # waiting jobs whose queue position is asked for on each poll


#: The gateway could not be asked (``status`` and ``body`` are what the page gets).
GatewayUnavailable = ServiceUnavailable
_NO_GATEWAY = ("NO_GATEWAY", "This server has no QPU gateway (it is not running under a hub "
               "with Qustody's gateway).")


async def _gateway(
    method: str, path: str, params: dict[str, Any] | None = None
) -> dict[str, Any]:
    return await ask_service("QUSTODY_QPU_URL", "The QPU gateway", method, path, params,
                             missing=_NO_GATEWAY, noun="a gateway")


class _QpuHandler(APIHandler):
    # the same power as the user's kernels, which hold the same token
    auth_resource = "kernels"

    def fail(self, error: GatewayUnavailable) -> None:
        self.set_status(error.status)
        self.finish(json.dumps(error.body))


class QpuOverviewHandler(_QpuHandler):
    """``GET /qustody/api/qpu``: backends, quota and the user's newest jobs, in one answer."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        try:
            backends, quota, jobs = await asyncio.gather(
                _gateway("GET", "api/backends"),
                _gateway("GET", "api/quota"),
                _gateway("GET", "api/jobs", {"limit": MAX_JOBS, "mine": 1}),
            )
        except GatewayUnavailable as e:
            self.fail(e)
            return
        listed = jobs.get("jobs", [])
        await _placed(listed)
        self.finish(json.dumps({
            "backends": backends.get("backends", []),
            "quota": quota,
            "jobs": listed,
        }))


async def _placed(jobs: list[Any]) -> None:
    """Queue position and estimated start of the first waiting jobs: the listing has no
    placement, one job's own answer has (a few requests, not one per job)."""
    waiting = [j for j in jobs if isinstance(j, dict) and j.get("state") == "QUEUED"
               and JOB_ID.fullmatch(str(j.get("job_id")))][:MAX_PLACED]
    answers = await asyncio.gather(
        *(_gateway("GET", f"api/jobs/{j['job_id']}") for j in waiting), return_exceptions=True
    )
    for job, answer in zip(waiting, answers, strict=True):
        if isinstance(answer, dict):
            for key in ("state", "reason", "queue_position", "estimated_start"):
                job[key] = answer.get(key)


class QpuJobHandler(_QpuHandler):
    """``GET /qustody/api/qpu/jobs/<id>``: one job with its provenance and decisions, as
    the gateway shows it to this user (another user's job is the gateway's 404)."""

    @web.authenticated
    @authorized
    async def get(self, job_id: str) -> None:
        try:
            job = await _gateway("GET", f"api/jobs/{job_id}", {"include": "provenance"})
        except GatewayUnavailable as e:
            self.fail(e)
            return
        self.finish(json.dumps(job))


class QpuCancelHandler(_QpuHandler):
    """``POST /qustody/api/qpu/jobs/<id>/cancel``: cancel one of the user's jobs."""

    @web.authenticated
    @authorized
    async def post(self, job_id: str) -> None:
        try:
            job = await _gateway("DELETE", f"api/jobs/{job_id}")
        except GatewayUnavailable as e:
            self.fail(e)
            return
        self.finish(json.dumps(job))


QPU_HANDLERS = [
    (r"/qustody/api/qpu", QpuOverviewHandler),
    (rf"/qustody/api/qpu/jobs/(?P<job_id>{JOB_ID.pattern})", QpuJobHandler),
    (rf"/qustody/api/qpu/jobs/(?P<job_id>{JOB_ID.pattern})/cancel", QpuCancelHandler),
]
