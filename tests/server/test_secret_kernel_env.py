"""Optional injection of delivered secrets into kernels' environment only."""

from __future__ import annotations

import os
from typing import Any

import pytest


@pytest.fixture
def jp_server_config() -> dict[str, Any]:
    return {
        "ServerApp": {"jpserver_extensions": {"server_ext": True}},
        "SecretClient": {"kernel_env": ["KERNEL_ONLY"]},
    }


def test_kernel_env_gets_chosen_secrets_and_the_server_env_none(
    jp_serverapp: Any, tmp_path: Any
) -> None:
    client = jp_serverapp.web_app.settings["qustody_secrets"]
    client.files_dir = str(tmp_path / "secrets")
    client._apply(
        {
            "broker": "embedded",
            "secrets": [
                {
                    "name": "KERNEL_ONLY",
                    "class": "dev",
                    "version": 1,
                    "value": "kernel-env-value-1",
                },
                {"name": "FILE_ONLY", "class": "dev", "version": 1, "value": "file-only-value-2"},
            ],
        }
    )
    env = jp_serverapp.session_manager.get_kernel_env("nb.ipynb")
    assert env["KERNEL_ONLY"] == "kernel-env-value-1"
    assert "FILE_ONLY" not in env and env["JPY_SESSION_NAME"] == "nb.ipynb"
    assert "KERNEL_ONLY" not in os.environ
    assert "kernel-env-value-1" not in os.environ.values()
    assert (tmp_path / "secrets" / "FILE_ONLY").read_text() == "file-only-value-2"
    assert oct((tmp_path / "secrets" / "FILE_ONLY").stat().st_mode & 0o777) == "0o600"
    # a later refresh without FILE_ONLY removes its file (revoked secrets disappear)
    client._apply({"broker": "embedded", "secrets": []})
    assert not (tmp_path / "secrets" / "FILE_ONLY").exists()
    assert "KERNEL_ONLY" not in jp_serverapp.session_manager.get_kernel_env("nb.ipynb")
