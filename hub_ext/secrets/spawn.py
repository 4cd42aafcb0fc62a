"""The spawners' side: a ticket for each start, and clean-up at each stop.

Kept apart from hub_ext/spawner/ so the spawners call two functions and nothing more.
"""

from __future__ import annotations

from typing import Any

from .delivery import hub_secrets

#: Environment variable the server extension reads the ticket from (and then removes).
TICKET_ENV = "QUSTODY_SECRETS_TICKET"


def spawn_ticket(spawner: Any, profile: str, profile_roles: tuple[str, ...]) -> str | None:
    """A claim ticket for this start of ``spawner`` with ``profile`` (which the hub roles
    ``profile_roles`` may use), or None when secrets are off."""
    delivery = hub_secrets()
    if delivery is None or not getattr(spawner, "api_token", ""):
        return None
    return delivery.issue_ticket(
        spawner.user.name, spawner.name, spawner.api_token, profile, tuple(sorted(profile_roles))
    )


def spawn_stopped(spawner: Any) -> None:
    delivery = hub_secrets()
    if delivery is not None:
        delivery.server_stopped(spawner.user.name, spawner.name)
