"""The QPU gateway's provider credentials, from the ``qustody`` service, and nothing else.

``GET api/qpu/credentials/<backend>`` answers ``{"fields": {...}}`` (the backend's
``service:qpu/<backend>`` entry of the embedded store) or ``{"fields": null}`` when it
has none. Only the ``qpu`` service's own hub API token is accepted: a user's token, an
admin's, another service's get 403. This service reads the store with its master key
(the store's MACs and head are verified, rollback included), so the gateway, which
decodes hostile QPY from every user, is given no key that opens a user's secret: it can
ask for the ``service:qpu`` entries it already uses, nothing more. Run as the hub's own
unix user (the default), it could still read the master key *file* from disk; a separate
user or container closes that (docs/qpu.md, "Provider credentials").

With ``SecretBroker.backend = "vault"`` the gateway reads Vault with its own token and
this route answers 404.
"""

from __future__ import annotations

import asyncio
import json

from tornado import web

from ..qpu.secret_source import SecretStoreCredentials
from ..secrets.model import SecretError, check_name, parse_namespace
from ..secrets.provider import NAMESPACE
from .base import ServiceHandler

GATEWAY = "qpu"


class ProviderCredentialsHandler(ServiceHandler):
    """The gateway's provider credentials, for the gateway's own token only."""

    async def get(self, backend: str) -> None:
        reader: SecretStoreCredentials | None = self.settings.get("credentials")
        identity = await self.identity()
        if identity is None or identity.kind != "service" or identity.name != GATEWAY:
            who = identity.name if identity is not None else "an unauthenticated caller"
            self.log.warning("Provider credentials refused to %s (not the %s service)",
                             who[:64], GATEWAY)
            raise web.HTTPError(
                403, f"Only the {GATEWAY} service's own hub API token may read provider "
                "credentials.")
        if reader is None:
            raise web.HTTPError(404, "This hub keeps provider credentials in Vault: the "
                                "gateway reads them there with its own token.")
        try:
            check_name(backend, parse_namespace(NAMESPACE))
        except SecretError as e:
            raise web.HTTPError(400, str(e)[:300]) from None
        try:
            fields = await asyncio.get_running_loop().run_in_executor(None, reader.read, backend)
        except SecretError as e:  # names the backend and the store, never a value
            raise web.HTTPError(503, str(e)[:500]) from None
        self.set_header("Cache-Control", "no-store")
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"fields": fields}))


ROUTES = [(r"api/qpu/credentials/([^/]+)", ProviderCredentialsHandler)]
