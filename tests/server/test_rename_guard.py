"""Renaming (PATCH) through the contents REST API of a real jupyter-server: what moves
from a ``warn`` path into a stricter one is checked as if it were saved there."""

from __future__ import annotations

import json

import pytest
from qtest import GITHUB_TOKEN, code_cell, notebook, stream

SAVED = (200, 201)


@pytest.fixture
def jp_server_config():
    return {
        "ServerApp": {"jpserver_extensions": {"server_ext": True}},
        "SaveGuard": {
            "path_modes": {"scratch/*": "warn", "redacted/*": "redact"},
            "max_file_size": 4096,
        },
    }


@pytest.fixture
def scratch(jp_root_dir):
    for d in ("scratch", "redacted", "work"):
        (jp_root_dir / d).mkdir()
    return jp_root_dir / "scratch"


async def rename(api, old: str, new: str):
    return await api.call("PATCH", "api", "contents", old, body={"path": new})


async def test_file_with_a_credential_cannot_move_into_a_block_path(api, scratch, jp_root_dir):
    code, body = await api.save_text("scratch/keys.txt", f"t = {GITHUB_TOKEN}\n")
    assert code in SAVED and body["qustody"]["mode"] == "warn"  # warn lets it be saved

    code, body = await rename(api, "scratch/keys.txt", "work/keys.txt")
    assert code == 422
    assert "scratch/keys.txt was not renamed to work/keys.txt" in body["message"]
    assert "'block' path" in body["message"] and "github-token" in body["message"]
    assert GITHUB_TOKEN not in json.dumps(body)
    assert (scratch / "keys.txt").exists() and not (jp_root_dir / "work" / "keys.txt").exists()
    # nor to the top level, which is a block path too (SaveGuard.default_mode)
    code, _ = await rename(api, "scratch/keys.txt", "keys.txt")
    assert code == 422 and not (jp_root_dir / "keys.txt").exists()


async def test_renames_that_do_not_tighten_the_mode_are_not_checked(api, scratch, jp_root_dir):
    await api.save_text("scratch/keys.txt", f"t = {GITHUB_TOKEN}\n")
    code, body = await rename(api, "scratch/keys.txt", "scratch/old-keys.txt")
    assert code == 200, body
    assert (scratch / "old-keys.txt").read_text() == f"t = {GITHUB_TOKEN}\n"
    # a clean file moves into a block path unchanged
    await api.save_text("scratch/notes.txt", "nothing secret\n")
    code, body = await rename(api, "scratch/notes.txt", "work/notes.txt")
    assert code == 200, body
    assert (jp_root_dir / "work" / "notes.txt").read_text() == "nothing secret\n"


async def test_a_directory_rename_checks_every_file_hidden_ones_too(api, scratch, jp_root_dir):
    (scratch / "proj" / "deep").mkdir(parents=True)
    (scratch / "proj" / "clean.py").write_text("x = 1\n")
    # written by a kernel, not through the contents API: never checked so far
    (scratch / "proj" / "deep" / ".env").write_text(f"GITHUB_TOKEN={GITHUB_TOKEN}\n")
    code, body = await rename(api, "scratch/proj", "work/proj")
    assert code == 422, body
    assert "work/proj/deep/.env" in body["message"]
    assert (scratch / "proj" / "deep" / ".env").exists()
    assert not (jp_root_dir / "work" / "proj").exists()

    (scratch / "proj" / "deep" / ".env").write_text("DEBUG=1\n")
    code, body = await rename(api, "scratch/proj", "work/proj")
    assert code == 200, body
    assert (jp_root_dir / "work" / "proj" / "deep" / ".env").read_text() == "DEBUG=1\n"


