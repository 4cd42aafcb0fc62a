"""``AuditLog``: the one API every component records audit events through.

::

    audit = AuditLog(config=config)          # checks the config, loads the key
    audit.emit("server-started", {"user": "alice", "server": "", ...})
    audit.emit_many([("qpu-job-submitted", {...}), ("qpu-job-admitted", {...})])
    audit.record_user_event("alice", "", {"type": "save-refused", "data": {...}})

Emit an event only after the action it describes has happened. Whether a failure to
record fails the caller (``fail_closed_types``) is decided per event type. ``emit_many``
records several events with one write to the store (one lock, one head update): busy
writers such as the QPU gateway's audit thread batch what they have queued.

For the hub endpoint that takes events from user servers: authenticate the server's
token, then call ``record_user_event(user, server, body)`` with the identity the token
belongs to. ``UserEventRefused`` carries the status to answer (400 malformed, 403 not
allowed); ``AuditWriteError`` means the log could not be written (answer 503).
"""

from __future__ import annotations

import json
import json.encoder
import os
import time
from collections.abc import Callable as Function
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from traitlets import Bool, Callable, Int, List, Unicode, default, validate
from traitlets.config import LoggingConfigurable

from server_ext.scanner import rules
from server_ext.scanner.engine import Engine

from . import keys, metrics, schema, space
from .chain import Sealer
from .errors import (
    AuditError,
    AuditSpaceLow,
    AuditWriteError,
    SchemaViolation,
    SecretInEvent,
    UserEventRefused,
)
from .scrub import SecretScrubber
from .store import FSYNC_MODES, Appended, JsonlStore, Pending, Store

SECRET_POLICIES = ("redact", "refuse")
_COMPACT = (",", ":")


def _compact_encoder() -> Function[[Any], str]:
    """Compact ASCII JSON that refuses NaN and infinities (ValueError) and non-JSON types
    (TypeError): ``JSONEncoder.encode`` output, from json's C encoder built once instead
    of once per call. It skips the cycle check, which never runs for events: the secret
    scrubber and the schema check walk the event first and stop a cycle there."""
    python = json.JSONEncoder(separators=_COMPACT, allow_nan=False)
    make: Any = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # no C accelerator in this Python
        return python.encode
    encode = make(
        None,
        python.default,
        json.encoder.encode_basestring_ascii,
        None,
        ":",
        ",",
        False,
        False,
        False,
    )
    return lambda value: "".join(encode(value, 0))


_ENCODE = _compact_encoder()
Redactions = list[dict[str, str]]


class Recorded(NamedTuple):
    """A record that reached the store."""

    seq: int
    ts: str
    type: str
    hash: str
    redacted: int = 0


