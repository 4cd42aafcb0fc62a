"""``/qustody/api/qpu``: the QPU gateway as the researcher's JupyterLab panel sees it.

The browser never holds a gateway credential: these handlers ask the gateway with this
server's own hub token (``JUPYTERHUB_API_TOKEN``, the token kernels use too), so they can
do nothing the user's kernels cannot. Reads: the backends the user's projects may use,
the quota left (user and projects, today and this month) and the user's jobs; one write:
cancel one of them. Gateway refusals pass through with their reason code.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any
from urllib.parse import urlencode

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

TIMEOUT = 15.0
MAX_JOBS = 50


class GatewayUnavailable(Exception):
    """The gateway could not be asked; ``status`` and ``body`` are what the page gets."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.body = status, {"error": code, "message": message}


async def _gateway(method: str, path: str, params: dict[str, Any] | None = None) -> Any:
    url = os.environ.get("QUSTODY_QPU_URL", "")
    token = os.environ.get("JUPYTERHUB_API_TOKEN", "")
    if not url or not token:
        raise GatewayUnavailable(
            503, "NO_GATEWAY", "This server has no QPU gateway (it is not running under a "
            "hub with Qustody's gateway).")
    target = url.rstrip("/") + "/" + path + (f"?{urlencode(params)}" if params else "")
    request = HTTPRequest(
        target, method=method, headers={"Authorization": f"token {token}"},
        request_timeout=TIMEOUT, connect_timeout=TIMEOUT, follow_redirects=False,
        allow_nonstandard_methods=True,
    )
    try:
        response = await AsyncHTTPClient().fetch(request, raise_error=False)
    except (OSError, HTTPClientError) as e:
        raise GatewayUnavailable(502, "UNREACHABLE",
                                 f"The QPU gateway did not answer ({type(e).__name__}).") from None
    try:
        body = json.loads(response.body) if response.body else None
    except ValueError:
        body = None
    if response.code >= 400 or response.code == 599:
        if not isinstance(body, dict) or not isinstance(body.get("message"), str):
            body = {"error": "HTTP_ERROR", "message": f"The QPU gateway answered {response.code}."}
        raise GatewayUnavailable(response.code if response.code != 599 else 502,
                                 str(body.get("error", "HTTP_ERROR"))[:64], body["message"][:1000])
    return body


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
                _gateway("GET", "api/jobs", {"limit": MAX_JOBS}),
            )
        except GatewayUnavailable as e:
            self.fail(e)
            return
        self.finish(json.dumps({
            "backends": backends.get("backends", []),
            "quota": quota,
            "jobs": jobs.get("jobs", []),
        }))


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
    (r"/qustody/api/qpu/jobs/(?P<job_id>[0-9a-f]{32})/cancel", QpuCancelHandler),
]
