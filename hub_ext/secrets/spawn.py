"""The spawners' side: a signed claim ticket for each start.

Kept apart from hub_ext/spawner/ so the spawners call one function and nothing more. The
hub holds only the ticket key (``SecretBroker.ticket_key_file``, created by the
``qustody`` service's fragment when missing); the store's master key and the
secrets stay with the service (hub_ext.server_api).
"""

from __future__ import annotations

import os
from typing import Any

from .broker import SecretBroker
from .tickets import TicketSigner, load_ticket_key

#: Environment variable the server extension reads the ticket from (and then removes).
TICKET_ENV = "QUSTODY_SECRETS_TICKET"


_keys: dict[str, tuple[float, bytes]] = {}


def _key(path: str) -> bytes:
    """The ticket key, read again only when its file changed (a stat per spawn)."""
    mtime = os.stat(path).st_mtime
    cached = _keys.get(path)
    if cached is None or cached[0] != mtime:
        cached = _keys[path] = (mtime, load_ticket_key(path))
    return cached[1]


def spawn_ticket(spawner: Any, profile: str, profile_roles: tuple[str, ...]) -> str | None:
    """A claim ticket for this start of ``spawner`` with ``profile`` (which the hub roles
    ``profile_roles`` may use), or None when secrets are off (no ticket key)."""
    settings = SecretBroker(config=spawner.config)
    if not settings.ticket_key_file or not getattr(spawner, "api_token", ""):
        return None
    signer = TicketSigner(_key(settings.ticket_key_file), settings.ticket_ttl)
    text, _ = signer.issue(spawner.user.name, spawner.name, spawner.api_token, profile,
                           tuple(sorted(profile_roles)))
    return text
