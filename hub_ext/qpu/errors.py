"""The gateway's one error type: an HTTP status, a reason code and a message for the user.

Domain code (parsing, policy, the store, the gateway's operations) raises it without
knowing about HTTP; the REST handlers turn it into ``{"error": code, "message": ...}``
with its status. ``message`` is always safe to show the caller: it never holds a
credential or another user's data. ``detail`` holds extra JSON-able facts (a limit, a
``retry_after``) that go into the reply as fields.
"""

from __future__ import annotations

from typing import Any


class GatewayError(Exception):
    """A refusal with ``status`` (HTTP), ``code`` (``BAD_JSON``, ``NOT_A_MEMBER``, ...)
    and ``message`` (says what to do)."""

    def __init__(self, status: int, code: str, message: str, **detail: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.detail = detail


class Invalid(GatewayError):
    """The submission is malformed or over a limit, found before any policy decision."""


class Refused(GatewayError):
    """The policy refuses the job (quota, membership, backend, rate): recorded as a
    ``REJECTED`` job with its reason code."""


__all__ = ["GatewayError", "Invalid", "Refused"]
