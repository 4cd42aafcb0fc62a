"""The demo's identity provider: the repository's oidc-provider with five demo users.

``hub_ext.demo.launcher`` calls :func:`start_demo_idp` and hands the returned environment to the
hub; passwords and the client secret are generated for each run.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from .provider_process import ProviderProcess, start_provider

#: name → (groups, amr, description); `nomfa` shows the refusal page.
DEMO_USERS = {
    "rita": (["qustody-researchers"], ["pwd", "otp"], "researcher, MFA (2 CPU, 4 GiB)"),
    "sam": (["qustody-students", "course-101"], ["pwd", "otp"], "student in course-101, MFA"),
    "ivan": (["qustody-instructors", "course-101"], ["pwd", "hwk"], "instructor of course-101"),
    "tina": (["qustody-tas", "course-101"], ["pwd", "otp"], "TA of course-101"),
    "otto": (["qustody-observers", "course-101"], ["pwd", "otp"], "observer of course-101"),
    "ada": (["qustody-admins"], ["pwd", "hwk"], "hub admin, hardware key"),
    "audrey": (["qustody-auditors"], ["pwd", "otp"], "auditor: reads activity, no servers"),
    "nomfa": (["qustody-researchers"], ["pwd"], "password only: REFUSED (MFA required)"),
}


@dataclass
class DemoIdp:
    provider: ProviderProcess
    env: dict[str, str]
    banner: str


def start_demo_idp(state: Path, hub_url: str) -> DemoIdp:
    """Start the provider with the demo users and a client for ``hub_url``."""
    client_secret = secrets.token_urlsafe(24)
    passwords = {name: secrets.token_urlsafe(9) for name in DEMO_USERS}
    users = {
        name: {"password": passwords[name], "groups": groups, "amr": amr}
        for name, (groups, amr, _) in DEMO_USERS.items()
    }
    client = {
        "client_id": "qustody-demo-hub",
        "client_secret": client_secret,
        "redirect_uris": [f"{hub_url}hub/oauth_callback"],
    }
    provider = start_provider(
        users,
        state / "idp",
        clients=[client],
        ttl={"AccessToken": 300, "IdToken": 300, "RefreshToken": 8 * 3600},
    )
    env = {
        "QUSTODY_OIDC_ISSUER": provider.issuer,
        "QUSTODY_OIDC_CLIENT_ID": "qustody-demo-hub",
        "QUSTODY_OIDC_CLIENT_SECRET": client_secret,
        "QUSTODY_DEMO_MODE": "1",
    }
    lines = [f"    {n:<7} {passwords[n]:<14} {d}" for n, (_, _, d) in DEMO_USERS.items()]
    banner = (
        f"  Sign-in: OpenID provider {provider.issuer} (demo users, passwords for this run):\n"
        + "\n".join(lines)
    )
    return DemoIdp(provider, env, banner)
