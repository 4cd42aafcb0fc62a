"""The single-user image: labels, configuration, and a rebuild that installs the same files."""

from __future__ import annotations

import hashlib
import json
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from hubtest import docker

pytestmark = pytest.mark.docker
ROOT = Path(__file__).resolve().parents[2]
BUILD = [sys.executable, str(ROOT / "images" / "build.py")]


def inspect(image: str) -> dict:
    return json.loads(docker("image", "inspect", image))[0]


def test_image_records_its_inputs(singleuser_image):
    info = inspect(singleuser_image)
    cfg = info["Config"]
    labels = cfg["Labels"]
    lock = hashlib.sha256((ROOT / "images" / "requirements.lock").read_bytes()).hexdigest()
    assert labels["io.qustody.image.lock-sha256"] == lock
    assert labels["org.opencontainers.image.revision"]
    assert labels["org.opencontainers.image.revision"] != "unknown"
    base = labels["org.opencontainers.image.base.digest"]
    assert base.startswith("sha256:") and inspect(base)["Id"] == base
    assert cfg["User"] == "1000:1000"
    assert cfg["Healthcheck"]["Test"][0] == "CMD"
    assert cfg["Entrypoint"] == ["/opt/qustody/bin/entrypoint"]
    assert cfg["Cmd"] == ["jupyterhub-singleuser"]
    env = dict(e.split("=", 1) for e in cfg["Env"])
    assert env["JUPYTER_RUNTIME_DIR"] == "/run/jupyter"
    assert not any("TOKEN" in k or "SECRET" in k or "PASSWORD" in k for k in env)


def test_server_extension_enabled_in_image(singleuser_image):
    out = docker(
        "run", "--rm", "--network", "none", "--read-only", "--cap-drop", "ALL",
        "--entrypoint", "bash", singleuser_image, "-c", "jupyter server extension list 2>&1",
    )
    assert "server_ext enabled" in out.replace("\x1b[32m", "").replace("\x1b[0m", "")
    assert "server_ext 0.1.0 OK" in out.replace("\x1b[32m", "").replace("\x1b[0m", "")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_rebuild_from_the_same_lock_installs_the_same_files(singleuser_image):
    """A second, uncached build gives the same package manifest (paths, modes, sizes, sha256
    of every file in the venv, and the Debian package list)."""
    tag = f"qustody/singleuser:repro-{secrets.token_hex(3)}"
    try:
        subprocess.run(
            [*BUILD, "build", "--force", "--no-cache", "--no-latest", "--tag", tag],
            check=True, timeout=900, stdout=subprocess.DEVNULL,
        )
        first, second = inspect(singleuser_image), inspect(tag)
        key = "io.qustody.image.inputs-sha256"
        if first["Config"]["Labels"][key] != second["Config"]["Labels"][key]:
            pytest.skip("the source changed between the two builds (someone is editing it)")
        one = subprocess.run([*BUILD, "manifest", singleuser_image], check=True,
                             capture_output=True, text=True).stdout.splitlines()
        two = subprocess.run([*BUILD, "manifest", tag], check=True,
                             capture_output=True, text=True).stdout.splitlines()
        assert len(one) > 10000
        diff = sorted(set(one) ^ set(two))
        assert not diff, "\n".join(diff[:40])
    finally:
        docker("rmi", "-f", tag, check=False)