async def test_notebook_sources_refuse_and_outputs_are_redacted_on_the_way(
    api, scratch, jp_root_dir
):
    code, _ = await api.save_notebook(
        "scratch/src.ipynb", notebook(code_cell(f"t = '{GITHUB_TOKEN}'"))
    )
    assert code in SAVED
    code, body = await rename(api, "scratch/src.ipynb", "work/src.ipynb")
    assert code == 422, body
    assert not (jp_root_dir / "work" / "src.ipynb").exists()

    nb = notebook(code_cell("print(token)", [stream(f"{GITHUB_TOKEN}\n")]))
    code, _ = await api.save_notebook("scratch/out.ipynb", nb)
    assert code in SAVED and GITHUB_TOKEN in (scratch / "out.ipynb").read_text()
    code, body = await rename(api, "scratch/out.ipynb", "work/out.ipynb")
    assert code == 200, body
    moved = (jp_root_dir / "work" / "out.ipynb").read_text()
    assert GITHUB_TOKEN not in moved and "[REDACTED:github-token]" in moved
    assert json.loads(moved)["cells"][0]["source"] in ("print(token)", ["print(token)"])
    assert not (scratch / "out.ipynb").exists()


async def test_a_redact_path_redacts_what_moves_in(api, scratch, jp_root_dir):
    await api.save_text("scratch/keys.txt", f"t = {GITHUB_TOKEN}\n")
    code, body = await rename(api, "scratch/keys.txt", "redacted/keys.txt")
    assert code == 200, body
    assert (jp_root_dir / "redacted" / "keys.txt").read_text() == "t = [REDACTED:github-token]\n"


async def test_too_big_to_check_is_refused_not_moved_unchecked(api, scratch, jp_root_dir):
    (scratch / "big.txt").write_text("a" * 5000)
    code, body = await rename(api, "scratch/big.txt", "work/big.txt")
    assert code == 413, body
    assert "larger than the 4,096 bytes" in body["message"]
    assert (scratch / "big.txt").exists() and not (jp_root_dir / "work" / "big.txt").exists()


async def test_a_checkpoint_taken_in_a_warn_path_is_checked_before_it_is_restored(
    api, scratch, jp_root_dir
):
    """A checkpoint moves with its file: taken while a scratch notebook held a token, it
    must not bring the token back once the cleaned file was renamed into a block path.
    A clean checkpoint restores as before."""
    dirty = notebook(code_cell(f"t = '{GITHUB_TOKEN}'"))
    code, _ = await api.save_notebook("scratch/n.ipynb", dirty)
    assert code in SAVED
    code, checkpoint = await api.call("POST", "api", "contents", "scratch/n.ipynb", "checkpoints")
    assert code == 201, checkpoint
    code, _ = await api.save_notebook("scratch/n.ipynb", notebook(code_cell("t = 1")))
    assert code in SAVED
    code, _ = await rename(api, "scratch/n.ipynb", "work/n.ipynb")
    assert code == 200
    code, body = await api.call("POST", "api", "contents", "work/n.ipynb", "checkpoints",
                                checkpoint["id"])
    assert code == 422, body
    assert "was not restored from its checkpoint" in body["message"]
    assert GITHUB_TOKEN not in json.dumps(body)
    assert GITHUB_TOKEN not in (jp_root_dir / "work" / "n.ipynb").read_text()

    code, clean = await api.call("POST", "api", "contents", "work/n.ipynb", "checkpoints")
    assert code == 201
    code, _ = await api.save_notebook("work/n.ipynb", notebook(code_cell("t = 2")))
    code, _ = await api.call("POST", "api", "contents", "work/n.ipynb", "checkpoints",
                             clean["id"])
    assert code == 204
    assert "t = 1" in (jp_root_dir / "work" / "n.ipynb").read_text()


