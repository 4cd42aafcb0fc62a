"""Who is calling: an ``Identity`` resolved from the request's hub token.

The production resolver asks the JupyterHub API, as ``jupyterhub.services.auth.HubAuth``
does: ``GET {hub_api_url}/user`` with ``Authorization: token <token>``. The answer
carries the token's owner, groups and (expanded) scopes. Answers are cached for a short
time under a hash of the token (never the token itself). If the hub cannot be asked,
the request is refused (503): the gateway fails closed.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Protocol

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

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
    """Resolves tokens through the JupyterHub REST API, with a bounded TTL cache."""

    def __init__(
        self, hub_api_url: str, cache_seconds: float = 3.0, max_entries: int = 10_000,
        timeout: float = 10.0,
    ) -> None:
        self.url = hub_api_url.rstrip("/") + "/user"
        self.cache_seconds = cache_seconds
        self.max_entries = max_entries
        self.timeout = timeout
        self._cache: OrderedDict[str, tuple[float, Identity | None]] = OrderedDict()

    async def resolve(self, token: str) -> Identity | None:
        key = hashlib.sha256(token.encode()).hexdigest()
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit and hit[0] > now:
            return hit[1]
        request = HTTPRequest(
            self.url,
            headers={"Authorization": f"token {token}"},
            request_timeout=self.timeout,
            connect_timeout=self.timeout,
            follow_redirects=False,
        )
        try:
            response = await AsyncHTTPClient().fetch(request, raise_error=False)
        except (OSError, HTTPClientError) as e:
            raise HubUnavailable(type(e).__name__) from None
        if response.code in (401, 403, 404):
            identity = None
        elif response.code == 200:
            try:
                model = json.loads(response.body)
                identity = Identity(
                    name=str(model["name"]),
                    kind=str(model.get("kind", "user")),
                    scopes=frozenset(str(s) for s in model.get("scopes", [])),
                    groups=tuple(str(g) for g in model.get("groups") or []),
                )
            except (ValueError, KeyError, TypeError):
                raise HubUnavailable("unreadable answer from the hub") from None
        else:
            raise HubUnavailable(f"hub answered {response.code}")
        self._cache[key] = (now + self.cache_seconds, identity)
        self._cache.move_to_end(key)
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)
        return identity
