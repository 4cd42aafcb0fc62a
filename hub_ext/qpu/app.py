"""The QPU gateway: its configuration, start-up checks and operations (admit, cancel,
operate, reload the policy), free of HTTP.

Run as a hub-managed service (``python -m hub_ext.qpu``, ``server.py`` serves it over
HTTP with ``handlers.py``); see docs/qpu.md for the hub configuration (service, custom
scopes, roles). Every security-relevant setting is a trait below, checked at start-up
with a message saying how to fix it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import re
import socket
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from traitlets import Bool, Dict, Enum, Float, Int, Unicode, default, validate
from traitlets import Callable as CallableTrait
from traitlets.config import Application, catch_config_error

from ..ratelimit import Buckets
from . import __version__, metrics
from .audit import AuditBridge
from .auth import SCOPES, HubResolver, Identity, Resolver
from .backends import BackendDriver, build
from .config import PolicyHolder
from .credentials import CredentialBroker
from .errors import GatewayError, Refused
from .parsing import DecodeInPool, ParsePool, Prepared, Unavailable, prepare, stand_ins
from .policy import period_left
from .policyfile import CLASSES, PERIODS, PolicyError
from .runner import Runner
from .store import KEY_SECONDS, Admitted, Store, StoreError
from .validation import Limits

SYNC_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")
#: The range of ``QpuGateway.idempotency_seconds``: at least the kernel client's retries
#: of one submission, at most what the table should hold.
KEY_SECONDS_RANGE = (600.0, 30 * 86400.0)
#: The longest a revoked hub token may keep working at the gateway (issue 12).
MAX_AUTH_CACHE_SECONDS = 5.0


def _no_credentials(backend: str) -> dict[str, str]:
    return {}


#: Small submissions decoded in the parse pool (those holding QPY) count against this many
#: times ``max_parse_queue`` and ``max_parse_per_user``, apart from large ones.
SMALL_IN_POOL = 64


class _InFlight:
    """Submissions of one size class in a parse pool (decoding or waiting), per user."""

    def __init__(self) -> None:
        self.per_user: dict[str, int] = {}
        self.total = 0


class QpuGateway(Application):
    name = "qustody-qpu-gateway"
    version = __version__
    description = """The Qustody QPU gateway: admits, schedules and runs Qiskit jobs for hub
    users under project policy, holding the provider credentials itself."""

    aliases = {  # noqa: RUF012 (traitlets reads it from the class)
        "ip": "QpuGateway.ip",
        "port": "QpuGateway.port",
        "db-url": "QpuGateway.db_url",
        "policy": "QpuGateway.policy_file",
        "hub-api-url": "QpuGateway.hub_api_url",
        "config": "QpuGateway.config_file",
        "f": "QpuGateway.config_file",
        "log-level": "Application.log_level",
    }

    @default("log_level")
    def _default_log_level(self) -> int:
        return logging.INFO  # as JupyterHub's own: start-up, reloads and refusals are shown

    config_file = Unicode(
        "", config=True,
        help="A Python traitlets config file (``c.QpuGateway.backends = {...}``) to load.",
    )
    ip = Unicode("127.0.0.1", config=True, help="Address to listen on (loopback by default).")
    port = Int(
        config=True,
        help="""Port to listen on. Defaults to the port of JUPYTERHUB_SERVICE_URL (set by the
        hub for a managed service), else 8765.""",
    )

    @default("port")
    def _default_port(self) -> int:
        url = os.environ.get("JUPYTERHUB_SERVICE_URL", "")
        m = re.match(r"^https?://[^/:]+:(\d+)", url)
        return int(m.group(1)) if m else 8765

    base_url = Unicode(
        config=True,
        help="""URL prefix of the API (ends with '/'). Defaults to JUPYTERHUB_SERVICE_PREFIX,
        the prefix the hub's proxy routes to this service, else '/'.""",
    )

    @default("base_url")
    def _default_base_url(self) -> str:
        return os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/")

    @validate("base_url")
    def _valid_base_url(self, proposal: Any) -> str:
        value = str(proposal["value"])
        if not value.startswith("/") or not value.endswith("/"):
            raise ValueError("QpuGateway.base_url must start and end with '/'")
        return value

    hub_api_url = Unicode(
        config=True,
        help="""The hub's REST API (e.g. http://127.0.0.1:8081/hub/api), asked who each token
        belongs to. Defaults to JUPYTERHUB_API_URL, set by the hub for a managed service.
        Required: without it every request is refused.""",
    )

    @default("hub_api_url")
    def _default_hub_api_url(self) -> str:
        return os.environ.get("JUPYTERHUB_API_URL", "")

    auth_cache_seconds = Float(
        3.0, config=True,
        help="""How long the hub's answer about a token (its owner, groups and scopes) is
        reused. A token revoked at the hub (or a user removed from a role or group) keeps
        working here for at most this long, so it is capped at 5 seconds. 0 asks the hub on
        every request; other values are rounded up to whole seconds (HubAuth's cache).
        (The gateway's own user revoke, POST api/admin/users/NAME/revoke,
        takes effect at once.)""",
    )

    @validate("auth_cache_seconds")
    def _valid_auth_cache(self, proposal: Any) -> float:
        value = float(proposal["value"])
        if not 0 <= value <= MAX_AUTH_CACHE_SECONDS:
            raise ValueError(
                f"QpuGateway.auth_cache_seconds = {value:g}: give 0 to {MAX_AUTH_CACHE_SECONDS:g}"
                " seconds; a longer cache lets a token revoked at the hub keep submitting"
            )
        return value

    db_url = Unicode(
        config=True,
        help="""SQLAlchemy URL of the gateway database: ``sqlite:////path/qpu.sqlite``
        (default, one replica) or ``postgresql+psycopg://user@host/db`` (several
        replicas). The default is qpu.sqlite in the working directory.""",
    )

    @default("db_url")
    def _default_db_url(self) -> str:
        return f"sqlite:///{Path.cwd() / 'qpu.sqlite'}"

    @validate("db_url")
    def _valid_db_url(self, proposal: Any) -> str:
        value = str(proposal["value"])
        if not value.startswith(("sqlite:", "postgresql")):
            raise ValueError(
                "QpuGateway.db_url must be a sqlite:/// or postgresql+psycopg:// URL"
            )
        if value == "sqlite://" or value == "sqlite:///:memory:":
            raise ValueError("QpuGateway.db_url: an in-memory database loses jobs; use a file")
        return value

    sqlite_synchronous = Unicode(
        "FULL", config=True,
        help="""SQLite ``synchronous`` mode. FULL (default): an acknowledged job survives a
        power cut. NORMAL: it survives a crash of the gateway but maybe not of the machine.""",
    )

    @validate("sqlite_synchronous")
    def _valid_sync(self, proposal: Any) -> str:
        value = str(proposal["value"]).upper()
        if value not in SYNC_MODES:
            raise ValueError(f"QpuGateway.sqlite_synchronous must be one of {SYNC_MODES}")
        if value == "OFF":
            raise ValueError("QpuGateway.sqlite_synchronous=OFF can lose acknowledged jobs")
        return value

    workers = Int(
        1, config=True,
        help="""Processes serving the gateway on its one port. Admission (HTTP, JSON, QPY
        decoding, policy) is Python work that uses one core per process, so set this to
        the cores you can give the gateway (2 about doubles admissions per second on 2
        cores). Each worker is a full replica (it admits, dispatches and runs jobs) and
        shares the database like replicas on other hosts do; the first process
        supervises them (see hub_ext/supervisor.py). A worker that dies is started
        again and its running jobs are recovered through their leases; the others keep
        serving meanwhile. The hub-managed gateway runs 2 (hub_ext.qpu.hub).""",
    )

    @validate("workers")
    def _valid_workers(self, proposal: Any) -> int:
        value = int(proposal["value"])
        if not 1 <= value <= 64:
            raise ValueError("QpuGateway.workers must be between 1 and 64")
        return value

    db_threads = Int(
        0, config=True,
        help="""Database worker threads. 0 (default): 1 for SQLite (one writer), 4 for
        PostgreSQL.""",
    )

    policy_file = Unicode(
        config=True,
        help="""The policy file (TOML): projects and members, tag schema, quotas, rate
        limits, priority tiers, reservations, sensitivity routing. Required; the gateway
        refuses to start without a valid one. Re-read when it changes.""",
    )

    courses_dir = Unicode(
        "",
        config=True,
        help="""The hub's courses directory (one ``<course>.toml`` per course,
        docs/courses.md): each course's QPU budget (backends, per-student and course
        limits, reservations) and term (no jobs once it closes). Re-read with the policy
        file; a bad course file stops the gateway at start-up and is ignored on reload
        (the previous policy stays). Empty (default): no course files.""",
    )

    policy_reload_seconds = Float(
        2.0, config=True,
        help="How often to check the policy file for changes (seconds). A change is read "
        "once the next check finds it settled; SIGHUP and `reload` read it at once.",
    )

    backends = Dict(
        config=True,
        help="""Backends by name: ``{"aer_simulator": {"driver": "aer", "lanes": 2},
        "fake_5q": {"driver": "emulated", "num_qubits": 5, "seed": 7}}``. ``driver`` is
        ``aer``, ``emulated`` or ``package.module:Class`` (a ``BackendDriver``); common
        keys: ``lanes``, ``max_shots``, ``description``. Empty: no backend (deny all).""",
    )

    @validate("backends")
    def _valid_backends(self, proposal: Any) -> dict[str, Any]:
        for name, spec in proposal["value"].items():
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}", str(name)):
                raise ValueError(f"QpuGateway.backends: {name!r} is not a valid backend name")
            if not isinstance(spec, dict) or "driver" not in spec:
                raise ValueError(
                    f"QpuGateway.backends[{name!r}] must be a dict with a 'driver' "
                    "(aer, emulated or package.module:Class)"
                )
        return dict(proposal["value"])

    credentials = CallableTrait(
        default_value=_no_credentials, config=True,
        help="""``credentials(backend_name) -> Mapping[str, str]``: that backend's provider
        credentials, from the secret broker (set it in the gateway config, e.g.
        ``c.QpuGateway.credentials = broker_client.qpu_credentials``). Drivers call it
        through ``BackendDriver.credentials()`` each time they need them; the gateway
        never stores them, and scrubs every value it handed out from driver errors,
        results, logs and audit records. Default: no credentials (simulators only).""",
    )

    on_event = CallableTrait(
        default_value=None, allow_none=True, config=True,
        help="""Called as ``on_event(name, fields)`` after each action that matters to the
        security team (job submitted/rejected/started/finished/cancelled/recovered,
        operator actions, policy reloads), next to the built-in audit log
        (``audit_log``): e.g. a metrics or SIEM forwarder. Its errors are logged and do not
        undo the action.""",
    )

    audit_log = Bool(
        True, config=True,
        help="""Record job, policy and operator events in the hub's audit log. Configure
        ``c.AuditLog.path`` (or ``db_url``) and ``key_file`` in this config exactly as the
        hub's (hub_ext.qpu.hub writes them for a hub-managed gateway); the gateway refuses
        to start without them. False only for a gateway that is not part of a hub.""",
    )

    max_payload_bytes = Int(
        8 * 1024 * 1024, config=True,
        help="Largest submission body in bytes; larger ones get 413 before being read.",
    )
    max_circuits = Int(300, config=True, help="Most circuits in one job.")
    max_qubits = Int(127, config=True, help="Most qubits in one circuit (any backend).")
    max_depth = Int(100_000, config=True, help="Greatest circuit depth accepted.")
    max_instructions = Int(
        1_000_000, config=True, help="Most instructions in one circuit (checked from the QPY "
        "header before loading).",
    )
    max_shots = Int(
        1_000_000, config=True,
        help="Most shots per circuit on any backend (each backend may set a lower max_shots).",
    )

    @validate("max_payload_bytes", "max_circuits", "max_qubits", "max_depth",
              "max_instructions", "max_shots")
    def _positive(self, proposal: Any) -> int:
        if proposal["value"] < 1:
            raise ValueError(f"QpuGateway.{proposal['trait'].name} must be at least 1")
        return int(proposal["value"])

    inline_parse_bytes = Int(
        65536, config=True,
        help="""Submissions up to this size (bytes) are decoded on the event loop, where a
        small one costs less than a hand-over to a process; larger ones are decoded in
        the parse pool (``parse_processes``) so that megabytes of JSON and QPY never stall
        the other requests. At most 1 MiB.""",
    )
    parse_processes = Int(
        1, config=True,
        help="""Processes that decode large submissions (1-16); each holds a copy of
        Qiskit (about 150 MB).""",
    )
    small_parse_memory_mb = Int(
        256, config=True,
        help="""Memory (MiB, on top of its start-up size) of the parse process that decodes
        small submissions holding QPY (up to ``inline_parse_bytes``): Qiskit's reader
        builds the circuits nested in a payload before anything can check them, so even
        a few hundred bytes may claim millions of qubits. It has a process of its own
        (about 150 MB more per gateway process), so that small jobs never wait for a
        large payload's decoding, and a low cap, so that such a payload is refused within
        a second (64-65536).""",
    )
    parse_memory_mb = Int(
        2048, config=True,
        help="""Memory (MiB, on top of its own start-up size) a parse process may use for
        one submission; a payload that needs more is refused (413 PAYLOAD_TOO_COMPLEX)
        instead of exhausting the host (64-65536).""",
    )
    warm_up = Enum(
        ["first-request", "start"], "first-request", config=True,
        help="""When each gateway process starts its sandbox workers (one per lane of a
        sandboxed backend) and parse processes, each of which loads Qiskit and Aer: at
        the first request a user or service makes to its API (``first-request``, the
        default; the health check and metrics scrapes do not count), so a hub where
        nobody uses the QPU spends neither their start-up CPU nor their memory, and the
        first request, typically JupyterLab's QPU panel listing backends, readies them
        before a job comes; or as soon as the gateway listens (``start``).""",
    )
    max_parse_queue = Int(
        32, config=True,
        help="""Large submissions being decoded or waiting for a parse thread, all users
        together; beyond it a submission is answered 503 PARSE_BUSY (retry shortly), so a
        flood of large payloads holds bounded memory.""",
    )
    max_parse_per_user = Int(
        4, config=True,
        help="""Large submissions of one user being decoded or waiting at once; beyond it
        that user gets 503 PARSE_BUSY, so one user cannot fill the parse pool.""",
    )

    @validate("inline_parse_bytes", "parse_processes", "parse_memory_mb",
              "small_parse_memory_mb", "max_parse_queue",
              "max_parse_per_user")
    def _valid_parse(self, proposal: Any) -> int:
        name, value = proposal["trait"].name, int(proposal["value"])
        low, high = {"inline_parse_bytes": (0, 1024**2), "parse_processes": (1, 16),
                     "parse_memory_mb": (64, 65536), "small_parse_memory_mb": (64, 65536),
                     "max_parse_queue": (1, 10_000), "max_parse_per_user": (1, 10_000)}[name]
        if not low <= value <= high:
            raise ValueError(f"QpuGateway.{name} must be between {low} and {high}")
        return value

    refusals_per_minute = Float(
        10.0, config=True,
        help="""Refused submissions one user may make a minute, sustained, once
        ``refusal_burst`` is used up. Each refusal is a ``qpu-job-rejected`` audit record,
        a type written even when the audit disk runs low (``AuditLog.low_space_types``);
        a user over the limit gets 429 ``TOO_MANY_REFUSED`` with ``Retry-After`` for any
        submission, and nothing is recorded, until the limit allows one more. This bounds
        how fast one user can fill the audit disk with refusals. Counted per gateway
        process: ``workers`` and replicas each keep their own.""",
    )
    refusal_burst = Int(
        30, config=True,
        help="Refused submissions one user may make at once before ``refusals_per_minute`` "
             "applies.",
    )

    @validate("refusals_per_minute", "refusal_burst")
    def _valid_refusals(self, proposal: Any) -> Any:
        name, value = proposal["trait"].name, proposal["value"]
        if not 0 < value <= 100_000:
            raise ValueError(f"QpuGateway.{name} = {value}: give a number above 0 (at most "
                             "100000)")
        return value

    idempotency_seconds = Float(
        KEY_SECONDS, config=True,
        help="""How long a submission's ``Idempotency-Key`` is remembered (seconds; 24 h by
        default, 10 minutes to 30 days). A repeat within it gets the first submission's
        job instead of a second one; after it the key is free again. Expired keys are
        purged by the lease loop every 10 minutes.""",
    )

    @validate("idempotency_seconds")
    def _valid_idempotency_seconds(self, proposal: Any) -> float:
        value = float(proposal["value"])
        low, high = KEY_SECONDS_RANGE
        if not low <= value <= high:
            raise ValueError(
                f"QpuGateway.idempotency_seconds = {value:g}: give {low:g} to {high:g} "
                "seconds; a shorter window can forget a key while its client still retries"
            )
        return value

    lease_seconds = Float(
        30.0, config=True,
        help="""A running job's lease. A replica renews it every third of this; if the
        replica dies, the job is recovered this long after its last renewal.""",
    )
    max_attempts = Int(
        3, config=True,
        help="Runs a job may start before a lost run fails it (quota refunded).",
    )
    requeue_lost = Bool(
        True, config=True,
        help="""Requeue a job whose replica died while running it (True), or fail it and
        refund its quota (False). Requeue suits simulators; a provider driver may prefer
        False so a job is never run twice on hardware.""",
    )
    dispatch_poll_seconds = Float(
        0.5, config=True,
        help="How often the dispatcher looks for startable jobs without being woken.",
    )
    instance_name = Unicode(
        config=True, help="This replica's name in leases (default: host, pid and a random tag)."
    )

    @default("instance_name")
    def _default_instance(self) -> str:
        return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"

    @validate("lease_seconds", "dispatch_poll_seconds", "policy_reload_seconds")
    def _positive_float(self, proposal: Any) -> float:
        if proposal["value"] <= 0:
            raise ValueError(f"QpuGateway.{proposal['trait'].name} must be positive")
        return float(proposal["value"])

    # -- start-up ----------------------------------------------------------------------------

    @catch_config_error
    def initialize(self, argv: Any = None) -> None:
        super().initialize(argv)
        if self.config_file:
            self.load_config_file(self.config_file)
            self.update_config(self.cli_config)  # the command line wins
        self.check()

    def check(self) -> None:
        """Cross-setting checks; each failure says how to fix it."""
        if not self.hub_api_url:
            self.exit_with("QpuGateway.hub_api_url is not set (nor JUPYTERHUB_API_URL): the "
                           "gateway cannot tell who is calling. Run it as a hub-managed service "
                           "or set --hub-api-url.")
        if not self.policy_file:
            self.exit_with("QpuGateway.policy_file is not set: give --policy=FILE "
                           "(see docs/qpu.md for an example).")
        if not self.backends:
            self.log.warning("QpuGateway.backends is empty: every job will be refused")
        audit = self.config.get("AuditLog", {})
        if self.audit_log and not (audit.get("path") or audit.get("db_url")):
            self.exit_with("QpuGateway.audit_log is on but c.AuditLog.path (or db_url) is not "
                           "set: give the hub's AuditLog.path and key_file in the gateway "
                           "config, or set QpuGateway.audit_log = False outside a hub.")
        if self.max_payload_bytes > 1024**3:
            self.exit_with("QpuGateway.max_payload_bytes above 1 GiB is not supported")
        # the gateway decodes hostile input from every user: it must not hold the key
        # that opens their secrets (it asks the hub for its own, secret_source.py)
        holds_key = getattr(self.credentials, "holds_master_key", None)
        if callable(holds_key) and holds_key():
            self.exit_with("QpuGateway.credentials reads the secret store with the hub's "
                           "master key, which decrypts every user's secret: use "
                           "SecretStoreCredentials(store='hub') (the hub answers the "
                           "service:qpu entries) or store='vault'")
        if os.environ.get("QUSTODY_SECRETS_MASTER_KEY"):
            self.exit_with("the gateway's environment holds QUSTODY_SECRETS_MASTER_KEY, the "
                           "key to every user's secret: remove it from the service's "
                           "environment (the gateway asks the hub for its credentials)")

    def exit_with(self, message: str) -> None:
        self.log.critical(message)
        self.exit(2)

    def setup(self) -> None:
        try:
            self.broker = CredentialBroker(self.credentials, self._known_secrets)
            self.drivers: dict[str, BackendDriver] = build(self.backends, self.broker)
        except ValueError as e:
            self.exit_with(f"QpuGateway.backends: {e}")
        try:
            self.policies = PolicyHolder(
                Path(self.policy_file),
                {n: d.backend_class for n, d in self.drivers.items()},
                self.log,
                Path(self.courses_dir) if self.courses_dir else None,
            )
        except PolicyError as e:
            self.exit_with(f"QpuGateway.policy_file: {e}")
        self.limits = Limits(
            max_payload_bytes=self.max_payload_bytes, max_circuits=self.max_circuits,
            max_qubits=self.max_qubits, max_depth=self.max_depth,
            max_instructions=self.max_instructions, max_shots=self.max_shots,
        )
        self.store = Store(self.db_url, sqlite_synchronous=self.sqlite_synchronous,
                           key_seconds=self.idempotency_seconds)
        try:
            self.store.create(self.drivers)
        except StoreError as e:
            self.exit_with(str(e))
        threads = self.db_threads or (1 if self.store.is_sqlite else 4)
        self.db_executor = ThreadPoolExecutor(threads, thread_name_prefix="qpu-db")
        self.resolver: Resolver = HubResolver(self.hub_api_url, self.auth_cache_seconds)
        self.hooks: list[Callable[[str, dict[str, Any]], Any]] = []
        if self.audit_log:
            self.audit_bridge = self._audit_bridge()
            self.hooks.append(self.audit_bridge)
        if self.on_event is not None:
            self.hooks.append(self.on_event)
        self._pending: list[tuple[Any, asyncio.Future[Any]]] = []
        self._draining = False
        standins = stand_ins(self.drivers)
        self.parse_pool = ParsePool(self.parse_processes, self.backends, self.limits,
                                    self.parse_memory_mb, self.log, standins)
        self.small_parse_pool = ParsePool(1, self.backends, self.limits,
                                          self.small_parse_memory_mb, self.log, standins)
        self._large_in_pool = _InFlight()
        self._small_in_pool = _InFlight()
        self._last_of: dict[str, asyncio.Future[None]] = {}
        self._refusals = Buckets(self.refusals_per_minute / 60, self.refusal_burst, 100_000)

    def _audit_bridge(self) -> AuditBridge:
        from hub_ext.audit import AuditLog

        try:
            log = AuditLog(config=self.config)
        except Exception as e:  # a bad AuditLog setting: say which, then stop
            self.exit_with(f"c.AuditLog: {e}")
        log.add_known_secrets(sorted(self.broker.known))  # drivers may have asked already
        return AuditBridge(log, self.store.job, self.log,
                           service=os.environ.get("JUPYTERHUB_SERVICE_NAME", "qpu"),
                           policy_path=self.policy_file)

    def _known_secrets(self, values: Any) -> None:
        """Credential values a driver was given: the audit log redacts them wherever."""
        bridge = getattr(self, "audit_bridge", None)
        if bridge is not None:
            bridge.audit.add_known_secrets(values)

    def unknown_backend(self, name: str) -> str:
        return (f"unknown backend {name[:64]!r}; backends: {', '.join(sorted(self.drivers))} "
                "(GET /api/backends lists the ones your projects may use)")

    def emit(self, name: str, fields: dict[str, Any]) -> None:
        """The single hook point for audit events."""
        if self.log.isEnabledFor(logging.DEBUG):
            self.log.debug("QPU event %s %s", name, json.dumps(fields, default=str))
        for hook in self.hooks:
            try:
                hook(name, fields)
            except Exception as e:
                self.log.error("QPU event hook failed for %s: %s", name, type(e).__name__)

    # -- admission (group commit) -------------------------------------------------------------

    @property
    def decoding(self) -> int:
        """Large submissions in the parse pool now (decoding or waiting)."""
        return self._large_in_pool.total

    async def _prepare_in_pool(self, identity: Identity, data: bytes, policy: Any) -> Prepared:
        """A body in the bounded parse pool (processes: see parsing.py): a large one, or a
        small one holding QPY (``parsing.DecodeInPool``). Small ones are counted apart,
        against ``SMALL_IN_POOL`` times the bounds: a client sending many small jobs at
        once is not refused for what large payloads are bounded for (held memory)."""
        small = len(data) <= self.inline_parse_bytes
        flight = self._small_in_pool if small else self._large_in_pool
        factor = SMALL_IN_POOL if small else 1
        mine = flight.per_user.get(identity.name, 0)
        if (flight.total >= factor * self.max_parse_queue
                or mine >= factor * self.max_parse_per_user):
            who = "yours" if mine >= factor * self.max_parse_per_user else "all users'"
            raise GatewayError(
                503, "PARSE_BUSY",
                f"too many submissions ({who}) are being decoded; submit again in a "
                "moment (QpuGateway.max_parse_queue / max_parse_per_user)",
                retry_after=1,
            )
        flight.per_user[identity.name] = mine + 1
        flight.total += 1
        try:
            try:
                pool = self.small_parse_pool if small else self.parse_pool
                return await pool.prepare(identity, data, policy)
            except Unavailable:  # a provider backend the workers cannot build: decode here
                self.log.warning("QPU parse pool: a submission was decoded on the event loop "
                                 "(its backend's driver has no stand-in in the parse "
                                 "workers; see docs/qpu.md)")
                return prepare(self, identity, data, policy)
        finally:
            flight.total -= 1
            left = flight.per_user[identity.name] - 1
            if left:
                flight.per_user[identity.name] = left
            else:
                del flight.per_user[identity.name]

    def _end_turn(self, user: str, turn: asyncio.Future[None],
                  before: asyncio.Future[None] | None) -> None:
        """This submission is queued (or refused): the user's next may go. One that
        failed before its predecessor was queued passes its turn on only after it, so
        the chain holds."""
        def done(_: object = None) -> None:
            if not turn.done():
                turn.set_result(None)
            if self._last_of.get(user) is turn:
                del self._last_of[user]

        if before is not None and not before.done():
            before.add_done_callback(done)
        else:
            done()

    async def submit(self, identity: Identity, data: bytes,
                     key: str | None = None) -> Admitted:
        """Admit one submission (the raw JSON body). A user's submissions are admitted in
        the order they arrived, even when a large one is decoded off the event loop.

        ``key`` is the client's ``Idempotency-Key``: a submission repeating an earlier one
        with the same key (and the same request) gets that one's answer as it stands now
        (``Admitted.replayed``) and admits, counts and records nothing; the same key with
        another request is refused (422 ``IDEMPOTENCY_KEY_REUSED``)."""
        wait = self._refusals.wait(identity.name)
        if wait > 0:
            raise GatewayError(
                429, "TOO_MANY_REFUSED",
                f"too many of your submissions were refused lately; submit again in "
                f"{math.ceil(wait)} s (QpuGateway.refusals_per_minute)",
                retry_after=math.ceil(wait),
            )
        loop = asyncio.get_running_loop()
        policy = self.policies.policy
        before = self._last_of.get(identity.name)
        turn: asyncio.Future[None] | None = None
        prepared: Prepared | None = None
        # A body naming "qpy" is decoded in the pool without parsing it here first; one
        # that spells the key otherwise (an escape) is found by prepare's own check.
        if len(data) <= self.inline_parse_bytes and b'"qpy"' not in data:
            with contextlib.suppress(DecodeInPool):  # QPY, long OpenQASM 3: in the pool
                prepared = prepare(self, identity, data, policy, inline=True)
        if prepared is None or before is not None:
            turn = loop.create_future()
            self._last_of[identity.name] = turn
        try:
            if prepared is None:
                prepared = await self._prepare_in_pool(identity, data, policy)
            if before is not None and not before.done():
                await asyncio.shield(before)  # the user's earlier submission goes first
            ticket, ignored = prepared.ticket, prepared.ignored
            if ticket is not None:
                ticket.idempotency_key = key
                future: asyncio.Future[Any] = loop.create_future()
                self._pending.append((ticket, future))
        finally:
            if turn is not None:
                self._end_turn(identity.name, turn, before)
        if ticket is None:
            return await self._not_admitted(identity, prepared, key)
        if not self._draining:
            self._draining = True
            self._drain_task = loop.create_task(self._drain())
        outcome: Admitted | Exception = await future
        if isinstance(outcome, StoreError):
            raise GatewayError(503, "DATABASE",
                                    f"{outcome}; the job was not stored, submit it again")
        if isinstance(outcome, Refused):
            self._rejected(identity.name, {"code": outcome.code, "message": outcome.message,
                                           "project": ticket.project, "backend": ticket.backend})
            return Admitted("", "REJECTED", outcome.code, [], outcome)
        if isinstance(outcome, Exception):
            raise outcome
        outcome.ignored = ignored
        if outcome.replayed:
            self._replayed(identity, outcome)
        elif outcome.refused is not None:
            self._rejected(identity.name, {"job_id": outcome.job_id,
                                           "code": outcome.refused.code,
                                           "message": outcome.refused.message,
                                           "project": ticket.project,
                                           "backend": ticket.backend,
                                           **_quota_period(outcome.refused)})
        else:
            self.emit("qpu.job.submitted", {"job_id": outcome.job_id, "user": identity.name,
                                            "project": ticket.project,
                                            "backend": ticket.backend,
                                            "state": outcome.state,
                                            "reason": outcome.reason,
                                            "shots": ticket.shots,
                                            "circuits": ticket.n_circuits,
                                            "priority": ticket.priority,
                                            "tags": ticket.tags})
            if outcome.state == "QUEUED":  # a held job cannot start: no dispatch pass
                self.runner.wake()
        return outcome

    async def _not_admitted(self, identity: Identity, prepared: Prepared,
                            key: str | None) -> Admitted:
        """A submission refused before admission. With a key, the answer of the submission
        it repeats comes first: the policy may refuse now what it admitted then."""
        if key is not None and prepared.fingerprint:
            loop = asyncio.get_running_loop()
            try:
                earlier = await loop.run_in_executor(
                    self.db_executor, self.store.replay, identity.name, key,
                    prepared.fingerprint)
            except StoreError as e:
                raise GatewayError(503, "DATABASE", f"{e}; nothing was changed, submit it "
                                   "again") from None
            if isinstance(earlier, Exception):
                raise earlier
            if earlier is not None:
                earlier.ignored = prepared.ignored
                self._replayed(identity, earlier)
                return earlier
        if prepared.invalid is not None:
            raise prepared.invalid
        refused = prepared.refused
        assert refused is not None
        self._rejected(identity.name, {"code": refused.code, "message": refused.message,
                                       "backend": _name(prepared.backend),
                                       "project": _name(prepared.project)})
        return Admitted("", "REJECTED", refused.code, [], refused)

    def _rejected(self, user: str, fields: dict[str, Any]) -> None:
        """A refused submission: counted against ``refusals_per_minute``, and recorded."""
        self._refusals.take(user)
        self.emit("qpu.job.rejected", {"user": user, **fields})

    def _replayed(self, identity: Identity, outcome: Admitted) -> None:
        """A repeated Idempotency-Key: for the hooks only. The audit log has the job's
        submission (or rejection) once, from the first time; a repeat changes nothing."""
        self.emit("qpu.job.replayed", {"job_id": outcome.job_id, "user": identity.name,
                                       "state": outcome.state})

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                batch, self._pending = self._pending[:256], self._pending[256:]
                policy = self.policies.policy
                try:
                    results = await loop.run_in_executor(
                        self.db_executor, self.store.admit_many, [t for t, _ in batch], policy
                    )
                except StoreError as e:
                    results = [e] * len(batch)
                except Exception as e:
                    self.log.error("QPU admission failed: %s", type(e).__name__, exc_info=True)
                    results = [StoreError("internal error")] * len(batch)
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
        finally:
            self._draining = False

    # -- cancel and operators ------------------------------------------------------------------

    async def cancel(self, job_id: str, actor: str, reason: str) -> tuple[str, str]:
        _, state, what = (await self.cancel_jobs([job_id], actor, reason))[0]
        return state, what

    async def cancel_jobs(self, job_ids: list[str], actor: str,
                          reason: str) -> list[tuple[str, str, str]]:
        """Cancel jobs (few transactions); running ones here stop at once, elsewhere at
        their replica's next lease renewal."""
        loop = asyncio.get_running_loop()
        reason = self.broker.scrub(reason)  # free text: someone may paste a key
        try:
            outcomes: list[tuple[str, str, str]] = await loop.run_in_executor(
                self.db_executor, self.store.cancel_many, job_ids, actor, reason
            )
        except StoreError as e:
            raise GatewayError(503, "DATABASE", f"{e}; try again") from None
        for job_id, _state, what in outcomes:
            if what == "requested":
                self.runner.cancel_local(job_id)
            if what in ("requested", "cancelled"):
                self.emit("qpu.job.cancelled", {"job_id": job_id, "by": actor,
                                                "reason": reason})
        self.runner.wake()
        return outcomes

    async def operate(self, actor: str, kind: str, name: str, action: str,
                      reason: str) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        reason = self.broker.scrub(reason)
        allowed = {
            "backends": ("pause", "resume", "drain"),
            "projects": ("pause", "resume", "drain"),
            "users": ("revoke", "restore"),
            "jobs": ("cancel",),
        }
        if action not in allowed[kind]:
            raise GatewayError(400, "BAD_ACTION",
                                    f"{kind} support {', '.join(allowed[kind])}")
        policy = self.policies.policy
        if kind == "backends" and name not in self.drivers:
            raise GatewayError(404, "UNKNOWN_BACKEND", self.unknown_backend(name))
        if kind == "projects" and policy.projects.find(name) is None:
            raise GatewayError(404, "UNKNOWN_PROJECT", f"no project {name!r} in the policy")

        def db(fn: Callable[..., Any], *args: Any) -> Any:
            return loop.run_in_executor(self.db_executor, fn, *args)

        result: dict[str, Any] = {"kind": kind, "name": name, "action": action,
                                  "by": actor, "reason": reason}
        try:
            if kind == "jobs":
                if await db(self.store.job, name) is None:
                    raise GatewayError(404, "NO_SUCH_JOB", f"no job {name}")
                await db(self.store.record_action, actor, "cancel-job", f"job:{name}", reason, {})
                result["state"], _ = await self.cancel(name, actor, reason)
            elif action in ("pause", "resume", "revoke", "restore"):
                key = f"{kind[:-1]}:{name}"
                await db(self.store.set_control, key, action in ("pause", "revoke"), actor,
                         reason, f"{action}-{kind[:-1]}")
            else:  # drain: cancel every waiting job of the backend or project
                ids = await db(self.store.waiting_ids, name if kind == "backends" else None,
                               name if kind == "projects" else None)
                await db(self.store.record_action, actor, f"drain-{kind[:-1]}",
                         f"{kind[:-1]}:{name}", reason, {"jobs": len(ids)})
                await self.cancel_jobs(ids, actor, f"drain: {reason}")
                result["cancelled"] = len(ids)
        except StoreError as e:
            raise GatewayError(503, "DATABASE", f"{e}; try again") from None
        self.emit("qpu.operator.action", result)
        self.runner.wake()
        return result

    # -- run -----------------------------------------------------------------------------------

    def open(self) -> None:
        """Check the configuration and open the store, drivers, pools and runner (the
        runner starts with ``runner.start()`` once the server listens)."""
        # The database thread hands the GIL back and forth with the event loop on every
        # statement; the default 5 ms switch interval would make each hand-over a wait.
        sys.setswitchinterval(0.0005)
        # --log-level covers tornado's loggers (the access log) too
        level = self.log_level
        logging.getLogger("tornado").setLevel(level if isinstance(level, int | str) else "INFO")
        self.setup()
        metrics.install(self)
        self.runner = Runner(
            self.store, self.drivers, lambda: self.policies.policy, self.db_executor,
            instance=self.instance_name, lease_seconds=self.lease_seconds,
            max_attempts=self.max_attempts, requeue_lost=self.requeue_lost,
            poll_seconds=self.dispatch_poll_seconds, limits=self.limits, emit=self.emit,
            log=self.log, scrub=self.broker, specs=dict(self.backends),
        )

    _warmed = False

    def warm(self) -> None:
        """Start the sandbox workers and the parse processes, once, in the background
        (``warm_up``); a job that comes first starts a sandbox worker itself."""
        if self._warmed:
            return
        self._warmed = True
        if self.runner.sandbox is not None:
            self.runner.sandbox.start()
        self.parse_pool.warm()
        self.small_parse_pool.warm()

    async def close(self) -> None:
        """Stop running jobs' lanes and close what must reach disk (store, audit log)."""
        await self.runner.stop()
        self.parse_pool.close()
        self.small_parse_pool.close()
        self.db_executor.shutdown(wait=True)
        if self.audit_log:
            self.audit_bridge.close()
        self.store.dispose()

    async def reload_loop(self) -> None:
        """Re-read the policy file every ``policy_reload_seconds`` (a changed file applies)."""
        while True:
            await asyncio.sleep(self.policy_reload_seconds)
            self.reload_policy()

    def reload_policy(self, force: bool = False, by: str | None = None) -> bool:
        before = self.policies.policy.digest
        changed = self.policies.maybe_reload(force=force)
        if changed:
            self.emit("qpu.policy.reloaded", {"from": before, "to": self.policies.policy.digest,
                                              "by": by})
            self.runner.wake()
        if self.policies.failed_now:  # once per failed attempt, not every poll
            self.emit("qpu.policy.reload_failed", {"kept": before})
        return changed


def _name(value: Any) -> str | None:
    """A client-given backend or project name, only when it is a plain short name."""
    if isinstance(value, str) and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}", value):
        return value
    return None


def scopes_config() -> dict[str, dict[str, str]]:
    """The custom scopes to put in ``c.JupyterHub.custom_scopes``."""
    return {name: {"description": text} for name, text in SCOPES.items()}




def _quota_period(refused: Refused) -> dict[str, Any]:
    """For a quota refusal, the period that ran out and the share of it still to run (the
    audit service alerts on a quota used up early)."""
    period = refused.detail.get("period")
    if period not in PERIODS:
        return {}
    return {"period": period, "period_left": period_left(period, time.time())}

__all__ = ["CLASSES", "QpuGateway", "scopes_config"]
