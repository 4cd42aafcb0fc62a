"""Secret delivery in the ``qustody`` service: secrets at redemption, and after.

One ``SecretDelivery`` per service process (hub_ext.server_api creates it from the
hub's settings). The hub's spawners issue signed tickets (tickets.TicketSigner, through
spawn.py); the service's handlers call ``redeem``, ``refresh`` and ``store_own``, and its
watch on the hub's servers calls ``server_stopped`` for servers that are gone.
"""

from __future__ import annotations

import hmac
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from secrets import token_bytes
from typing import Any

from traitlets.config import Config

from .broker import Broker, SecretBroker
from .model import (
    MIN_VALUE_BYTES,
    NAME,
    Namespace,
    Secret,
    SecretError,
    SecretExists,
    secret_like,
)
from .policy import SecretClassPolicy
from .tickets import Ticket, TicketBook, token_hash


@dataclass(frozen=True)
class Session:
    """A server that redeemed its ticket: its profile and the roles that profile admits
    (the spawn policy's, not the user's: the user's roles are read anew at each call)."""

    token_hash: str
    profile: str
    profile_roles: tuple[str, ...]
    ticket_id: str
    #: when the server redeemed (its start, as the hub's server model says, once known)
    started: str = ""


class RoleLost(Exception):
    """The user's current roles no longer allow the server's profile: deliver nothing,
    stop the server."""

    def __init__(self, profile: str, ticket_id: str) -> None:
        super().__init__(f"no current role allows profile {profile!r}")
        self.profile = profile
        self.ticket_id = ticket_id


def checked_settings(config: Config, profiles: list[str] | None = None
                     ) -> tuple[SecretBroker, SecretClassPolicy]:
    """The broker settings and class policy of ``config``; ValueError when one is bad or
    they disagree (the hub calls this at start, the qustody service again)."""
    settings = SecretBroker(config=config)
    policy = SecretClassPolicy(config=config)
    policy.check(profiles or [])
    own = settings.self_service_class
    if own and own in policy.restricted_classes:
        raise ValueError(
            f"SecretBroker.self_service_class {own!r} is a restricted class "
            "(SecretClassPolicy.restricted_classes): users must not create those "
            "themselves; choose another class (e.g. 'personal')"
        )
    return settings, policy


