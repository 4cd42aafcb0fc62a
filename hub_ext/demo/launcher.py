"""``make demo``: the full hub on 127.0.0.1 with the reference configuration.

Uses hardened Docker containers when a Docker engine answers and the single-user image
is built (``make demo`` as root on Debian starts the engine and builds it), on Qustody's
internal network (``qustody-users``, 198.18.7.0/24; ``QUSTODY_USER_NETWORK`` /
``QUSTODY_USER_SUBNET`` choose others), which the hub creates; otherwise the
local-process spawner, with a loud warning that isolation is reduced (demo mode:
``QUSTODY_DEMO_MODE=1``, which a production hub refuses). Sign-in goes
through the repository's OpenID provider (tests/idp), started here with demo users whose
passwords are generated for the run; prints the URL, the logins and the services.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from ..network import host_address
from ..spawner import SpawnPolicy
from ..volumes import HOME_VOLUME_TEMPLATE
from .idp import start_demo_idp
from .provider_process import ProviderError

ROOT = Path(__file__).resolve().parents[2]
#: What the banner shows; a user of the demo runs it as it is (tests/qpu/test_through_hub.py).
QPU_EXAMPLE = """\
    from qiskit import QuantumCircuit, transpile
    from server_ext.qpu import gateway_backend
    backend = gateway_backend("aer_simulator")
    qc = QuantumCircuit(2); qc.h(0); qc.cx(0, 1); qc.measure_all()
    backend.run(transpile(qc, backend), shots=100).result().get_counts()
