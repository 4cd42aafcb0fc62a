"""The hub hands the QPU gateway its provider credentials, and nothing else.

``GET /hub/api/qustody/qpu/credentials/<backend>`` answers ``{"fields": {...}}`` (the
backend's ``service:qpu/<backend>`` entry of the embedded store) or ``{"fields": null}``
when it has none. Only the token the hub gave its ``qpu`` service is accepted: a user's
token, an admin's, another service's and a browser session get 403. The hub reads the
store with its master key (the store's MACs and head are verified, rollback included),
so the gateway, which decodes hostile QPY from every user, is given no key that opens a
user's secret: through the hub it can ask for the ``service:qpu`` entries it already
uses, nothing more. Run as the hub's own unix user (the default), it could still read
the master key *file* from disk; a separate user or container closes that (docs/qpu.md,
"Provider credentials").

With ``SecretBroker.backend = "vault"`` the gateway reads Vault with its own token and
this endpoint is not installed.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from jupyterhub import orm
from jupyterhub.apihandlers.base import APIHandler
from tornado import web

from hub_ext.secrets.model import SecretError, check_name, parse_namespace
from hub_ext.secrets.provider import NAMESPACE

from .secret_source import SecretStoreCredentials


class ProviderCredentialsHandler(APIHandler):  # type: ignore[misc]
    """The gateway's provider credentials, for the gateway's own token only."""

    def initialize(self, reader: SecretStoreCredentials, service: str) -> None:
        self.reader = reader
        self.service = service

    async def get(self, backend: str) -> None:
        caller = self.current_user
        if not (isinstance(caller, orm.Service) and caller.name == self.service):
            who = getattr(caller, "name", None) or "an unauthenticated caller"
            self.log.warning("Provider credentials refused to %s (not the %s service)",
                             who[:64], self.service)
            raise web.HTTPError(
                403, f"Only the {self.service} service's own hub API token may read provider "
                "credentials.")
        try:
            check_name(backend, parse_namespace(NAMESPACE))
        except SecretError as e:
            raise web.HTTPError(400, str(e)[:300]) from None
        try:
            fields = await asyncio.get_running_loop().run_in_executor(
                None, self.reader.read, backend)
        except SecretError as e:  # names the backend and the store, never a value
            raise web.HTTPError(503, str(e)[:500]) from None
        self.set_header("Cache-Control", "no-store")
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"fields": fields}))


def provider_credentials_route(settings: dict[str, Any], service: str) -> tuple[Any, ...]:
    """The hub route that serves the embedded store's ``service:qpu`` entries to
    ``service`` (with its reader of the store)."""
    return (r"/api/qustody/qpu/credentials/([^/]+)", ProviderCredentialsHandler,
            {"reader": SecretStoreCredentials(**settings), "service": service})


__all__ = ["ProviderCredentialsHandler", "provider_credentials_route"]
