"""``/qustody/api/secrets``: which secrets this server holds, refresh, and store.

No endpoint returns a value: kernels read values from the files on the tmpfs (or
their environment), so values never travel in an HTTP response of the server. A value
travels only inward: ``POST /qustody/api/secrets`` hands one the user typed or moved out
of a notebook to the hub, which stores it in the user's own namespace.
"""

from __future__ import annotations

import asyncio
import json

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import web

from .secret_store import DeliveryError, SecretClient


class _SecretsHandler(ExtensionHandlerMixin, APIHandler):
    # Knowing which credentials a server holds is as sensitive as reading its files.
    auth_resource = "contents"

    @property
    def client(self) -> SecretClient:
        client: SecretClient | None = self.settings.get("qustody_secrets")
        if client is None:
            raise web.HTTPError(503, "Qustody secret delivery is not running on this server.")
        return client


MAX_STORE_BODY = 80 * 1024


class SecretsHandler(_SecretsHandler):
    """``GET /qustody/api/secrets``: names, classes and versions (never values), and the
    class a stored secret gets (null: this server may not store). ``POST`` with
    ``{"name", "value"}``: store a new secret of the user's (201 with its name, class and
    version), then hold it like any delivered one."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        c = self.client
        self.finish(
            json.dumps(
                {
                    "broker": c.broker,
                    "directory": str(c.directory),
                    "secrets": c.names(),
                    "self_service_class": c.self_service_class,
                }
            )
        )

    @web.authenticated
    @authorized
    async def post(self) -> None:
        c = self.client
        raw = self.request.body or b""
        if len(raw) > MAX_STORE_BODY:
            raise web.HTTPError(413, f"The request body is larger than {MAX_STORE_BODY} bytes.")
        try:
            body = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise web.HTTPError(400, 'Send JSON: {"name": "<NAME>", "value": "<value>"}.') from None
        if not isinstance(body, dict):
            raise web.HTTPError(400, 'Send a JSON object: {"name": "<NAME>", "value": "..."}.')
        name, value = body.get("name"), body.get("value")
        if not isinstance(name, str) or not isinstance(value, str) or not name or not value:
            raise web.HTTPError(400, 'Send {"name": "<NAME>", "value": "<value>"}, both text.')
        try:
            stored = await asyncio.to_thread(c.store, name, value)
        except DeliveryError as e:
            # the hub's refusals keep their meaning (a clash stays 409); else the hub failed
            if e.status in (400, 403, 409, 413):
                raise web.HTTPError(e.status, e.detail) from None
            raise web.HTTPError(502, f"Not stored: {e}") from None
        self.set_status(201)
        self.finish(json.dumps({**stored, "secrets": c.names()}))



class RefreshHandler(_SecretsHandler):
    """``POST /qustody/api/secrets/refresh``: fetch current values from the hub."""

    @web.authenticated
    @authorized
    async def post(self) -> None:
        c = self.client
        try:
            await asyncio.to_thread(c.refresh)
        except DeliveryError as e:
            raise web.HTTPError(502, f"Secrets could not be refreshed: {e}") from None
        self.finish(json.dumps({"broker": c.broker, "secrets": c.names()}))


SECRET_HANDLERS = [
    (r"/qustody/api/secrets", SecretsHandler),
    (r"/qustody/api/secrets/refresh", RefreshHandler),
]
