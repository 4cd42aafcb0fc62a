"""The secret routes of the ``qustody`` service, called by a user's server with its own
hub API token (``$QUSTODY_API_URL`` + ``api/secrets/...``).

``POST api/secrets/redeem`` ``{"ticket": "..."}``: burns the ticket and returns this
workspace's secrets. ``POST api/secrets/refresh`` ``{}``: current values for a server that
already redeemed its ticket (rotated values arrive, revoked ones are gone).
``POST api/secrets/store`` ``{"name", "value"}``: the user stores a new secret of their own
(self-service; off by default). The server is the one the hub names for the token
(``base.ServerCaller``); a user's own API token, another server's token or a service token
claims nothing.

All three read the user's roles from the hub anew. Asking the hub who calls re-validates
the user with the identity provider when the last check is older than
``auth_refresh_age``; roles not re-checked within that age (the provider is down) get a
503. A user whose roles no longer allow the server's profile gets nothing, and the
server is stopped (``secret-withheld``, then ``server-stopped`` with reason
``role-lost``).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any, NoReturn

from tornado import web

from ..audit.errors import AuditError
from ..audit.hub import hub_audit, hub_emit
from ..qpu.auth import HubUnavailable
from ..secrets.delivery import RoleLost, SecretDelivery
from ..secrets.model import Secret, SecretError, SecretExists
from ..secrets.tickets import TicketRefused
from .base import ServerCaller, ServiceHandler

MAX_BODY = 4096
_STOPPING: set[asyncio.Future[None]] = set()
_STOPPING_SERVERS: set[tuple[str, str]] = set()
_IP = re.compile(r"[0-9A-Fa-f:.]{1,64}")


def roles_fresh(model: dict[str, Any], max_age: float, now: float) -> bool:
    """Whether the user's roles were re-checked with the IdP within ``max_age`` seconds
    (the ``qustody`` record the authenticator keeps in auth state). No record (a login
    from before it was kept, an auth state another authenticator wrote) is roles never
    re-checked: as stale as an old record."""
    record = (model.get("auth_state") or {}).get("qustody")
    if not isinstance(record, dict):
        return False
    try:
        checked = float(record.get("refreshed_at", 0))
    except (TypeError, ValueError):
        return False
    return checked >= now - max_age - 5


def _never_record(delivery: SecretDelivery, secrets: list[Secret], user: str) -> None:
    """Put the values of ``secrets`` (delivered to or stored by ``user``) on the audit
    log's never-record list: those of ``user``'s own namespace for ``user``'s events only
    (``SecretDelivery.known_values``)."""
    provisioned, chosen = delivery.known_values(secrets, user)
    if provisioned:
        hub_audit().add_known_secrets(provisioned)
    if chosen:
        hub_audit().add_known_secrets(chosen, owner=user)


class _SecretsHandler(ServiceHandler):
    """Rate-limited per token and per address; broker reads and audit writes run in the
    write threads, off the event loop (``hub_ext.ratelimit``)."""

    max_body = MAX_BODY
    body_hint = '{"ticket": "<claim ticket>"}'

    def _delivery(self) -> SecretDelivery:
        delivery: SecretDelivery | None = self.settings.get("delivery")
        if delivery is None:
            raise web.HTTPError(404, "Secret delivery is not enabled on this hub.")
        return delivery

    def _body(self) -> dict[str, Any]:
        raw = self.request.body or b""
        if len(raw) > self.max_body:
            raise web.HTTPError(413, f"The request body is larger than {self.max_body} bytes.")
        try:
            body = json.loads(raw.decode("utf-8")) if raw.strip() else {}
        except UnicodeDecodeError:
            raise web.HTTPError(400, "The request body is not UTF-8 text.") from None
        except ValueError:
            hint = self.body_hint
            raise web.HTTPError(400, f"The request body is not JSON; send {hint}.") from None
        if not isinstance(body, dict):
            raise web.HTTPError(400, f"The request body must be a JSON object: {self.body_hint}.")
        return body

    async def _caller(self) -> ServerCaller:
        """The calling server, or 403."""
        return await self.server_caller(
            "Only a user's server can claim secrets, with the hub API token it was started "
            "with (JUPYTERHUB_API_TOKEN).",
            "This token is not the API token of one of your running servers; secrets are "
            "delivered only to the server the hub started.",
        )

    async def _user(self, caller: ServerCaller) -> tuple[tuple[str, ...], dict[str, Any]]:
        """The user's current roles and hub model. Asking the hub who called re-validated
        the user with the identity provider if that was due (``auth_refresh_age``); a
        check older than that means the provider could not be asked: nothing is
        delivered on roles not re-checked."""
        try:
            model = await self.hub.user(caller.user)
            if model is None:
                raise web.HTTPError(403, "This server's user is no longer known to the hub.")
            roles = await self.hub.roles(model)
        except HubUnavailable as e:
            self.log.error("qustody service: the hub's API failed: %s", e)
            raise web.HTTPError(503, "The hub could not be asked for your roles; the server "
                                "retries.") from None
        max_age = float(self.settings.get("roles_max_age") or 0)
        if max_age and "auth_state" not in model:
            self.log.error("qustody service: the hub gives no auth state (admin:auth_state)")
            raise web.HTTPError(503, "Your roles cannot be checked (this service cannot read "
                                "auth state); ask an admin. Nothing is delivered.")
        if max_age and not roles_fresh(model, max_age, time.time()):
            raise web.HTTPError(
                503,
                "Your roles could not be re-checked with the identity provider just now, "
                "so no secrets are delivered; the server retries. If this persists, sign "
                "in again.",
            )
        return roles, model

    @staticmethod
    def _still_running(model: dict[str, Any], server: str) -> None:
        found = (model.get("servers") or {}).get(server)
        if not isinstance(found, dict) or found.get("stopped") or found.get("pending") == "stop":
            raise web.HTTPError(409, "This server is not running (or is being stopped).")

    async def _withhold(
        self, caller: ServerCaller, stage: str, lost: RoleLost, roles: tuple[str, ...]
    ) -> NoReturn:
        """Deliver nothing, stop the server (once its start has finished), record it. The
        stop is scheduled first, so a full write queue or a low audit disk cannot keep a
        demoted user's server running."""
        task = asyncio.ensure_future(self._stop_when_started(caller.user, caller.server))
        _STOPPING.add(task)  # keep a reference until it is done
        task.add_done_callback(_STOPPING.discard)
        await self.offload(
            hub_emit,
            "secret-withheld",
            {
                "user": caller.user,
                "server": caller.server,
                "ticket_id": lost.ticket_id,
                "stage": stage,
                "reason": "role-lost",
                "profile": lost.profile,
                "roles": list(roles),
            },
        )
        self.log.warning(
            "Secrets withheld from %s/%s: no current role allows profile %s; stopping it",
            caller.user,
            caller.server,
            lost.profile,
        )
        raise web.HTTPError(
            403,
            f"Your current roles no longer allow the {lost.profile!r} profile, so this "
            "server receives no secrets and is being stopped. Start a new server with a "
            "profile your roles allow.",
        )

    async def _stop_when_started(self, user: str, server: str) -> None:
        """Ask the hub to stop the server, again with a growing pause while it cannot (a
        start still running, the hub busy), for up to five minutes; one such task per
        server however many of its requests were refused."""
        if (user, server) in _STOPPING_SERVERS:
            return
        _STOPPING_SERVERS.add((user, server))
        reason = ""
        try:
            for attempt in range(64):
                try:
                    await self.hub.stop(user, server)
                    return
                except HubUnavailable as e:
                    reason = str(e)
                await asyncio.sleep(min(0.5 * 2 ** attempt, 5.0))
            self.log.error("Could not stop %s/%s after its role was lost: %s", user, server,
                           reason)
        finally:
            _STOPPING_SERVERS.discard((user, server))

    def _record_delivery(
        self, user: str, server: str, ticket_id: str, secrets: list[Secret]
    ) -> None:
        """Record the delivery (in a write thread; an AuditError means nothing is sent)."""
        _never_record(self._delivery(), secrets, user)
        hub_emit(
            "secret-delivered",
            {
                "user": user,
                "server": server,
                "ticket_id": ticket_id,
                "broker": self._delivery().broker.broker_name,
                "secrets": [{"name": s.name, "class": s.cls, "namespace": str(s.namespace)}
                            for s in secrets],
            },
        )

    def _send(self, secrets: list[Secret], own_class: str | None) -> None:
        """The values, and the class this server may store its user's secrets of (or
        null), so JupyterLab offers "move to a secret" only where the hub accepts it."""
        self.set_header("Cache-Control", "no-store")
        self.set_header("Content-Type", "application/json")
        self.finish(
            json.dumps(
                {
                    "broker": self._delivery().broker.broker_name,
                    "secrets": [s.delivered() for s in secrets],
                    "self_service_class": own_class,
                }
            )
        )

    def _unavailable(self, caller: ServerCaller, error: Exception) -> NoReturn:
        """The store or the audit log failed: nothing is delivered (never a 500)."""
        self.log.error("Secrets of %s/%s not delivered: %s", caller.user, caller.server,
                       type(error).__name__)
        self.set_header("Retry-After", "5")
        raise web.HTTPError(503, "The secret store or the audit log cannot be used just now, "
                            "so nothing was delivered; restart the server if this persists.")

    def _own_class(self, caller: ServerCaller, roles: tuple[str, ...]) -> str | None:
        session = self._delivery().session(caller.user, caller.server, caller.token)
        return None if session is None else self._delivery().own_class(session, roles)


