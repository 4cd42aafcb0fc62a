"""Who is calling: an ``Identity`` resolved from the request's hub token.

The production resolver is JupyterHub's own ``jupyterhub.services.auth.HubAuth``:
``GET {hub_api_url}/user`` with the caller's token. The answer carries the token's owner,
groups and (expanded) scopes. HubAuth caches answers for a few seconds under a hash of
the token (never the token itself). If the hub cannot be asked, the request is refused
(503): the gateway fails closed.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from typing import Protocol

from tornado import web

SCOPE_SUBMIT = "custom:qpu:submit"
SCOPE_READ_ALL = "custom:qpu:read-all"
SCOPE_ADMIN = "custom:qpu:admin"
SCOPES = {
    SCOPE_SUBMIT: "Submit QPU jobs and read and cancel your own (and, as a project lead, your "
    "project's).",
    SCOPE_READ_ALL: "Read every QPU job, its provenance and every project's usage.",
    SCOPE_ADMIN: "Operate the QPU gateway: pause and resume backends and projects, cancel "
    "and drain jobs, revoke users, reload the policy (each action is recorded).",
}


class HubUnavailable(Exception):
    """The hub could not be asked who the token belongs to."""


@dataclass(frozen=True)
class Identity:
    name: str
    kind: str  # "user" or "service"
    scopes: frozenset[str] = field(default_factory=frozenset)
    groups: tuple[str, ...] = ()

    def has(self, scope: str) -> bool:
        """Whether the token holds ``scope``, as JupyterHub reports it.

        The hub lists a token's expanded scopes, with filters where a role granted a
        filtered scope (``custom:qpu:submit!user=alice``, ``...!group=chem``). Submit
        filtered to the caller (their user, a group of theirs, or their own server) counts,
        since the gateway only ever acts for the caller; read-all and admin count only
        unfiltered (a filtered operator power has no meaning here, so it is refused).
        """
        if scope in self.scopes:
            return True
        if scope != SCOPE_SUBMIT:
            return False
        own = {f"{scope}!{self.kind}={self.name}"}
        own.update(f"{scope}!group={g}" for g in self.groups)
        if self.kind == "user":
            prefix = f"{scope}!server={self.name}/"
            if any(s.startswith(prefix) for s in self.scopes):
                return True
        return bool(own & self.scopes)


class Resolver(Protocol):
    async def resolve(self, token: str) -> Identity | None: ...


class HubResolver:
    """Resolves tokens with ``HubAuth.user_for_token``, cached for ``cache_seconds``
    (rounded up to whole seconds, HubAuth's unit; 0: asked at every request)."""

    def __init__(self, hub_api_url: str, cache_seconds: float = 3.0,
                 timeout: float = 10.0) -> None:
        from jupyterhub.services.auth import HubAuth

        self.cache_seconds = cache_seconds
        self.timeout = timeout
        # api_token is the gateway's own (from the hub's environment); the caller's token
        # is what user_for_token sends
        self._auth = HubAuth(api_url=hub_api_url.rstrip("/"),
                             cache_max_age=max(1, math.ceil(cache_seconds)))

    async def resolve(self, token: str) -> Identity | None:
        try:
            model = await asyncio.wait_for(self._auth.user_for_token(
                token, use_cache=self.cache_seconds > 0, sync=False), self.timeout)
        except TimeoutError:
            raise HubUnavailable(f"no answer within {self.timeout:g} s") from None
        except web.HTTPError as e:
            # HubAuth answers None for a token the hub refuses (403) and raises 500 "Failed
            # to check authorization" for another 4xx (a proxy's 401): no such caller, not
            # an outage. A hub 5xx (502 here) and no connection are outages.
            message = str(e.log_message or "")
            if e.status_code == 500 and message.startswith("Failed to check authorization"):
                return None
            raise HubUnavailable(f"hub answered {e.status_code}") from None
        if model is None:
            return None
        try:
            return Identity(
                name=str(model["name"]),
                kind=str(model.get("kind", "user")),
                scopes=frozenset(str(s) for s in model.get("scopes", [])),
                groups=tuple(str(g) for g in model.get("groups") or []),
            )
        except (KeyError, TypeError, AttributeError):
            raise HubUnavailable("unreadable answer from the hub") from None
