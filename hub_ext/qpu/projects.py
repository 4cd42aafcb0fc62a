"""The project registry: who is in which project, in which role, and what it may use.

Projects come from two places:

- the policy file (``[projects.NAME]``), membership by hub user name or hub group;
- identity (``[identity]`` in the policy file): every course is a project of its own name
  (``course-101``) whose members are the course's students (hub group
  ``course-101:students``) and whose leads are its instructors (``course-101:instructors``;
  both groups are the authenticator's, see hub_ext.identity.roles.hub_groups). A
  researcher or admin who also takes the course is not a member: their jobs are not the
  course's, and the instructors cannot read them. A user who belongs to no project gets a
  personal sandbox, ``personal:<user>``, under the user quota.

A file entry for a course adds to the course's project: limits (share, tiers, quotas,
reservations, backends when it names them) and members; it never removes the course's
own. A user in no project, with no personal sandbox configured, can submit nothing (deny
by default).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

ROLES = ("member", "lead")
"""``member`` submits and sees their own jobs; ``lead`` also sees and cancels every job
of the project and reads its usage."""

#: Name prefix of personal sandboxes; ``:`` occurs in no file project or course name.
PERSONAL_PREFIX = "personal:"

#: A course's hub groups (hub_ext.identity.roles) and the role each gives in its project.
COURSE_GROUPS = {":students": "member", ":instructors": "lead"}


@dataclass(frozen=True)
class Project:
    name: str
    members: Mapping[str, str] = field(default_factory=dict)
    groups: Mapping[str, str] = field(default_factory=dict)
    backends: tuple[str, ...] = ()
    sensitivity: str = "internal"
    share: float = 1.0
    max_tier: str = ""
    #: the purpose of a job that declares none ("" = the job must declare one)
    purpose: str = ""
    #: when the project stops taking jobs (a course: its term's end plus grace); None: never
    open_until: float | None = None

    def role_of(self, user: str, groups: Iterable[str] = ()) -> str | None:
        """The strongest role the user holds in the project (directly or by group)."""
        roles = {self.members.get(user)} | {self.groups.get(g) for g in groups}
        for role in reversed(ROLES):
            if role in roles:
                return role
        return None

    def allows_backend(self, backend: str) -> bool:
        return "*" in self.backends or backend in self.backends


@dataclass(frozen=True)
class IdentityProjects:
    """Projects that follow identity (``[identity]``); empty settings turn each part off."""

    #: hub groups with this prefix (courses: ``hub_ext.identity.policy.decide``) are projects
    course_prefix: str = ""
    course_backends: tuple[str, ...] = ()
    course_purpose: str = ""
    #: backends of the personal sandbox of a user in no other project (() = no sandbox)
    personal_backends: tuple[str, ...] = ()
    personal_purpose: str = ""
    #: fair-share weight of each sandbox: one person, against a course's or team's 1.0
    personal_share: float = 0.1
    #: what a derived project without a file entry gets
    sensitivity: str = "internal"
    max_tier: str = ""

    def is_course(self, name: str) -> bool:
        return bool(self.course_prefix) and name.startswith(self.course_prefix) and (
            ":" not in name
        )

    def course_of(self, group: str) -> str | None:
        """The course whose students' or instructors' hub group ``group`` is."""
        for suffix in COURSE_GROUPS:
            if group.endswith(suffix) and self.is_course(group[: -len(suffix)]):
                return group[: -len(suffix)]
        return None

    def course(self, name: str, base: Project | None = None) -> Project:
        """The course's project: its file entry (if any) plus the course's own members."""
        base = base or Project(
            name=name,
            backends=self.course_backends,
            sensitivity=self.sensitivity,
            max_tier=self.max_tier,
        )
        return replace(
            base,
            groups={**base.groups, **{name + s: role for s, role in COURSE_GROUPS.items()}},
            purpose=base.purpose or self.course_purpose,
        )

    def personal(self, user: str) -> Project:
        return Project(
            name=PERSONAL_PREFIX + user,
            members={user: "lead"},
            backends=self.personal_backends,
            sensitivity=self.sensitivity,
            max_tier=self.max_tier,
            purpose=self.personal_purpose,
            share=self.personal_share,
        )


class UnknownProject(LookupError):
    pass


class Registry:
    """Read-only view of the projects: the policy file's and those that follow identity."""

    def __init__(
        self, projects: Mapping[str, Project], identity: IdentityProjects | None = None
    ) -> None:
        self.identity = identity or IdentityProjects()
        self.projects = {
            name: self.identity.course(name, p) if self.identity.is_course(name) else p
            for name, p in projects.items()
        }

    def find(self, name: str) -> Project | None:
        """The project called ``name``, from the file or from identity; None if none."""
        if name in self.projects:
            return self.projects[name]
        if self.identity.is_course(name):
            return self.identity.course(name)
        if name.startswith(PERSONAL_PREFIX) and self.identity.personal_backends:
            return self.identity.personal(name[len(PERSONAL_PREFIX):])
        return None

    def get(self, name: str) -> Project:
        project = self.find(name)
        if project is None:
            raise UnknownProject(name)
        return project

    def projects_of(self, user: str, groups: Iterable[str] = ()) -> dict[str, str]:
        """Project name -> role for every project the user belongs to."""
        groups = tuple(groups)
        found = {}
        candidates = dict(self.projects)
        for g in groups:
            course = self.identity.course_of(g)
            if course and course not in candidates:
                candidates[course] = self.identity.course(course)
        for name, project in candidates.items():
            role = project.role_of(user, groups)
            if role:
                found[name] = role
        if not found and self.identity.personal_backends:
            found[PERSONAL_PREFIX + user] = "lead"
        return found
