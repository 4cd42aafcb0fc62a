"""Claim tickets: how a starting server proves it is the spawn the hub started.

The hub issues a ticket at each spawn (``TicketSigner``); the ``qustody`` service that
delivers secrets redeems it (``TicketBook``). They share nothing but a key: a ticket
says who it is for (user, server name, a SHA-256 of the server's own hub API token),
which profile the server runs and which roles that profile admits, and until when it
is valid, and carries an HMAC-SHA256 of all that with the key. Nobody without the key
can make or alter one, and without the token it was issued with it is worth nothing.

The service remembers every ticket it was shown (by id), so a ticket is redeemed at most
once, and refuses tickets issued before it started: a ticket outlives no restart, and a
server that missed its window is simply restarted.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

PREFIX = "qtk_"
#: Longer strings are not tickets (an issued one is about 400 characters).
MAX_TICKET = 2048
_DOMAIN = b"qustody-ticket-v1\0"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def token_hash(api_token: str) -> str:
    """What a ticket (and a redeemed session) keeps of a server's hub API token."""
    return _digest(api_token)


def now() -> float:
    """The one clock of tickets: wall time, shared by the hub and the service (tests
    patch it)."""
    return time.time()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Ticket:
    """What a ticket says (never the ticket itself)."""

    id: str
    user: str
    server: str
    token_hash: str
    profile: str
    #: the roles the spawn policy lets use ``profile`` (not the user's roles)
    roles: tuple[str, ...]
    expires: float
    issued: float = 0.0


class TicketRefused(Exception):
    """Why a ticket was not redeemed: ``reason`` is one of the audit schema's values."""

    def __init__(self, reason: str, ticket: Ticket | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.ticket = ticket


def load_ticket_key(path: str | os.PathLike[str], create: bool = False) -> bytes:
    """The ticket key from ``path`` (0600, 32 random bytes, hex); created when ``create``
    and missing. ValueError names the file and what is wrong, never the key."""
    p = Path(path)
    if create and not p.exists():
        p.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
    try:
        mode = p.stat().st_mode & 0o777
        text = p.read_text().strip()
    except OSError as e:
        raise ValueError(f"the ticket key file {p} cannot be read ({type(e).__name__})") from None
    if mode & 0o077:
        raise ValueError(f"the ticket key file {p} is readable by others (mode {mode:o}); "
                         "chmod 600 it")
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) < 32:
        raise ValueError(f"the ticket key file {p} does not hold a 32-byte hex key")
    return key


def _mac(key: bytes, body: str) -> str:
    return _b64(hmac.new(key, _DOMAIN + body.encode("ascii"), hashlib.sha256).digest())


class TicketSigner:
    """The hub's side: a ticket for each spawn."""

    def __init__(self, key: bytes, ttl: float = 60) -> None:
        self._key = key
        self.ttl = ttl

    def issue(
        self, user: str, server: str, api_token: str, profile: str, roles: tuple[str, ...]
    ) -> tuple[str, Ticket]:
        """A new ticket (the string to hand the server) and what it says."""
        tid = secrets.token_hex(6)
        issued = now()
        ticket = Ticket(id=f"t-{tid}", user=user, server=server,
                        token_hash=token_hash(api_token), profile=profile, roles=roles,
                        expires=issued + self.ttl, issued=issued)
        claims = {"u": user, "s": server, "th": ticket.token_hash, "p": profile,
                  "r": list(roles), "iat": issued, "exp": ticket.expires}
        payload = _b64(json.dumps(claims, separators=(",", ":")).encode("utf-8"))
        body = f"{PREFIX}{tid}_{payload}"
        return f"{body}.{_mac(self._key, body)}", ticket


def ticket_id(text: object) -> str | None:
    """The id written in a ticket string, for the audit record (None if malformed)."""
    parts = text.split("_", 2) if isinstance(text, str) else []
    if len(parts) == 3 and parts[0] + "_" == PREFIX and len(parts[1]) == 12:
        try:
            int(parts[1], 16)
        except ValueError:
            return None
        return f"t-{parts[1]}"
    return None


class TicketBook:
    """The service's side: redeems tickets, each at most once. Thread-safe."""

    def __init__(self, key: bytes, started: float | None = None) -> None:
        self._key = key
        self.started = now() if started is None else started
        self._seen: dict[str, float] = {}  # ticket id -> when it may be forgotten
        self._lock = threading.Lock()

    @staticmethod
    def ticket_id(text: object) -> str | None:
        return ticket_id(text)

    def redeem(self, text: str, user: str, server: str, api_token: str) -> Ticket:
        """Burn the ticket and return what it says, or raise TicketRefused.

        Any genuine ticket presented is burned, even when refused, so a leaked ticket
        cannot be tried again from the right place."""
        tid = ticket_id(text)
        if tid is None or len(text) > MAX_TICKET or not text.isascii():
            raise TicketRefused("malformed")
        ticket = self._verified(text, tid)
        if ticket is None:
            raise TicketRefused("unknown")
        with self._lock:
            self._sweep()
            already = tid in self._seen
            self._seen[tid] = ticket.expires + 60
        if already:
            raise TicketRefused("already-redeemed", ticket)
        if ticket.issued < self.started - 1:
            raise TicketRefused("unknown", ticket)  # issued before this service ran
        if now() > ticket.expires:
            raise TicketRefused("expired", ticket)
        if ticket.user != user:
            raise TicketRefused("wrong-user", ticket)
        if ticket.server != server:
            raise TicketRefused("wrong-server", ticket)
        if not hmac.compare_digest(ticket.token_hash, token_hash(api_token)):
            # Tokens are made per start and deleted at the stop: this server's token is
            # alive, so the ticket belongs to an earlier start of it.
            raise TicketRefused("server-stopped", ticket)
        return ticket

    def _verified(self, text: str, tid: str) -> Ticket | None:
        body, dot, mac = text.rpartition(".")
        if not dot or not hmac.compare_digest(_mac(self._key, body), mac):
            return None
        try:
            claims = json.loads(_unb64(body.split("_", 2)[2]))
            return Ticket(id=tid, user=str(claims["u"]), server=str(claims["s"]),
                          token_hash=str(claims["th"]), profile=str(claims["p"]),
                          roles=tuple(str(r) for r in claims["r"]),
                          expires=float(claims["exp"]), issued=float(claims["iat"]))
        except (ValueError, KeyError, TypeError, IndexError):
            return None  # signed by us, so never; but never a 500 either

    def _sweep(self) -> None:
        t = now()
        if len(self._seen) > 1024:
            for key in [k for k, until in self._seen.items() if until < t]:
                del self._seen[key]