class RedeemHandler(_SecretsHandler):
    async def post(self) -> None:
        delivery = self._delivery()
        body = self._body()
        caller = await self._caller()
        text = body.get("ticket")
        if not isinstance(text, str) or not text:
            await self._refused(caller, None, "malformed")
            raise web.HTTPError(400, 'Send {"ticket": "<claim ticket>"}; the ticket is missing.')
        roles, model = await self._user(caller)
        self._still_running(model, caller.server)
        auth_state = model.get("auth_state")
        groups = [str(g) for g in model.get("groups") or []]  # their courses' shared secrets

        def redeem_and_record() -> list[Secret]:
            # one queue slot for both: a full queue refuses before the ticket is burned
            ticket, secrets = delivery.redeem(text, caller.user, caller.server, caller.token,
                                              auth_state, roles, groups)
            self._record_delivery(caller.user, caller.server, ticket.id, secrets)
            return secrets

        try:
            secrets = await self.offload(redeem_and_record)
        except RoleLost as e:
            await self._withhold(caller, "redeem", e, roles)
        except (SecretError, AuditError) as e:
            self._unavailable(caller, e)
        except TicketRefused as e:
            await self._refused(caller, delivery.tickets.ticket_id(text), e.reason)
            raise web.HTTPError(
                403,
                f"Claim ticket refused ({e.reason}): tickets are single-use, valid for "
                f"{delivery.settings.ticket_ttl:g} s after the spawn, and only for the server "
                "they were issued to. Restart the server to get a new one.",
            ) from None
        self.authenticated(caller.token)  # the ticket was this token's
        started = (model.get("servers") or {}).get(caller.server, {}).get("started")
        delivery.note_started(caller.user, caller.server, str(started or ""))
        self._send(secrets, self._own_class(caller, roles))

    async def _refused(self, caller: ServerCaller, ticket_id: str | None, reason: str) -> None:
        data: dict[str, Any] = {
            "user": caller.user,
            "server": caller.server,
            "reason": reason,
            "credential": {"kind": "server-token"},
        }
        if ticket_id:
            data["ticket_id"] = ticket_id
        ip = self.limits().client_ip(self.request)  # not X-Real-Ip, which any caller sets
        if _IP.fullmatch(ip):
            data["ip"] = ip
        await self.offload(hub_emit, "ticket-refused", data)
        self.log.warning("Claim ticket refused for %s/%s: %s", caller.user, caller.server,
                         reason)


