"""Asking a hub-managed service (the QPU gateway, the audit service) from the server.

The browser never holds a service credential: the server's handlers ask with this
server's own hub token (``JUPYTERHUB_API_TOKEN``, the token kernels use too), so they can
do nothing the user's kernels cannot. The service's URL comes from the environment the
hub gave the server (behind the hub's proxy). Non-blocking, for the server's event loop.
"""

from __future__ import annotations

import json
import os
from typing import Any
from urllib.parse import urlencode

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

TIMEOUT = 15.0


class ServiceUnavailable(Exception):
    """The service could not be asked; ``status`` and ``body`` are what the page gets."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.body = status, {"error": code, "message": message}


async def ask_service(
    url_env: str, what: str, method: str, path: str, params: dict[str, Any] | None = None,
    *, missing: tuple[str, str], noun: str,
) -> dict[str, Any]:
    """The JSON object ``what`` (e.g. "The QPU gateway") answers at ``path`` of the URL in
    ``$url_env``; ServiceUnavailable with a status and message for the page otherwise.
    ``missing``: (code, message) when the server has no such service; ``noun``: its
    answer's kind ("a gateway")."""
    url = os.environ.get(url_env, "")
    token = os.environ.get("JUPYTERHUB_API_TOKEN", "")
    if not url or not token:
        raise ServiceUnavailable(503, *missing)
    target = url.rstrip("/") + "/" + path + (f"?{urlencode(params)}" if params else "")
    try:
        request = HTTPRequest(
            target, method=method, headers={"Authorization": f"token {token}"},
            request_timeout=TIMEOUT, connect_timeout=TIMEOUT, follow_redirects=False,
            allow_nonstandard_methods=True,
        )
        response = await AsyncHTTPClient().fetch(request, raise_error=False)
    except (OSError, ValueError, HTTPClientError) as e:
        raise ServiceUnavailable(502, "UNREACHABLE",
                                 f"{what} did not answer ({type(e).__name__}).") from None
    try:
        body = json.loads(response.body) if response.body else None
    except ValueError:
        body = None
    if response.code >= 400 or response.code == 599:
        if not isinstance(body, dict) or not isinstance(body.get("message"), str):
            body = {"error": "HTTP_ERROR", "message": f"{what} answered {response.code}."}
        raise ServiceUnavailable(response.code if response.code != 599 else 502,
                                 str(body.get("error", "HTTP_ERROR"))[:64], body["message"][:1000])
    if not isinstance(body, dict):  # a redirect or page from something else at that URL
        raise ServiceUnavailable(502, "BAD_ANSWER",
                                 f"{what}'s URL answered {response.code} without {noun} answer "
                                 f"(is {url_env} right?).")
    return body