class AuditLog(LoggingConfigurable):
    """The tamper-evident audit log: schema-checked events in a hash-chained, MAC'd store."""

    path = Unicode(
        "",
        config=True,
        help="""Path of the live audit log file (JSON lines), e.g.
        ``/var/lib/qustody/audit/audit.jsonl``. Rotated files, the head and the
        checkpoints are kept next to it. The directory is created with mode 0700.
        Required: the hub does not start without it.""",
    )
    db_url = Unicode(
        "",
        config=True,
        help="""SQLAlchemy URL of a PostgreSQL database to keep the log in instead of
        ``path`` (``postgresql+psycopg://audit@db.example.org/qustody``), for hubs and
        gateways on several hosts. Same records, chain and MACs; the tables are created on
        first use and made append-only by a trigger. Prefer a URL without a password
        (peer or certificate authentication): the URL is never logged.""",
    )
    key_file = Unicode(
        "",
        config=True,
        help="""File holding the MAC key (at least 32 random bytes; e.g.
        ``openssl rand -hex 32``), mode 0600. Keep it outside the log directory: anyone
        who holds the key can forge records. Set this or ``key_provider``.""",
    )
    create_key_file = Bool(
        False,
        config=True,
        help="""Create ``key_file`` (32 random bytes as hex, mode 0600) when it does not
        exist. Off by default, so a mistyped path fails instead of starting a new key.""",
    )
    key_provider = Callable(
        None,
        allow_none=True,
        config=True,
        help="""A callable returning the MAC key as bytes, for keys held by the secret
        broker (embedded store or Vault). Called once at start-up. Set this or
        ``key_file``, not both.""",
    )
    rotate_bytes = Int(
        256 * 1024 * 1024,
        config=True,
        help="""Start a new live file once it would grow past this many bytes (0: never).
        The hash chain continues across files; rotated files are named
        ``<stem>.<first seq>.jsonl``.""",
    )
    rotate_seconds = Int(
        0,
        config=True,
        help="""Start a new live file once its first record is this many seconds old
        (0: never). Rotation happens on the next write after the deadline.""",
    )
    checkpoint_every = Int(
        10000,
        config=True,
        help="""Write a sealed checkpoint every this many records (and at every rotation),
        so ``qustody audit verify --quick`` can check a long log from its last
        checkpoint. 0 writes checkpoints only at rotation.""",
    )
    fsync = Unicode(
        "checkpoint",
        config=True,
        help="""When to force records to stable storage: ``always`` (after every record;
        safest, slowest), ``checkpoint`` (at checkpoints and rotation) or ``never``
        (leave it to the operating system).""",
    )
    fail_closed_types = List(
        Unicode(),
        default_value=["*"],
        config=True,
        help="""Event types whose recording failure (disk full, unwritable log, schema
        violation, refused secret) fails the action that emits them with an error.
        ``"*"`` (default) means every type. For the other types the failure is logged
        and counted in ``AuditLog.dropped`` and the action goes on.""",
    )
    secret_policy = Unicode(
        "redact",
        config=True,
        help="""What a credential found in an event does: ``redact`` replaces it with
        ``[REDACTED:<detector>]`` and records the event (noting which fields were
        redacted); ``refuse`` records nothing and raises. Either way the value never
        reaches the log.""",
    )
    detectors = List(
        Unicode(),
        default_value=list(rules.DEFAULT_IDS),
        config=True,
        help="""Scanner detector ids that look for credentials in events (see
        ``qustody scan --list-detectors``). Unknown ids stop the hub at start-up.""",
    )
    user_server_types = List(
        Unicode(),
        config=True,
        help="""Event types user servers may report through the hub
        (``record_user_event``). Defaults to every type declared with origin
        ``user-server`` (``save-refused``, ``outputs-redacted``, ``file-finding``); only
        those can be listed; an empty list allows none.""",
    )
    max_record_bytes = Int(
        16384,
        config=True,
        help="Largest event (bytes of JSON) accepted; larger events are refused.",
    )

    min_free_bytes = Int(
        64 * 1024 * 1024,
        config=True,
        help="""Free space (bytes) the filesystem holding ``path`` must keep. Below it the
        log records only ``low_space_types``; any other event is refused before anything
        is written, and so is the action that emits it (logins, spawns, secret deliveries,
        QPU submissions, reports from user servers), with a message telling the admin to
        free space. The refusals are recorded (``audit-space-low``, at most once a minute).
        Protects against a disk that fills up and then fails every login with an opaque
        error, or tears the last records. 0 turns the check off (not recommended). Not
        checked for ``db_url`` (the database's disk is not visible here).""",
    )
    low_space_types = List(
        Unicode(),
        default_value=list(space.LOW_SPACE_TYPES),
        config=True,
        help="""Event types still recorded when free space is below ``min_free_bytes``: by
        default those that end access (server stopped or culled, session ended, token
        revoked), outcomes of work already recorded, refusals (login, MFA, ticket, QPU)
        and break-glass. Everything else is refused until there is room. See
        ``hub_ext/audit/space.py`` for why.""",
    )

    @validate("min_free_bytes")
    def _valid_min_free(self, proposal: Any) -> int:
        value = int(proposal["value"])
        if value < 0 or value > 1 << 50:
            raise ValueError(
                "AuditLog.min_free_bytes must be 0 (off) or a number of bytes, e.g. "
                "64 * 1024 * 1024 for 64 MiB"
            )
        return value

    @validate("low_space_types")
    def _valid_low_space_types(self, proposal: Any) -> list[str]:
        unknown = sorted(set(proposal["value"]) - set(schema.names()))
        if unknown:
            raise ValueError(
                f"AuditLog.low_space_types: unknown event types {unknown}; use some of: "
                f"{', '.join(schema.names())}"
            )
        return list(proposal["value"])

    @default("user_server_types")
    def _default_user_types(self) -> list[str]:
        return schema.names(schema.USER_SERVER)

    @validate("path")
    def _valid_path(self, proposal: Any) -> str:
        value = str(proposal["value"])
        if value and (value.endswith("/") or os.path.isdir(value)):
            raise ValueError(
                "AuditLog.path must name a file, not a directory: e.g. "
                f"{value.rstrip('/')}/audit.jsonl"
            )
        return value

    @validate("db_url")
    def _valid_db_url(self, proposal: Any) -> str:
        value = str(proposal["value"])
        if value and not value.startswith("postgresql"):
            raise ValueError(
                "AuditLog.db_url must be a PostgreSQL URL (postgresql+psycopg://user@host/db)"
            )
        return value

    @validate("rotate_bytes", "rotate_seconds", "checkpoint_every")
    def _not_negative(self, proposal: Any) -> int:
        if proposal["value"] < 0:
            raise ValueError(f"AuditLog.{proposal['trait'].name} must be 0 (off) or positive")
        if proposal["trait"].name == "rotate_bytes" and 0 < proposal["value"] < 65536:
            raise ValueError("AuditLog.rotate_bytes must be 0 (never) or at least 65536")
        return int(proposal["value"])

    @validate("fsync")
    def _valid_fsync(self, proposal: Any) -> str:
        return _one_of(proposal["value"], FSYNC_MODES, "AuditLog.fsync")

    @validate("secret_policy")
    def _valid_policy(self, proposal: Any) -> str:
        return _one_of(proposal["value"], SECRET_POLICIES, "AuditLog.secret_policy")

    @validate("fail_closed_types")
    def _valid_fail_closed(self, proposal: Any) -> list[str]:
        unknown = sorted(set(proposal["value"]) - set(schema.names()) - {"*"})
        if unknown:
            raise ValueError(
                f'AuditLog.fail_closed_types: unknown event types {unknown}; use "*" or '
                f"some of: {', '.join(schema.names())}"
            )
        return list(proposal["value"])

    @validate("user_server_types")
    def _valid_user_types(self, proposal: Any) -> list[str]:
        allowed = schema.names(schema.USER_SERVER)
        wrong = sorted(set(proposal["value"]) - set(allowed))
        if wrong:
            raise ValueError(
                f"AuditLog.user_server_types: {wrong} cannot come from user servers; "
                f"allowed: {', '.join(allowed)}"
            )
        return list(proposal["value"])

    @validate("detectors")
    def _valid_detectors(self, proposal: Any) -> list[str]:
        unknown = sorted(set(proposal["value"]) - set(rules.BY_ID))
        if unknown:
            raise ValueError(
                f"AuditLog.detectors: unknown detector ids {unknown}; known ids: "
                f"{', '.join(sorted(rules.BY_ID))}"
            )
        return list(proposal["value"])

    @validate("max_record_bytes")
    def _valid_max(self, proposal: Any) -> int:
        if not 1024 <= proposal["value"] <= 1024 * 1024:
            raise ValueError("AuditLog.max_record_bytes must be between 1024 and 1048576")
        return int(proposal["value"])

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dropped = 0
        self.sealer = Sealer(self._load_key())
        self.store: Store
        if self.db_url:
            from .pg_store import PgStore

            self.store = PgStore(self.db_url, self.sealer)
        else:
            self.store = JsonlStore(
                self.path,
                self.sealer,
                rotate_bytes=self.rotate_bytes,
                rotate_seconds=self.rotate_seconds,
                checkpoint_every=self.checkpoint_every,
                fsync=self.fsync,
            )
        self.space = (
            space.SpaceGuard(Path(self.path).parent, self.min_free_bytes, self.low_space_types)
            if self.path and self.min_free_bytes
            else None
        )
        wanted = set(self.detectors)
        engine = Engine([d for d in rules.catalogue() if d.id in wanted])
        self.scrubber = SecretScrubber(engine, refuse=self.secret_policy == "refuse")  # noqa: S105

    def _load_key(self) -> bytes:
        if bool(self.path) == bool(self.db_url):
            raise ValueError(
                "AuditLog needs exactly one place for the log: set AuditLog.path to the log "
                "file (e.g. '/var/lib/qustody/audit/audit.jsonl') or AuditLog.db_url to a "
                "PostgreSQL database"
            )
        provider: Any = self.key_provider
        if bool(self.key_file) == (provider is not None):
            raise ValueError(
                "AuditLog needs exactly one MAC key source: set AuditLog.key_file (a 0600 file "
                "of at least 32 random bytes) or AuditLog.key_provider (the secret broker)"
            )
        if provider is not None:
            try:
                key = provider()
            except Exception as e:
                raise ValueError(
                    f"AuditLog.key_provider failed ({type(e).__name__}); the audit key is needed "
                    "to start"
                ) from None
            return keys.check_key(key, "AuditLog.key_provider")
        return keys.load_key_file(self.key_file, create=self.create_key_file)

    # -- recording --------------------------------------------------------------------

    def emit(self, type_name: str, data: dict[str, Any]) -> Recorded | None:
        """Record an event of a hub-side type. Returns None only when a failure was
        tolerated because the type is not in ``fail_closed_types``."""
        return self._record([(_hub_type(type_name), data, None)], schema.HUB)[0]

    def emit_many(self, events: Iterable[tuple[str, dict[str, Any]]]) -> list[Recorded | None]:
        """Record hub-side events in order, with one write; a result per event, as emit.

        Every event is checked, scrubbed and sized as ``emit`` does. An event failing that
        raises before anything is written if its type fails closed (then nothing was
        recorded or counted); otherwise its result is None. A failed write raises if any
        event it lost fails closed; ``AuditWriteError.written`` counts the leading events
        dealt with all the same (recorded or dropped; 0 unless the batch crossed a rotation
        of the live file). Otherwise the lost events' results are None.
        """
        items = [(_hub_type(type_name), data, None) for type_name, data in events]
        return self._record(items, schema.HUB)

    def record_user_event(self, user: str, server: str, event: Any) -> Recorded | None:
        """Record an event a user's server reported, as that server.

        ``user`` and ``server`` come from the token the server authenticated with (the
        hub endpoint passes them); the event may not set them. Raises UserEventRefused
        (with the HTTP status to answer) for an event the server may not send.
        """
        if not isinstance(user, str) or not user or not isinstance(server, str):
            raise ValueError("record_user_event needs the authenticated user and server names")
        if not isinstance(event, dict) or not isinstance(event.get("data"), dict):
            raise UserEventRefused(
                400, 'an audit event is a JSON object {"type": ..., "data": {...}}'
            )
        extra = sum(1 for k in event if k not in ("type", "data", "version"))
        if extra:  # counted, not named: the names are the sender's text
            raise UserEventRefused(400, f"{extra} unexpected member(s) in the event; send "
                                        '{"type": ..., "data": {...}}')
        type_name = event.get("type")
        if not isinstance(type_name, str) or type_name not in self.user_server_types:
            raise UserEventRefused(
                403,
                "user servers may report only these audit event types: "
                f"{', '.join(self.user_server_types) or '(none)'}",
            )
        event_type = schema.get(type_name)
        if "version" in event and event["version"] != event_type.version:
            raise UserEventRefused(
                400, f"{type_name} is at schema version {event_type.version}; update the server"
            )
        data = event["data"]
        stamped = [f for f in schema.IDENTITY_FIELDS if f in data]
        if stamped:
            raise UserEventRefused(
                403, f"a user server may not set {', '.join(stamped)}: the hub stamps who sent it"
            )
        data = {**data, "user": user, "server": server}
        try:
            # Checked before anything is redacted: whether an event is refused depends on
            # what its sender wrote, never on whose secret a value may be.
            event_type.validate(data)
            clean, redactions = self.scrubber.scrub(type_name, data)
        except (SchemaViolation, SecretInEvent) as e:
            raise UserEventRefused(400, e.message) from None
        try:
            event_type.validate(clean)  # redactions fit their fields (scrub._fitted)
        except SchemaViolation as e:
            raise AuditError(f"a redaction broke the {type_name} record ({e.message})") from None
        return self._record([(event_type, clean, redactions)], schema.USER_SERVER)[0]

    def add_known_secrets(self, values: Any, owner: str | None = None) -> int:
        """Exact secret values (e.g. what the broker delivered) never to be recorded;
        ``owner`` for values a user stored themselves, looked for in that user's events
        only (``SecretScrubber.add_known``)."""
        return self.scrubber.add_known(values, owner)

    def record_verification(self, report: Any, actor: str) -> Recorded | None:
        """Record an ``audit-verified`` event for a verify.VerifyReport."""
        return self.emit("audit-verified", report.event(actor))

    def fails_closed(self, type_name: str) -> bool:
        return "*" in self.fail_closed_types or type_name in self.fail_closed_types

    def close(self) -> None:
        self.store.close()

    def _record(
        self, items: Sequence[tuple[schema.EventType, Any, Redactions | None]], origin: str
    ) -> list[Recorded | None]:
        """Check, scrub and serialise each event, then write them with one append."""
        results: list[Recorded | None] = [None] * len(items)
        pending: list[Pending] = []
        placed: list[tuple[int, str, Redactions]] = []  # (index, type, redactions) per record
        refused: list[tuple[int, str, AuditError]] = []  # tolerated: counted once written
        scrub, limit = self.scrubber.scrub, self.max_record_bytes
        for i, (event_type, data, redactions) in enumerate(items):
            name = event_type.name
            try:
                if redactions is None:
                    data, redactions = scrub(name, data)
                    event_type.validate(data)
                pending.append(
                    Pending(
                        name,
                        event_type.version,
                        origin,
                        _serialise(name, data, limit),
                        ',"redacted":' + _ENCODE(redactions) if redactions else "",
                    )
                )
            except AuditError as e:
                if self.fails_closed(name):
                    raise
                refused.append((i, name, e))
                continue
            placed.append((i, name, redactions))
        if self.space is not None and pending:
            pending, placed = self._check_space(pending, placed, items, refused)
        failure: AuditWriteError | None = None
        appended: list[Appended] = []
        started = time.perf_counter()
        try:
            appended = self.store.append_many(pending)
        except AuditWriteError as e:
            failure, appended = e, e.appended
        if pending:
            metrics.timed(time.perf_counter() - started, self.log)
        done_items = zip(placed, appended, strict=False)
        metrics.written(((name, items[i][1]) for (i, name, _), _ in done_items), self.log)
        for (i, name, redactions), done in zip(placed, appended, strict=False):
            results[i] = Recorded(done.seq, done.ts, name, done.hash, len(redactions))
            if redactions:
                self.log.warning(
                    "audit event %s (seq %d): credentials redacted from %s",
                    name,
                    done.seq,
                    ", ".join(sorted({r["field"] for r in redactions})),
                )
        if failure is not None:
            lost = placed[len(appended) :]
            if any(self.fails_closed(name) for _, name, _ in lost):
                written = lost[0][0]
                self._dropped([r for r in refused if r[0] < written])
                raise AuditWriteError(failure.message, written=written) from None
            refused = sorted(refused + [(i, n, failure) for i, n, _ in lost], key=lambda r: r[0])
        if refused:
            self._dropped(refused)
        return results

    def space_refusal(self, type_name: str) -> AuditSpaceLow | None:
        """The refusal an event of this type would get now for want of disk space, if
        any; lets an action that cannot be undone (a refresh token spent at the provider)
        stop before it starts instead of after."""
        guard = self.space
        if guard is None or type_name in guard.kept:
            return None
        free = guard.low()
        if free is None:
            return None
        return AuditSpaceLow(space.message(free, guard.threshold, type_name))

    def _check_space(
        self,
        pending: list[Pending],
        placed: list[tuple[int, str, Redactions]],
        items: Sequence[tuple[schema.EventType, Any, Redactions | None]],
        refused: list[tuple[int, str, AuditError]],
    ) -> tuple[list[Pending], list[tuple[int, str, Redactions]]]:
        """Below ``min_free_bytes``: refuse what is not in ``low_space_types`` (raise if any
        of it fails closed, before anything is written; drop the rest) and record the
        refusal. Returns what may still be written."""
        guard = self.space
        assert guard is not None
        free = guard.low()
        if free is None:
            if guard.resolved_due():
                self._record_space(guard.summary(space.free_bytes(guard.directory), True))
            return pending, placed
        out = [k for k, (_, name, _) in enumerate(placed) if name not in guard.kept]
        if not out:
            return pending, placed
        names = [placed[k][1] for k in out]
        users = [items[placed[k][0]][1].get("user") for k in out]
        guard.refuse(names, [u for u in users if isinstance(u, str) and u])
        self._record_space(guard.summary(free))
        error = AuditSpaceLow(space.message(free, guard.threshold, ", ".join(sorted(set(names)))))
        if any(self.fails_closed(name) for name in names):
            self.log.error("audit log: %s (free space on %s)", error.message, guard.directory)
            raise error
        refused.extend((placed[k][0], placed[k][1], error) for k in out)
        keep = [k for k in range(len(placed)) if k not in set(out)]
        return [pending[k] for k in keep], [placed[k] for k in keep]

    def _record_space(self, data: dict[str, Any] | None) -> None:
        """Record an audit-space-low event (its failure is logged, never raised)."""
        if data is None:
            return
        try:
            self._record([(schema.get(space.RECORD_TYPE), data, None)], schema.HUB)
        except AuditError as e:
            self.log.error("audit log: the refusal could not be recorded: %s", e.message)

    def _dropped(self, refused: list[tuple[int, str, AuditError]]) -> None:
        """Count and log events of fail-open types that were not recorded."""
        metrics.dropped((name for _, name, _ in refused), self.log)
        for _, name, error in refused:
            self.dropped += 1
            self.log.error("audit event %s was not recorded: %s", name, error.message)


def _hub_type(type_name: str) -> schema.EventType:
    event_type = schema.get(type_name)
    if event_type.origin != schema.HUB:
        raise AuditError(
            f"{type_name} events are reported by user servers: use record_user_event()"
        )
    return event_type


def _serialise(name: str, data: Any, limit: int) -> str:
    """Compact ASCII JSON of an event, or SchemaViolation (the value is never named)."""
    try:
        data_json = _ENCODE(data)
    except (ValueError, TypeError):
        raise SchemaViolation(
            f"{name} event: holds a value JSON cannot carry (NaN, infinity or an object)"
        ) from None
    if len(data_json) > limit:
        raise SchemaViolation(
            f"{name} event: {len(data_json)} bytes is over AuditLog.max_record_bytes ({limit})"
        )
    return data_json


def _one_of(value: str, allowed: tuple[str, ...], name: str) -> str:
    if value not in allowed:
        raise ValueError(f"{name} is {value!r}; use one of {', '.join(allowed)}")
    return value
