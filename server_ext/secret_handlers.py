"""``/qustody/api/secrets``: which secrets this server holds, and refresh.

No endpoint returns a value: kernels read values from the files on the tmpfs (or
their environment), so values never travel in an HTTP response of the server.
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


class SecretsHandler(_SecretsHandler):
    """``GET /qustody/api/secrets``: names, classes and versions (never values)."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        c = self.client
        self.finish(
            json.dumps({"broker": c.broker, "directory": str(c.directory), "secrets": c.names()})
        )


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