async def test_restoring_a_checkpoint_into_a_redact_path_writes_it_redacted(
    api, scratch, jp_root_dir
):
    """The checkpoint's outputs are redacted in what restoring writes: the credential
    never reaches the file, not even for a moment before a redacted save."""
    printed = notebook(code_cell("print(token)", [stream(f"{GITHUB_TOKEN}\n")]))
    code, _ = await api.save_notebook("scratch/out.ipynb", printed)
    assert code in SAVED
    code, checkpoint = await api.call("POST", "api", "contents", "scratch/out.ipynb",
                                      "checkpoints")
    assert code == 201
    code, _ = await api.save_notebook("scratch/out.ipynb", notebook(code_cell("x = 1")))
    code, _ = await rename(api, "scratch/out.ipynb", "redacted/out.ipynb")
    assert code == 200
    code, _ = await api.call("POST", "api", "contents", "redacted/out.ipynb", "checkpoints",
                             checkpoint["id"])
    assert code == 204
    text = (jp_root_dir / "redacted" / "out.ipynb").read_text()
    assert GITHUB_TOKEN not in text and "[REDACTED:github-token]" in text


def record_redactions(monkeypatch):
    """The redactions reported to the audit log (path, detectors), as they are reported."""
    from server_ext import contents

    reported: list[tuple[str, list[str]]] = []

    def outputs_redacted(_log, path, report):
        if report is not None and report.redacted:  # as the audit report's own test
            reported.append((path, sorted({loc.finding.detector for loc in report.findings})))

    monkeypatch.setattr(contents.audit_report, "outputs_redacted", outputs_redacted)
    return reported


async def test_restoring_into_a_redact_path_is_audited(api, scratch, jp_root_dir, monkeypatch):
    reported = record_redactions(monkeypatch)
    printed = notebook(code_cell("print(token)", [stream(f"{GITHUB_TOKEN}\n")]))
    await api.save_notebook("scratch/out.ipynb", printed)
    _, checkpoint = await api.call("POST", "api", "contents", "scratch/out.ipynb", "checkpoints")
    await api.save_notebook("scratch/out.ipynb", notebook(code_cell("x = 1")))
    await rename(api, "scratch/out.ipynb", "redacted/out.ipynb")
    code, _ = await api.call("POST", "api", "contents", "redacted/out.ipynb", "checkpoints",
                             checkpoint["id"])
    assert code == 204
    assert reported == [("redacted/out.ipynb", ["github-token"])]


async def copy(api, src: str, into: str):
    """JupyterLab's copy: POST to the folder, naming what to copy."""
    return await api.call("POST", "api", "contents", into, body={"copy_from": src})


@pytest.fixture
def no_other_destination(monkeypatch):
    """A copy checked where jupyter-server did not put it is checked again where it is; in
    these tests it never is: this fails if jupyter-server starts naming copies otherwise."""
    from server_ext.contents import GuardedContents

    def elsewhere(self, src, copied, expected):
        raise AssertionError(f"copy of {src} written to {copied}, checked at {expected}")

    monkeypatch.setattr(GuardedContents, "_checked_elsewhere", elsewhere)


async def test_a_directory_copy_into_a_block_path_is_checked_first(
    api, scratch, jp_root_dir, no_other_destination
):
    (scratch / "proj" / "deep").mkdir(parents=True)
    (scratch / "proj" / "clean.py").write_text("x = 1\n")
    (scratch / "proj" / "deep" / ".env").write_text(f"GITHUB_TOKEN={GITHUB_TOKEN}\n")
    code, body = await copy(api, "scratch/proj", "work")
    assert code == 422, body
    assert "scratch/proj was not copied to work/proj" in body["message"]
    assert "work/proj/deep/.env" in body["message"] and GITHUB_TOKEN not in json.dumps(body)
    assert not (jp_root_dir / "work" / "proj").exists()
    assert (scratch / "proj" / "deep" / ".env").exists()  # the source is left as it was

    (scratch / "proj" / "deep" / ".env").write_text("DEBUG=1\n")
    for name in ("proj", "proj-Copy1"):  # the second copy is named as jupyter-server names it
        code, body = await copy(api, "scratch/proj", "work")
        assert code == 201, body
        assert body["path"] == f"work/{name}"
        assert (jp_root_dir / "work" / name / "deep" / ".env").read_text() == "DEBUG=1\n"
    # a copy that does not tighten the mode is not checked (a copy next to it, in scratch)
    (scratch / "proj" / "deep" / ".env").write_text(f"GITHUB_TOKEN={GITHUB_TOKEN}\n")
    code, body = await copy(api, "scratch/proj", "scratch")
    assert code == 201 and body["path"] == "scratch/proj-Copy1", body


