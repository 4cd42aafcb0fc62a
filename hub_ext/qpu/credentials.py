"""Provider credentials: the one callable the secret broker plugs into.

``QpuGateway.credentials`` is ``credentials(backend_name) -> Mapping[str, str]`` (for
example ``{"token": ..., "instance": ...}`` for IBM Runtime). A provider driver asks for
its credentials through ``BackendDriver.credentials()`` when it needs them (each time: a
broker may rotate them); the gateway never stores them. ``CredentialBroker`` wraps the
configured callable to

- check the answer's shape (a message naming the backend, never a value);
- remember each value it handed out, so that ``scrub`` removes them from anything the
  gateway writes or answers that came from a driver (error messages, results), and the
  audit log redacts them too (``AuditLog.add_known_secrets``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType

REDACTED = "[REDACTED:provider-credential]"
MIN_SCRUB_LENGTH = 6  # shorter values (a region, "us-east") are not secrets worth a scan


class CredentialError(Exception):
    """The credential source failed or answered something that is not a credential map.

    A source raises it with a message for the job's owner and the operator (which backend,
    where its credentials were looked for, how to fix it), never a value; the broker
    passes that message on, scrubbed. Any other exception's message is dropped."""


class CredentialBroker:
    def __init__(
        self,
        source: Callable[[str], Mapping[str, str]],
        on_values: Callable[[Iterable[str]], object] | None = None,
    ) -> None:
        self.source = source
        self.on_values = on_values
        self._known: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, backend: str) -> Mapping[str, str]:
        try:
            values = self.source(backend)
        except CredentialError as e:
            raise CredentialError(self.scrub(str(e))[:500]) from None
        except Exception as e:  # the broker's message might quote a value: do not keep it
            raise CredentialError(
                f"the credential source failed for backend {backend!r} ({type(e).__name__})"
            ) from None
        if not isinstance(values, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in values.items()
        ):
            raise CredentialError(
                f"the credential source must return a mapping of strings for backend "
                f"{backend!r}"
            )
        fresh = {v for v in values.values() if len(v) >= MIN_SCRUB_LENGTH} - self._known
        if fresh:
            with self._lock:
                self._known |= fresh
            if self.on_values is not None:
                self.on_values(sorted(fresh))
        return MappingProxyType(dict(values))

    @property
    def known(self) -> frozenset[str]:
        return frozenset(self._known)

    def scrub(self, text: str) -> str:
        """``text`` with every credential value handed out so far replaced."""
        for value in sorted(self._known, key=len, reverse=True):
            if value in text:
                text = text.replace(value, REDACTED)
        return text

    def scrub_bytes(self, data: bytes) -> bytes:
        for value in sorted(self._known, key=len, reverse=True):
            raw = value.encode()
            if raw in data:
                data = data.replace(raw, REDACTED.encode())
        return data


__all__ = ["REDACTED", "CredentialBroker", "CredentialError"]
