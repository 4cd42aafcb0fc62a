"""What a secret is, wherever it is stored: names, namespaces, classes, and the errors.

A secret lives in a namespace (``user:alice``, ``project:qaoa``, ``course:qc101``),
has a name users see (``QISKIT_IBM_TOKEN``: a valid environment-variable name, so it
is also a safe file name), a class (``sandbox``, ``prod``, ``hardware``...) that the
class policy matches against spawn profiles and roles, and numbered versions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from server_ext.scanner.entropy import shannon

NAMESPACE_KINDS = ("user", "project", "course", "service")
#: Namespaces owned by a hub service (``service:qpu``: the QPU gateway's provider
#: credentials). Never granted to users, never delivered to a server.
SERVICE_KINDS = ("service",)
#: A user-visible secret name: an environment-variable name, also a safe file name.
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
#: A secret class (matches the audit schema's pattern).
CLASS = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
#: An entry of a service namespace: named after what it serves (a gateway backend name).
SERVICE_ENTRY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")
_NS_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,255}")
#: Shorter values would be redacted everywhere they happen to occur in an output.
MIN_VALUE_BYTES = 8
MAX_VALUE_BYTES = 64 * 1024


class SecretError(Exception):
    """A request the broker refuses; the message says what to fix and never holds a value."""


class SecretExists(SecretError):
    """A user asked to store a secret under a name they already have."""


@dataclass(frozen=True)
class Namespace:
    kind: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"


def parse_namespace(text: str) -> Namespace:
    kind, sep, name = str(text).partition(":")
    if not sep or kind not in NAMESPACE_KINDS or not _NS_NAME.fullmatch(name):
        raise SecretError(
            f"{str(text)[:80]!r} is not a namespace: write user:<name>, project:<name>, "
            "course:<name> or service:<name> (letters, digits, '.', '_', '@', '+', '-')"
        )
    return Namespace(kind, name)


def check_name(name: str, ns: Namespace | None = None) -> str:
    if ns is not None and ns.kind in SERVICE_KINDS:
        if not isinstance(name, str) or not SERVICE_ENTRY.fullmatch(name):
            raise SecretError(
                f"{str(name)[:80]!r} is not an entry name in {ns}: use letters, digits, '_', "
                "'.' and '-' (at most 64 characters), e.g. the gateway backend's name"
            )
        return name
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise SecretError(
            f"{str(name)[:80]!r} is not a secret name: use letters, digits and '_' "
            "(not starting with a digit), at most 128 characters, e.g. QISKIT_IBM_TOKEN"
        )
    return name


def check_class(cls: str) -> str:
    if not isinstance(cls, str) or not CLASS.fullmatch(cls):
        raise SecretError(
            f"{str(cls)[:80]!r} is not a secret class: use lowercase letters, digits and '-'"
        )
    return cls


def check_value(value: bytes) -> str:
    """The value as text, or SecretError saying why it cannot be stored."""
    if len(value) > MAX_VALUE_BYTES:
        raise SecretError(
            f"the value is {len(value):,} bytes; secrets are at most {MAX_VALUE_BYTES:,} bytes "
            "(store larger material elsewhere and keep its key here)"
        )
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        raise SecretError(
            "the value is not UTF-8 text; store binary material base64-encoded"
        ) from None
    text = text[:-1] if text.endswith("\n") else text  # `echo value |` adds one
    if len(text.encode()) < MIN_VALUE_BYTES:
        raise SecretError(
            f"the value is shorter than {MIN_VALUE_BYTES} bytes: too short to be a secret, "
            "and too short for the guard to redact it safely"
        )
    if "\x00" in text:
        raise SecretError("the value contains a NUL character")
    return text


#: A value a user chose joins the audit log's never-record list (for that user's own
#: events) only when it looks like a secret: this long, at most this long (each is
#: matched in every event of the user's), and with this much variety (bits per byte).
OWN_KNOWN_LENGTH = (16, 4096)
OWN_KNOWN_ENTROPY = 3.0


def secret_like(value: str) -> bool:
    """Whether a user-chosen value may be cut out of the user's own events as a known
    secret. A common string ("credential", a profile name, an address) would otherwise
    shred their records (other users' events never hold a user's own values)."""
    low, high = OWN_KNOWN_LENGTH
    return low <= len(value) <= high and shannon(value.encode()) >= OWN_KNOWN_ENTROPY


@dataclass(frozen=True)
class Secret:
    """One delivered secret. ``value`` is never part of repr or logs."""

    namespace: Namespace
    name: str
    cls: str
    version: int
    value: str = field(repr=False)

    def public(self) -> dict[str, str | int]:
        return {
            "name": self.name,
            "class": self.cls,
            "version": self.version,
            "namespace": str(self.namespace),
        }

    def delivered(self) -> dict[str, str | int]:
        return {**self.public(), "value": self.value}


@dataclass(frozen=True)
class SecretInfo:
    """Metadata of a stored secret (what ``list`` shows)."""

    namespace: Namespace
    name: str
    cls: str
    version: int
    revoked: bool
    updated: float
