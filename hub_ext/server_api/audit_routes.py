"""The route user servers report their audit events to, in the ``qustody`` service.

``POST $QUSTODY_API_URL api/audit/events`` with ``Authorization: token
$JUPYTERHUB_API_TOKEN`` and a JSON body ``{"type": "save-refused", "data": {...}}``.

Only a running server's own token is accepted: the hub must name the server the token
belongs to (``base.ServerCaller``: a user's personal API token or browser session is
refused, whatever its note says). The service then stamps the event with that server's
user and name, so no server can write as another user or server. It records with the
same ``AuditLog`` that delivers secrets, so every value it delivered is cut out of the
servers' reports too.
"""

from __future__ import annotations

import json
from typing import Any, NoReturn

from tornado import web

from ..audit.errors import AuditError, UserEventRefused
from ..audit.hub import hub_audit
from ..qpu.auth import HubUnavailable
from .base import ServiceHandler

MAX_BODY_BYTES = 64 * 1024


class AuditEventHandler(ServiceHandler):
    """Records one event from a user server, stamped with the server's identity.

    Rate-limited per token and per address, and the record is written by the write
    threads, not on the event loop (``hub_ext.ratelimit``)."""

    def _refuse(self, status: int, message: str) -> NoReturn:
        raise web.HTTPError(status, message)

    async def post(self) -> None:
        if not self.token():
            self._refuse(
                401,
                "Send the server's own hub token: Authorization: token $JUPYTERHUB_API_TOKEN",
            )
        caller = await self.server_caller(
            "The hub does not know this token: send the server's own hub token, "
            "Authorization: token $JUPYTERHUB_API_TOKEN.",
            "This token is not the hub token of a running server: only a user's server "
            "may report audit events, with its own JUPYTERHUB_API_TOKEN.",
            unknown_status=401,
        )
        user, server = caller.user, caller.server
        if not self.owns_session(caller):  # a token minted with the scope, not the server's
            self._refuse(403, "This token is not the hub token of a running server: only a "
                              "user's server may report audit events, with its own "
                              "JUPYTERHUB_API_TOKEN.")
        self.authenticated(caller.token)
        event = self._event()
        try:
            model = await self.hub.user(user)
        except HubUnavailable as e:
            self.log.error("qustody service: the hub's API failed: %s", e)
            self._refuse(503, "The hub could not be asked about this server; retry later.")
        if server not in ((model or {}).get("servers") or {}):
            self._refuse(403, "This token's server is not running: only a running server "
                              "may report audit events.")
        try:
            recorded = await self.offload(hub_audit().record_user_event, user, server, event)
        except UserEventRefused as e:
            self._refuse(e.status, e.message)
        except ValueError as e:
            self._refuse(400, str(e))
        except AuditError as e:
            self.log.error("audit event from %s/%s not recorded: %s", user, server, e.message)
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


ROUTES = [(r"api/audit/events", AuditEventHandler)]
