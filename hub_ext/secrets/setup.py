"""Wire secret delivery into a hub's configuration: the fragment ``secret_delivery(c)``
for ``hub_ext.wiring.apply``, after the spawn policy's profiles are set."""

from __future__ import annotations

from pathlib import Path

from traitlets.config import Config

from ..wiring import Fragment
from .delivery import start_delivery
from .handlers import HANDLERS


def secret_delivery(c: Config, profiles: list[str] | None = None,
                    courses_dir: str | None = None) -> Fragment:
    """Create the hub's delivery from ``c`` (ValueError/SecretError stop the hub here) and
    return the API routes user servers call (redeem, refresh, store). ``courses_dir``:
    the hub's course files; a closed course's ``course:<id>`` secrets are withheld."""
    delivery = start_delivery(c, profiles)
    if courses_dir:
        from ..courses.hub import closed_lookup, live_courses, shared_secrets

        current = live_courses(Path(courses_dir))
        delivery.course_closed = closed_lookup(current)
        delivery.course_secrets = shared_secrets(current)
    return Fragment("secret delivery (hub_ext.secrets)", handlers=list(HANDLERS))