class RefreshHandler(_SecretsHandler):
    body_hint = "{}"

    async def post(self) -> None:
        delivery = self._delivery()
        self._body()
        caller = await self._caller()
        session = delivery.session(caller.user, caller.server, caller.token)
        if session is not None:
            self.authenticated(caller.token)
        roles, model = await self._user(caller)
        if session is not None and not delivery.profile_allowed(session, roles):
            lost = RoleLost(session.profile, session.ticket_id)
            await self._withhold(caller, "refresh", lost, roles)
        self._still_running(model, caller.server)
        auth_state = model.get("auth_state")
        groups = [str(g) for g in model.get("groups") or []]

        def refresh_and_record() -> list[Secret] | None:
            result = delivery.refresh(caller.user, caller.server, caller.token, auth_state,
                                      roles, groups)
            if result is None:
                return None
            session, secrets = result
            self._record_delivery(caller.user, caller.server, session.ticket_id, secrets)
            return secrets

        try:
            secrets = await self.offload(refresh_and_record)
        except RoleLost as e:  # demoted between the two reads
            await self._withhold(caller, "refresh", e, roles)
        except (SecretError, AuditError) as e:
            self._unavailable(caller, e)
        if secrets is None:
            raise web.HTTPError(
                409, "This server has not redeemed a claim ticket; restart it to get secrets."
            )
        self._send(secrets, self._own_class(caller, roles))


