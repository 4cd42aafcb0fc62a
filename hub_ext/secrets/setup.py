"""Wire secret delivery into a hub's configuration: ``setup_secrets(c)`` in
jupyterhub_config.py, after the spawn policy's profiles are set."""

from __future__ import annotations

from traitlets.config import Config

from .delivery import SecretDelivery, start_delivery
from .handlers import HANDLERS


def setup_secrets(c: Config, profiles: list[str] | None = None) -> SecretDelivery:
    """Create the hub's delivery from ``c`` (ValueError/SecretError stop the hub) and add
    its API handlers to ``c.JupyterHub.extra_handlers``."""
    delivery = start_delivery(c, profiles)
    existing = c.JupyterHub.extra_handlers if isinstance(c.JupyterHub.extra_handlers, list) else []
    c.JupyterHub.extra_handlers = [*existing, *(h for h in HANDLERS if h not in existing)]
    return delivery
