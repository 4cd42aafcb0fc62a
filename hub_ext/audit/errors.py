"""Errors of the audit log. Every message is safe to show: none holds an event value."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class AuditError(Exception):
    """Base class: the event was not recorded."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UnknownEventType(AuditError):
    """No schema declares this event type."""


class SchemaViolation(AuditError):
    """The event does not match its schema. The message names the field and the rule."""


class SecretInEvent(AuditError):
    """The scanner found a credential in the event and the policy is to refuse it."""


class UserEventRefused(AuditError):
    """A user server sent an event it may not send, or a malformed one.

    ``status`` is the HTTP status the hub endpoint should answer with (400 or 403).
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class AuditWriteError(AuditError):
    """The store could not write the record (disk full, permissions, a damaged log).

    ``written`` counts the leading events of a batch that were dealt with all the same:
    0, except when the batch crossed a rotation of the live file and failed after it.
    From a store, ``appended`` holds where those records went.
    """

    def __init__(self, message: str, written: int = 0, appended: Sequence[Any] = ()) -> None:
        super().__init__(message)
        self.written = written
        self.appended = list(appended)


class AuditSpaceLow(AuditWriteError):
    """The log's disk has less free space than ``AuditLog.min_free_bytes``: the event (and
    the action that emits it) is refused before anything is written. The message tells
    the user what happened and the admin what to do; it names no path."""
