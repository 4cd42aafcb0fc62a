"""Secret delivery into hardened containers, end to end, with a real Docker engine.

A kernel in the container reads its secret through the documented API; the value is
in none of the places it could leak from: `docker inspect`, the container's
`/proc/1/environ`, the hub and server logs, the container's writable layer and image
history, and a saved notebook where it was printed (redacted, with its encodings).
"""

from __future__ import annotations

import base64
import json
import secrets
from pathlib import Path
from typing import Any

import pytest
import requests
import test_docker_spawner
from hubtest import Hub, UserNetwork, docker
from kernelws import Kernel
from qtest import code_cell, notebook, stream
from test_secrets_hub import all_text, audit, cli, put

pytestmark = pytest.mark.docker


prefix = test_docker_spawner.prefix  # names this test's containers and removes them after


@pytest.fixture
def values() -> dict[str, str]:
    return {
        k: f"qd-{k.lower()}-{secrets.token_hex(12)}"
        for k in ("BOB_PROD", "ALICE_PROD", "ALICE_SANDBOX")
    }


@pytest.fixture
def hub(
    user_network: UserNetwork,
    start_hub: Any,
    prefix: str,
    singleuser_image: str,
    tmp_path: Path,
    values: dict[str, str],
) -> tuple[Hub, Path]:
    state = tmp_path / "state"
    state.mkdir()
    put(state, "user:bob", "BOB_PROD", "prod", values["BOB_PROD"])
    put(state, "user:alice", "ALICE_PROD", "prod", values["ALICE_PROD"])
    put(state, "user:alice", "ALICE_SANDBOX", "sandbox", values["ALICE_SANDBOX"])
    assert cli(state, "list").returncode == 0
    hub = start_hub(
        extra=user_network.config() + f"""
import os
from hub_ext.server_api.hub import server_api
from hub_ext.wiring import apply
c.Authenticator.allow_all = True
c.SpawnPolicy.allowed_images = {{"qustody": {singleuser_image!r}}}
base = {{"images": ["qustody"], "mem_limit": "768M", "cpu_limit": 0.5, "pids_limit": 300,
         "idle_timeout": 3600, "max_age": 3600, "kernel_idle_timeout": 600}}
c.SpawnPolicy.profiles = {{
    "student": {{**base, "roles": ["student"]}},
    "researcher": {{**base, "roles": ["researcher"]}},
}}
c.SpawnPolicy.home_volume_template = "{prefix}-home-{{username}}"
c.HardenedDockerSpawner.prefix = "{prefix}"
c.JupyterHub.services = []
c.JupyterHub.load_roles = [
    {{"name": "student", "scopes": ["self"], "users": ["alice"]}},
    {{"name": "researcher", "scopes": ["self"], "users": ["bob"]}},
]
c.SecretClassPolicy.profile_classes = {{"student": ["sandbox"], "researcher": ["sandbox", "prod"]}}
apply(c, server_api(c, os.environ["QUSTODY_STATE_DIR"], profiles=list(c.SpawnPolicy.profiles)))
""",
        env={"QUSTODY_IMAGE_DIGEST": singleuser_image, "QUSTODY_STATE_DIR": str(state)},
    )
    return hub, state


def start(hub: Hub, user: str) -> str:
    return hub.start_server(user, body={"user_options": {}}, timeout=120)


def container(prefix: str, user: str) -> str:
    [cid] = docker(
        "ps", "-q", "--filter", f"name={prefix}", "--filter", f"label=io.qustody.user={user}"
    ).split()
    return cid