class SecretDelivery:
    #: ``(course) -> bool``: whether a course's term has closed; the secrets of a closed
    #: course's namespace (``course:<id>``) are delivered to no one from then on
    #: (hub_ext.courses.hub.closed_lookup; None: no courses).
    course_closed: Callable[[str], bool] | None = None
    #: ``(hub groups) -> [(course, secret names)]``: the shared secrets of the user's open
    #: courses (a course file's ``[secrets]``; hub_ext.courses.hub.shared_secrets).
    course_secrets: Callable[[Iterable[str]], list[tuple[str, tuple[str, ...]]]] | None = None

    def __init__(self, config: Config, profiles: list[str] | None = None, *,
                 ticket_key: bytes | None = None) -> None:
        """``ticket_key``: the key the hub signs claim tickets with (none: a random one,
        so no ticket is ever good: a delivery for checking settings)."""
        self.settings, self.policy = checked_settings(config, profiles)
        self.log = self.settings.log
        self.broker: Broker = self._make_broker(config)
        self.tickets = TicketBook(ticket_key or token_bytes(32))
        self._sessions: dict[tuple[str, str], Session] = {}
        self._server_locks: dict[tuple[str, str], threading.RLock] = {}
        self._lock = threading.Lock()

    def _make_broker(self, config: Config) -> Broker:
        s = self.settings
        if s.backend == "vault":
            from .vault import VaultBroker

            return VaultBroker(config=config)
        from .embedded import EmbeddedStore
        from .masterkey import load_master_key

        key = load_master_key(
            s.master_key_file or s.state_path("secrets.key"),
            s.master_key_env,
            s.create_master_key,
        )
        return EmbeddedStore(
            s.db_path or s.state_path("secrets.sqlite"), key, on_tamper=_audit_tamper
        )

    # -- servers that are gone -------------------------------------------------------

    def sessions(self) -> dict[tuple[str, str], Session]:
        """The servers that redeemed a ticket, by (user, server name)."""
        with self._lock:
            return dict(self._sessions)

    def server_stopped(self, user: str, server: str, session: Session | None = None) -> None:
        """Forget the server's session and revoke its leases. With ``session``: only if
        that is still the server's session (a newer start that redeemed meanwhile keeps
        its session and its leases)."""
        with self._server_lock(user, server):
            with self._lock:
                current = self._sessions.get((user, server))
                if session is not None and current is not None and current != session:
                    return
                self._sessions.pop((user, server), None)
            try:
                self.broker.release(user, server)
            except Exception as e:  # the server is gone either way; say so loudly
                self.log.error("Could not release the secrets of %s/%s: %s", user, server,
                               type(e).__name__)

    # -- delivery --------------------------------------------------------------------

    def redeem(
        self,
        text: str,
        user: str,
        server: str,
        api_token: str,
        auth_state: dict[str, Any] | None,
        roles: tuple[str, ...],
        groups: Iterable[str] = (),
    ) -> tuple[Ticket, list[Secret]]:
        """Burn the ticket (TicketRefused if it is not good) and load the secrets the
        user's current ``roles`` allow (RoleLost if none of them admits the profile);
        ``groups``: the user's hub groups (their courses' shared secrets)."""
        ticket = self.tickets.redeem(text, user, server, api_token)
        # one server at a time: the watch on stopped servers must not revoke what this
        # start is being given
        with self._server_lock(user, server):
            with self._lock:
                earlier = self._sessions.pop((user, server), None)
            if earlier is not None:  # an earlier start of this server: its leases go first
                self.server_stopped(user, server)
            secrets = self._load(
                user, server, ticket.profile, ticket.roles, roles, auth_state, ticket.id, groups
            )
            with self._lock:
                self._sessions[(user, server)] = Session(
                    token_hash(api_token), ticket.profile, ticket.roles, ticket.id
                )
        return ticket, secrets

    def _server_lock(self, user: str, server: str) -> threading.RLock:
        # kept for good (one small lock per server name ever redeemed): a lock dropped while
        # held would let a second one in
        with self._lock:
            return self._server_locks.setdefault((user, server), threading.RLock())

    def note_started(self, user: str, server: str, started: str) -> None:
        """Record the start time the hub reports for a redeemed server, so a later start
        of the same name is told from it (``server_stopped`` of the old one)."""
        with self._lock:
            session = self._sessions.get((user, server))
            if session is not None and not session.started:
                self._sessions[(user, server)] = Session(
                    session.token_hash, session.profile, session.profile_roles,
                    session.ticket_id, started)

    def session(self, user: str, server: str, api_token: str) -> Session | None:
        """The session of a server that redeemed its ticket with this token (or None)."""
        with self._lock:
            session = self._sessions.get((user, server))
        if session is None or not hmac.compare_digest(session.token_hash, token_hash(api_token)):
            return None
        return session

    @staticmethod
    def profile_allowed(session: Session, roles: tuple[str, ...]) -> bool:
        """Whether one of the user's current ``roles`` may still use the server's profile."""
        return bool(set(roles) & set(session.profile_roles))

    def refresh(
        self,
        user: str,
        server: str,
        api_token: str,
        auth_state: dict[str, Any] | None,
        roles: tuple[str, ...],
        groups: Iterable[str] = (),
    ) -> tuple[Session, list[Secret]] | None:
        """Current secrets for a server that redeemed its ticket (None if it did not),
        filtered by the user's current ``roles``; RoleLost (and the session forgotten)
        when none of them admits the server's profile any more."""
        session = self.session(user, server, api_token)
        if session is None:
            return None
        secrets = self._load(
            user,
            server,
            session.profile,
            session.profile_roles,
            roles,
            auth_state,
            session.ticket_id,
            groups,
        )
        return session, secrets

    # -- self-service ----------------------------------------------------------------

    def known_values(self, secrets: Iterable[Secret], user: str) -> tuple[list[str], list[str]]:
        """The values of ``secrets`` (delivered to or stored by ``user``) the audit log must
        never record: (those looked for in every event, those in ``user``'s own events
        only: ``SecretScrubber.add_known``). A value in ``user``'s own namespace is
        ``user``'s, whoever wrote it: in Vault a user may write their own path, and its
        class with it, so the class cannot say who chose the value. One of the
        self-service class counts only when it looks like a secret
        (``model.secret_like``): storing a common string must not shred records."""
        own = self.settings.self_service_class
        theirs = Namespace("user", user)
        everyone: list[str] = []
        users: list[str] = []
        for s in secrets:
            if s.namespace != theirs:
                everyone.append(s.value)
            elif not (own and s.cls == own) or secret_like(s.value):
                users.append(s.value)
        return everyone, users

    def own_class(self, session: Session, roles: tuple[str, ...]) -> str | None:
        """The class a user may store secrets of from this server, or None: self-service
        is on and the class policy delivers that class back to this profile and roles."""
        cls = self.settings.self_service_class
        if cls and self.policy.allows(cls, session.profile, roles):
            return cls
        return None

    def store_own(
        self,
        user: str,
        server: str,
        session: Session,
        roles: tuple[str, ...],
        auth_state: dict[str, Any] | None,
        name: str,
        value: str,
        groups: Iterable[str] = (),
    ) -> Secret:
        """Store ``value`` as the user's own secret ``name`` (SecretError says why not).

        A value the user already receives as a secret is refused, a course's shared one
        (``groups``: their hub groups) too: a copy in their own namespace would outlive
        the grant or the term it came from."""
        cls = self.own_class(session, roles)
        if cls is None:
            raise SecretError("storing secrets from a server is not allowed here")
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise SecretError(  # the name is not echoed: a pasted key must not be logged
                "that is not a secret name: use letters, digits and '_' (not starting with "
                "a digit), at most 128 characters, e.g. QISKIT_IBM_TOKEN"
            )
        if len(name) >= MIN_VALUE_BYTES and name in value:
            raise SecretError("the name is part of the value: choose a name, not the key")
        for secret in self._receivable(user, server, auth_state, groups):
            # only what this server receives is named; other secrets are just "taken"
            delivered = self.policy.allows(secret.cls, session.profile, roles)
            if delivered and hmac.compare_digest(
                secret.value.encode(), value.strip("\n").encode()
            ):
                raise SecretExists(
                    f"this value is already your secret {secret.name} ({secret.namespace}): "
                    f'use get_secret("{secret.name}") instead of storing a copy'
                )
            if secret.name == name:
                raise SecretExists(
                    f"you already have a secret named {name}: choose another name"
                    if secret.namespace.kind == "user"
                    else f"a secret named {name} already reaches this server "
                    f"({secret.namespace}): choose another name"
                    if delivered
                    else f"the name {name} is taken: choose another name"
                )
        return self.broker.add_own(
            user, server, auth_state, name, cls, value, self.settings.self_service_limit
        )

    def _receivable(
        self, user: str, server: str, auth_state: dict[str, Any] | None, groups: Iterable[str]
    ) -> list[Secret]:
        """Every secret ``user`` may receive: their namespaces' and their courses' shared
        ones. A course whose secrets cannot be read refuses (what is stored is checked
        against them)."""
        found = list(self.broker.secrets_for_spawn(user, server, auth_state))
        lookup = self.course_secrets
        try:
            shared = lookup(list(groups)) if lookup is not None else []
        except Exception as e:  # _shared would deliver none; here nothing can be checked
            self.log.error("secrets: courses unreadable (%s); storing refused",
                           type(e).__name__)
            raise SecretError("the course files cannot be read now, so what you store "
                              "cannot be checked against your courses' shared secrets; "
                              "try again later") from None
        for course, wanted in shared:
            try:
                found += self.broker.course_secrets(user, server, auth_state, course, wanted)
            except Exception as e:
                self.log.error("secrets: %s's shared secrets of %s unreadable: %s", user,
                               course, type(e).__name__)
                raise SecretError(
                    "your course's shared secrets cannot be read now, so what you store "
                    "cannot be checked against them; try again later"
                ) from None
        return found

    def _load(
        self,
        user: str,
        server: str,
        profile: str,
        profile_roles: tuple[str, ...],
        roles: tuple[str, ...],
        auth_state: dict[str, Any] | None,
        ticket_id: str,
        groups: Iterable[str] = (),
    ) -> list[Secret]:
        if not set(roles) & set(profile_roles):
            # nothing more for this server, whatever it asks; what it holds is revoked
            self.server_stopped(user, server)
            raise RoleLost(profile, ticket_id)
        allowed = [s for s in self.broker.secrets_for_spawn(user, server, auth_state)
                   if self.policy.allows(s.cls, profile, roles) and not self._course_closed(s)]
        names = {s.name for s in allowed}
        for course, wanted in self._shared(groups):
            try:
                shared = self.broker.course_secrets(user, server, auth_state, course, wanted)
            except Exception as e:  # that course's secrets wait; the user's own still come
                self.log.error("secrets: %s's shared secrets of %s unreadable: %s", user,
                               course, type(e).__name__)
                continue
            # the user's own and granted secrets win a name clash, as between namespaces
            for secret in shared:
                if secret.name not in names and self.policy.allows(secret.cls, profile, roles):
                    names.add(secret.name)
                    allowed.append(secret)
        return allowed

    def _shared(self, groups: Iterable[str]) -> list[tuple[str, tuple[str, ...]]]:
        lookup = self.course_secrets
        if lookup is None:
            return []
        try:
            return lookup(list(groups))
        except Exception as e:  # the courses cannot be read: no shared course secret
            self.log.error("secrets: courses unreadable (%s); shared course secrets withheld",
                           type(e).__name__)
            return []

    def _course_closed(self, secret: Secret) -> bool:
        closed = self.course_closed
        if closed is None or secret.namespace.kind != "course":
            return False
        try:
            return bool(closed(secret.namespace.name))
        except Exception as e:  # the courses directory cannot be read: deliver no course secret
            self.log.error("secrets: course terms unreadable (%s); course secrets withheld", e)
            return True


def _audit_tamper(path: str, detail: str) -> None:
    """Record that the embedded store refused altered rows (names and places, no values)."""
    from ..audit.hub import hub_emit

    hub_emit("secret-store-tampered", {"store": path[:1024], "detail": detail[:512]})
