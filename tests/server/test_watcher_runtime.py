"""The watcher leaves Jupyter's runtime directory alone when it lies inside the served root
(a server run as a local process keeps it in the home): the server's own token and the
kernels' connection keys are written there at every start, and are not the user's content."""

from __future__ import annotations

import json
import secrets
import shutil
import uuid
from pathlib import Path

import pytest
from qtest import GITHUB_TOKEN
from test_watcher import jp_server_config, reports_for, start_watching, watching  # noqa: F401

RUNTIME = Path(".local/share/jupyter/runtime")


@pytest.fixture
def jp_runtime_dir(tmp_path: Path) -> Path:
    runtime = tmp_path / "root_dir" / RUNTIME
    runtime.mkdir(parents=True)
    return runtime


def connection_file(key: str) -> str:
    return json.dumps({"shell_port": 50001, "iopub_port": 50002, "ip": "127.0.0.1",
                       "transport": "tcp", "signature_scheme": "hmac-sha256", "key": key})


async def test_the_runtime_directory_is_not_scanned(api, jp_root_dir, watching, jp_serverapp):  # noqa: F811
    await start_watching(jp_serverapp)
    runtime = jp_root_dir / RUNTIME
    (runtime / "kernel-1.json").write_text(connection_file(str(uuid.uuid4())))
    (runtime / "jpserver-1.json").write_text(json.dumps({"token": secrets.token_hex(24)}))
    (jp_root_dir / "zz-marker.env").write_text(f"TOKEN={GITHUB_TOKEN}\n")
    assert await reports_for(api, "zz-marker.env")
    code, body = await api.call("GET", "qustody", "api", "watcher")
    assert code == 200
    assert [r["path"] for r in body["reports"] if r["path"].startswith(".local")] == []


async def test_a_runtime_directory_created_later_is_not_walked_either(
    api, jp_root_dir, watching, jp_serverapp  # noqa: F811
):
    """A new directory is walked (files written before its watch was added): the walk skips
    the runtime directory too, and still finds a key next to it."""
    runtime = jp_root_dir / RUNTIME
    shutil.rmtree(jp_root_dir / ".local")  # the server wrote its own files there at start
    await start_watching(jp_serverapp)
    runtime.mkdir(parents=True)
    (runtime / "kernel-2.json").write_text(connection_file(str(uuid.uuid4())))
    (runtime / "jpserver-2.json").write_text(json.dumps({"token": secrets.token_hex(24)}))
    (jp_root_dir / ".local" / "share" / "notes.env").write_text(f"TOKEN={GITHUB_TOKEN}\n")
    assert await reports_for(api, ".local/share/notes.env")
    code, body = await api.call("GET", "qustody", "api", "watcher")
    assert code == 200
    assert [r["path"] for r in body["reports"] if "runtime" in r["path"]] == []


def test_a_runtime_path_linked_to_the_users_work_hides_nothing(tmp_path: Path) -> None:
    """A user who makes the runtime path a symlink to their work keeps that work watched."""
    from server_ext.watcher import _inside

    root = tmp_path / "home"
    (root / "work").mkdir(parents=True)
    (root / ".local" / "share" / "jupyter").mkdir(parents=True)
    link = root / ".local" / "share" / "jupyter" / "runtime"
    link.symlink_to(root / "work")
    assert _inside(root.resolve(), str(link)) is None
    link.unlink()
    link.mkdir()
    assert _inside(root.resolve(), str(link)) == RUNTIME
    assert _inside(root.resolve(), str(root)) is None  # never the whole root
    assert _inside(root.resolve(), str(tmp_path / "elsewhere")) is None
