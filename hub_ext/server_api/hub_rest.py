"""The ``qustody`` service's own questions to the hub's REST API (its service token).

What the hub's handlers once read from the hub's memory, the service asks for: a user's
roles (their own and their groups'), groups, auth state, and servers; and it asks the hub
to stop a server. Each call has a timeout; an unreachable or failing hub is
``HubUnavailable`` (the service then refuses: it fails closed).
"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import quote

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from ..qpu.auth import HubUnavailable

#: Seconds a group's roles are reused (a course group's roles rarely change).
GROUP_ROLES_SECONDS = 5.0


class HubRest:
    def __init__(self, api_url: str, token: str, timeout: float = 10.0) -> None:
        self.api_url = api_url.rstrip("/")
        self._token = token
        self.timeout = timeout
        self._group_roles: dict[str, tuple[float, list[str]]] = {}

    async def _call(self, method: str, path: str, *, paged: bool = False) -> tuple[int, Any]:
        headers = {"Authorization": f"token {self._token}"}
        if paged:  # the hub then says where the next page is
            headers["Accept"] = "application/jupyterhub-pagination+json"
        request = HTTPRequest(
            path if path.startswith("http") else f"{self.api_url}/{path}", method=method,
            headers=headers,
            request_timeout=self.timeout, connect_timeout=self.timeout,
            follow_redirects=False, allow_nonstandard_methods=True)
        try:
            response = await AsyncHTTPClient().fetch(request, raise_error=False)
        except (OSError, HTTPClientError) as e:
            raise HubUnavailable(f"the hub's API did not answer ({type(e).__name__})") from None
        if response.code == 599 or response.code >= 500:
            raise HubUnavailable(f"the hub's API answered {response.code}")
        try:
            body = json.loads(response.body) if response.body else None
        except ValueError:
            body = None
        return response.code, body

    async def user(self, name: str) -> dict[str, Any] | None:
        """The user's model (roles, groups, servers, auth_state), or None if unknown."""
        code, body = await self._call("GET", f"users/{quote(name, safe='')}")
        if code == 404:
            return None
        if code != 200 or not isinstance(body, dict):
            raise HubUnavailable(f"the hub's API answered {code} for a user")
        return body

    async def roles(self, model: dict[str, Any]) -> tuple[str, ...]:
        """The user's roles now: their own and their groups' (as JupyterHub counts them)."""
        roles = {str(r) for r in model.get("roles") or []}
        for group in model.get("groups") or []:
            roles.update(await self._roles_of_group(str(group)))
        return tuple(sorted(roles))

    async def _roles_of_group(self, group: str) -> list[str]:
        cached = self._group_roles.get(group)
        if cached is not None and time.monotonic() - cached[0] < GROUP_ROLES_SECONDS:
            return cached[1]
        code, body = await self._call("GET", f"groups/{quote(group, safe='')}")
        if code == 404:
            roles: list[str] = []
        elif code != 200 or not isinstance(body, dict):
            raise HubUnavailable(f"the hub's API answered {code} for a group")
        else:
            roles = [str(r) for r in body.get("roles") or []]
        self._group_roles[group] = (time.monotonic(), roles)
        return roles

    async def running(self) -> dict[tuple[str, str], str]:
        """(user, server name) -> start time of every server the hub has (pending ones
        included), page by page as the hub links them."""
        out: dict[tuple[str, str], str] = {}
        page: str | None = "users?state=active&limit=200"
        for _ in range(10_000):
            if page is None:
                return out
            code, body = await self._call("GET", page, paged=True)
            items = body.get("items") if isinstance(body, dict) else None
            if code != 200 or not isinstance(items, list):
                raise HubUnavailable(f"the hub's API answered {code} for the servers")
            for user in items:
                for name, server in (user.get("servers") or {}).items():
                    out[(str(user.get("name")), str(name))] = str(server.get("started") or "")
            following = (body.get("_pagination") or {}).get("next") or {}
            page = following.get("url") if isinstance(following, dict) else None
        raise HubUnavailable("the hub's list of servers did not end")

    async def stop(self, user: str, server: str) -> None:
        """Ask the hub to stop a server (already stopping or gone: nothing to do)."""
        path = f"users/{quote(user, safe='')}/server"
        if server:
            path += f"s/{quote(server, safe='')}"
        code, body = await self._call("DELETE", path)
        if code in (202, 204, 404):
            return
        message = str((body or {}).get("message", "")) if isinstance(body, dict) else ""
        raise HubUnavailable(f"the hub's API answered {code} to a stop ({message[:200]})")
