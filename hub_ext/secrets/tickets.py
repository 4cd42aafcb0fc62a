"""Claim tickets: how a starting server proves it is the spawn the hub started.

A ticket is random (256 bits), single-use, bound to one user, one server name and
the server's own hub API token, and valid for ``ttl`` seconds. The hub keeps only a
SHA-256 of it (in memory: a ticket outlives no hub restart, and a server that missed
its window is simply restarted).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass, field


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def now() -> float:
    """The one clock of tickets (tests patch it)."""
    return time.monotonic()


@dataclass
class Ticket:
    """What the hub remembers of an issued ticket (never the ticket itself)."""

    id: str
    user: str
    server: str
    token_hash: str
    profile: str
    #: the roles the spawn policy lets use ``profile`` (not the user's roles)
    roles: tuple[str, ...]
    expires: float
    used: bool = False
    stopped: bool = False
    extra: dict[str, object] = field(default_factory=dict)


class TicketRefused(Exception):
    """Why a ticket was not redeemed: ``reason`` is one of the audit schema's values."""

    def __init__(self, reason: str, ticket: Ticket | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.ticket = ticket


class TicketBook:
    """Issues and redeems tickets. Thread-safe."""

    def __init__(self, ttl: float = 60) -> None:
        self.ttl = ttl
        self._by_hash: dict[str, Ticket] = {}
        self._lock = threading.Lock()

    def issue(
        self, user: str, server: str, api_token: str, profile: str, roles: tuple[str, ...]
    ) -> tuple[str, Ticket]:
        """A new ticket (the string to hand the server) and its record."""
        tid = secrets.token_hex(6)
        text = f"qtk_{tid}_{secrets.token_urlsafe(32)}"
        ticket = Ticket(
            id=f"t-{tid}",
            user=user,
            server=server,
            token_hash=_digest(api_token),
            profile=profile,
            roles=roles,
            expires=now() + self.ttl,
        )
        with self._lock:
            self._sweep()
            self._by_hash[_digest(text)] = ticket
        return text, ticket

    def ticket_id(self, text: str) -> str | None:
        """The id written in a ticket string, for the audit record (None if malformed)."""
        parts = text.split("_") if isinstance(text, str) else []
        if len(parts) >= 3 and parts[0] == "qtk" and len(parts[1]) == 12:
            try:
                int(parts[1], 16)
            except ValueError:
                return None
            return f"t-{parts[1]}"
        return None

    def redeem(self, text: str, user: str, server: str, api_token: str) -> Ticket:
        """Burn the ticket and return its record, or raise TicketRefused.

        Any presented ticket that matches a record is burned, even when refused, so a
        leaked ticket cannot be tried again from the right place.
        """
        if self.ticket_id(text) is None or len(text) > 200:
            raise TicketRefused("malformed")
        with self._lock:
            ticket = self._by_hash.get(_digest(text))
            if ticket is None:
                raise TicketRefused("unknown")
            already = ticket.used
            ticket.used = True
        if already:
            raise TicketRefused("already-redeemed", ticket)
        if ticket.stopped:
            raise TicketRefused("server-stopped", ticket)
        if now() > ticket.expires:
            raise TicketRefused("expired", ticket)
        if ticket.user != user:
            raise TicketRefused("wrong-user", ticket)
        if ticket.server != server or not hmac.compare_digest(
            ticket.token_hash, _digest(api_token)
        ):
            raise TicketRefused("wrong-server", ticket)
        return ticket

    def burn_server(self, user: str, server: str) -> int:
        """Mark every outstanding ticket of a server as stopped (its server stopped)."""
        count = 0
        with self._lock:
            for t in self._by_hash.values():
                if t.user == user and t.server == server and not t.used and not t.stopped:
                    t.stopped = True
                    count += 1
        return count

    def _sweep(self) -> None:
        # Records are kept a while past expiry so a late replay is reported as such.
        cutoff = now() - 10 * self.ttl
        for key in [k for k, t in self._by_hash.items() if t.expires < cutoff]:
            del self._by_hash[key]
