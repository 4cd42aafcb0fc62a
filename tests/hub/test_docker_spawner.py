"""Hardened containers, through the hub REST API, against a real Docker engine.

The tests share one hub, started from the reference configuration
(jupyterhub_config.py) with test profiles (the crashing-entrypoint test starts one of its
own); each spawns as its own user through the REST API, and inspects and execs into what
Docker runs. Each test's servers are stopped (and their containers gone) before the next
test starts.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import requests
from audit_hub import records
from hubtest import Hub, UserNetwork, docker, docker_names, failed, launch_hub, stop_all_servers

from hub_ext.spawner import SpawnPolicy

pytestmark = pytest.mark.docker

MISSING = "sha256:" + "1" * 64
#: The student role's users: each test of the shared hub spawns as its own one of them
STUDENTS = ["alice", "erin", "frank", "gina", "hank", "ivy", "judy"]


def extra_config(prefix: str, image: str, network: UserNetwork, cull_every: int = 2) -> str:
    return network.config() + f"""
from hub_ext.culling import culler
from hub_ext.spawner import validate_config
c.Authenticator.allow_all = True
c.SpawnPolicy.allowed_images = {{"qustody": {image!r}, "missing": {MISSING!r}}}
base = {{"images": ["qustody"], "mem_limit": "768M", "cpu_limit": 0.5, "pids_limit": 300,
         "idle_timeout": 3600, "max_age": 3600, "kernel_idle_timeout": 600}}
c.SpawnPolicy.profiles = {{
    "student": {{**base, "roles": ["student"], "display_name": "Student"}},
    "researcher": {{**base, "roles": ["researcher"], "mem_limit": "1G", "cpu_limit": 1.0}},
    "short-idle": {{**base, "roles": ["student"], "idle_timeout": 6}},
    "short-age": {{**base, "roles": ["student"], "max_age": 20}},
    "broken-image": {{**base, "roles": ["student"], "images": ["missing"]}},
}}
c.SpawnPolicy.home_volume_template = "{prefix}-home-{{username}}"
c.HardenedDockerSpawner.prefix = "{prefix}"
culling = culler(cull_every={cull_every}, default_idle_timeout=3600)
c.JupyterHub.services = culling.services
c.JupyterHub.load_roles = [
    {{"name": "student", "scopes": ["self"], "users": {STUDENTS!r}}},
    {{"name": "researcher", "scopes": ["self"], "users": ["bob"]}},
    *culling.roles,
]
validate_config(c)
"""


@pytest.fixture
def prefix(request: pytest.FixtureRequest, docker_engine: str) -> Iterator[str]:
    """A name prefix for this test's containers and volumes; all removed at teardown."""
    yield from docker_names(request)


@pytest.fixture(scope="module")
def shared_prefix(request: pytest.FixtureRequest, docker_engine: str) -> Iterator[str]:
    """``prefix`` for the shared hub's containers and volumes."""
    yield from docker_names(request)


@pytest.fixture(scope="module")
def hub(
    module_user_network: UserNetwork, shared_prefix: str, singleuser_image: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Hub]:
    hub = launch_hub(
        tmp_path_factory.mktemp("docker-spawner") / "hub",
        extra=extra_config(shared_prefix, singleuser_image, module_user_network),
        env={"QUSTODY_IMAGE_DIGEST": singleuser_image},
        timeout=120,
    )
    yield hub
    hub.stop()


