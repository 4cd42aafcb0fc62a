"""Rate limits and a bounded write queue for the hub endpoints user servers call.

User servers call the audit endpoint and secret delivery of the hub's ``qustody`` service
(``/services/qustody/api/audit/events``, ``.../api/secrets/redeem|refresh|store``;
hub_ext/server_api) with their own hub token. Each call writes to the audit log and reads
the secret broker: blocking work that, on the service's one event loop, would let a server
flooding either endpoint delay every other server's.

Both endpoints go through one ``RequestLimits`` (``hub_limits()``):

* a token bucket per server token (keyed by a hash of the token; created when the token
  first authenticates) and one per client address (for every token without a bucket:
  unknown, made-up or new), checked in ``prepare`` before any database work; an empty
  bucket answers ``429`` with ``Retry-After``;
* a bounded queue of blocking work (``offload``) run by a small thread pool off the event
  loop; when it is full the request is refused with ``503`` and ``Retry-After``, and
  nothing is written (fail closed), instead of queueing without bound.

The login endpoints (``/hub/oauth_login``, ``/hub/oauth_callback``), which anyone may
call, have a bucket per client address of their own (``check_login``; the handlers are in
:mod:`hub_ext.identity.login_limits`), and ``Reports`` keeps their refusals to one audit
record per address and ``login_audit_every``.

Memory is bounded: at most ``RequestLimits.max_tracked`` buckets of each kind (least
recently used dropped first; a dropped bucket comes back full, so dropping one is at worst
a fresh burst) and at most ``RequestLimits.queue_size`` waiting calls.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import json
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple, TypeVar

from tornado import web
from traitlets import Float, Int, List, Unicode, validate
from traitlets.config import Config, LoggingConfigurable

T = TypeVar("T")
# as jupyterhub.utils reads it: scheme, any white space, the token
_AUTH_HEADER = re.compile(r"(?:token|bearer)\s+(\S+)\s*$", re.IGNORECASE)


def header_token(headers: Any) -> str:
    """The token of an ``Authorization: token|bearer <token>`` header, as JupyterHub reads
    it (any white space), or ""."""
    match = _AUTH_HEADER.match(headers.get("Authorization", ""))
    return match.group(1) if match else ""


class Limited(NamedTuple):
    """Why a request is refused, and when to come back."""

    status: int
    retry_after: int
    message: str


class Buckets:
    """Token buckets by key: ``rate`` tokens a second up to ``burst``; LRU-bounded."""

    def __init__(
        self, rate: float, burst: int, max_keys: int, now: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate, self.burst, self.max_keys, self.now = rate, float(burst), max_keys, now
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()  # key -> [tokens, at]
        self._lock = threading.Lock()

    def take(self, key: str, create: bool = True) -> float | None:
        """Take a token for ``key``: 0 if there was one, else seconds until there is one;
        None (nothing taken) when ``key`` has no bucket and ``create`` is false."""
        now = self.now()
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                if not create:
                    return None
                bucket = self._buckets[key] = [self.burst, now]
                if len(self._buckets) > self.max_keys:
                    self._buckets.popitem(last=False)
            else:
                self._buckets.move_to_end(key)
                bucket[0] = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
                bucket[1] = now
            if bucket[0] >= 1.0:
                bucket[0] -= 1.0
                return 0.0
            return (1.0 - bucket[0]) / self.rate

    def wait(self, key: str) -> float:
        """Seconds until ``key`` has a token (0: it has one now, or has no bucket yet);
        nothing is taken."""
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                return 0.0
            tokens = min(self.burst, bucket[0] + (self.now() - bucket[1]) * self.rate)
            return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate

    def ensure(self, key: str) -> None:
        """Give ``key`` a full bucket unless it has one (nothing taken)."""
        with self._lock:
            if key in self._buckets:
                self._buckets.move_to_end(key)
                return
            self._buckets[key] = [self.burst, self.now()]
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)

    def __len__(self) -> int:
        return len(self._buckets)


class RequestLimits(LoggingConfigurable):
    """Rate limits and the write queue of the endpoints user servers call."""

    per_token_rate = Float(
        0.5,
        config=True,
        help="""Sustained requests a second one hub token may make to the audit endpoint and
        secret delivery together (0.5: 30 a minute). A user server reports a few audit events
        a minute and refreshes its secrets rarely; a server over the limit gets 429 with
        ``Retry-After`` and nothing is recorded or delivered. Protects the hub (and the audit
        log) from a server that floods it.""",
    )
    per_token_burst = Int(
        30,
        config=True,
        help="""Requests one token may make at once before ``per_token_rate`` applies
        (the bucket size).""",
    )
    per_ip_rate = Float(
        10.0,
        config=True,
        help="""Sustained requests a second from one client address whose token has no
        bucket of its own yet (no token, a made-up one, or a server's first call): this is
        what limits floods of random tokens, which would otherwise each cost a database
        lookup. A server's later calls count against its token only.""",
    )
    per_ip_burst = Int(
        300,
        config=True,
        help="Requests one address may make at once before ``per_ip_rate`` applies.",
    )
    max_tracked = Int(
        10000,
        config=True,
        help="""Most tokens (and, separately, addresses) whose buckets are kept; the least
        recently seen is dropped first (it comes back as a full bucket). Bounds the
        memory a flood of made-up tokens can take.""",
    )
    queue_size = Int(
        256,
        config=True,
        help="""Most calls waiting for the write threads (audit records, secret loads). When
        the queue is full, a request is refused with 503 and ``Retry-After`` and nothing is
        written: the hub fails closed instead of queueing without bound.""",
    )
    write_threads = Int(
        1,
        config=True,
        help="""Threads that run the endpoints' blocking work (audit writes, broker reads)
        off the hub's event loop. One keeps the writes from competing with the event loop
        for the interpreter; raise it only for a slow (network) secret broker.""",
    )
    refusal_delay = Float(
        1.0,
        config=True,
        help="""Seconds a call over its rate limit waits before its 429 is sent (at most
        ``max_delayed`` calls wait at once; beyond that the 429 goes out at once). A client
        that floods one request after another then makes one a second per connection
        instead of thousands: each refusal costs the hub a sleeping coroutine instead of
        event-loop time. A server that respects ``Retry-After`` loses nothing.""",
    )
    max_delayed = Int(
        256,
        config=True,
        help="""Most refused calls held back by ``refusal_delay`` at once (bounds the
        memory and sockets a flood over many connections can hold).""",
    )
    login_rate = Float(
        2.0,
        config=True,
        help="""Sustained requests a second one client address may make to the login
        endpoints (``/hub/oauth_login`` and ``/hub/oauth_callback`` together; a sign-in is
        one of each). Each login request creates OAuth state and each callback costs a token
        exchange with the identity provider: a flood from one address gets 429 with
        ``Retry-After`` instead, before any state is created or the provider is asked.
        2/s lets 60 more people a minute sign in from one address once the burst is used.""",
    )
    login_burst = Int(
        240,
        config=True,
        help="""Login requests one address may make at once before ``login_rate`` applies.
        240 lets a class of 100 sign in together behind one NAT (200 requests) with room for
        retries; raise it if more people share one public address.""",
    )
    login_audit_every = Int(
        60,
        config=True,
        help="""Seconds between ``login-refused`` (``rate-limited``) audit records, and hub
        log lines, for one address whose login requests keep being refused: the first
        refusal is recorded at once, later ones are counted into the next record. A flood
        cannot grow the audit log faster than one record per address and period.""",
    )
    trusted_proxy_ips = List(
        Unicode(),
        default_value=["127.0.0.1", "::1"],
        config=True,
        help="""Addresses of the proxies in front of the hub (configurable-http-proxy). For a
        connection from one of them the client's address is the last ``X-Forwarded-For``
        entry (the one the proxy added); for any other connection it is the connection's
        own address, whatever its headers say (``X-Real-Ip`` is never used), so a client
        that reaches the hub directly cannot pick the address it is limited by.""",
    )

    @validate("per_token_rate", "per_ip_rate", "login_rate")
    def _valid_rate(self, proposal: Any) -> float:
        value = float(proposal["value"])
        if not (value > 0 and math.isfinite(value)):
            raise ValueError(
                f"RequestLimits.{proposal['trait'].name} must be a positive number of requests "
                f"a second (e.g. 0.5), not {value!r}"
            )
        return value

    @validate("refusal_delay")
    def _valid_delay(self, proposal: Any) -> float:
        value = float(proposal["value"])
        if not 0 <= value <= 10:
            raise ValueError("RequestLimits.refusal_delay must be between 0 and 10 seconds")
        return value

    @validate(
        "per_token_burst", "per_ip_burst", "login_burst", "max_tracked", "queue_size", "max_delayed"
    )
    def _valid_size(self, proposal: Any) -> int:
        value = int(proposal["value"])
        if value < 1:
            raise ValueError(f"RequestLimits.{proposal['trait'].name} must be at least 1")
        return value

    @validate("login_audit_every")
    def _valid_audit_every(self, proposal: Any) -> int:
        value = int(proposal["value"])
        if not 1 <= value <= 86400:
            raise ValueError(
                f"RequestLimits.login_audit_every = {value}: use 1 to 86400 seconds (60 is a "
                "good default)"
            )
        return value

    @validate("write_threads")
    def _valid_threads(self, proposal: Any) -> int:
        value = int(proposal["value"])
        if not 1 <= value <= 16:
            raise ValueError("RequestLimits.write_threads must be between 1 and 16")
        return value

    @validate("trusted_proxy_ips")
    def _valid_proxies(self, proposal: Any) -> list[str]:
        for i, text in enumerate(proposal["value"]):
            try:
                ipaddress.ip_address(text)
            except ValueError:
                raise ValueError(
                    f"RequestLimits.trusted_proxy_ips[{i}] is not an IP address; list the "
                    "proxies' addresses, e.g. ['127.0.0.1', '::1']"
                ) from None
        return list(proposal["value"])

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tokens = Buckets(self.per_token_rate, self.per_token_burst, self.max_tracked)
        self.ips = Buckets(self.per_ip_rate, self.per_ip_burst, self.max_tracked)
        self.logins = Buckets(self.login_rate, self.login_burst, self.max_tracked)
        self.login_reports = Reports(self.login_audit_every, self.max_tracked)
        self._pool = ThreadPoolExecutor(self.write_threads, thread_name_prefix="qustody-write")
        self._pending = 0  # calls queued or running; changed on the event loop only
        self._delayed = 0  # refusals waiting out refusal_delay; ditto
        self._logged: OrderedDict[str, None] = OrderedDict()  # keys refused since last admitted
        self.refused = 0

    # -- limits ----------------------------------------------------------------------

    def check(self, ip: str, token: str) -> Limited | None:
        """Charge a call to its token's bucket if the token authenticated before, else to
        its address's; None when the bucket had room, else the refusal.

        So one server flooding with its own token slows down only itself, even where
        servers share an address, and made-up tokens (which never get a bucket, so cannot
        push real ones out) are limited by where they come from."""
        wait = self.tokens.take(_token_key(token), create=False) if token else None
        what = "this token"
        if wait is None:
            wait = self.ips.take(ip) or 0.0
            what = f"address {ip}"
        if not wait:
            self._logged.pop(ip, None)
            return None
        self.refused += 1
        if ip not in self._logged:  # one log line per streak of refusals, not per request
            self._logged[ip] = None
            if len(self._logged) > 1000:
                self._logged.popitem(last=False)
            self.log.warning("rate limit: refusing requests of %s (from %s)", what, ip)
        seconds = max(1, math.ceil(wait))
        return Limited(
            429,
            seconds,
            f"Too many requests from {what}: the hub takes at most "
            f"{self.per_token_rate:g}/s per server token and {self.per_ip_rate:g}/s per address "
            f"(RequestLimits). Retry after {seconds} s.",
        )

    def check_login(self, ip: str) -> Limited | None:
        """Charge a login request (``oauth_login`` or ``oauth_callback``) to its address's
        login bucket, kept apart from the endpoints servers call; None when it had room."""
        wait = self.logins.take(_login_key(ip))
        if not wait:
            return None
        self.refused += 1
        seconds = max(1, math.ceil(wait))
        return Limited(
            429,
            seconds,
            f"Too many sign-in attempts from your network address ({ip}). Wait {seconds} "
            "seconds and sign in again. If many people sign in together from one address, "
            "ask your hub administrator to raise RequestLimits.login_burst.",
        )

    def authenticated(self, token: str) -> None:
        """The token belongs to a running server: from now on it has its own bucket (this
        call was charged to the address)."""
        self.tokens.ensure(_token_key(token))

    def client_ip(self, request: Any) -> str:
        """The caller's address: the connection's, or, through trusted proxies, the nearest
        ``X-Forwarded-For`` entry that is not one of them. Entries are read from the right
        (each proxy appends its peer), so what a client writes into the header itself is
        never reached; a container's request passes two proxies (the network proxy, then
        the public one on loopback) and is limited by the container's own address."""
        context = getattr(request.connection, "context", None)
        address = getattr(context, "address", None)
        peer = address[0] if isinstance(address, tuple) and address else str(request.remote_ip)
        client = str(peer)
        if client not in self.trusted_proxy_ips:
            return client
        for entry in reversed(request.headers.get("X-Forwarded-For", "").split(",")):
            try:
                client = str(ipaddress.ip_address(entry.strip()))
            except ValueError:
                return client  # a malformed entry: the last proxy that added a real one
            if client not in self.trusted_proxy_ips:
                return client
        return client

    async def hold_back(self) -> None:
        """Wait ``refusal_delay`` before a refusal goes out, unless too many already wait."""
        if not self.refusal_delay or self._delayed >= self.max_delayed:
            return
        self._delayed += 1
        try:
            await asyncio.sleep(self.refusal_delay)
        finally:
            self._delayed -= 1

    # -- the write queue -------------------------------------------------------------

    async def offload(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` in a write thread; ``QueueFull`` (nothing run) when it is full."""
        if self._pending >= self.queue_size:
            self.refused += 1
            raise QueueFull(
                Limited(
                    503,
                    1,
                    f"The hub is busy writing ({self._pending} calls waiting, "
                    "RequestLimits.queue_size); nothing was recorded. Retry after 1 s.",
                )
            )
        self._pending += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        finally:
            self._pending -= 1

    def close(self) -> None:
        self._pool.shutdown(wait=True)


class Reports:
    """When to report refusals by key: the first at once, then at most one report per
    ``every`` seconds counting the refusals since the last; LRU-bounded to ``max_keys``."""

    def __init__(
        self, every: float, max_keys: int, now: Callable[[], float] = time.monotonic
    ) -> None:
        self.every, self.max_keys, self.now = every, max_keys, now
        self._keys: OrderedDict[str, list[float]] = OrderedDict()  # key -> [count, last report]
        self._lock = threading.Lock()

    def refused(self, key: str) -> int:
        """Count a refusal of ``key``: the refusals to report now (this one included), or
        0 when the last report of ``key`` is more recent than ``every`` seconds."""
        now = self.now()
        with self._lock:
            entry = self._keys.get(key)
            if entry is None:
                self._keys[key] = [0, now]
                if len(self._keys) > self.max_keys:
                    self._keys.popitem(last=False)
                return 1
            self._keys.move_to_end(key)
            entry[0] += 1
            if now - entry[1] < self.every:
                return 0
            count, entry[0], entry[1] = int(entry[0]), 0, now
            return count


class QueueFull(Exception):
    def __init__(self, limited: Limited) -> None:
        super().__init__(limited.message)
        self.limited = limited


def _login_key(ip: str) -> str:
    """The login bucket of an address: an IPv6 client is charged by its /64, which one
    host or site holds whole (a bucket per address would give an attacker 2**64)."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.ip_network(f"{addr}/64", strict=False))
    return str(addr)


def _token_key(token: str) -> str:
    # a digest, so the bucket table holds no usable credential
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()[:32]


_lock = threading.Lock()
_limits: RequestLimits | None = None


def setup_limits(config: Config) -> RequestLimits:
    """(Re)create the hub's limits from ``config``; ``jupyterhub_config.py`` calls it after
    the ``c.RequestLimits`` settings, so a bad one stops the hub at start-up."""
    global _limits
    limits = RequestLimits(config=config)
    with _lock:
        old, _limits = _limits, limits
    if old is not None:
        old.close()
    return limits


def hub_limits(config: Config | None = None) -> RequestLimits:
    """The hub process's limits: those ``setup_limits`` made, else made from ``config`` (the
    hub's) on first use."""
    global _limits
    with _lock:
        if _limits is None:
            _limits = RequestLimits(config=config) if config is not None else RequestLimits()
        return _limits


def request_ip(handler: Any) -> str:
    """The address a hub request came from, for audit records: the limits' reading
    (connection, then trusted proxies' entries), never ``X-Real-Ip``, which JupyterHub's
    ``xheaders`` would take from any caller. "" outside a request."""
    request = getattr(handler, "request", None)
    if request is None or getattr(request, "connection", None) is None:
        return ""
    return hub_limits().client_ip(request)


def reset_hub_limits() -> None:
    global _limits
    with _lock:
        if _limits is not None:
            _limits.close()
        _limits = None


def refuse(handler: web.RequestHandler, limited: Limited) -> None:
    """Answer ``limited`` as JSON with ``Retry-After`` and end the request.

    Written directly: tornado's ``send_error`` clears the headers, ``Retry-After`` included.
    """
    handler.clear()
    handler.set_status(limited.status)
    handler.set_header("Retry-After", str(limited.retry_after))
    handler.set_header("Content-Type", "application/json")
    handler.finish(json.dumps({"status": limited.status, "message": limited.message}))
    raise web.Finish()


class LimitedHandler(web.RequestHandler):
    """Mixin for the hub API handlers user servers call: limits first, then the hub's own
    ``prepare`` (authentication); ``self.offload(fn, ...)`` for blocking work."""

    def limits(self) -> RequestLimits:
        return hub_limits(self.settings.get("config"))

    def authenticated(self, token: str) -> None:
        """Call once the token proved to be a running server's."""
        self.limits().authenticated(token)

    async def prepare(self) -> None:
        limits = self.limits()
        limited = limits.check(limits.client_ip(self.request), header_token(self.request.headers))
        if limited is not None:
            await limits.hold_back()
            refuse(self, limited)
        parent: Any = super().prepare()
        if asyncio.iscoroutine(parent) or isinstance(parent, asyncio.Future):
            await parent

    async def offload(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await self.limits().offload(fn, *args)
        except QueueFull as e:
            refuse(self, e.limited)
            raise  # not reached: refuse raised Finish
