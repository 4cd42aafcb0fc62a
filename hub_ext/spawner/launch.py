"""What every backend does the same way for one start: decide, record, hand over.

``PolicyLaunch`` is mixed into the Docker, local-process and Kubernetes spawners. It makes
the policy's decision once (``begin``: who asked, the owner's roles, the course term),
keeps the limits the culler reads from the server's state (``admin:server_state``),
builds the server's environment (time limits, session id, the secrets ticket) and its
jupyter-server arguments. The backends add only how a server is run. (A stopped server's
ticket and secret leases are the ``qustody`` service's business: hub_ext.server_api.)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..identity.roles import MANAGING_PREFIXES
from ..secrets.spawn import TICKET_ENV, spawn_ticket
from .policy import SpawnPolicy
from .profiles import Decision, Profile, Requester, now


class PolicyLaunch:
    """What every backend keeps of a spawn: the policy decision, and the limits the culler
    reads from the server's state (``admin:server_state``), handed to the server as env."""

    policy: SpawnPolicy
    user: Any
    user_options: Any
    _decision: Decision | None = None
    _limits: dict[str, Any] | None = None

    def _user_roles(self) -> set[str]:
        from jupyterhub import roles as hub_roles

        return {role.name for role in hub_roles.get_roles_for(self.user.orm_user)}

    def _requester(self) -> Requester:
        """Who asked for this start, from the hub's request handler (JupyterHub passes
        it to ``spawn``). No handler or no user: an unknown caller, refused for anyone's
        server but an admin's request."""
        from jupyterhub import roles as hub_roles

        handler = getattr(self, "handler", None)
        caller = getattr(handler, "current_user", None) if handler is not None else None
        name = str(getattr(caller, "name", "") or "")
        kind = getattr(caller, "kind", None)
        admin = "admin:servers" in (getattr(handler, "expanded_scopes", None) or ())
        if kind != "user" or caller is None:
            return Requester(name, is_owner=False, admin=admin)
        roles = {r.name for r in hub_roles.get_roles_for(caller.orm_user)}
        return Requester(
            name,
            is_owner=name == self.user.name,
            admin=admin,
            instructs=frozenset(  # instructors and TAs (observers only read)
                r.split("-", 1)[1] for r in roles if r.startswith(MANAGING_PREFIXES)
            ),
        )

    def profile_allowed_for(self, roles: Iterable[str]) -> bool:
        """Whether one of ``roles`` may use the profile this server was started with (False
        when that profile is unknown or gone from the policy)."""
        name = (self._limits or {}).get("profile")
        profile = self.policy.parsed_profiles().get(name) if isinstance(name, str) else None
        return profile is not None and bool(set(roles) & set(profile.roles))

    def _decide(self) -> Decision:
        """The policy's decision for this start: who asked, then the owner's roles."""
        groups = {g.name for g in self.user.groups}
        options = self.policy.on_behalf(self._requester(), groups, self.user_options or {})
        roles = self._user_roles()
        self._course_closes = self.policy.check_term(roles, groups)
        return self.policy.decide(roles, options)

    _course_closes: float | None = None

    def begin(self, started: float, *, runs_image: bool = True) -> Decision:
        """Decide this start and record its limits (profile, start time, session, the
        image's digest when the backend runs one, term deadline) for the culler and the
        server."""
        decision = self._decide()
        self._decision = decision
        self._limits = {
            **decision.profile.limits(),
            "started_at": int(started),
            "session_id": decision.session_id,
            **({"image": decision.image.digest} if runs_image else {}),
            **self._term_limit(),
        }
        return decision

    def get_args(self) -> list[str]:
        args: list[str] = super().get_args()  # type: ignore[misc]
        if self._decision is not None:
            args += self.policy.server_args(self._decision.profile)
        return args

    def _term_limit(self) -> dict[str, int]:
        """The course deadline for the server's state (hub_ext.culling reads it)."""
        return {} if self._course_closes is None else {"course_closes": int(self._course_closes)}

    def get_state(self) -> dict[str, Any]:
        state: dict[str, Any] = super().get_state()  # type: ignore[misc]
        if self._limits:
            state["qustody"] = dict(self._limits)
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)  # type: ignore[misc]
        self._limits = dict(state.get("qustody") or {}) or None

    def clear_state(self) -> None:
        super().clear_state()  # type: ignore[misc]
        self._limits = None

    def get_env(self) -> dict[str, str]:
        env: dict[str, str] = super().get_env()  # type: ignore[misc]
        if self._decision is not None:
            started = float((self._limits or {}).get("started_at", now()))
            env.update(self.policy.environment(self._decision, started))
            profile = self._decision.profile
            ticket = spawn_ticket(self, profile.name, profile.roles)
            if ticket:
                env[TICKET_ENV] = ticket
        return env


def options_from_form(formdata: Mapping[str, list[str]]) -> dict[str, str]:
    options = {}
    for key in ("profile", "image"):
        values = formdata.get(key) or []
        if values and values[0]:
            options[key] = values[0]
    return options


def profile_form(profiles: list[Profile]) -> str:
    from html import escape

    if not profiles:
        return (
            "<p>No server profile is available for your roles: your role reads through the "
            "hub's pages instead (an observer uses the instructor page, an auditor the audit "
            "page: see <em>Services</em> in the menu above). If you need a server of your "
            "own, ask an admin for a role that has one.</p>"
        )
    rows = []
    for i, p in enumerate(profiles):
        checked = " checked" if i == 0 else ""
        rows.append(
            f'<label class="form-check"><input type="radio" name="profile" '
            f'value="{escape(p.name)}"{checked}> <strong>{escape(p.display_name)}</strong> '
            f"<small>{escape(p.description)} ({escape(p.summary())})</small></label>"
        )
    return "\n".join(rows)

