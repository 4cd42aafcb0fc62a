"""Decoding a submission: inline for small bodies, in a bounded process pool for large ones.

A submission's JSON, base64 and QPY decoding, its validation and the policy decisions that
need no database (``submission.parse`` then ``submission.build_ticket``) are one function,
``prepare``. For a small body it runs on the event loop: a hand-over would cost more than
the work. A large body goes to ``ParsePool``, worker *processes*: ``json.loads`` (C) and
Qiskit's QPY reader (Rust) hold the GIL for their whole call, hundreds of milliseconds for
megabytes, so a thread would stall the event loop just the same. Workers get the backends'
configuration once and the policy with each job, build their own drivers (without
credentials: admission needs none), and cap their address space so a hostile payload
cannot exhaust the host's memory; the answer is the finished ``Ticket``.

A provider driver that needs its credentials to build (its SDK fetches the device's
Target with the token) cannot be built in a worker, which never holds credentials. The
gateway then gives the workers a **stand-in** of the driver it built (``stand_in``): the
same class, with the attributes every driver has (name, parameters, limits, Target,
configuration hash) and any the class lists in ``BackendDriver.stand_in_attrs``, but a
credential source that refuses. Workers check circuits against it with the driver's own
code, so large submissions to credentialed backends are decoded off the event loop too.
Only when the stand-in cannot be made (its Target does not pickle) or its code asks for
credentials during the check does the gateway decode the body itself (``Unavailable``).
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import ctypes
import json
import logging
import multiprocessing
import os
import pickle
import resource
import signal
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from . import lifeline
from .auth import Identity
from .backends import BUILTIN, BackendDriver, build, load_driver_class
from .credentials import CredentialError
from .errors import Invalid, Refused
from .policyfile import Policy
from .sandbox import FORKSERVER_PRELOAD
from .submission import build_ticket, fingerprint, parse
from .validation import Limits, load_qpy

_MB = 1024 * 1024


@dataclass
class Prepared:
    """A decoded submission: the ticket to admit, or the policy's refusal, or (``invalid``)
    a request that parsed but the policy or backend finds malformed. ``fingerprint`` is
    the request's (``submission.fingerprint``) once it parsed: with an Idempotency-Key, a
    repeat of an admitted job is answered with that job even if it would be refused now."""

    backend: Any
    project: Any
    ticket: Any = None
    refused: Refused | None = None
    ignored: list[str] = field(default_factory=list)
    invalid: Invalid | None = None
    fingerprint: str = ""


class Unavailable(Exception):
    """A parse worker has no driver for the backend (its constructor needs credentials,
    which workers never get): the gateway decodes this submission itself."""


#: What every driver's constructor sets, copied to a stand-in (never ``_credentials``).
STAND_IN_ATTRS = ("name", "params", "lanes", "max_shots", "description", "target", "public",
                  "config_hash")


@dataclass(frozen=True)
class StandIn:
    """A credential-free copy of a built driver, for parse workers: its class and the
    attributes its admission checks read (``Target`` included), never its credentials."""

    driver: str  # "package.module:ClassName"
    attrs: Mapping[str, Any]


def stand_in(driver: BackendDriver) -> StandIn | None:
    """A stand-in of ``driver`` for parse workers, or None when it cannot be sent."""
    cls = type(driver)
    names = (*STAND_IN_ATTRS, *getattr(cls, "stand_in_attrs", ()))
    try:
        attrs = {n: getattr(driver, n) for n in names if n != "_credentials"}
        pickle.dumps(attrs)  # a Target an SDK cannot pickle: the loop decodes instead
    except Exception:
        return None
    return StandIn(f"{cls.__module__}:{cls.__qualname__}", attrs)


def stand_ins(drivers: Mapping[str, BackendDriver]) -> dict[str, StandIn]:
    """Stand-ins of the configured (not built-in) drivers: the ones a worker may fail
    to build without credentials."""
    builtin = tuple(BUILTIN.values())
    return {name: s for name, d in drivers.items()
            if type(d) not in builtin and (s := stand_in(d)) is not None}


def _refuse_credentials(backend: str) -> dict[str, str]:
    raise CredentialError(f"parse workers hold no credentials (backend {backend!r})")


def _from_stand_in(s: StandIn) -> BackendDriver:
    cls = load_driver_class(s.driver)
    driver = cls.__new__(cls)  # no constructor: it would ask for credentials
    driver.__dict__.update(s.attrs)
    driver._credentials = _refuse_credentials
    return driver


class Context:
    """What ``submission.parse`` and ``build_ticket`` read of the gateway, in a worker."""

    def __init__(self, drivers: Mapping[str, BackendDriver], limits: Limits,
                 unbuilt: frozenset[str] = frozenset(),
                 standing_in: frozenset[str] = frozenset()) -> None:
        self.drivers = drivers
        self.limits = limits
        self.unbuilt = unbuilt
        #: backends whose driver here is a stand-in (a failure there falls back)
        self.standing_in = standing_in

    def unknown_backend(self, name: str) -> str:
        return (f"unknown backend {name[:64]!r}; backends: {', '.join(sorted(self.drivers))} "
                "(GET /api/backends lists the ones your projects may use)")


#: OpenQASM 3 text longer than this is decoded in the parse pool even in a small body: the
#: importer expands broadcast gates (``h q;`` on a 127-qubit register is 127 instructions),
#: so 64 KiB of text can be a million instructions, a second and hundreds of MB of work.
INLINE_QASM3_CHARS = 4096


class DecodeInPool(Exception):
    """A small body whose decoding still belongs in the parse pool (QPY, long OpenQASM 3)."""


def _decode_in_pool(body: dict[str, Any]) -> bool:
    """Whether a small body's circuits must still be decoded in a parse process, under its
    memory cap: any QPY payload, since only its outer circuit's header can be read before
    Qiskit's reader (Rust, holding the GIL) runs, and a circuit nested in it (a custom
    gate's definition, a control-flow block) may claim any number of qubits: 713 bytes
    claiming 50,000,000 took the reader 51 s and 10 GB; and OpenQASM 3 text over
    ``INLINE_QASM3_CHARS``."""
    circuits = body.get("circuits")
    return isinstance(circuits, list) and any(
        isinstance(c, dict) and ("qpy" in c or (
            isinstance(c.get("qasm3"), str) and len(c["qasm3"]) > INLINE_QASM3_CHARS))
        for c in circuits)


def prepare(ctx: Any, identity: Identity, data: bytes, policy: Policy,
            inline: bool = False) -> Prepared:
    """Decode, validate and decide what needs no database. ``Invalid`` for a body
    that is not a valid submission; ``DecodeInPool`` when ``inline`` (on the gateway's
    event loop) and the body holds QPY or long OpenQASM 3 text."""
    try:
        body = json.loads(data or b"null")
    except (ValueError, UnicodeDecodeError):
        raise Invalid(400, "BAD_JSON", "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise Invalid(400, "BAD_JSON", "the body must be a JSON object")
    if inline and _decode_in_pool(body):
        raise DecodeInPool
    tags = body.get("tags")
    project = tags.get("project") if isinstance(tags, dict) else None
    backend = body.get("backend")
    sub = parse(ctx, body)
    digest = fingerprint(sub)
    try:
        ticket, ignored = build_ticket(ctx, identity, sub, policy)
    except Refused as e:
        return Prepared(backend, project, refused=e, fingerprint=digest)
    except Invalid as e:
        return Prepared(backend, project, invalid=e, fingerprint=digest)
    ticket.fingerprint = digest
    return Prepared(backend, project, ticket, None, ignored, fingerprint=digest)


# -- worker processes ----------------------------------------------------------------------

_worker: dict[str, Any] = {}


def _init_worker(specs: Mapping[str, Any], limits: Limits, memory_mb: int,
                 standins: Mapping[str, StandIn] | None, gateway_pid: int) -> None:
    with contextlib.suppress(OSError, AttributeError):  # die with the fork server (Linux)
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)
    lifeline.follow(gateway_pid)  # and with the gateway, which the fork server outlives
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    drivers: dict[str, BackendDriver] = {}
    standing_in: set[str] = set()
    for name, spec in specs.items():
        with contextlib.suppress(Exception):
            drivers.update(build({name: spec}, lambda backend: {}))
        if name not in drivers and name in (standins or {}):
            # a provider whose Target needs its credentials: the gateway's stand-in
            with contextlib.suppress(Exception):
                drivers[name] = _from_stand_in((standins or {})[name])
                standing_in.add(name)
    # what is left is decoded by the gateway itself (``Unavailable``)
    _worker["ctx"] = Context(drivers, limits, frozenset(set(specs) - set(drivers)),
                             frozenset(standing_in))
    with open("/proc/self/statm") as f:
        base = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = base + memory_mb * _MB
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))


_TOO_COMPLEX = ("bad", 413, "PAYLOAD_TOO_COMPLEX",
                "decoding this submission needs more memory than the gateway allows "
                "(QpuGateway.parse_memory_mb, or small_parse_memory_mb for a small one): "
                "split the job")


def _fallback(ctx: Context, data: bytes) -> tuple[Any, ...]:
    """The gateway decodes this body itself (a backend this worker cannot build): its QPY
    circuits are loaded here first, under this process's memory cap, so that what the
    gateway loads on its event loop is known to fit the limits (a circuit nested in one
    is checked by nothing else)."""
    try:
        body = json.loads(data)
        circuits = body.get("circuits") if isinstance(body, dict) else None
        for item in circuits if isinstance(circuits, list) else ():
            if isinstance(item, dict) and isinstance(item.get("qpy"), str):
                load_qpy(base64.b64decode(item["qpy"], validate=True), ctx.limits)
    except MemoryError:
        return _TOO_COMPLEX
    except Invalid as e:
        return ("bad", e.status, e.code, e.message)
    except Exception:  # noqa: S110 - not decodable here: the gateway's parse words it
        pass
    return ("fallback",)


def _prepare_in_worker(identity: Identity, data: bytes, policy: Policy) -> tuple[Any, ...]:
    """Exceptions with keyword-only state do not pickle: answer with plain tuples."""
    ctx: Context = _worker["ctx"]
    try:
        p = prepare(ctx, identity, data, policy)
    except KeyError:  # routed to a backend this worker could not build
        if ctx.unbuilt:
            return _fallback(ctx, data)
        raise
    except Invalid as e:
        if e.code == "UNKNOWN_BACKEND" and ctx.unbuilt:
            return _fallback(ctx, data)
        return ("bad", e.status, e.code, e.message)
    except MemoryError:
        return _TOO_COMPLEX
    except (CredentialError, AttributeError):
        # a stand-in's check asked for credentials, or for state it does not carry: the
        # gateway's own driver decides. Any other error is the submission's (a 422 from
        # the caller), never a reason to decode it again on the gateway's event loop.
        if ctx.standing_in:
            return ("fallback",)
        raise
    if p.refused is not None:
        r = p.refused
        return ("refused", p.backend, p.project, r.status, r.code, r.message, r.detail,
                p.fingerprint)
    if p.invalid is not None:
        bad = p.invalid
        return ("invalid", p.backend, p.project, bad.status, bad.code, bad.message,
                p.fingerprint)
    return ("ok", p.backend, p.project, p.ticket, p.ignored)


class ParsePool:
    """``processes`` worker processes; ``prepare`` awaits one without blocking the loop."""

    def __init__(self, processes: int, specs: Mapping[str, Any], limits: Limits,
                 memory_mb: int, log: logging.Logger,
                 standins: Mapping[str, StandIn] | None = None) -> None:
        self.processes = processes
        self.args = (dict(specs), limits, memory_mb, dict(standins or {}))
        self.log = log
        self._pool = self._new_pool()
        self._warming = threading.Lock()
        self._warm_started = False
        #: done once the fork server runs: until then a hand-over would start it on the
        #: event loop (``submit`` waits for its imports of Qiskit and Aer)
        self._ready: concurrent.futures.Future[None] = concurrent.futures.Future()

    def _new_pool(self) -> concurrent.futures.ProcessPoolExecutor:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(FORKSERVER_PRELOAD)
        return concurrent.futures.ProcessPoolExecutor(
            self.processes, mp_context=ctx, initializer=_init_worker,
            initargs=(*self.args, os.getpid()))

    def warm(self) -> None:
        """Start the workers in a thread, once: starting the fork server waits for its
        imports, so not on the event loop, nor in the loop's executor, which a stop during
        start-up would wait for."""
        with self._warming:
            if self._warm_started:
                return
            self._warm_started = True
        threading.Thread(target=self._start_workers, name="qpu-parse-warm", daemon=True).start()

    def _start_workers(self) -> None:
        try:
            for _ in range(self.processes):
                self._pool.submit(os.getpid)
        except RuntimeError:  # the gateway stopped meanwhile
            pass
        finally:
            self._ready.set_result(None)

    async def prepare(self, identity: Identity, data: bytes, policy: Policy) -> Prepared:
        if not self._ready.done():  # the first large submission of a cold gateway
            self.warm()
            await asyncio.wrap_future(self._ready)
        loop = asyncio.get_running_loop()
        try:
            answer = await loop.run_in_executor(self._pool, _prepare_in_worker, identity,
                                                data, policy)
        except concurrent.futures.process.BrokenProcessPool:
            # a worker died (killed, or crashed on this payload): refuse, start afresh
            self.log.error("QPU parse pool: a worker died; starting new workers")
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = self._new_pool()
            raise Invalid(422, "MALFORMED_QPY", "the submission could not be decoded "
                                "(the decoder stopped); check the payload") from None
        kind = answer[0]
        if kind == "fallback":
            raise Unavailable()
        if kind == "bad":
            raise Invalid(*answer[1:])
        if kind == "refused":
            _, backend, project, status, code, message, detail, digest = answer
            return Prepared(backend, project, refused=Refused(status, code, message, **detail),
                            fingerprint=digest)
        if kind == "invalid":
            _, backend, project, status, code, message, digest = answer
            return Prepared(backend, project, invalid=Invalid(status, code, message),
                            fingerprint=digest)
        _, backend, project, ticket, ignored = answer
        return Prepared(backend, project, ticket, None, cast(list[str], ignored))

    def close(self) -> None:
        # A worker still starting holds the pool's lock until the fork server has imported
        # Qiskit: a stop during start-up must not wait for that (lifeline.py ends workers).
        threading.Thread(target=self._pool.shutdown, kwargs={"wait": False,
                         "cancel_futures": True}, name="qpu-parse-close", daemon=True).start()


__all__ = ["Context", "ParsePool", "Prepared", "StandIn", "Unavailable",
           "prepare", "stand_in", "stand_ins"]
