"""Declarative wiring: each component says what it adds to a hub's config; ``apply`` merges.

A component's function returns a ``Fragment``: plain data (services, roles, custom
scopes, server-token scopes, spawner environment, hub settings, files to write), with
no side effect on the config. ``apply(c, *fragments)`` merges them into ``c`` once, with
what ``jupyterhub_config.py`` set itself, and stops the hub with a message naming both
sides when two of them disagree: a service or a custom scope defined twice differently,
two values for one setting or environment variable. Roles of the same name are one role:
their scopes and members are joined (that is how the QPU gateway grants ``submit`` to
the ``student`` role the config defines); so are settings whose value is a dict of lists
(``QustodyAuthenticator.role_extra_scopes``) and sets (``JupyterHub.extra_user_scopes``).
Order does not matter, except that a role's description is the first one given.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Role members: joined like scopes.
_MEMBERS = ("users", "groups", "services")
_CONFIG = "jupyterhub_config.py"


class WiringConflict(ValueError):
    """Two parts of the configuration want different things."""


@dataclass
class Fragment:
    """What one component adds to the hub's configuration."""

    component: str
    services: list[dict[str, Any]] = field(default_factory=list)
    roles: list[dict[str, Any]] = field(default_factory=list)
    custom_scopes: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: added to ``Spawner.server_token_scopes`` (on top of the ``server`` role's scopes)
    server_token_scopes: list[str] = field(default_factory=list)
    #: added to ``Spawner.environment``
    environment: dict[str, str] = field(default_factory=dict)
    #: ``"Section.trait": value``, e.g. ``"SpawnPolicy.courses_dir": "/srv/courses"``
    settings: dict[str, Any] = field(default_factory=dict)
    #: written (mode 0600, parents created) when the fragment is applied
    files: dict[Path, str] = field(default_factory=dict)


def _conflict(what: str, first: str, second: str) -> WiringConflict:
    return WiringConflict(
        f"{what} is set differently by {first} and by {second}; keep one (the component's "
        "functions take arguments for what may be changed)."
    )


def _merge_role(into: dict[str, Any], role: dict[str, Any]) -> None:
    into["scopes"] = sorted({*into.get("scopes", []), *role.get("scopes", [])})
    for key in _MEMBERS:
        if key in role or key in into:
            into[key] = sorted({*into.get(key, []), *role.get(key, [])})
    if not into.get("description") and role.get("description"):
        into["description"] = role["description"]


def _existing(c: Any, section: str, key: str, kind: type) -> Any:
    value = c[section].get(key)
    return value if isinstance(value, kind) else kind()


def apply(c: Any, *fragments: Fragment) -> None:
    """Merge ``fragments`` into ``c`` (a JupyterHub config); WiringConflict on a conflict."""
    owners: dict[str, str] = {}

    def claim(what: str, owner: str, same: bool) -> None:
        if what in owners and not same:
            raise _conflict(what, owners[what], owner)
        owners.setdefault(what, owner)

    services: dict[str, dict[str, Any]] = {}
    for s in _existing(c, "JupyterHub", "services", list):
        services[s["name"]] = s
        owners[f"service {s['name']!r}"] = _CONFIG
    roles: dict[str, dict[str, Any]] = {}
    for r in _existing(c, "JupyterHub", "load_roles", list):
        _merge_role(roles.setdefault(r["name"], {"name": r["name"]}), r)
    scopes: dict[str, dict[str, Any]] = dict(_existing(c, "JupyterHub", "custom_scopes", dict))
    owners.update({f"custom scope {s!r}": _CONFIG for s in scopes})
    env: dict[str, str] = dict(_existing(c, "Spawner", "environment", dict))
    owners.update({f"Spawner.environment[{k!r}]": _CONFIG for k in env})
    token_scopes: list[str] = list(_existing(c, "Spawner", "server_token_scopes", list))
    settings: dict[str, Any] = {}

    for f in fragments:
        for s in f.services:
            what = f"service {s['name']!r}"
            claim(what, f.component, services.get(s["name"], s) == s)
            services[s["name"]] = s
        for r in f.roles:
            _merge_role(roles.setdefault(r["name"], {"name": r["name"]}), r)
        for name, spec in f.custom_scopes.items():
            claim(f"custom scope {name!r}", f.component, scopes.get(name, spec) == spec)
            scopes[name] = spec
        for key, value in f.environment.items():
            claim(f"Spawner.environment[{key!r}]", f.component, env.get(key, value) == value)
            env[key] = value
        token_scopes += [s for s in f.server_token_scopes if s not in token_scopes]
        for key, value in f.settings.items():
            section, _, trait = key.partition(".")
            before = settings[key] if key in settings else c[section].get(trait, value)
            if _joinable(before) and _joinable(value):
                settings[key] = _join(before, value)
                continue
            same = settings.get(key, value) == value
            if key not in owners and trait in c[section] and c[section][trait] != value:
                owners[key], same = _CONFIG, False
            claim(key, f.component, same)
            settings[key] = value

    for f in fragments:
        for path, text in f.files.items():
            _write_private(path, text)
    c.JupyterHub.services = list(services.values())
    c.JupyterHub.load_roles = list(roles.values())
    c.JupyterHub.custom_scopes = scopes
    c.Spawner.environment = env
    if token_scopes:
        c.Spawner.server_token_scopes = _with_server_role(token_scopes)
    for key, value in settings.items():
        section, _, trait = key.partition(".")
        setattr(c[section], trait, value)


def _joinable(value: Any) -> bool:
    return isinstance(value, set | frozenset) or (
        isinstance(value, dict) and all(isinstance(v, list) for v in value.values()))


def _join(a: Any, b: Any) -> Any:
    if isinstance(a, set | frozenset) and isinstance(b, set | frozenset):
        return {*a, *b}
    return {k: sorted({*a.get(k, []), *b.get(k, [])}) for k in {*a, *b}}


def _write_private(path: Path, text: str) -> None:
    """Write ``path`` (0600) whole or not at all: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _with_server_role(scopes: Iterable[str]) -> list[str]:
    """A server token's scopes: the ``server`` role's (as JupyterHub gives by default)
    and the extra ones."""
    from jupyterhub.roles import get_default_roles

    base = next(r["scopes"] for r in get_default_roles() if r["name"] == "server")
    return [*base, *(s for s in scopes if s not in base)]


__all__ = ["Fragment", "WiringConflict", "apply"]
