"""Qustody's refusals in a real IPython kernel: one clear message with its reason code,
the user's own frames kept, none of Qustody's or Qiskit's (``server_ext/kernel_errors.py``)."""

from __future__ import annotations

import os
import queue
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.manager import start_new_kernel

ROOT = Path(__file__).resolve().parents[2]
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture
def kernel(tmp_path: Path) -> Iterator[Any]:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "SANDBOX_KEY").write_text("sandbox-value-0123456789")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QUSTODY_", "JUPYTERHUB_"))}
    env.update(QUSTODY_SECRETS_DIR=str(secrets), PYTHONPATH=str(ROOT))
    manager, client = start_new_kernel(kernel_name="python3", env=env, cwd=str(tmp_path))
    try:
        yield client
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def run(client: Any, code: str) -> dict[str, Any]:
    """Execute ``code``; the error reply's name and traceback lines (ANSI removed), stdout."""
    msg_id = client.execute(code)
    out: dict[str, Any] = {"stdout": "", "traceback": None}
    while True:
        try:
            msg = client.get_iopub_msg(timeout=120)
        except queue.Empty:
            pytest.fail(f"no answer from the kernel to {code!r}")
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream":
            out["stdout"] += content["text"]
        elif kind == "error":
            out["ename"] = content["ename"]
            out["traceback"] = [ANSI.sub("", line) for line in content["traceback"]]
        elif kind == "status" and content["execution_state"] == "idle":
            return out


def test_a_missing_secret_is_one_message_under_the_users_own_frames(kernel: Any) -> None:
    run(kernel, "from server_ext.secrets import get_secret\n"
                "def connect():\n    return get_secret('QISKIT_IBM_TOKEN')\n")
    out = run(kernel, "connect()")
    text = "\n".join(out["traceback"])
    assert out["traceback"][-1] == (
        "Secrets [NO_SUCH_SECRET]: no secret 'QISKIT_IBM_TOKEN' on this server (available: "
        "SANDBOX_KEY); ask an admin to grant it, then refresh() or restart the server"
    )
    assert "connect()" in text and "get_secret('QISKIT_IBM_TOKEN')" in text  # the user's frames
    assert "server_ext" not in text and "secrets.py" not in text  # none of ours
    # still a KeyError for code that handles it
    caught = run(kernel, "try:\n    connect()\nexcept KeyError as e:\n    print('caught', e)")
    assert caught["traceback"] is None
    assert caught["stdout"].startswith("caught no secret 'QISKIT_IBM_TOKEN' on this server")


def test_a_gateway_refusal_names_its_code_and_verbose_mode_shows_everything(kernel: Any) -> None:
    out = run(kernel, "from server_ext.qpu import gateway_backend\n"
                      "backend = gateway_backend('aer_simulator')")
    assert out["ename"] == "GatewayError"
    assert out["traceback"][-1].startswith(
        "QPU gateway [NO_GATEWAY]: set QUSTODY_QPU_URL to the QPU gateway's URL"
    )
    text = "\n".join(out["traceback"])
    assert "site-packages" not in text  # no Qiskit or requests frames either
    assert "server_ext/qpu.py" not in text and "GatewayClient" not in text
    # the full traceback when the user asks for it
    run(kernel, "%xmode Verbose")
    verbose = "\n".join(run(kernel, "gateway_backend('aer_simulator')")["traceback"])
    assert "server_ext/qpu.py" in verbose and "GatewayClient" in verbose


def test_other_errors_keep_ipythons_traceback(kernel: Any) -> None:
    run(kernel, "import server_ext.secrets")
    out = run(kernel, "def f():\n    return {}['x']\nf()")
    assert out["ename"] == "KeyError"
    assert out["traceback"][-1] == "KeyError: 'x'"
