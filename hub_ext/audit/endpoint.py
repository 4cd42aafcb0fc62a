"""The hub endpoint user servers report their audit events to.

``POST /hub/api/qustody/audit/events`` with ``Authorization: token $JUPYTERHUB_API_TOKEN``
and a JSON body ``{"type": "save-refused", "data": {...}}``. ``audit_reports()`` is its
fragment for ``hub_ext.wiring.apply``.

Only a running server's own token is accepted: the token must be the one the hub gave
that server when it spawned it (``Spawner.api_token``, or after a hub restart the
server's OAuth client secret, which the hub stores hashed). A user's personal API token
or browser session is refused, whatever its note says. The hub then stamps the event
with that server's user and name, so no server can write as another user or server.
"""

from __future__ import annotations

import hmac
import json
from typing import Any, NoReturn

from jupyterhub.apihandlers.base import APIHandler
from jupyterhub.utils import compare_token
from tornado import web

from ..ratelimit import LimitedHandler
from ..wiring import Fragment
from .errors import AuditError, UserEventRefused
from .hub import hub_audit

PATH = r"/api/qustody/audit/events"
MAX_BODY_BYTES = 64 * 1024


def server_of_token(user: Any, token: str) -> str | None:
    """Name of ``user``'s running server whose own hub token is ``token``, if any."""
    for name, spawner in list(user.spawners.items()):
        if not (spawner.active or spawner.ready):
            continue
        if spawner.api_token and hmac.compare_digest(spawner.api_token, token):
            return str(name)
    # After a hub restart Spawner.api_token is empty; the server's OAuth client keeps
    # the same token, hashed.
    for name, spawner in list(user.spawners.items()):
        client = getattr(spawner.orm_spawner, "oauth_client", None)
        live = spawner.active or spawner.ready
        if live and client is not None and client.secret and compare_token(client.secret, token):
            return str(name)
    return None


class AuditEventHandler(LimitedHandler, APIHandler):  # type: ignore[misc]
    """Records one event from a user server, stamped with the server's identity.

    Rate-limited per token and per address, and the record is written by the write
    threads, not on the hub's event loop (``hub_ext.ratelimit``)."""

    def _refuse(self, status: int, message: str) -> NoReturn:
        raise web.HTTPError(status, message)

    async def post(self) -> None:
        token = self.get_auth_token()
        orm_token = self.get_token() if token else None
        if not token or orm_token is None:
            self._refuse(
                401,
                "Send the server's own hub token: Authorization: token $JUPYTERHUB_API_TOKEN",
            )
        if orm_token.user is None:
            self._refuse(403, "Only a user's running server may report audit events.")
        user = self._user_from_orm(orm_token.user)
        server = server_of_token(user, token)
        if server is None:
            self._refuse(
                403,
                "This token is not the hub token of a running server: only a user's server "
                "may report audit events, with its own JUPYTERHUB_API_TOKEN.",
            )
        self.authenticated(token)
        event = self._event()
        try:
            recorded = await self.offload(hub_audit().record_user_event, user.name, server, event)
        except UserEventRefused as e:
            self._refuse(e.status, e.message)
        except ValueError as e:
            self._refuse(400, str(e))
        except AuditError as e:
            self.log.error("audit event from %s/%s not recorded: %s", user.name, server, e.message)
            self._refuse(503, f"The hub could not record the event ({e.message}); retry later.")
        self.set_status(201)
        self.finish(
            json.dumps({"seq": recorded.seq, "ts": recorded.ts} if recorded else {"seq": None})
        )

    def _event(self) -> Any:
        body = self.request.body
        if len(body) > MAX_BODY_BYTES:
            self._refuse(413, f"The event is {len(body)} bytes; the limit is {MAX_BODY_BYTES}.")
        content_type = self.request.headers.get("Content-Type", "application/json")
        if not content_type.lower().startswith("application/json"):
            self._refuse(415, "Send the event as Content-Type: application/json.")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            self._refuse(400, "The body is not UTF-8; send the event as UTF-8 JSON.")
        try:
            # Never log the body: it is the server's word and may hold anything.
            return json.loads(text)
        except ValueError as e:
            self._refuse(
                400,
                f"The body is not valid JSON (line {getattr(e, 'lineno', '?')}, column "
                f'{getattr(e, "colno", "?")}); send {{"type": ..., "data": {{...}}}}.',
            )


def audit_reports() -> Fragment:
    """The endpoint user servers report audit events to (a hub route, for now)."""
    return Fragment("audit reports (hub_ext.audit.endpoint)",
                    handlers=[(PATH, AuditEventHandler)])
