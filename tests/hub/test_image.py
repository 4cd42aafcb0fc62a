"""The single-user image: labels, configuration, and a rebuild that is the same image."""

from __future__ import annotations

import hashlib
import json
import re
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
    assert re.fullmatch(r"[0-9a-f]{64}", labels["io.qustody.image.sbom-sha256"])
    # reproducible: the configuration's dates are SOURCE_DATE_EPOCH, no builder container
    assert info["Created"] == "2023-11-14T22:13:20Z" and not info.get("Container")
    base = labels["org.opencontainers.image.base.digest"]
    assert base.startswith("sha256:") and inspect(base)["Id"] == base
    assert cfg["User"] == "1000:1000"
    assert cfg["Healthcheck"]["Test"][0] == "CMD"
    assert cfg["Entrypoint"] == ["/opt/qustody/bin/entrypoint"]
    assert cfg["Cmd"] == ["/opt/qustody/bin/singleuser"]  # jupyterhub-singleuser, GC paused
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


def test_servers_in_the_image_do_not_search_for_language_servers(singleuser_image):
    """images/jupyter_server_config.json, as the server loads its configuration."""
    out = docker(
        "run", "--rm", "--network", "none", "--read-only", "--cap-drop", "ALL",
        "--entrypoint", "python", singleuser_image, "-c",
        "from jupyter_server.serverapp import ServerApp; a = ServerApp(); a.load_config_file(); "
        "from jupyter_lsp.manager import LanguageServerManager as M; "
        "print(M(parent=a).autodetect)",
    )
    assert out.strip().splitlines()[-1] == "False"


def test_lab_extension_and_locked_down_lab_settings_in_image(singleuser_image):
    """The prebuilt JupyterLab extension came in with the qustody wheel (no Node in the
    image), and Lab neither asks about nor fetches news, updates or extensions."""
    script = (
        "jupyter labextension list 2>&1; echo ---; "
        "cat /opt/qustody/venv/share/jupyter/lab/settings/overrides.json; echo ---; "
        "python -c 'from jupyterlab.labapp import LabApp; a = LabApp(); a.load_config_file(); "
        "print(a.news_url, a.extension_manager, a.check_for_updates_class.__name__)'; "
        "echo ---; command -v node npm || echo no-node"
    )
    out = docker(
        "run", "--rm", "--network", "none", "--read-only", "--cap-drop", "ALL",
        "--user", "1000:1000", "--tmpfs", "/tmp",
        "--entrypoint", "bash", singleuser_image, "-c", script,
    )  # fmt: skip
    listing, overrides, lab, node = out.split("---\n")
    plain = listing.replace("\x1b[32m", "").replace("\x1b[0m", "")
    assert "@qustody/jupyterlab v0.1.0 enabled OK (python, qustody)" in plain, plain
    notification = json.loads(overrides)["@jupyterlab/apputils-extension:notification"]
    assert notification == {"fetchNews": "false", "checkForUpdates": False}
    assert lab.split() == ["None", "readonly", "NeverCheckForUpdate"]
    assert node.strip() == "no-node"


def test_a_server_starts_from_compiled_code_and_the_guards_stored_databases(singleuser_image):
    """What a server imports at start is all read from bytecode, none compiled again (stale
    bytecode of the base's standard library cost every start ~0.4 s of CPU), and the guard
    loads the databases the build stored instead of compiling them (~0.6 s)."""
    script = (
        "python -v -c 'import jupyterhub.singleuser, jupyter_server.serverapp, jupyterlab, "
        "server_ext.app' > /tmp/imports 2>&1; echo $?; "
        "grep -c '^# code object from .*[.]pyc.$' /tmp/imports; "
        "grep '^# code object from' /tmp/imports | grep -v '[.]pyc.$'; "
        "grep 'bytecode is stale' /tmp/imports; echo ---; "
        "python -c 'from server_ext.scanner import compiled; calls = []; "
        "original = compiled._compile; "
        "compiled._compile = lambda *a: calls.append(a) or original(*a); "
        "from server_ext.guard import SaveGuard; SaveGuard().engine; print(len(calls))'"
    )
    out = docker(
        "run", "--rm", "--network", "none", "--read-only", "--cap-drop", "ALL",
        "--user", "1000:1000", "--tmpfs", "/tmp", "--entrypoint", "bash", singleuser_image,
        "-c", script,
    )  # fmt: skip
    imports, compiles = out.split("---\n")
    status, from_bytecode, *from_source = imports.split("\n")
    assert status == "0", out  # the imports ran to the end
    assert int(from_bytecode) > 500, out
    assert from_source == [""], out  # no module compiled from source, none stale
    assert compiles.strip() == "0", out


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_rebuild_from_the_same_lock_installs_the_same_files(singleuser_image, tmp_path):
    """A second, uncached install of the same lock gives the same package manifest (paths,
    modes, sizes, sha256 of every file in the venv, and the Debian package list).

    Only the install stage is rebuilt (``--venv-only``: base + the locked venv, which the
    image's second stage copies as it is); its manifest is compared with the image's. The
    whole image's reproducibility (the same id from a second uncached build) is measured by
    ``python images/build.py repro`` (``benchmarks/bench_image_repro.py``, in ``make
    bench``): two full builds cost ``make test`` two minutes more."""
    tag = f"qustody/singleuser:repro-{secrets.token_hex(3)}"
    # the built image's manifest is read while the second install runs; into a file, not a
    # pipe: both commands take images/build.py's lock, and a manifest blocked on a full pipe
    # would hold it while the build waits for it
    listing = tmp_path / "manifest-one.txt"
    with listing.open("w") as out:
        reading = subprocess.Popen([*BUILD, "manifest", singleuser_image], stdout=out, text=True)
    try:
        subprocess.run(
            [*BUILD, "build", "--venv-only", "--no-cache", "--tag", tag],
            check=True, timeout=900, stdout=subprocess.DEVNULL,
        )
        assert reading.wait(timeout=600) == 0
        one = listing.read_text().splitlines()
        first, second = inspect(singleuser_image), inspect(tag)
        built = first["Config"]["Labels"]["io.qustody.image.inputs-sha256"]
        if built != second["Config"]["Labels"]["io.qustody.image.venv-inputs-sha256"]:
            pytest.skip("the source changed between the two builds (someone is editing it)")
        two = subprocess.run([*BUILD, "manifest", tag], check=True,
                             capture_output=True, text=True).stdout.splitlines()
        assert len(one) > 10000
        diff = sorted(set(one) ^ set(two))
        assert not diff, "\n".join(diff[:40])
    finally:
        if reading.poll() is None:
            reading.kill()
        docker("rmi", "-f", tag, check=False)
