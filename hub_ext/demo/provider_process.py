"""Run the repository's OpenID provider (``tests/idp/provider.mjs``, npm oidc-provider).

For the demo and the tests only: a real provider on a random 127.0.0.1 port with users
from a JSON file written 0600 (it holds their passwords and the control-API token).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import select
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
IDP_DIR = ROOT / "tests" / "idp"


class ProviderError(Exception):
    """The provider could not start; the message says why and how to fix it."""


@dataclass
class ProviderProcess:
    issuer: str
    admin_token: str
    process: subprocess.Popen[str]
    log_path: Path

    def stop(self) -> None:
        if self.process.stdout is not None:
            self.process.stdout.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                # stuck in the kernel (uninterruptible): nothing more to do
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(timeout=10)


def node() -> str:
    path = shutil.which("node")
    if path is None:
        raise ProviderError(
            "node is not installed: install Node.js 20 (`make idp-deps` as root does)"
        )
    if not (IDP_DIR / "node_modules" / "oidc-provider").is_dir():
        raise ProviderError("oidc-provider is not installed: run `make idp-deps`")
    return path


def start_provider(
    users: dict[str, dict[str, Any]],
    workdir: Path,
    clients: list[dict[str, Any]] | None = None,
    ttl: dict[str, int] | None = None,
    timeout: float = 30,
) -> ProviderProcess:
    """Start the provider; returns once it prints its ready line."""
    workdir.mkdir(parents=True, exist_ok=True)
    admin_token = secrets.token_hex(32)
    config = {
        "host": "127.0.0.1",
        "port": 0,
        "admin_token": admin_token,
        "users": users,
        "clients": clients or [],
        "ttl": ttl or {},
    }
    config_path = workdir / "idp.json"
    config_path.unlink(missing_ok=True)
    fd = os.open(config_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(config, f)
    log_path = workdir / "idp.log"
    failures: list[str] = []
    for _attempt in range(2):
        with log_path.open("a" if failures else "w") as log:
            process = subprocess.Popen(  # noqa: S603 - fixed argv
                [node(), str(IDP_DIR / "provider.mjs"), str(config_path)],
                cwd=IDP_DIR,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        try:
            line = _first_line(process, timeout)
        except BaseException:  # an interrupt while waiting: no provider is left behind
            ProviderProcess("", admin_token, process, log_path).stop()
            raise
        if line.startswith("READY "):
            return ProviderProcess(line.split()[1], admin_token, process, log_path)
        exited = process.poll() is not None
        if exited:
            failures.append(f"exited with status {process.returncode}")
        elif line:
            failures.append(f"printed {line[:200]!r} instead of its ready line")
        else:
            failures.append(f"printed nothing for {timeout:g} s; {_where(process.pid)}")
        ProviderProcess("", admin_token, process, log_path).stop()
        if exited or line:
            break
        # Node once hung here, silent (a deadlock in its key export, tests/idp/keys.mjs,
        # avoided since). Should a provider hang again, one more start is cheap, and the
        # error then says whether the hang repeats.
    raise ProviderError(
        "the OpenID provider did not start ("
        + " / then ".join(f"start {n}: it {why}" for n, why in enumerate(failures, 1))
        + f"):\n{log_path.read_text()[-2000:]}"
    )


def _where(pid: int) -> str:
    """What a silent process is doing, for the error (from Linux's /proc)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        wchan = Path(f"/proc/{pid}/wchan").read_text().strip() or "-"
    except OSError:
        return "its state is unknown"
    state = next((line.split(":", 1)[1].strip() for line in status.splitlines()
                  if line.startswith("State:")), "?")
    return f"state {state}, waiting in {wchan}"


def _first_line(process: subprocess.Popen[str], timeout: float) -> str:
    """The first line the process prints, or what it printed by ``timeout`` seconds or its
    exit. Never blocks longer: a provider that hangs before its ready line is stopped
    (``readline`` on the pipe would wait for it forever)."""
    assert process.stdout is not None
    fd = process.stdout.fileno()
    ready = select.poll()  # not select.select: a busy test worker's fds may pass 1023
    ready.register(fd, select.POLLIN)
    deadline = time.monotonic() + timeout
    received = b""
    while b"\n" not in received:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not ready.poll(remaining * 1000):
            break
        chunk = os.read(fd, 4096)
        if not chunk:  # end of file: the process exited (or closed its output)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)
            break
        received += chunk
    return received.split(b"\n", 1)[0].decode("utf-8", "replace")