class StoreHandler(_SecretsHandler):
    """``POST api/secrets/store`` ``{"name": ..., "value": ...}``: the user stores a new
    secret of their own (``SecretBroker.self_service_class``) from their running server.
    Recorded as ``secret-stored``; the value joins the audit log's never-record list
    before anything is written."""

    max_body = 80 * 1024  # a value may be up to 64 KiB
    body_hint = '{"name": "<NAME>", "value": "<the value>"}'

    async def post(self) -> None:
        delivery = self._delivery()
        body = self._body()
        caller = await self._caller()
        if not delivery.settings.self_service_class:
            raise web.HTTPError(
                403,
                "This hub does not let users store secrets from their servers "
                "(SecretBroker.self_service_class is empty); ask an admin to store it "
                "with `qustody secrets put`.",
            )
        name, value = body.get("name"), body.get("value")
        if not isinstance(name, str) or not isinstance(value, str):
            raise web.HTTPError(400, 'Send {"name": "<NAME>", "value": "<the value>"}.')
        session = delivery.session(caller.user, caller.server, caller.token)
        if session is None:
            raise web.HTTPError(
                409, "This server has not redeemed a claim ticket; restart it to store secrets."
            )
        self.authenticated(caller.token)
        roles, model = await self._user(caller)
        if not delivery.profile_allowed(session, roles):
            await self._withhold(
                caller, "store", RoleLost(session.profile, session.ticket_id), roles
            )
        cls = delivery.own_class(session, roles)
        if cls is None:
            raise web.HTTPError(
                403,
                f"Secrets of class {delivery.settings.self_service_class!r} are not delivered "
                f"to a {session.profile!r} server with your roles, so one you stored would "
                "never reach get_secret(); ask an admin to store it.",
            )
        self._still_running(model, caller.server)
        auth_state = model.get("auth_state")
        user, server = caller.user, caller.server
        groups = [str(g) for g in model.get("groups") or []]  # their courses' shared secrets

        def store_and_record() -> Secret:
            secret = delivery.store_own(user, server, session, roles, auth_state, name, value,
                                        groups)
            try:
                _never_record(delivery, [secret], user)
                hub_emit(
                    "secret-stored",
                    {
                        "user": user,
                        "server": server,
                        "broker": delivery.broker.broker_name,
                        "namespace": str(secret.namespace),
                        "name": secret.name,
                        "class": secret.cls,
                        "version": secret.version,
                    },
                )
            except BaseException:  # unaudited, so not kept
                try:
                    delivery.broker.discard_own(user, server, auth_state, secret.name)
                except Exception as e:
                    self.log.error(
                        "Could not remove %s's unaudited secret %s: %s",
                        user,
                        secret.name,
                        type(e).__name__,
                    )
                raise
            return secret

        try:
            secret = await self.offload(store_and_record)
        except SecretExists as e:
            raise web.HTTPError(409, f"Not stored: {e}.") from None
        except SecretError as e:
            raise web.HTTPError(400, f"Not stored: {e}.") from None
        self.log.info(
            "%s stored secret %s (%s) from server %r", user, secret.name, secret.cls, server
        )
        self.set_status(201)
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(secret.public()))


#: (path under the service's prefix, handler)
ROUTES: list[tuple[str, type[ServiceHandler]]] = [
    (r"api/secrets/redeem", RedeemHandler),
    (r"api/secrets/refresh", RefreshHandler),
    (r"api/secrets/store", StoreHandler),
]
