"""Provider credentials of the QPU gateway's backends, kept by the secret broker.

They belong to the gateway service, not to any user: one entry per gateway backend in
the service namespace ``service:qpu`` (``service:qpu/<backend>``), whose value holds
the provider's fields as ``key=value`` lines (``token=...``, ``instance=...``). One
entry per backend makes a rotation of several fields (an access key id and its secret)
a single new version. Service namespaces are never granted to users nor delivered to
their servers (model.py, embedded.py).

In Vault the same entry is the KV v2 secret ``<base_path>/service/qpu/<backend>`` whose
data are the fields themselves (``vault kv put secret/qustody/service/qpu/ibm_brisbane
token=@token.txt``).

``qustody secrets qpu put|list|delete`` manage the embedded entries (``run_cli``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping

from .embedded import EmbeddedStore
from .model import MIN_VALUE_BYTES, SecretError

NAMESPACE = "service:qpu"
#: The class of every provider-credential entry (classes only matter for user delivery).
CLASS = "provider"
#: A field name: what the driver reads, ``self.credentials()["token"]``.
FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def entry(backend: str) -> str:
    """Where a backend's credentials live in the store, for messages (no value)."""
    return f"{NAMESPACE}/{backend}"


def parse_fields(text: str, where: str) -> dict[str, str]:
    """``key=value`` lines (blank lines and ``#`` comments skipped) as a dict.

    Errors name the line number and ``where``, never the line (it may hold a value).
    """
    fields: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not FIELD.fullmatch(key):
            raise SecretError(
                f"{where}: line {number} is not field=value (field: letters, digits and '_')"
            )
        if not value:
            raise SecretError(f"{where}: field {key} has an empty value")
        if key in fields:
            raise SecretError(f"{where}: field {key} is given twice")
        fields[key] = value
    if not fields:
        raise SecretError(f"{where} holds no field=value line")
    return fields


def format_fields(fields: Mapping[str, str]) -> str:
    for key, value in fields.items():
        if not FIELD.fullmatch(key):
            raise SecretError(f"{key[:64]!r} is not a field name: letters, digits and '_'")
        if "\n" in value or "\r" in value:
            raise SecretError(f"field {key}: the value must be one line")
        check_field_value(key, value)
    return "".join(f"{k}={v}\n" for k, v in sorted(fields.items()))


def check_field_value(key: str, value: str) -> None:
    if len(value.encode()) < MIN_VALUE_BYTES:
        raise SecretError(
            f"field {key}: the value is shorter than {MIN_VALUE_BYTES} bytes, too short to be "
            "a credential and to be scrubbed from what the gateway writes; put settings "
            "that are not secret (a region, a channel) in the backend's QpuGateway.backends "
            "entry"
        )


def read_fields(store: EmbeddedStore, backend: str) -> dict[str, str] | None:
    """The backend's current fields, or None when it has no (unrevoked) entry."""
    secret = store.current(NAMESPACE, backend)
    if secret is None:
        return None
    return parse_fields(secret.value, entry(backend))


# -- the admin CLI: ``qustody secrets qpu ...`` ----------------------------------------------


def put(store: EmbeddedStore, backend: str, raw: bytes, field: str | None) -> str:
    """Store ``raw`` (``key=value`` lines, or the value of ``field``); returns a message."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SecretError("the input is not UTF-8 text") from None
    if field is None:
        fields = parse_fields(text, "the input")
    else:
        value = text[:-1] if text.endswith("\n") else text
        fields = {**(read_fields(store, backend) or {}), field: value}
    version = store.put(NAMESPACE, backend, CLASS, format_fields(fields).encode())
    return f"{entry(backend)}: version {version} stored (fields: {', '.join(sorted(fields))})"


def delete(store: EmbeddedStore, backend: str, field: str | None) -> str:
    if field is None:
        store.revoke(NAMESPACE, backend)
        return f"{entry(backend)}: deleted (no longer served; values wiped)"
    fields = read_fields(store, backend)
    if not fields or field not in fields:
        raise SecretError(f"{entry(backend)} has no field {field}")
    del fields[field]
    if not fields:
        store.revoke(NAMESPACE, backend)
        return f"{entry(backend)}: deleted (its last field was {field})"
    version = store.put(NAMESPACE, backend, CLASS, format_fields(fields).encode())
    return f"{entry(backend)}: field {field} removed (version {version})"


def listing(store: EmbeddedStore, backend: str | None) -> list[str]:
    """One line per backend: field names, version, state, last change. Never a value."""
    lines = [f"{'backend':<32} {'version':>7}  {'state':<8} {'updated':<16}  fields"]
    for info in store.entries(NAMESPACE):
        if backend and info.name != backend:
            continue
        fields = "" if info.revoked else ", ".join(sorted(read_fields(store, info.name) or {}))
        state = "deleted" if info.revoked else "active"
        when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(info.updated))
        lines.append(f"{info.name:<32} {info.version:>7}  {state:<8} {when:<16}  {fields}")
    return lines
