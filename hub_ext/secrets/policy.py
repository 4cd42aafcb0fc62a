"""Which secret classes a spawn may receive, by spawn profile and by hub role.

A secret reaches a server only if its class is allowed for the server's profile AND
for at least one of the user's roles. Deny by default: an empty table delivers nothing,
and a profile or role that is not listed gets nothing. Restricted classes (prod,
hardware) can never be allowed for a restricted profile (student): the hub refuses to
start with such a table.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from traitlets import Dict, List, Unicode, validate
from traitlets.config import LoggingConfigurable

from .model import CLASS


def _class_table(value: Any, name: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for key, classes in dict(value).items():
        if isinstance(classes, str) or not isinstance(classes, list | tuple):
            raise ValueError(f"SecretClassPolicy.{name}[{key!r}] must be a list of class names")
        for cls in classes:
            if cls != "*" and not (isinstance(cls, str) and CLASS.fullmatch(cls)):
                raise ValueError(
                    f"SecretClassPolicy.{name}[{key!r}]: {str(cls)[:64]!r} is not a class name "
                    "(lowercase letters, digits, '-'), nor '*'"
                )
        out[str(key)] = list(classes)
    return out


class SecretClassPolicy(LoggingConfigurable):
    """Which classes of secret each spawn profile and each hub role may receive."""

    profile_classes = Dict(
        config=True,
        help="""Spawn profile name (``SpawnPolicy.profiles``) to the secret classes a server
        of that profile may receive, e.g. ``{"student": ["sandbox", "simulator"],
        "researcher": ["sandbox", "dev", "prod", "simulator", "hardware"]}``. ``"*"``
        allows every class except the restricted ones for restricted profiles. A profile
        not listed receives no secret. Empty (default): no secret is delivered.

        .. versionadded:: 0.1
        """,
    )
    role_classes = Dict(
        config=True,
        help="""Hub role name to the secret classes its members may receive. A secret is
        delivered only if one of the user's roles allows its class (and the profile does).
        Empty (default): no secret is delivered.

        .. versionadded:: 0.1
        """,
    )
    restricted_classes = List(
        Unicode(),
        default_value=["prod", "hardware"],
        config=True,
        help="""Classes that must never reach a restricted profile, whatever the tables
        say: a table that allows one for a restricted profile stops the hub at start-up,
        and delivery checks again.""",
    )
    restricted_profiles = List(
        Unicode(),
        default_value=["student"],
        config=True,
        help="Profiles (e.g. course work) that never receive a restricted class.",
    )

    @validate("profile_classes")
    def _valid_profiles(self, proposal: Any) -> dict[str, list[str]]:
        return _class_table(proposal["value"], "profile_classes")

    @validate("role_classes")
    def _valid_roles(self, proposal: Any) -> dict[str, list[str]]:
        return _class_table(proposal["value"], "role_classes")

    def check(self, profiles: Iterable[str] = ()) -> None:
        """Cross-setting checks at start-up; ValueError says how to fix the config."""
        for profile in self.restricted_profiles:
            bad = sorted(set(self.profile_classes.get(profile, [])) & set(self.restricted_classes))
            if bad:
                raise ValueError(
                    f"SecretClassPolicy.profile_classes[{profile!r}] allows {bad}, but "
                    f"{profile!r} is a restricted profile (SecretClassPolicy.restricted_profiles) "
                    "that must never receive a restricted class: remove them"
                )
        known = set(profiles)
        if known:
            unknown = sorted(set(self.profile_classes) - known)
            if unknown:
                raise ValueError(
                    f"SecretClassPolicy.profile_classes names profiles {unknown} that are not "
                    f"in SpawnPolicy.profiles ({', '.join(sorted(known))}): fix the names"
                )

    def allows(self, cls: str, profile: str, roles: Iterable[str]) -> bool:
        if profile in self.restricted_profiles and cls in self.restricted_classes:
            return False
        by_profile = self.profile_classes.get(profile, [])
        if cls not in by_profile and "*" not in by_profile:
            return False
        return any(
            cls in self.role_classes.get(r, []) or "*" in self.role_classes.get(r, [])
            for r in roles
        )
