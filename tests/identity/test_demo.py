"""`make demo`'s launcher: provider + hub, printed logins work (and the MFA-less one is refused)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from identity.idp import login

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("stop", ["ctrl-c", "kill"])
def test_demo_prints_working_oidc_logins(tmp_path: Path, stop: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QUSTODY_", "JUPYTERHUB_"))}
    env.update(QUSTODY_SPAWNER="local", PATH=f"{Path(sys.executable).parent}:{env['PATH']}")
    env["QUSTODY_IMAGE_DIGEST"] = ""
    out = tmp_path / "demo.out"
    with out.open("w") as sink:
        demo = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hub_ext.demo",
                "--state",
                str(tmp_path / "state"),
                "--port",
                "0",
            ],
            cwd=ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 90
        url = ""
        while time.monotonic() < deadline and demo.poll() is None:
            text = out.read_text()
            match = re.search(r"Qustody demo: (http://127\.0\.0\.1:\d+/)", text)
            if match and "Stop with Ctrl-C" in text:
                url = match.group(1)
                # the URL is printed once the hub answers: a first visitor gets the page,
                # not the proxy's unstyled 404 of a hub still starting
                assert requests.get(url + "hub/login", timeout=10).status_code == 200
                break
            time.sleep(0.2)
        text = out.read_text()
        assert url, text[-3000:]
        passwords = dict(re.findall(r"^\s{4}(\w+)\s+(\S+)\s{2,}", text, re.M))
        assert set(passwords) >= {"rita", "nomfa", "ivan", "ada", "audrey"}
        assert login(requests.Session(), url, "rita", passwords["rita"]).status_code == 200
        refused = login(requests.Session(), url, "nomfa", passwords["nomfa"])
        assert refused.status_code == 403 and "Multi-factor" in refused.text
        key = tmp_path / "state" / "jupyterhub_crypt_key"
        assert key.stat().st_mode & 0o777 == 0o600
    finally:
        if stop == "ctrl-c":  # the terminal signals the whole process group
            os.killpg(demo.pid, signal.SIGINT)
        else:  # `kill <pid>` reaches the launcher alone, which passes it on to the hub
            os.kill(demo.pid, signal.SIGTERM)
        try:
            demo.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()
    assert "Traceback" not in out.read_text()
    # either way everything the demo started stops: nothing answers on its port any more
    port = int(url.rstrip("/").rsplit(":", 1)[1])
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0, "the demo's proxy outlived it"
    issuer = re.search(r"OpenID provider http://127\.0\.0\.1:(\d+)", out.read_text())
    assert issuer
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", int(issuer.group(1)))) != 0, "the IdP outlived it"
    time.sleep(1)  # the hub's last children are reaped by init
    with pytest.raises(ProcessLookupError):  # no process of the demo's group is left
        os.killpg(demo.pid, 0)


def test_each_demo_state_has_its_own_home_volumes(tmp_path: Path) -> None:
    """A fresh state directory starts with empty homes (no earlier demo's files); the same
    one finds its users' homes again; a state from before keeps its shared homes; a
    damaged tag stops the demo with a way out instead of losing the users' homes."""
    from hub_ext.demo.launcher import home_volumes
    from hub_ext.spawner import SpawnPolicy

    one, two, old = tmp_path / "one", tmp_path / "two", tmp_path / "old"
    for state in (one, two, old):
        state.mkdir()
    first = home_volumes(one)
    assert home_volumes(one) == first and home_volumes(two) != first
    rita = SpawnPolicy(home_volume_template=first).volume_name("rita")
    assert re.fullmatch(r"qustody-demo-[0-9a-f]{8}-home-rita-[0-9a-f]{8}", rita)
    (old / "jupyterhub.sqlite").write_bytes(b"")  # a demo state made before tags
    assert home_volumes(old) == "qustody-home-{username}"
    for damaged in (b"../../etc\n", b"\xff\xfe12345678"):
        (one / "home-volumes-tag").write_bytes(damaged)
        with pytest.raises(SystemExit, match="is not the tag this launcher wrote"):
            home_volumes(one)