@pytest.fixture(autouse=True)
def _one_test_at_a_time(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a test of the shared hub: print its part of the hub log if it failed, and
    stop every server it left, so the next test starts with no container."""
    if "hub" not in request.fixturenames:
        yield
        return
    hub: Hub = request.getfixturevalue("hub")
    prefix: str = request.getfixturevalue("shared_prefix")
    start = len(hub.log())
    yield
    if failed(request):
        print(f"\n===== hub log, this test =====\n{hub.log()[start:][-20000:]}")
        for cid in containers(prefix):
            print(f"\n===== docker logs {cid} =====\n{docker('logs', cid, check=False)}")
    stop_all_servers(hub)
    hub.wait_for(lambda: not containers(prefix), timeout=60, what="the test's containers gone")


def containers(prefix: str, user: str | None = None) -> list[str]:
    args = ["ps", "-aq", "--filter", f"name={prefix}"]
    if user:
        args += ["--filter", f"label=io.qustody.user={user}"]
    return docker(*args).split()


def spawn(hub, user: str, options: dict | None = None, wait: bool = True) -> tuple[int, object]:
    status, body = hub.api("POST", f"/users/{user}/server", {"user_options": options or {}})
    if wait and status in (201, 202):
        hub.wait_for(
            lambda: hub.api("GET", f"/users/{user}")[1]["servers"].get("", {}).get("ready"),
            timeout=90,
            what=f"{user}'s server to be ready",
        )
    return status, body


def exec_in(cid: str, script: str) -> str:
    return docker("exec", cid, "bash", "-c", script)


def test_spawned_container_is_hardened(hub, shared_prefix, singleuser_image):
    status, body = spawn(hub, "alice")
    assert status in (201, 202), body
    [cid] = containers(shared_prefix, "alice")
    info = json.loads(docker("inspect", cid))[0]
    hc, cfg = info["HostConfig"], info["Config"]

    # what Docker was told
    assert hc["ReadonlyRootfs"] is True
    assert hc["CapDrop"] == ["ALL"] and not hc["CapAdd"]
    assert hc["Privileged"] is False
    assert "no-new-privileges:true" in hc["SecurityOpt"]
    assert not any("seccomp" in o for o in hc["SecurityOpt"])  # Docker's default profile
    assert hc["PidsLimit"] == 300
    assert hc["Memory"] == 768 * 1024**2 == hc["MemorySwap"]
    assert hc["CpuQuota"] == 50_000 and hc["CpuPeriod"] == 100_000
    assert set(hc["Tmpfs"]) == {"/tmp", "/run/jupyter"}
    [bind] = hc["Binds"]
    assert bind.startswith(f"{shared_prefix}-home-alice-") and bind.endswith(":/home/jovyan:rw")
    assert [m["Type"] for m in info["Mounts"]] == ["volume"]
    assert not any("docker.sock" in json.dumps(m) for m in info["Mounts"])
    assert cfg["User"] == "1000:1000"
    assert info["Image"] == singleuser_image
    labels = cfg["Labels"]
    assert labels["io.qustody.user"] == "alice"
    assert labels["io.qustody.server-name"] == ""
    assert len(labels["io.qustody.session-id"]) == 32
    assert labels["io.qustody.image-digest"] == singleuser_image
    assert labels["io.qustody.profile"] == "student"
    # the start's audit record names the image's SBOM (images/build.py labels it)
    image_labels = json.loads(docker("image", "inspect", singleuser_image))[0]["Config"]["Labels"]
    [started] = [r for r in records(hub, "server-started") if r["data"]["user"] == "alice"]
    assert started["data"]["image_digest"] == singleuser_image
    assert started["data"]["sbom_sha256"] == image_labels["io.qustody.image.sbom-sha256"]

    # environment: only what the hub and the policy put there, and no token
    env = dict(e.split("=", 1) for e in cfg["Env"])
    assert "JUPYTERHUB_API_TOKEN" not in env and "JPY_API_TOKEN" not in env
    image_env = {"PATH", "HOME", "SHELL", "LANG", "PYTHONDONTWRITEBYTECODE", "JUPYTER_RUNTIME_DIR"}
    ours = {k for k in env if k.startswith("QUSTODY_")}
    assert ours == {
        "QUSTODY_PROFILE", "QUSTODY_SESSION_ID", "QUSTODY_STARTED_AT",
        "QUSTODY_IDLE_TIMEOUT_SECONDS", "QUSTODY_MAX_AGE_SECONDS",
        "QUSTODY_KERNEL_IDLE_TIMEOUT_SECONDS", "QUSTODY_MAX_AGE_GRACE_SECONDS",
        "QUSTODY_TOKEN_ON_STDIN", "QUSTODY_TICKET_ON_STDIN",
        "QUSTODY_QPU_URL",  # the QPU gateway (hub_ext.qpu.hub)
        "QUSTODY_AUDIT_URL",  # the audit service: the user's own alerts (hub_ext.audit.web)
        "QUSTODY_API_URL",  # the qustody service: secrets, audit reports (hub_ext.server_api)
    }
    # all reached through the network proxy on the bridge, never the host's loopback
    for url in ("QUSTODY_QPU_URL", "QUSTODY_AUDIT_URL", "QUSTODY_API_URL"):
        assert not env[url].startswith("http://127.0.0.1"), env[url]
    others = set(env) - image_env - ours
    assert all(k.startswith("JUPYTERHUB_") or k in {"JUPYTER_IMAGE_SPEC", "MEM_LIMIT", "CPU_LIMIT"} for k in others), others
    for secretish in ("CONFIGPROXY_AUTH_TOKEN", "DOCKER_HOST", "QUSTODY_DEMO_PASSWORD"):
        assert secretish not in env
    assert hub.token not in json.dumps(info)

    # what the server process actually gets
    out = exec_in(
        cid,
        "id -u; id -g; grep -E '^(CapEff|CapPrm|CapBnd|NoNewPrivs|Seccomp):' /proc/1/status; "
        "touch /probe 2>&1 || true; findmnt -no FSTYPE /tmp 2>/dev/null || awk '$2==\"/tmp\"{print $3}' /proc/mounts; "
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max; "
        "cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max; "
        "tr '\\0' '\\n' < /proc/1/environ | cut -d= -f1 | sort",
    )
    lines = out.splitlines()
    assert lines[0] != "0" and lines[0] == "1000" and lines[1] == "1000"
    status_lines = dict(line.split(":\t") for line in lines[2:7])
    assert int(status_lines["CapEff"], 16) == 0 and int(status_lines["CapPrm"], 16) == 0
    assert int(status_lines["CapBnd"], 16) == 0
    assert status_lines["NoNewPrivs"] == "1" and status_lines["Seccomp"] == "2"
    assert "Read-only file system" in lines[7]
    assert lines[8] == "tmpfs"
    assert int(lines[9]) == 768 * 1024**2
    assert lines[10] == "300"
    pid1_env = set(lines[11:])
    # the token, handed over on stdin only, the path of the secrets claim ticket's file
    # (the ticket came on stdin too), and the hostname Docker always sets
    assert pid1_env - set(env) == {"JUPYTERHUB_API_TOKEN", "QUSTODY_SECRETS_TICKET_FILE", "HOSTNAME"}
    assert "QUSTODY_TOKEN_ON_STDIN" not in pid1_env

    # no setuid/setgid files, no sudo, no compiler, no package caches in the image
    out = exec_in(
        cid,
        "find / -xdev -perm /6000 -type f 2>/dev/null | wc -l; "
        "command -v sudo gcc cc g++ clang | wc -l; ls /var/lib/apt/lists /var/cache/apt | wc -l",
    )
    assert out.split() == ["0", "0", "0"] or out.split()[:2] == ["0", "0"], out

    # the server's hub token reached the server, and nothing else: not the container
    # configuration, the container log or the hub log
    server_token = exec_in(
        cid, "tr '\\0' '\\n' < /proc/1/environ | sed -n 's/^JUPYTERHUB_API_TOKEN=//p'"
    ).strip()
    assert len(server_token) >= 32
    assert server_token not in json.dumps(info)
    logs = subprocess.run(["docker", "logs", cid], capture_output=True, text=True, timeout=60)
    assert server_token not in logs.stdout + logs.stderr
    # the image's launcher paused the garbage collector for the start; the extension resumed it
    assert "garbage collector resumed after start-up" in logs.stdout + logs.stderr
    # jupyter-lsp does not search for language servers (images/jupyter_server_config.json)
    assert "Skipped non-installed server" not in logs.stdout + logs.stderr
    assert server_token not in hub.log()

    # kernels are culled inside the container, and the server stops itself as a backstop
    cmdline = exec_in(cid, "tr '\\0' ' ' < /proc/1/cmdline")
    assert "--MappingKernelManager.cull_idle_timeout=600" in cmdline
    assert "--MappingKernelManager.cull_connected=True" in cmdline
    assert "--ServerApp.shutdown_no_activity_timeout=3900" in cmdline

    # the image's HEALTHCHECK passes against the running server
    docker("exec", cid, "/opt/qustody/venv/bin/python", "/opt/qustody/bin/healthcheck")

    # the server extension is there, and the session API tells how long is left
    token = hub.user_token("alice")
    r = requests.get(
        f"{hub.url}user/alice/qustody/api/session",
        headers={"Authorization": f"token {token}"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    session = r.json()
    assert session["profile"] == "student" and session["enforced"] is True
    assert session["session_id"] == labels["io.qustody.session-id"]
    assert 0 < session["idle"]["remaining_seconds"] <= 3600
    assert 3500 < session["age"]["remaining_seconds"] <= 3600
    assert session["kernel_idle_timeout_seconds"] == 600
    r = requests.get(f"{hub.url}user/alice/qustody/api/session", timeout=30, allow_redirects=False)
    assert r.status_code in (302, 401, 403)  # not without a login

    # stop: the container is removed
    status, _ = hub.api("DELETE", "/users/alice/server")
    assert status in (202, 204)
    hub.wait_for(lambda: not containers(shared_prefix, "alice"), timeout=60, what="container removal")


@pytest.mark.parametrize(
    ("user", "options", "status", "words"),
    [
        ("erin", {"image": "python:3.11"}, 400, ["not pinned by digest", "qustody (sha256:"]),
        ("erin", {"image": "sha256:" + "2" * 64}, 400, ["not on the allow-list", "qustody (sha256:"]),
        ("erin", {"image": "missing"}, 400, ["not allowed for this profile", "qustody (sha256:"]),
        ("erin", {"profile": "researcher"}, 403, ["not allowed for your roles", "student"]),
        ("erin", {"profile": "nope"}, 400, ["Unknown profile", "student"]),
        ("erin", {"cmd": "sh"}, 400, ["Unknown server options"]),
        ("carol", {}, 403, ["No server profile is available", "student"]),
    ],
)
def test_refusals_leave_no_container(hub, shared_prefix, user, options, status, words):
    if user == "carol":
        hub.api("POST", "/users/carol")
    code, body = spawn(hub, user, options, wait=False)
    assert code == status, body
    message = body["message"] if isinstance(body, dict) else str(body)
    for word in words:
        assert word in message, message
    assert not containers(shared_prefix)
    model = hub.api("GET", f"/users/{user}")[1]
    assert not model["servers"].get("", {}).get("ready")


def test_a_home_volume_is_labelled_with_its_owner_and_anothers_is_refused(hub, shared_prefix):
    """A home's name holds 32 bits of a hash of the user name: one labelled for another
    user (a name chosen to collide) is never mounted; a new home is labelled."""
    policy = SpawnPolicy(home_volume_template=f"{shared_prefix}-home-{{username}}")
    home = policy.volume_name("gina")
    docker("volume", "create", "--label", "io.qustody.user=alice", home)
    try:
        code, body = spawn(hub, "gina", wait=False)
        assert code == 500, body
        assert "home volume belongs to another account" in body["message"]
        assert "alice" not in body["message"]  # other accounts are not named to the user
        assert not containers(shared_prefix)
    finally:
        docker("volume", "rm", "-f", home, check=False)
    status, body = spawn(hub, "gina")
    assert status in (201, 202), body
    labels = json.loads(docker("volume", "inspect", home))[0]["Labels"]
    assert labels["io.qustody.user"] == "gina"


def test_missing_image_is_reported(hub, shared_prefix):
    code, body = spawn(hub, "frank", {"profile": "broken-image"}, wait=False)
    assert code == 500, body
    assert "not present on the Docker engine" in body["message"]
    assert not containers(shared_prefix)


def test_crashing_entrypoint_is_reported_with_reason(
    user_network, start_hub, prefix, singleuser_image
):
    hub = start_hub(
        extra=extra_config(prefix, singleuser_image, user_network)
        + '\nc.HardenedDockerSpawner.cmd = ["bash", "-c", "echo qustody-test-boom >&2; exit 3"]\n',
        env={"QUSTODY_IMAGE_DIGEST": singleuser_image},
    )
    started = time.monotonic()
    code, body = spawn(hub, "alice", wait=False)
    assert code == 500, body
    assert time.monotonic() - started < 30  # an answer, not a spinner until a timeout
    assert "exit code 3" in body["message"] and "qustody-test-boom" in body["message"]
    # the progress stream (the spawn page) says the same
    r = requests.get(
        f"{hub.api_url}/users/alice/server/progress",
        headers={"Authorization": f"token {hub.token}"},
        timeout=30,
    )
    events = [json.loads(line[5:]) for line in r.text.splitlines() if line.startswith("data:")]
    assert events and events[-1].get("failed") is True
    assert "exit code 3" in events[-1]["message"]
    hub.wait_for(lambda: not containers(prefix), timeout=30, what="crashed container removal")


def _server(hub, user):
    return hub.api("GET", f"/users/{user}")[1]["servers"].get("")


def test_idle_server_is_culled(hub, shared_prefix):
    code, body = spawn(hub, "gina", {"profile": "short-idle"})
    assert code in (201, 202), body
    assert containers(shared_prefix, "gina")
    hub.wait_for(lambda: _server(hub, "gina") is None, timeout=60, what="idle cull")
    hub.wait_for(lambda: not containers(shared_prefix, "gina"), timeout=30, what="container removal")
    log = hub.log()
    assert "qustody-cull server=gina/ profile=short-idle reason=idle" in log


def test_busy_server_is_stopped_at_max_age(hub, shared_prefix):
    code, body = spawn(hub, "hank", {"profile": "short-age"})
    assert code in (201, 202), body
    started = time.monotonic()

    def busy_until_culled():
        # keep the server busy: fresh activity every half second
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        hub.api("POST", "/users/hank/activity", {"servers": {"": {"last_activity": now}}})
        return _server(hub, "hank") is None

    hub.wait_for(busy_until_culled, timeout=60, interval=0.5, what="max-age cull")
    assert time.monotonic() - started >= 10
    hub.wait_for(lambda: not containers(shared_prefix, "hank"), timeout=30, what="container removal")
    log = hub.log()
    assert "qustody-cull server=hank/ profile=short-age reason=max-age" in log
    assert "server=hank/ profile=short-age reason=idle" not in log


def test_a_course_mounts_its_materials_read_only_and_closes_its_students_servers(
    hub, shared_prefix, singleuser_image
):
    """A course file's materials volume is in its student's container, read-only; its
    term binds the running container (the culler stops it when the term closes) and the
    next start (refused, saying why and until when files are kept)."""
    from hub_ext.courses.model import stamp

    materials = f"qustody-materials-{shared_prefix}"
    docker("volume", "create", materials)
    try:
        docker("run", "--rm", "--network", "none", "--user", "0", "--entrypoint", "sh",
               "-v", f"{materials}:/m", singleuser_image, "-c",
               "echo 'week 1: Bell states' > /m/notes.txt")
        code, body = hub.api("POST", "/groups/course-101:students", {"users": ["ivy"]})
        assert code == 201, body
        closes = time.time() + 60  # time to start the container and look inside first
        (hub.dir / "courses" / "course-101.toml").write_text(
            f'id = "course-101"\ntitle = "Intro QC"\n[term]\nstart = {stamp(closes - 86400)}\n'
            f'end = {stamp(closes)}\ngrace_days = 0\n[roster]\ngroup = "course-101"\n'
            f'[materials]\nvolume = "{materials}"\n'
        )
        # the attack: a symlink where a mount inside the home would go, pointing at the
        # server's own software (the engine would mount over its target)
        home = SpawnPolicy(home_volume_template=f"{shared_prefix}-home-{{username}}").volume_name(
            "ivy")
        docker("run", "--rm", "--network", "none", "--user", "1000", "--entrypoint", "sh",
               "-v", f"{home}:/home/jovyan", singleuser_image, "-c",
               "ln -s /opt/qustody /home/jovyan/course-101-materials")
        time.sleep(2.5)  # the hub re-reads the courses directory at most every 2 s
        code, body = spawn(hub, "ivy", {"profile": "student"})
        assert code in (201, 202), body
        (cid,) = containers(shared_prefix, "ivy")
        where = "/srv/qustody/materials/course-101"
        assert "Bell states" in docker("exec", cid, "cat", f"{where}/notes.txt")
        listed = docker("exec", cid, "ls", "/opt/qustody/")
        assert "venv" in listed and "notes.txt" not in listed, listed
        tried = docker("exec", cid, "sh", "-c",
                       f"touch {where}/mine 2>&1; rm -f {where}/notes.txt 2>&1; "
                       "touch /home/jovyan/mine && echo home-ok", check=False)
        assert tried.count("Read-only file system") == 2 and "home-ok" in tried, tried
        assert time.time() < closes, "the container took longer to start than the test allows"

        hub.wait_for(lambda: _server(hub, "ivy") is None, timeout=120,
                     what="course-closed cull")
        assert time.time() >= closes - 1
        assert "qustody-cull server=ivy/ profile=student reason=course-closed" in hub.log()
        hub.wait_for(lambda: not containers(shared_prefix, "ivy"), timeout=30,
                     what="container removal")
        code, body = hub.api("POST", "/users/ivy/server", {"user_options": {}})
        assert code == 403, (code, body)
        assert "The term of course-101 (Intro QC) has ended" in body["message"], body
        assert "Your files are kept until" in body["message"]
    finally:
        (hub.dir / "courses" / "course-101.toml").unlink(missing_ok=True)
        for cid in containers(shared_prefix, "ivy"):
            docker("rm", "-f", cid, check=False)
        docker("volume", "rm", "-f", materials, check=False)


def test_the_lab_extension_works_in_the_hardened_container(hub, shared_prefix, tmp_path):
    """The researcher's JupyterLab as the image ships it, in Chromium through the hub: the
    extension's clock and panels are there, JupyterLab's news prompt is not, nothing
    outside loopback is asked for, and a key saved with Ctrl+S gets the findings dialog
    from the guard running in the container."""
    import chromium

    status, _ = spawn(hub, "judy")
    assert status in (201, 202)
    token = hub.user_token("judy")
    url = f"{hub.url}user/judy/"
    kernel = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb = {"nbformat": 4, "nbformat_minor": 5, "metadata": {"kernelspec": kernel}, "cells": [
        {"cell_type": "code", "id": "c1", "metadata": {}, "source": "", "outputs": [],
         "execution_count": None}]}
    r = requests.put(url + "api/contents/panel.ipynb", timeout=60,
                     json={"type": "notebook", "content": nb},
                     headers={"Authorization": f"token {token}"})
    assert r.status_code == 201, r.text
    key = "ghp_" + secrets.token_hex(18)
    out = chromium.drive("hardened_lab.mjs", {
        "server": url, "token": token, "key": key,
        "userDataDir": str(tmp_path / "chromium-profile"),
        "screenshot": str(tmp_path / "hardened-lab.png"),
    }, timeout=300)
    assert out["clock"].startswith("Session "), out["clock"]
    # this hub gives judy no secrets, and its services list leaves the gateway out (its
    # URL still reaches the container): each panel says what is wrong, in words
    assert out["secretsNote"].startswith("No secrets were delivered to this server.")
    assert "without a gateway answer (is QUSTODY_QPU_URL right?)" in out["qpuText"]
    assert len(out["findings"]) == 1 and "github-token" in out["findings"][0]
    assert out["saveErrorDialogs"] == 0 and out["newsPrompt"] == 0
    assert key not in out["dialogText"] and out["outside"] == [] and out["errors"] == []
    cid = containers(shared_prefix, "judy")[0]
    assert exec_in(cid, "test -e /home/jovyan/panel.ipynb && cat /home/jovyan/panel.ipynb").count(
        key) == 0
