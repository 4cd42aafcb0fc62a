"""Hub API endpoints a user's server calls, with its own hub API token.

``POST /hub/api/qustody/secrets/redeem`` ``{"ticket": "..."}``: burns the ticket and
returns this workspace's secrets. ``POST /hub/api/qustody/secrets/refresh`` ``{}``:
current values for a server that already redeemed its ticket (rotated values arrive,
revoked ones are gone). The server is identified by the token itself: it must be the
API token the hub gave one of the caller's servers at its start, so a user's own API
token, another server's token or a service token cannot claim anything.
"""

from __future__ import annotations

import hmac
import json
import re
from typing import Any

from jupyterhub.apihandlers.base import APIHandler
from jupyterhub.user import User
from tornado import web

from ..audit.hub import hub_audit, hub_emit
from ..ratelimit import LimitedHandler
from .delivery import SecretDelivery, hub_secrets
from .model import Secret
from .tickets import TicketRefused

MAX_BODY = 4096
_IP = re.compile(r"[0-9A-Fa-f:.]{1,64}")


class _SecretsHandler(LimitedHandler, APIHandler):  # type: ignore[misc]
    """Rate-limited per token and per address; broker reads and audit writes run in the
    write threads, off the hub's event loop (``hub_ext.ratelimit``)."""

    def check_xsrf_cookie(self) -> None:
        """Token-only endpoints: a browser session never reaches them (see ``_caller``)."""

    def _delivery(self) -> SecretDelivery:
        delivery = hub_secrets()
        if delivery is None:
            raise web.HTTPError(404, "Secret delivery is not enabled on this hub.")
        return delivery

    def _body(self) -> dict[str, Any]:
        raw = self.request.body or b""
        if len(raw) > MAX_BODY:
            raise web.HTTPError(413, f"The request body is larger than {MAX_BODY} bytes.")
        try:
            body = json.loads(raw.decode("utf-8")) if raw.strip() else {}
        except UnicodeDecodeError:
            raise web.HTTPError(400, "The request body is not UTF-8 text.") from None
        except ValueError:
            raise web.HTTPError(
                400, 'The request body is not JSON; send {"ticket": "<claim ticket>"}.'
            ) from None
        if not isinstance(body, dict):
            raise web.HTTPError(400, 'The request body must be a JSON object {"ticket": "..."}.')
        return body

    def _caller(self) -> tuple[User, str, str]:
        """(user, server name, token) of the calling server, or 403."""
        user = self.current_user
        token = self.get_auth_token()
        if not isinstance(user, User) or not token:
            raise web.HTTPError(
                403,
                "Only a user's server can claim secrets, with the hub API token it was "
                "started with (JUPYTERHUB_API_TOKEN).",
            )
        for name, spawner in user.spawners.items():
            own = getattr(spawner, "api_token", "") or ""
            if own and hmac.compare_digest(own.encode(), token.encode()):
                if not spawner.active:
                    raise web.HTTPError(409, "This server is not running.")
                self.authenticated(token)
                return user, name, token
        raise web.HTTPError(
            403,
            "This token is not the API token of one of your running servers; secrets are "
            "delivered only to the server the hub started.",
        )

    def _record_delivery(
        self, user: str, server: str, ticket_id: str, secrets: list[Secret]
    ) -> None:
        """Record the delivery (in a write thread; an AuditError means nothing is sent)."""
        values = [s.value for s in secrets]
        if values:
            hub_audit().add_known_secrets(values)
        hub_emit(
            "secret-delivered",
            {
                "user": user,
                "server": server,
                "ticket_id": ticket_id,
                "broker": self._delivery().broker.broker_name,
                "secrets": [{"name": s.name, "class": s.cls} for s in secrets],
            },
        )

    def _send(self, secrets: list[Secret]) -> None:
        self.set_header("Cache-Control", "no-store")
        self.set_header("Content-Type", "application/json")
        self.finish(
            json.dumps(
                {
                    "broker": self._delivery().broker.broker_name,
                    "secrets": [s.delivered() for s in secrets],
                }
            )
        )


class RedeemHandler(_SecretsHandler):
    async def post(self) -> None:
        delivery = self._delivery()
        body = self._body()
        user, server, token = self._caller()
        text = body.get("ticket")
        if not isinstance(text, str) or not text:
            await self._refused(user, server, None, "malformed")
            raise web.HTTPError(400, 'Send {"ticket": "<claim ticket>"}; the ticket is missing.')
        auth_state = await user.get_auth_state()

        def redeem_and_record() -> list[Secret]:
            # one queue slot for both: a full queue refuses before the ticket is burned
            ticket, secrets = delivery.redeem(text, user.name, server, token, auth_state)
            self._record_delivery(user.name, server, ticket.id, secrets)
            return secrets

        try:
            secrets = await self.offload(redeem_and_record)
        except TicketRefused as e:
            await self._refused(user, server, delivery.tickets.ticket_id(text), e.reason)
            raise web.HTTPError(
                403,
                f"Claim ticket refused ({e.reason}): tickets are single-use, valid for "
                f"{delivery.settings.ticket_ttl:g} s after the spawn, and only for the server "
                "they were issued to. Restart the server to get a new one.",
            ) from None
        self._send(secrets)

    async def _refused(self, user: User, server: str, ticket_id: str | None, reason: str) -> None:
        data: dict[str, Any] = {
            "user": user.name,
            "server": server,
            "reason": reason,
            "credential": {"kind": "server-token"},
        }
        if ticket_id:
            data["ticket_id"] = ticket_id
        ip = self.limits().client_ip(self.request)  # not X-Real-Ip, which any caller sets
        if _IP.fullmatch(ip):
            data["ip"] = ip
        await self.offload(hub_emit, "ticket-refused", data)
        self.log.warning("Claim ticket refused for %s/%s: %s", user.name, server, reason)


class RefreshHandler(_SecretsHandler):
    async def post(self) -> None:
        delivery = self._delivery()
        self._body()
        user, server, token = self._caller()
        auth_state = await user.get_auth_state()

        def refresh_and_record() -> list[Secret] | None:
            result = delivery.refresh(user.name, server, token, auth_state)
            if result is None:
                return None
            session, secrets = result
            self._record_delivery(user.name, server, session.ticket_id, secrets)
            return secrets

        secrets = await self.offload(refresh_and_record)
        if secrets is None:
            raise web.HTTPError(
                409, "This server has not redeemed a claim ticket; restart it to get secrets."
            )
        self._send(secrets)


HANDLERS: list[tuple[str, type[APIHandler]]] = [
    (r"/api/qustody/secrets/redeem", RedeemHandler),
    (r"/api/qustody/secrets/refresh", RefreshHandler),
]
