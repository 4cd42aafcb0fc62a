"""What every route of the ``qustody`` service shares: limits, JSON errors, the caller.

Callers are identified by the hub (``HubAuth.user_for_token`` through
``qpu.auth.HubResolver``, never cached: a stopped server's token is deleted by the hub
and must stop working at once). A user server's token carries the scope
``custom:qustody:server!server=<user>/<server>`` (``Spawner.server_token_scopes``), which
names the server; a user's own API token does not, unless they minted one that way on
purpose (they gain nothing by it: a ticket is bound to the server's own token, and a
redeemed session to the token that redeemed it).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from tornado import web

from ..qpu.auth import HubResolver, HubUnavailable, Identity
from ..ratelimit import LimitedHandler, RequestLimits, header_token
from .hub_rest import HubRest

SERVER_SCOPE = "custom:qustody:server"


@dataclass(frozen=True)
class ServerCaller:
    """A user's running server, as the hub identified its token."""

    user: str
    server: str
    token: str


def server_named(identity: Identity) -> str | None:
    """The one server the token's ``custom:qustody:server!server=`` scope names, if any."""
    prefix = f"{SERVER_SCOPE}!server={identity.name}/"
    names = [s[len(prefix):] for s in identity.scopes if s.startswith(prefix)]
    return names[0] if len(names) == 1 else None


class ServiceHandler(LimitedHandler):
    """Token-only JSON routes (no cookie, so no XSRF), rate-limited before anything else."""

    log = logging.getLogger("qustody.server_api")

    def limits(self) -> RequestLimits:
        limits: RequestLimits = self.settings["limits"]
        return limits

    @property
    def resolver(self) -> HubResolver:
        resolver: HubResolver = self.settings["resolver"]
        return resolver

    @property
    def hub(self) -> HubRest:
        hub: HubRest = self.settings["hub"]
        return hub

    def check_xsrf_cookie(self) -> None:
        """Token-only: a browser session never reaches these routes."""

    def token(self) -> str:
        """The caller's token, read as the rate limits read it."""
        return header_token(self.request.headers)

    async def identity(self) -> Identity | None:
        token = self.token()
        if not token:
            return None
        try:
            return await self.resolver.resolve(token)
        except HubUnavailable as e:
            self.log.error("qustody service: the hub could not identify a caller: %s", e)
            raise web.HTTPError(503, "The hub could not be asked who is calling; retry "
                                "in a moment.") from None

    async def server_caller(self, unknown: str, not_server: str,
                            unknown_status: int = 403) -> ServerCaller:
        """The calling server; else ``unknown_status`` with ``unknown`` (no token the hub
        knows), or 403 with ``not_server`` (a token, but not a running server's own)."""
        identity = await self.identity()
        if identity is None:
            raise web.HTTPError(unknown_status, unknown)
        if identity.kind != "user":
            raise web.HTTPError(403, not_server)
        server = server_named(identity)
        if server is None:
            raise web.HTTPError(403, not_server)
        # The token's own rate-limit bucket comes only once it proved to be the server's
        # (``authenticated``, by each route): until then it is charged to its address.
        return ServerCaller(identity.name, server, self.token())

    def owns_session(self, caller: ServerCaller) -> bool:
        """Whether the caller's token is the one its server redeemed its ticket with; True
        when that server redeemed none (secrets off, or not claimed)."""
        delivery = self.settings.get("delivery")
        if delivery is None:
            return True
        session = delivery.sessions().get((caller.user, caller.server))
        return session is None or delivery.session(caller.user, caller.server,
                                                   caller.token) is not None

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """JSON ``{"status", "message"}`` as the hub's API answers, never a traceback."""
        message = self._reason
        exc_info = kwargs.get("exc_info")
        if exc_info:
            error = exc_info[1]
            if isinstance(error, web.HTTPError) and error.log_message:
                message = error.log_message % error.args if error.args else error.log_message
            elif not isinstance(error, web.HTTPError):
                message = "The qustody service failed on this request; see its log."
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps({"status": status_code, "message": message}))