def test_kernel_reads_secret_and_value_leaks_nowhere(
    hub: tuple[Hub, Path], prefix: str, singleuser_image: str, values: dict[str, str]
) -> None:
    h, state = hub
    url = start(h, "bob")
    cid = container(prefix, "bob")
    token = h.user_token("bob")
    value = values["BOB_PROD"]

    kernel = Kernel(url, token)
    out = kernel.run(
        "from server_ext.secrets import get_secret, list_secrets\n"
        "import base64, os\n"
        "v = get_secret('BOB_PROD')\n"
        "print(list_secrets())\n"
        "print(os.environ['QUSTODY_SECRETS_DIR'])\n"
        "print(v)\nprint(base64.b64encode(v.encode()).decode())\nprint(v.encode().hex())\n"
    )
    lines = out.splitlines()
    assert lines[0] == "['BOB_PROD']"
    secrets_dir = lines[1]
    assert lines[2] == value
    # the files live on the container's tmpfs, owned by the user, 0600 in a 0700 dir
    mounts = docker("exec", cid, "cat", "/proc/mounts")
    assert any(
        line.split()[1] == "/run/jupyter" and line.split()[2] == "tmpfs"
        for line in mounts.splitlines()
    )
    assert secrets_dir.startswith("/run/jupyter/")
    stat = docker("exec", cid, "stat", "-c", "%a %u", secrets_dir, f"{secrets_dir}/BOB_PROD")
    assert stat.split() == ["700", "1000", "600", "1000"]

    nb = notebook(code_cell("print(get_secret('BOB_PROD'))", [stream(out)]))
    r = requests.put(
        url + "api/contents/leak.ipynb",
        json={"type": "notebook", "content": nb},
        headers={"Authorization": f"token {token}"},
        timeout=60,
    )
    assert r.status_code in (200, 201), r.text
    saved = docker("exec", cid, "cat", "/home/jovyan/leak.ipynb")
    assert "[REDACTED:known-secret]" in saved
    forms = [value, base64.b64encode(value.encode()).decode(), value.encode().hex()]
    for form in forms:
        assert form not in saved

    inspect = docker("inspect", cid)
    environ = docker("exec", cid, "cat", "/proc/1/environ")
    history = docker("history", "--no-trunc", singleuser_image) + docker(
        "image", "inspect", singleuser_image
    )
    changed = docker("diff", cid)  # the container's writable layer (root fs is read-only)
    server_log = docker("logs", cid, check=False)
    docker_ls = docker("exec", cid, "ls", "-A", "/run/jupyter")
    kernel.shutdown()
    code, _ = h.api("DELETE", "/users/bob/server")
    assert code in (202, 204)
    h.wait_for(lambda: not h.api("GET", "/users/bob")[1]["servers"], timeout=60, what="stop")
    hub_log = all_text(h, state)
    for where, text in [
        ("docker inspect", inspect),
        ("/proc/1/environ", environ),
        ("image", history),
        ("container layer", changed),
        ("server log", server_log),
        ("hub log and audit log", hub_log),
    ]:
        for form in forms:
            assert form not in text, f"a form of the secret is in the {where}"
    assert "qtk_" not in inspect and "qtk_" not in environ  # the ticket went over stdin
    assert "QUSTODY_SECRETS_TICKET_FILE" in environ  # ... into a file the server deleted
    assert ".qustody-ticket" not in docker_ls
    assert json.loads(inspect)[0]["Config"]["OpenStdin"] is True
    delivered = [e["data"] for e in audit(state) if e["type"] == "secret-delivered"]
    assert delivered == [
        {
            "user": "bob",
            "server": "",
            "ticket_id": delivered[0]["ticket_id"],
            "broker": "embedded",
            "secrets": [{"name": "BOB_PROD", "class": "prod", "namespace": "user:bob"}],
        }
    ]


def test_student_container_never_gets_a_prod_secret(
    hub: tuple[Hub, Path], prefix: str, values: dict[str, str]
) -> None:
    h, _ = hub
    url = start(h, "alice")
    out = Kernel(url, h.user_token("alice")).run(
        "from server_ext.secrets import list_secrets; print(list_secrets())"
    )
    assert out.strip() == "['ALICE_SANDBOX']"
    cid = container(prefix, "alice")
    listing = docker(
        "exec", cid, "bash", "-c", "ls -A /run/jupyter/secrets; grep -rl . /run/jupyter/secrets"
    )
    assert "ALICE_PROD" not in listing and values["ALICE_PROD"] not in listing
