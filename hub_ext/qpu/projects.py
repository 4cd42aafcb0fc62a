"""The project registry: who is in which project, in which role, and what it may use.

Projects come from the policy file (``[projects.NAME]``). Membership is by hub user name
or hub group; a user in no project can submit nothing (deny by default).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

ROLES = ("member", "lead")
"""``member`` submits and sees their own jobs; ``lead`` also sees and cancels every job
of the project and reads its usage."""


@dataclass(frozen=True)
class Project:
    name: str
    members: Mapping[str, str] = field(default_factory=dict)
    groups: Mapping[str, str] = field(default_factory=dict)
    backends: tuple[str, ...] = ()
    sensitivity: str = "internal"
    share: float = 1.0
    max_tier: str = ""

    def role_of(self, user: str, groups: Iterable[str] = ()) -> str | None:
        """The strongest role the user holds in the project (directly or by group)."""
        roles = {self.members.get(user)} | {self.groups.get(g) for g in groups}
        for role in reversed(ROLES):
            if role in roles:
                return role
        return None

    def allows_backend(self, backend: str) -> bool:
        return "*" in self.backends or backend in self.backends


class UnknownProject(LookupError):
    pass


class Registry:
    """Read-only view of the configured projects."""

    def __init__(self, projects: Mapping[str, Project]) -> None:
        self.projects = dict(projects)

    def get(self, name: str) -> Project:
        try:
            return self.projects[name]
        except KeyError:
            raise UnknownProject(name) from None

    def projects_of(self, user: str, groups: Iterable[str] = ()) -> dict[str, str]:
        """Project name -> role for every project the user belongs to."""
        groups = tuple(groups)
        found = {}
        for name, project in self.projects.items():
            role = project.role_of(user, groups)
            if role:
                found[name] = role
        return found
