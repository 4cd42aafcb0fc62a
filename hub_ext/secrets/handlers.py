"""Hub API endpoints a user's server calls, with its own hub API token.

``POST /hub/api/qustody/secrets/redeem`` ``{"ticket": "..."}``: burns the ticket and
returns this workspace's secrets. ``POST /hub/api/qustody/secrets/refresh`` ``{}``:
current values for a server that already redeemed its ticket (rotated values arrive,
revoked ones are gone). ``POST /hub/api/qustody/secrets/store`` ``{"name", "value"}``:
the user stores a new secret of their own (self-service; off by default). The server is
identified by the token itself: it must be the API token the hub gave one of the
caller's servers at its start, so a user's own API token, another server's token or a
service token cannot claim anything.

All three re-validate the user with the identity provider and read their hub roles anew: a
user demoted since the start gets nothing (classes follow the current roles), and a user
whose roles no longer allow the server's profile has the server stopped
(``secret-withheld``, then ``server-stopped`` with reason ``role-lost``).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import re
import time
from typing import Any, NoReturn

from jupyterhub.apihandlers.base import APIHandler
from jupyterhub.roles import get_roles_for
from jupyterhub.user import User
from tornado import web

from ..audit.hub import hub_audit, hub_emit
from ..audit.lifecycle import STOP_REASON
from ..ratelimit import LimitedHandler
from .delivery import RoleLost, SecretDelivery, hub_secrets
from .model import Secret, SecretError, SecretExists
from .tickets import TicketRefused

MAX_BODY = 4096
_STOPPING: set[asyncio.Future[None]] = set()
_IP = re.compile(r"[0-9A-Fa-f:.]{1,64}")


def _never_record(delivery: SecretDelivery, secrets: list[Secret]) -> None:
    """Put the values of ``secrets`` on the audit log's never-record list, a user's own
    ones apart (``SecretDelivery.known_values``)."""
    provisioned, chosen = delivery.known_values(secrets)
    if provisioned:
        hub_audit().add_known_secrets(provisioned)
    if chosen:
        hub_audit().add_known_secrets(chosen, user_chosen=True)


class _SecretsHandler(LimitedHandler, APIHandler):  # type: ignore[misc]
    """Rate-limited per token and per address; broker reads and audit writes run in the
    write threads, off the hub's event loop (``hub_ext.ratelimit``)."""

    max_body = MAX_BODY
    body_hint = '{"ticket": "<claim ticket>"}'

    def check_xsrf_cookie(self) -> None:
        """Token-only endpoints: a browser session never reaches them (see ``_caller``)."""

    def _delivery(self) -> SecretDelivery:
        delivery = hub_secrets()
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

    async def _current_roles(self, user: User) -> tuple[str, ...]:
        """The user's hub roles now: re-validated with the identity provider for this
        request, so a demotion there counts before anything is delivered. (That refresh
        may stop servers whose profile the new roles do not allow.)"""
        asked = time.time()
        await self.refresh_auth(user, force=True)
        record = ((await user.get_auth_state()) or {}).get("qustody")
        # JupyterHub keeps a token request's stale roles when the refresh fails (it cannot
        # send an API caller to the login page): deliver nothing on roles not re-checked.
        # (A refresh that finished while this one waited for it counts: it is newer.)
        if record is not None and float(record.get("refreshed_at", 0)) < asked:
            raise web.HTTPError(
                503,
                "Your roles could not be re-checked with the identity provider just now, so "
                "no secrets are delivered; the server retries. If this persists, sign in again.",
            )
        return tuple(sorted(r.name for r in get_roles_for(user.orm_user)))

    @staticmethod
    def _still_running(user: User, server: str) -> None:
        spawner = user.spawners.get(server)
        if spawner is None or not spawner.active or spawner.pending == "stop":
            raise web.HTTPError(409, "This server is not running (or is being stopped).")

    async def _withhold(
        self, user: User, server: str, stage: str, lost: RoleLost, roles: tuple[str, ...]
    ) -> NoReturn:
        """Deliver nothing, stop the server (once its start has finished), record it. The
        stop is scheduled first, so a full write queue or a low audit disk cannot keep a
        demoted user's server running."""
        task = asyncio.ensure_future(self._stop_when_started(user, server))
        _STOPPING.add(task)  # keep a reference until it is done
        task.add_done_callback(_STOPPING.discard)
        await self.offload(
            hub_emit,
            "secret-withheld",
            {
                "user": user.name,
                "server": server,
                "ticket_id": lost.ticket_id,
                "stage": stage,
                "reason": "role-lost",
                "profile": lost.profile,
                "roles": list(roles),
            },
        )
        self.log.warning(
            "Secrets withheld from %s/%s: no current role allows profile %s; stopping it",
            user.name,
            server,
            lost.profile,
        )
        raise web.HTTPError(
            403,
            f"Your current roles no longer allow the {lost.profile!r} profile, so this "
            "server receives no secrets and is being stopped. Start a new server with a "
            "profile your roles allow.",
        )

    async def _stop_when_started(self, user: User, server: str) -> None:
        spawner = user.spawners[server]
        for _ in range(int(spawner.start_timeout * 2) + 1):  # a redeem comes during the start
            if spawner.pending != "spawn":
                break
            await asyncio.sleep(0.5)
        try:
            if spawner.active and spawner.pending is None:  # else already stopped or stopping
                setattr(spawner, STOP_REASON, "role-lost")
                await self.stop_single_user(user, server)
        except Exception:
            self.log.exception("Could not stop %s/%s after its role was lost", user.name, server)

    def _record_delivery(
        self, user: str, server: str, ticket_id: str, secrets: list[Secret]
    ) -> None:
        """Record the delivery (in a write thread; an AuditError means nothing is sent)."""
        _never_record(self._delivery(), secrets)
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

    def _own_class(self, user: User, server: str, token: str, roles: tuple[str, ...]) -> str | None:
        session = self._delivery().session(user.name, server, token)
        return None if session is None else self._delivery().own_class(session, roles)


