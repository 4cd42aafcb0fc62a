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
from .delivery import SecretDelivery, hub_secrets
from .model import Secret
from .tickets import TicketRefused

MAX_BODY = 4096
_IP = re.compile(r"[0-9A-Fa-f:.]{1,64}")


class _SecretsHandler(APIHandler):  # type: ignore[misc]
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
                return user, name, token
        raise web.HTTPError(
            403,
            "This token is not the API token of one of your running servers; secrets are "
            "delivered only to the server the hub started.",
        )

    def _deliver(self, user: User, server: str, ticket_id: str, secrets: list[Secret]) -> None:
        delivery = self._delivery()
        values = [s.value for s in secrets]
        if values:
            hub_audit().add_known_secrets(values)
        hub_emit(
            "secret-delivered",
            {
                "user": user.name,
                "server": server,
                "ticket_id": ticket_id,
                "broker": delivery.broker.broker_name,
                "secrets": [{"name": s.name, "class": s.cls} for s in secrets],
            },
        )
        self.set_header("Cache-Control", "no-store")
        self.set_header("Content-Type", "application/json")
        self.finish(
            json.dumps(
                {"broker": delivery.broker.broker_name, "secrets": [s.delivered() for s in secrets]}
            )
        )


class RedeemHandler(_SecretsHandler):
    async def post(self) -> None:
        delivery = self._delivery()
        body = self._body()
        user, server, token = self._caller()
        text = body.get("ticket")
        if not isinstance(text, str) or not text:
            self._refused(user, server, None, "malformed")
            raise web.HTTPError(400, 'Send {"ticket": "<claim ticket>"}; the ticket is missing.')
        auth_state = await user.get_auth_state()
        try:
            ticket, secrets = delivery.redeem(text, user.name, server, token, auth_state)
        except TicketRefused as e:
            self._refused(user, server, delivery.tickets.ticket_id(text), e.reason)
            raise web.HTTPError(
                403,
                f"Claim ticket refused ({e.reason}): tickets are single-use, valid for "
                f"{delivery.settings.ticket_ttl:g} s after the spawn, and only for the server "
                "they were issued to. Restart the server to get a new one.",
            ) from None
        self._deliver(user, server, ticket.id, secrets)

    def _refused(self, user: User, server: str, ticket_id: str | None, reason: str) -> None:
        data: dict[str, Any] = {
            "user": user.name,
            "server": server,
            "reason": reason,
            "credential": {"kind": "server-token"},
        }
        if ticket_id:
            data["ticket_id"] = ticket_id
        ip = self.request.remote_ip or ""
        if _IP.fullmatch(ip):
            data["ip"] = ip
        hub_emit("ticket-refused", data)
        self.log.warning("Claim ticket refused for %s/%s: %s", user.name, server, reason)


class RefreshHandler(_SecretsHandler):
    async def post(self) -> None:
        delivery = self._delivery()
        self._body()
        user, server, token = self._caller()
        result = delivery.refresh(user.name, server, token, await user.get_auth_state())
        if result is None:
            raise web.HTTPError(
                409, "This server has not redeemed a claim ticket; restart it to get secrets."
            )
        session, secrets = result
        self._deliver(user, server, session.ticket_id, secrets)


HANDLERS: list[tuple[str, type[APIHandler]]] = [
    (r"/api/qustody/secrets/redeem", RedeemHandler),
    (r"/api/qustody/secrets/refresh", RefreshHandler),
]
