"""Single-use OAuth login state, and at most one audit record per replayed state.

oauthenticator's state lives in a signed cookie that the callback compares with the
URL's ``state``; nothing on the server remembers that it was used, so a captured
callback (cookie + URL) can be replayed: each replay would send the code to the
provider's token endpoint and write a ``login-refused`` record. The login page adds an
issue time to the signed state; the callback accepts a state only within
``ttl`` seconds of it and only once (:meth:`LoginStates.consume`), and refuses others
before any provider request. Refusals of one state are reported once per ``ttl``
(a replay burst), so replaying it does not grow the audit log.

The memory is in the hub process: a restart forgets used states, which lets one more
replay of a state issued before the restart reach the provider (which refuses the
already-redeemed code). Entries live ``ttl`` seconds; at most ``max_entries`` are kept
(oldest dropped first), and entries are added only by callbacks whose signed state is
fresh, i.e. by logins the hub itself started.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from enum import Enum


class Outcome(Enum):
    FRESH = "fresh"  # first use: go on to the provider
    REPLAYED = "replayed"  # used before within its lifetime
    EXPIRED = "expired"  # no valid issue time, too old, or from the future


class LoginStates:
    """Used states (by ``state_id``) and which refusals were already reported."""

    def __init__(self, ttl: float, max_entries: int = 100_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        # state_id -> until when it is remembered
        self._used: OrderedDict[str, float] = OrderedDict()
        self._refused: OrderedDict[str, float] = OrderedDict()

    def consume(self, state_id: str, issued_at: object, now: float | None = None) -> Outcome:
        now = time.time() if now is None else now
        self._prune(now)
        if not isinstance(issued_at, int | float) or not now - self.ttl <= issued_at <= now + 5:
            return Outcome.EXPIRED
        if state_id in self._used:
            return Outcome.REPLAYED
        self._remember(self._used, state_id, issued_at + self.ttl)
        return Outcome.FRESH

    def first_refusal(self, state_id: str, now: float | None = None) -> bool:
        """True the first time a refusal of ``state_id`` is reported within ``ttl``."""
        now = time.time() if now is None else now
        until = self._refused.get(state_id)
        if until is not None and until > now:
            return False
        self._remember(self._refused, state_id, now + self.ttl)
        return True

    def _remember(self, table: OrderedDict[str, float], key: str, until: float) -> None:
        table[key] = until
        table.move_to_end(key)
        while len(table) > self.max_entries:
            table.popitem(last=False)

    def _prune(self, now: float) -> None:
        for table in (self._used, self._refused):
            while table:
                key, until = next(iter(table.items()))
                if until > now:
                    break
                del table[key]