"""
IMAGE = "qustody/singleuser:latest"


def free_port(preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise RuntimeError("no free port on 127.0.0.1")


def home_volumes(state: Path) -> str:
    """The demo's home volume template: one per state directory, named by a tag kept in
    it, so a fresh ``--state`` starts with empty homes (no earlier demo's files) and the
    same one finds its users' files again. A state made before homes were per state (it
    has a hub database but no tag) keeps the shared ``qustody-home-*`` volumes it used.
    ``make clean`` removes a tagged state's volumes with it; a state deleted by hand
    leaves them (``docker volume ls -f name=qustody-demo-``)."""
    tag_file = state / "home-volumes-tag"
    try:
        raw = tag_file.read_bytes()
    except FileNotFoundError:
        if (state / "jupyterhub.sqlite").exists():
            return HOME_VOLUME_TEMPLATE
        tag = secrets.token_hex(4)
        tag_file.write_text(tag + "\n")
    else:
        tag = raw.decode("ascii", "replace").strip()
        if not re.fullmatch(r"[0-9a-f]{8}", tag):
            # a new tag would leave this state's users without their homes: say so instead
            raise SystemExit(
                f"demo: {tag_file} is not the tag this launcher wrote (8 hex digits), so the "
                f"users' home volumes cannot be found. Restore it, or start afresh with a new "
                f"state directory (or delete {state})."
            )
    return f"qustody-demo-{tag}-home-{{username}}"


def image_digest() -> str:
    """Id of the locally built single-user image, or "" without an engine or image."""
    if shutil.which("docker") is None:
        return ""
    try:
        out = subprocess.run(  # noqa: S603 - fixed argv
            ["docker", "image", "inspect", "--format", "{{.Id}}", IMAGE],  # noqa: S607
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hub_ext.demo",
                                description="Start the Qustody hub on 127.0.0.1 (make demo).")
    p.add_argument("--state", default=".demo", help="directory for the database and secrets")
    p.add_argument("--port", type=int, default=8888, help="preferred public port")
    args = p.parse_args(argv)
    state = Path(args.state).resolve()
    state.mkdir(parents=True, exist_ok=True)
    courses = Path(os.environ.get("QUSTODY_COURSES_DIR") or state / "courses").resolve()
    docker_dir = os.environ.get("QUSTODY_DOCKER_DIR", "/tmp/qustody-docker")  # noqa: S108
    os.environ.setdefault("DOCKER_HOST", f"unix://{docker_dir}/docker.sock")
    digest = os.environ.get("QUSTODY_IMAGE_DIGEST") or image_digest()
    port = free_port(args.port)
    # an exported QUSTODY_HOME_VOLUME_TEMPLATE wins over the state's own homes
    homes = os.environ.get("QUSTODY_HOME_VOLUME_TEMPLATE") or home_volumes(state)
    env = {
        **os.environ,
        "QUSTODY_STATE_DIR": str(state),
        "QUSTODY_HUB_PORT": str(port),
        "QUSTODY_HUB_API_PORT": str(free_port(0)),
        "QUSTODY_PROXY_API_PORT": str(free_port(0)),
        # the hub's services, each on a free loopback port
        "QUSTODY_AUDIT_PAGE_PORT": str(free_port(0)),
        "QUSTODY_COURSES_PAGE_PORT": str(free_port(0)),
        "QUSTODY_QPU_PORT": str(free_port(0)),
        "QUSTODY_API_PORT": str(free_port(0)),
        "QUSTODY_IMAGE_DIGEST": digest,
        "QUSTODY_HOME_VOLUME_TEMPLATE": homes,
        # the demo's course, course-101 (hub_ext.courses.hub), written on the first start
        "QUSTODY_DEMO_COURSE": "1",
        "PATH": f"{ROOT / 'tools' / 'proxy' / 'node_modules' / '.bin'}:{os.environ['PATH']}",
    }
    try:  # OIDC login through the repository's provider (make idp-deps installs it)
        idp = start_demo_idp(state, f"http://127.0.0.1:{port}/")
    except ProviderError as e:
        raise SystemExit(f"demo: {e}") from None
    env.update(idp.env)
    network = os.environ.get("QUSTODY_USER_NETWORK") or SpawnPolicy().network_mode
    subnet = os.environ.get("QUSTODY_USER_SUBNET") or SpawnPolicy().network_subnet
    mode = (
        f"hardened Docker containers, image {digest[:19]},\n"
        f"           on the internal network {network} ({subnet}): no way to the host\n"
        f"           but the network proxy on {host_address(subnet)}"
        if digest
        else "LOCAL PROCESSES, NO CONTAINER ISOLATION (no Docker engine or image)"
    )
    banner = (
        f"\n  Qustody demo: http://127.0.0.1:{port}/\n"
        f"  Servers: {mode}\n"
        f"{idp.banner}\n"
        f"  Auditor page: http://127.0.0.1:{port}/services/audit/ (sign in as audrey)\n"
        f"  Instructor page: http://127.0.0.1:{port}/services/courses/ (ivan teaches, "
        "tina assists, otto observes)\n"
        f"  Course file:  {courses / 'course-101.toml'} (qustody course status|apply;\n"
        f"                release and collect write homes: export "
        f"QUSTODY_HOME_VOLUME_TEMPLATE='{homes}')\n"
        f"  QPU gateway:  http://127.0.0.1:{port}/services/qpu/ ; in a notebook:\n"
        f"{QPU_EXAMPLE}"
        "    (sam runs it on course-101's budget, rita in her personal sandbox)\n"
        "  Stop with Ctrl-C.\n"
    )
    hub = str(Path(sys.executable).with_name("jupyterhub"))
    config = str(ROOT / "jupyterhub_config.py")
    print(f"==> starting the hub on http://127.0.0.1:{port}/ ...", flush=True)
    # a child, not exec: the provider must stop with the hub
    proc = subprocess.Popen([hub, "-f", config], env=env, cwd=state)  # noqa: S603
    # `kill <demo>` reaches only this process: pass it on, so the hub stops its proxy,
    # services and servers (it shuts down cleanly on SIGTERM) and nothing is orphaned.
    signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
    try:
        # The URL is printed once the hub answers through its proxy: before that the
        # proxy already listens and shows an unstyled "404 : Not Found" to a first visitor.
        if _ready(proc, f"http://127.0.0.1:{port}/hub/login"):
            print(banner, flush=True)
        return _wait(proc)
    finally:
        idp.provider.stop()


def _ready(proc: subprocess.Popen[bytes], url: str, remind: float = 60) -> bool:
    """Whether the hub's login page answers (False: the hub exited first, or Ctrl-C).
    A slow first start (an image build, a loaded machine) is waited for, with a reminder."""
    start = next_note = time.monotonic()
    try:
        while proc.poll() is None:
            try:
                with urllib.request.urlopen(url, timeout=5) as page:  # noqa: S310 - loopback
                    if page.status == 200:
                        return True
            except OSError:
                pass
            if time.monotonic() - next_note > remind:
                next_note = time.monotonic()
                print(f"==> the hub is still starting ({next_note - start:.0f} s; its log "
                      "is above)", flush=True)
            time.sleep(0.5)
    except KeyboardInterrupt:
        return False
    return False


def _wait(proc: subprocess.Popen[bytes]) -> int:
    """The hub's exit status. On Ctrl-C (which the hub gets too) it is given time to stop
    its proxy and services before it is terminated, so nothing is left listening."""
    try:
        return proc.wait()
    except KeyboardInterrupt:
        pass
    try:
        proc.wait(timeout=30)
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        proc.terminate()
        proc.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
