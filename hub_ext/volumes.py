"""Names of users' home volumes: one rule for the spawners and the course tools
(``qustody course assignment`` writes into the same volumes the servers mount)."""

from __future__ import annotations

import re
import uuid

#: Where the home volume is mounted in the single-user image (its HOME).
HOME_MOUNT = "/home/jovyan"
HOME_VOLUME_TEMPLATE = "qustody-home-{username}"


def home_volume_name(template: str, username: str) -> str:
    """``template`` with ``{username}`` as the name reduced to ``[a-z0-9-]`` plus a short
    hash of the whole name, so two users never share a volume."""
    safe = re.sub(r"[^a-z0-9]+", "-", username.lower()).strip("-")[:40] or "user"
    digest = uuid.uuid5(uuid.NAMESPACE_URL, username).hex[:8]
    return template.format(username=f"{safe}-{digest}")
