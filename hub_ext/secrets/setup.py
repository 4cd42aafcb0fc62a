"""Wire secret delivery into a hub's configuration: the fragment ``secret_delivery(c)``
for ``hub_ext.wiring.apply``, after the spawn policy's profiles are set."""

from __future__ import annotations

from traitlets.config import Config

from ..wiring import Fragment
from .delivery import start_delivery
from .handlers import HANDLERS


def secret_delivery(c: Config, profiles: list[str] | None = None) -> Fragment:
    """Create the hub's delivery from ``c`` (ValueError/SecretError stop the hub here) and
    return the API routes user servers call (redeem, refresh, store)."""
    start_delivery(c, profiles)
    return Fragment("secret delivery (hub_ext.secrets)", handlers=list(HANDLERS))