async def test_a_directory_copy_with_a_link_to_a_folder_is_refused_into_a_stricter_path(
    api, scratch, jp_root_dir, no_other_destination
):
    """shutil.copytree copies what a link to a folder holds, once per path that reaches
    it (a link to a parent: until the path is too long): such a copy into a stricter path
    is refused, not worked out. Next to itself, it is upstream's copy as ever."""
    (scratch / "keys").mkdir()
    (scratch / "keys" / "gh.txt").write_text(f"{GITHUB_TOKEN}\n")
    (scratch / "proj").mkdir()
    (scratch / "proj" / "x.py").write_text("x = 1\n")
    (scratch / "proj" / "linked").symlink_to(scratch / "keys")
    code, body = await copy(api, "scratch/proj", "work")
    assert code == 422, body
    assert "scratch/proj/linked is a link to a folder" in body["message"]
    assert not (jp_root_dir / "work" / "proj").exists()
    (scratch / "proj" / "linked").unlink()
    (scratch / "proj" / "loop").symlink_to(scratch / "proj")
    code, body = await copy(api, "scratch/proj", "redacted")
    assert code == 422 and "scratch/proj/loop is a link to a folder" in body["message"]


async def test_a_failed_directory_copy_leaves_nothing_behind(
    api, scratch, jp_root_dir, no_other_destination
):
    """copytree copies what it can and raises at the end (a dangling link): the copy, with
    the credential its redaction never reached, is removed."""
    (scratch / "proj").mkdir()
    printed = notebook(code_cell("print(token)", [stream(f"{GITHUB_TOKEN}\n")]))
    (scratch / "proj" / "out.ipynb").write_text(json.dumps(printed))
    (scratch / "proj" / "gone.txt").symlink_to(scratch / "nowhere.txt")
    code, body = await copy(api, "scratch/proj", "redacted")
    assert code >= 400, body
    assert not (jp_root_dir / "redacted" / "proj").exists()


async def test_a_directory_copy_into_a_redact_path_writes_redacted_files(
    api, scratch, jp_root_dir, monkeypatch, no_other_destination
):
    reported = record_redactions(monkeypatch)
    (scratch / "proj").mkdir()
    printed = notebook(code_cell("print(token)", [stream(f"{GITHUB_TOKEN}\n")]))
    (scratch / "proj" / "out.ipynb").write_text(json.dumps(printed))
    code, body = await copy(api, "scratch/proj", "redacted")
    assert code == 201, body
    copied = (jp_root_dir / "redacted" / "proj" / "out.ipynb").read_text()
    assert GITHUB_TOKEN not in copied and "[REDACTED:github-token]" in copied
    assert GITHUB_TOKEN in (scratch / "proj" / "out.ipynb").read_text()
    assert reported == [("redacted/proj/out.ipynb", ["github-token"])]


async def test_a_copy_written_elsewhere_than_checked_is_checked_there_or_removed(
    api, scratch, jp_root_dir, monkeypatch
):
    """Should jupyter-server put a directory's copy elsewhere than ``copy`` works out, the
    copy is checked where it is, and removed when it may not be there."""
    from server_ext import contents

    (scratch / "proj").mkdir()
    (scratch / "proj" / "k.txt").write_text(f"{GITHUB_TOKEN}\n")
    monkeypatch.setattr(contents, "_copy_target", lambda src, to: ("scratch", "elsewhere"))
    code, body = await copy(api, "scratch/proj", "work")
    assert code == 422, body
    assert "was not copied to work/proj" in body["message"]
    assert not (jp_root_dir / "work" / "proj").exists()
    assert (scratch / "proj" / "k.txt").exists()
