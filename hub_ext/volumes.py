"""Names of users' home volumes: one rule for the spawners and the course tools
(``qustody course assignment`` writes into the same volumes the servers mount)."""

from __future__ import annotations

import re
import string
import uuid

#: Where the home volume is mounted in the single-user image (its HOME).
HOME_MOUNT = "/home/jovyan"
HOME_VOLUME_TEMPLATE = "qustody-home-{username}"
#: A Docker volume name (what ``docker volume create`` accepts).
VOLUME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{1,127}")
_NAME = re.compile(r"[a-z0-9][a-z0-9-]*[a-z0-9]")
#: The longest ``{username}`` part ``home_volume_name`` makes: 40 characters, "-", 8 hex.
_LONGEST_USER_PART = "u" * 40 + "-" + "0" * 8


def home_template_error(template: str) -> str | None:
    """Why ``template`` cannot name home volumes, or None: it must be a volume name with
    text before one ``{username}`` field and no other field."""
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError:
        parts = []
    fields = [(name, spec, conv) for _, name, spec, conv in parts if name is not None]
    if fields != [("username", "", None)]:
        return "must contain {username} once and no other {...} field"
    if not template.split("{username}", 1)[0]:
        return "must start with a prefix of its own before {username} (e.g. qustody-home-)"
    name = template.format(username=_LONGEST_USER_PART)
    # lower case, digits and '-': a Docker volume name and a Kubernetes claim name alike
    if not (_NAME.fullmatch(name) and VOLUME.fullmatch(name)):
        return ("must be a volume name of lower-case letters, digits and '-' (at most 128 "
                "characters for the longest user name), not a host path")
    return None


def materials_overlap_error(template: str, materials_prefix: str) -> str | None:
    """Why home volumes named by ``template`` and course materials named with
    ``materials_prefix`` could be confused, or None: a home's name that could start with
    the prefix is a home a course file could name as its materials. No prefix allows no
    materials, so nothing overlaps it."""
    homes = home_prefix(template)
    if materials_prefix and (homes.startswith(materials_prefix)
                             or materials_prefix.startswith(homes)):
        return (f"overlaps the course materials prefix {materials_prefix!r}: a course file "
                "could name a user's home as its materials. Give each its own prefix.")
    return None


def home_prefix(template: str) -> str:
    """What every home volume's name starts with: the text before ``{username}``."""
    return template.split("{username}", 1)[0]


#: The label of a home volume that names its owner: the spawner creates homes with it and
#: refuses one labelled for another user (course releases write it too).
HOME_OWNER = "io.qustody.user"


def home_volume_name(template: str, username: str) -> str:
    """``template`` with ``{username}`` as the name reduced to ``[a-z0-9-]`` plus a short
    hash of the whole name, so two users never share a volume."""
    safe = re.sub(r"[^a-z0-9]+", "-", username.lower()).strip("-")[:40] or "user"
    digest = uuid.uuid5(uuid.NAMESPACE_URL, username).hex[:8]
    return template.format(username=f"{safe}-{digest}")
