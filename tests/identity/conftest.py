"""Fixtures: a real OpenID provider (tests/idp) and a real hub logging in through it.

``idp`` starts ``node tests/idp/provider.mjs`` with :data:`USERS` on a random loopback
port; ``oidc_hub(extra=..., env=...)`` starts the repository's jupyterhub_config.py with
``QUSTODY_OIDC_*`` pointing at it, registers the hub's callback with the provider and
returns the hub. Logs of both are printed when a test fails. ``module_idp`` and
``module_oidc_hub`` are the same for hubs the tests of one module share; such tests sign
in as users of their own (``new_user``).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hub.hubtest import Hub, HubError, failed, launch_hub, stop_all_servers
from identity.idp import Idp, IdpError, start_idp

PASSWORD = "correct horse battery staple"
USERS: dict[str, dict[str, Any]] = {
    "rita": {"password": PASSWORD, "groups": ["qustody-researchers"], "amr": ["pwd", "otp"]},
    "nomfa": {"password": PASSWORD, "groups": ["qustody-researchers"], "amr": ["pwd"]},
    "ivan": {
        "password": PASSWORD,
        "groups": ["qustody-instructors", "course-101"],
        "amr": ["pwd", "hwk"],
    },
    "sam": {
        "password": PASSWORD,
        "groups": ["qustody-students", "course-101"],
        "amr": ["pwd", "otp"],
    },
    "tina": {
        "password": PASSWORD,
        "groups": ["qustody-tas", "course-101"],
        "amr": ["pwd", "otp"],
    },
    "otto": {
        "password": PASSWORD,
        "groups": ["qustody-observers", "course-101"],
        "amr": ["pwd", "otp"],
    },
    # in no course group at the provider: course-303's CSV roster lists them
    "cara": {
        "password": PASSWORD,
        "groups": ["qustody-students"],
        "amr": ["pwd", "otp"],
    },
    "rex": {
        "password": PASSWORD,
        "groups": ["qustody-researchers"],
        "amr": ["pwd", "otp"],
    },
    "tess": {
        "password": PASSWORD,
        "groups": ["qustody-students", "course-202"],
        "amr": ["pwd", "otp"],
    },
    # researchers and admins who also take course-101 (never reachable by its instructors)
    "rhea": {
        "password": PASSWORD,
        "groups": ["qustody-researchers", "course-101"],
        "amr": ["pwd", "otp"],
    },
    "remy": {
        "password": PASSWORD,
        "groups": ["qustody-students", "qustody-researchers", "course-101"],
        "amr": ["pwd", "otp"],
    },
    "cora": {"password": PASSWORD, "groups": ["qustody-admins", "course-101"], "amr": ["hwk"]},
    "ada": {"password": PASSWORD, "groups": ["qustody-admins"], "amr": ["pwd", "hwk"]},
    "audrey": {"password": PASSWORD, "groups": ["qustody-auditors"], "amr": ["pwd", "otp"]},
    "outsider": {"password": PASSWORD, "groups": ["marketing"], "amr": ["pwd", "otp"]},
}


def _idp(workdir: Path, request: pytest.FixtureRequest) -> Iterator[Idp]:
    try:
        provider = start_idp(USERS, workdir=workdir, ttl={"AccessToken": 4, "IdToken": 60})
    except IdpError as e:
        pytest.fail(str(e))
    yield provider
    provider.stop()
    if failed(request):
        print("---- provider log ----\n" + provider.log()[-4000:])


@pytest.fixture
def idp(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Idp]:
    yield from _idp(tmp_path / "idp", request)


@pytest.fixture(scope="module")
def module_idp(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Idp]:
    """``idp`` for the tests of one module: each test signs in as users of its own
    (:func:`new_user`), since tests change and revoke users at the provider."""
    yield from _idp(tmp_path_factory.mktemp("idp"), request)


def new_user(idp: Idp, like: str) -> str:
    """A new user at ``idp`` with the groups, factors and password of ``USERS[like]``."""
    name = f"{like}{secrets.token_hex(3)}"
    idp.set_user(name, **USERS[like])
    return name


def _oidc_hubs(
    base: Path, idp: Idp, request: pytest.FixtureRequest, client: str
) -> Iterator[Callable[..., Hub]]:
    """Hubs registered at ``idp`` as clients ``{client}-0``, ``{client}-1``, ..."""
    started: list[Hub] = []

    def start(extra: str = "", env: dict[str, str] | None = None, timeout: float = 180) -> Hub:
        # 180 s: a loaded build machine starts the hub's services slowly
        client_id, client_secret = f"{client}-{len(started)}", secrets.token_hex(24)
        run_env = {
            "QUSTODY_OIDC_ISSUER": idp.issuer,
            "QUSTODY_OIDC_CLIENT_ID": client_id,
            "QUSTODY_OIDC_CLIENT_SECRET": client_secret,
            "JUPYTERHUB_CRYPT_KEY": secrets.token_hex(32),
            "QUSTODY_SPAWNER": "local",
            **(env or {}),
        }
        try:
            hub = launch_hub(
                base / f"hub{len(started)}",
                extra=extra,
                env=run_env,
                started=started,
                timeout=timeout,
            )
        except HubError as e:
            pytest.fail(str(e))
        idp.add_client(client_id, client_secret, f"{hub.url}hub/oauth_callback")
        return hub

    start.hubs = started  # type: ignore[attr-defined] # for shared_hubs_after_each_test
    yield start
    for hub in started:
        hub.stop()
        if failed(request):
            print(f"---- hub log {hub.dir} ----\n" + hub.log()[-8000:])


@pytest.fixture
def oidc_hub(
    tmp_path: Path, idp: Idp, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Hub]]:
    """Factory: ``oidc_hub(extra="c.X = ...", env={...}) -> Hub`` logging in through ``idp``."""
    yield from _oidc_hubs(tmp_path, idp, request, "hub")


@pytest.fixture(scope="module")
def module_oidc_hub(
    tmp_path_factory: pytest.TempPathFactory, module_idp: Idp, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Hub]]:
    """``oidc_hub`` through ``module_idp``, for hubs the tests of one module share."""
    # its own client names: a test's oidc_hub through the same provider registers hub-0
    yield from _oidc_hubs(tmp_path_factory.mktemp("hubs"), module_idp, request, "module-hub")


@pytest.fixture(autouse=True)
def shared_hubs_after_each_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a test that used the module's shared hubs or provider: print what they logged
    during it if it failed (a module fixture cannot tell which test failed), and stop
    every server the test left on the shared hubs."""
    names = request.fixturenames
    if "module_oidc_hub" not in names and "module_idp" not in names:
        yield
        return
    hubs: list[Hub] = (
        request.getfixturevalue("module_oidc_hub").hubs if "module_oidc_hub" in names else []
    )
    idp: Idp | None = request.getfixturevalue("module_idp") if "module_idp" in names else None
    marks = [len(hub.log()) for hub in hubs]
    idp_mark = len(idp.log()) if idp is not None else 0
    yield
    if failed(request):
        for hub, mark in zip(hubs, marks, strict=False):
            print(f"---- hub log {hub.dir}, this test ----\n" + hub.log()[mark:][-8000:])
        if idp is not None:
            print("---- provider log, this test ----\n" + idp.log()[idp_mark:][-4000:])
    for hub in hubs:
        if hub.process.poll() is not None:
            continue
        stop_all_servers(hub)
        hub.wait_for(
            lambda h=hub: not any(u.get("servers") for u in h.api("GET", "/users")[1]),
            timeout=60, what="the test's servers stopped",
        )
