"""jupyter-server's own contents API behaviour still works through the guarded manager."""

from __future__ import annotations

import base64

import pytest
from qtest import GITHUB_TOKEN, code_cell, notebook

SAVED = (200, 201)


SYNC_DEPRECATED = pytest.mark.filterwarnings(
    "ignore:The synchronous ContentsManager classes are deprecated:DeprecationWarning"
)


@pytest.fixture(
    params=[
        "extension-wraps-default",
        "configured-class",
        # Still supported by jupyter-server 2.x (deprecated), so still guarded.
        pytest.param("sync-manager", marks=SYNC_DEPRECATED),
    ]
)
def jp_server_config(request):
    config = {
        "ServerApp": {"jpserver_extensions": {"server_ext": True}},
        "SaveGuard": {"path_modes": {"scratch/*": "warn"}},
    }
    if request.param == "configured-class":
        config["ServerApp"]["contents_manager_class"] = "server_ext.contents.GuardedContentsManager"
    elif request.param == "sync-manager":
        config["ServerApp"]["contents_manager_class"] = (
            "jupyter_server.services.contents.largefilemanager.LargeFileManager"
        )
    return config


async def test_manager_is_guarded(jp_serverapp):
    from server_ext.contents import GuardedContents

    assert isinstance(jp_serverapp.contents_manager, GuardedContents)


async def test_create_untitled_notebook_file_and_directory(api, jp_root_dir):
    code, model = await api.call("POST", "api", "contents", "", body={"type": "notebook"})
    assert code == 201
    assert model["name"] == "Untitled.ipynb"
    code, model = await api.call("POST", "api", "contents", "", body={"type": "file", "ext": ".py"})
    assert code == 201
    assert model["name"].endswith(".py")
    code, model = await api.call("POST", "api", "contents", "", body={"type": "directory"})
    assert code == 201
    assert (jp_root_dir / model["name"]).is_dir()


async def test_get_rename_copy_delete(api, jp_root_dir):
    assert (await api.save_notebook("a.ipynb", notebook(code_cell("x = 1"))))[0] in SAVED
    code, model = await api.call("GET", "api", "contents", "a.ipynb")
    assert code == 200
    assert model["content"]["cells"][0]["source"] == "x = 1"
    code, model = await api.call("PATCH", "api", "contents", "a.ipynb", body={"path": "b.ipynb"})
    assert code == 200
    assert (jp_root_dir / "b.ipynb").exists() and not (jp_root_dir / "a.ipynb").exists()
    code, model = await api.call("POST", "api", "contents", "", body={"copy_from": "b.ipynb"})
    assert code == 201
    assert model["name"] == "b-Copy1.ipynb"
    code, _ = await api.call("DELETE", "api", "contents", "b-Copy1.ipynb")
    assert code == 204
    assert not (jp_root_dir / "b-Copy1.ipynb").exists()


async def test_directory_copy_is_checked_by_every_manager(api, jp_root_dir):
    """A directory copy is ``shutil.copytree`` in the async and the sync manager alike:
    both check what it brings into a stricter path."""
    (jp_root_dir / "scratch" / "d").mkdir(parents=True)
    (jp_root_dir / "scratch" / "d" / "a.py").write_text("x = 1\n")
    code, model = await api.call("POST", "api", "contents", "", body={"copy_from": "scratch/d"})
    assert code == 201 and model["path"] == "d", model
    (jp_root_dir / "scratch" / "d" / "k.env").write_text(f"T={GITHUB_TOKEN}\n")
    code, body = await api.call("POST", "api", "contents", "", body={"copy_from": "scratch/d"})
    assert code == 422, body
    assert "scratch/d was not copied to d-Copy1" in body["message"]
    assert not (jp_root_dir / "d-Copy1").exists()


async def test_checkpoints_create_list_restore_delete(api, jp_root_dir):
    assert (await api.save_text("t.txt", "one\n"))[0] in SAVED
    code, cp = await api.call("POST", "api", "contents", "t.txt", "checkpoints")
    assert code == 201
    assert (await api.save_text("t.txt", "two\n"))[0] in SAVED
    code, listed = await api.call("GET", "api", "contents", "t.txt", "checkpoints")
    assert code == 200 and [c["id"] for c in listed] == [cp["id"]]
    code, _ = await api.call("POST", "api", "contents", "t.txt", "checkpoints", cp["id"])
    assert code == 204
    assert (jp_root_dir / "t.txt").read_text() == "one\n"
    code, _ = await api.call("DELETE", "api", "contents", "t.txt", "checkpoints", cp["id"])
    assert code == 204


async def test_upload_binary_and_text(api, jp_root_dir):
    png = bytes(range(256)) * 16
    model = {"type": "file", "format": "base64", "content": base64.b64encode(png).decode()}
    assert (await api.save("pic.png", model))[0] in SAVED
    assert (jp_root_dir / "pic.png").read_bytes() == png
    code, model = await api.call("GET", "api", "contents", "pic.png", format="base64")
    assert code == 200 and base64.b64decode(model["content"]) == png
    assert (await api.save_text("dir-less.txt", "hello\n"))[0] in SAVED


async def test_an_opened_notebooks_clean_cells_are_kept(api, jp_root_dir, jp_serverapp):
    """Whatever the manager (sync ones included), a notebook the contents handler serves
    is scanned once answered and its clean cells kept for its first save."""
    import asyncio
    import json

    guard = jp_serverapp.web_app.settings["qustody_guard"]
    cells = [code_cell(f"x = {i}", cell_id=f"c{i}") for i in range(3)]
    (jp_root_dir / "opened.ipynb").write_text(json.dumps(notebook(*cells)))
    code, _ = await api.call("GET", "api", "contents", "opened.ipynb")
    assert code == 200
    for _ in range(500):
        if guard._clean.cells_kept("opened.ipynb"):
            break
        await asyncio.sleep(0.01)
    assert guard._clean.cells_kept("opened.ipynb") == 3