class RedeemHandler(_SecretsHandler):
    async def post(self) -> None:
        delivery = self._delivery()
        body = self._body()
        user, server, token = self._caller()
        text = body.get("ticket")
        if not isinstance(text, str) or not text:
            await self._refused(user, server, None, "malformed")
            raise web.HTTPError(400, 'Send {"ticket": "<claim ticket>"}; the ticket is missing.')
        roles = await self._current_roles(user)
        self._still_running(user, server)
        auth_state = await user.get_auth_state()
        groups = [g.name for g in user.groups]  # their courses' shared secrets

        def redeem_and_record() -> list[Secret]:
            # one queue slot for both: a full queue refuses before the ticket is burned
            ticket, secrets = delivery.redeem(text, user.name, server, token, auth_state, roles,
                                              groups)
            self._record_delivery(user.name, server, ticket.id, secrets)
            return secrets

        try:
            secrets = await self.offload(redeem_and_record)
        except RoleLost as e:
            await self._withhold(user, server, "redeem", e, roles)
        except TicketRefused as e:
            await self._refused(user, server, delivery.tickets.ticket_id(text), e.reason)
            raise web.HTTPError(
                403,
                f"Claim ticket refused ({e.reason}): tickets are single-use, valid for "
                f"{delivery.settings.ticket_ttl:g} s after the spawn, and only for the server "
                "they were issued to. Restart the server to get a new one.",
            ) from None
        self._send(secrets, self._own_class(user, server, token, roles))

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
    body_hint = "{}"

    async def post(self) -> None:
        delivery = self._delivery()
        self._body()
        user, server, token = self._caller()
        session = delivery.session(user.name, server, token)
        roles = await self._current_roles(user)
        if session is not None and not delivery.profile_allowed(session, roles):
            lost = RoleLost(session.profile, session.ticket_id)
            await self._withhold(user, server, "refresh", lost, roles)
        self._still_running(user, server)
        auth_state = await user.get_auth_state()
        groups = [g.name for g in user.groups]

        def refresh_and_record() -> list[Secret] | None:
            result = delivery.refresh(user.name, server, token, auth_state, roles, groups)
            if result is None:
                return None
            session, secrets = result
            self._record_delivery(user.name, server, session.ticket_id, secrets)
            return secrets

        try:
            secrets = await self.offload(refresh_and_record)
        except RoleLost as e:  # demoted between the two reads
            await self._withhold(user, server, "refresh", e, roles)
        if secrets is None:
            raise web.HTTPError(
                409, "This server has not redeemed a claim ticket; restart it to get secrets."
            )
        self._send(secrets, self._own_class(user, server, token, roles))


class StoreHandler(_SecretsHandler):
    """``POST /hub/api/qustody/secrets/store`` ``{"name": ..., "value": ...}``: the user
    stores a new secret of their own (``SecretBroker.self_service_class``) from their
    running server. Recorded as ``secret-stored``; the value joins the audit log's
    never-record list before anything is written."""

    max_body = 80 * 1024  # a value may be up to 64 KiB
    body_hint = '{"name": "<NAME>", "value": "<the value>"}'

    async def post(self) -> None:
        delivery = self._delivery()
        body = self._body()
        user, server, token = self._caller()
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
        session = delivery.session(user.name, server, token)
        if session is None:
            raise web.HTTPError(
                409, "This server has not redeemed a claim ticket; restart it to store secrets."
            )
        roles = await self._current_roles(user)
        if not delivery.profile_allowed(session, roles):
            await self._withhold(
                user, server, "store", RoleLost(session.profile, session.ticket_id), roles
            )
        cls = delivery.own_class(session, roles)
        if cls is None:
            raise web.HTTPError(
                403,
                f"Secrets of class {delivery.settings.self_service_class!r} are not delivered "
                f"to a {session.profile!r} server with your roles, so one you stored would "
                "never reach get_secret(); ask an admin to store it.",
            )
        self._still_running(user, server)
        auth_state = await user.get_auth_state()

        def store_and_record() -> Secret:
            secret = delivery.store_own(user.name, server, session, roles, auth_state, name, value)
            try:
                _never_record(delivery, [secret])
                hub_emit(
                    "secret-stored",
                    {
                        "user": user.name,
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
                    delivery.broker.discard_own(user.name, server, auth_state, secret.name)
                except Exception as e:
                    self.log.error(
                        "Could not remove %s's unaudited secret %s: %s",
                        user.name,
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
            "%s stored secret %s (%s) from server %r", user.name, secret.name, secret.cls, server
        )
        self.set_status(201)
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(secret.public()))


HANDLERS: list[tuple[str, type[APIHandler]]] = [
    (r"/api/qustody/secrets/redeem", RedeemHandler),
    (r"/api/qustody/secrets/refresh", RefreshHandler),
    (r"/api/qustody/secrets/store", StoreHandler),
]
