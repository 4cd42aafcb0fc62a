"""A notebook saved again (an autosave) has only its changed cells scanned, through the
contents REST API of a real jupyter-server, and that never lets a credential through: an
edited cell, a value delivered after the last save, a cell with a finding in a ``warn``
path, the size limit and cells sharing an id are all still caught."""

from __future__ import annotations

import asyncio
import copy
import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from qtest import GITHUB_TOKEN, code_cell, markdown_cell, notebook, stream

from server_ext.guard import SaveGuard, SaveRefused
from server_ext.scanner.clean_cells import (
    CELL_OVERHEAD,
    MAX_PATHS,
    OUTPUT_OVERHEAD,
    CleanCells,
)

DELIVERED = "delivered-after-the-first-save 42"


def cells(n: int) -> list[dict[str, Any]]:
    return [
        code_cell(f"value_{i} = {i} * 12345678  # marker-{i}\n",
                  [stream(f"printed by marker-{i}\n")], cell_id=f"c{i}")
        for i in range(n)
    ]


class ScanSpy:
    """What the guard's engine is asked to scan, segment by segment."""

    def __init__(self, guard: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        self.scanned: list[bytes] = []
        engine = guard.engine
        real = engine.scan

        def scan(segments: Sequence[bytes], kinds: Any = None) -> Any:
            self.scanned.extend(segments)
            return real(segments, kinds)

        monkeypatch.setattr(engine, "scan", scan)

    def markers(self) -> set[int]:
        text = b"\n".join(self.scanned)
        return {i for i in range(10) if f"marker-{i}".encode() in text}


@pytest.fixture
def guard(jp_serverapp: Any) -> Any:
    return jp_serverapp.web_app.settings["qustody_guard"]


async def test_only_the_cells_changed_since_the_last_save_are_scanned(
    api: Any, guard: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = ScanSpy(guard, monkeypatch)
    nb = notebook(*cells(4))
    code, body = await api.save_notebook("work.ipynb", nb)
    assert code in (200, 201), body
    assert spy.markers() == {0, 1, 2, 3}

    spy.scanned.clear()  # an autosave with nothing new: the metadata only
    code, body = await api.save_notebook("work.ipynb", nb)
    assert code == 200, body
    assert spy.markers() == set() and spy.scanned

    spy.scanned.clear()  # the same cells, reordered: found by id
    moved = notebook(*[nb["cells"][i] for i in (3, 0, 1, 2)])
    assert (await api.save_notebook("work.ipynb", moved))[0] == 200
    assert spy.markers() == set()

    spy.scanned.clear()  # one cell edited to hold a key: that cell is scanned, and refused
    edited = copy.deepcopy(nb)
    edited["cells"][2]["source"] += f'token = "{GITHUB_TOKEN}"\n'
    code, body = await api.save_notebook("work.ipynb", edited)
    assert code == 422, body
    assert [f["cell"] for f in body["findings"]] == [2]
    assert spy.markers() == {2}

    spy.scanned.clear()  # another notebook's path knows nothing of these cells
    assert (await api.save_notebook("other.ipynb", nb))[0] in (200, 201)
    assert spy.markers() == {0, 1, 2, 3}


async def test_a_value_delivered_after_a_clean_save_is_redacted_from_unchanged_cells(
    api: Any, guard: Any, jp_root_dir: Path
) -> None:
    nb = notebook(code_cell("print(value)", [stream(f"the value: {DELIVERED}\n")]))
    assert (await api.save_notebook("late.ipynb", nb))[0] in (200, 201)
    assert DELIVERED in (jp_root_dir / "late.ipynb").read_text()

    guard.set_known_values([DELIVERED])  # a new engine: every cell is scanned again
    code, body = await api.save_notebook("late.ipynb", nb)
    assert code == 200, body
    saved = (jp_root_dir / "late.ipynb").read_text()
    assert DELIVERED not in saved and "[REDACTED:known-secret]" in saved


async def test_a_cell_with_a_finding_is_reported_at_every_save(api: Any, guard: Any) -> None:
    guard.path_modes = {"scratch/*": "warn"}
    nb = notebook(*cells(2), code_cell(f'token = "{GITHUB_TOKEN}"', cell_id="key"))
    await api.call("PUT", "api", "contents", "scratch", body={"type": "directory"})
    for _ in range(3):
        code, body = await api.save_notebook("scratch/keys.ipynb", nb)
        assert code in (200, 201), body
        assert [f["cell_id"] for f in body["qustody"]["findings"]] == ["key"]


async def test_the_size_limit_counts_the_cells_not_scanned_again(api: Any, guard: Any) -> None:
    nb = notebook(*[code_cell(f"# {i}\n" + "words and more words\n" * 100, cell_id=f"c{i}")
                    for i in range(4)])
    assert (await api.save_notebook("big.ipynb", nb))[0] in (200, 201)
    guard.max_file_size = 4000  # the four cells hold 8,000+ characters
    code, body = await api.save_notebook("big.ipynb", nb)
    assert code == 413, body
    assert "larger than the 4,000 bytes" in body["message"]


async def test_a_cell_sharing_a_clean_cells_id_is_still_scanned(api: Any, guard: Any) -> None:
    clean = code_cell("print('nothing to see here')", cell_id="same")
    with_key = code_cell(f'token = "{GITHUB_TOKEN}"', cell_id="same")
    for nb, at in ((notebook(clean, with_key), 1), (notebook(with_key, clean), 0),
                   (notebook(clean), None), (notebook(with_key), 0)):
        code, body = await api.save_notebook("dup.ipynb", nb)
        if at is None:
            assert code in (200, 201), body
        else:
            assert code == 422, body
            assert [(f["cell"], f["cell_id"]) for f in body["findings"]] == [(at, "same")]


def test_the_cache_is_a_validated_setting_and_zero_turns_it_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ValueError, match="unchanged_cells_cache must be 0"):
        SaveGuard(unchanged_cells_cache=-1)
    guard = SaveGuard(unchanged_cells_cache=0)
    spy = ScanSpy(guard, monkeypatch)
    model = {"type": "notebook", "content": notebook(*cells(3))}
    for _ in range(2):
        guard.check(json.loads(json.dumps(model)), "n.ipynb", remember=True)
    assert b"\n".join(spy.scanned).count(b"marker-1") == 4  # source and output, twice


def test_the_cache_keeps_at_most_its_size_least_recently_saved_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    guard = SaveGuard()
    one = len("value_0 = 0 * 12345678  # marker-0\n") + len("printed by marker-0\n")
    guard._clean = CleanCells(max_chars=5 * (one + CELL_OVERHEAD + OUTPUT_OVERHEAD))  # 5 cells
    spy = ScanSpy(guard, monkeypatch)

    def save(path: str, n: int) -> set[int]:
        spy.scanned.clear()
        guard.check({"type": "notebook", "content": notebook(*cells(n))}, path, remember=True)
        return spy.markers()

    assert save("a.ipynb", 2) == {0, 1}
    assert save("b.ipynb", 3) == {0, 1, 2}
    assert save("a.ipynb", 2) == set()  # both kept: five cells
    assert save("c.ipynb", 2) == {0, 1}  # b, the least recently saved, is dropped
    assert save("b.ipynb", 3) == {0, 1, 2}
    assert save("big.ipynb", 6) == {0, 1, 2, 3, 4, 5}  # larger than the cache: not kept
    assert save("big.ipynb", 6) == {0, 1, 2, 3, 4, 5}


def test_a_cell_holding_much_that_is_not_text_is_not_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Numbers, large metadata and keys nbformat does not define are not text the cache's
    bound counts: such a cell is scanned at every save."""
    guard = SaveGuard()
    spy = ScanSpy(guard, monkeypatch)
    figure = {"output_type": "display_data", "metadata": {},
              "data": {"application/json": {"y": list(range(1000)), "note": "marker-1 here"}}}
    tagged = dict(code_cell("# marker-2 with big metadata"), id="meta",
                  metadata={"numbers": list(range(2000))})
    extra = dict(code_cell("# marker-3 with a key of its own"), id="extra", mine=[1] * 100)
    nb = notebook(*cells(1), code_cell("fig", [figure], cell_id="fig"), tagged, extra)
    for expected in ({0, 1, 2, 3}, {1, 2, 3}):
        spy.scanned.clear()
        model = {"type": "notebook", "content": json.loads(json.dumps(nb))}
        guard.check(model, "fig.ipynb", remember=True)
        assert spy.markers() == expected


def test_the_cache_keeps_at_most_its_number_of_paths() -> None:
    guard = SaveGuard()
    small = notebook(markdown_cell("# Results", cell_id="e"))
    for i in range(MAX_PATHS + 5):
        guard.check({"type": "notebook", "content": copy.deepcopy(small)}, f"{i}.ipynb",
                    remember=True)
    assert len(guard._clean._paths) == MAX_PATHS
    # each kept cell counts its objects and the text the walk read (its source; its
    # cell_type is a word nbformat writes, not read)
    assert guard._clean._chars == MAX_PATHS * (CELL_OVERHEAD + len("# Results"))


def test_only_a_check_asked_to_remember_keeps_cells_and_settings_changes_forget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An in-process caller may change its model after a check: it is not remembered
    unless asked. A lower nesting limit or a cache turned off applies to every cell."""
    guard = SaveGuard()
    spy = ScanSpy(guard, monkeypatch)
    model = {"type": "notebook", "content": notebook(*cells(2))}
    guard.check(model, "m.ipynb")
    model["content"]["cells"][0]["source"] += f'token = "{GITHUB_TOKEN}"\n'
    with pytest.raises(SaveRefused):
        guard.check(model, "m.ipynb")

    deep = notebook(code_cell("x", [{"output_type": "display_data", "metadata": {},
                                     "data": {"text/plain": "marker-4 deep enough"}}],
                              cell_id="deep"))
    guard.check({"type": "notebook", "content": copy.deepcopy(deep)}, "d.ipynb", remember=True)
    guard.max_nesting_depth = 3
    with pytest.raises(SaveRefused, match="deeper than 3 levels"):
        guard.check({"type": "notebook", "content": copy.deepcopy(deep)}, "d.ipynb",
                    remember=True)

    guard.max_nesting_depth = 64
    for _ in range(2):
        spy.scanned.clear()
        guard.check({"type": "notebook", "content": copy.deepcopy(deep)}, "d.ipynb",
                    remember=True)
    assert b"marker-4" not in b"\n".join(spy.scanned)  # kept, until the cache is off
    guard.unchanged_cells_cache = 0
    spy.scanned.clear()
    guard.check({"type": "notebook", "content": copy.deepcopy(deep)}, "d.ipynb", remember=True)
    assert b"marker-4" in b"\n".join(spy.scanned)


async def test_a_copy_is_not_kept(api: Any, guard: Any) -> None:
    """A copy's model is built by the manager, not parsed from the request: not kept."""
    assert (await api.save_notebook("src.ipynb", notebook(*cells(2))))[0] in (200, 201)
    code, body = await api.call("POST", "api", "contents", "", body={"copy_from": "src.ipynb"})
    assert code == 201, body
    assert "src.ipynb" in guard._clean._paths and body["path"] not in guard._clean._paths


async def test_with_a_pre_save_hook_nothing_is_kept(
    api: Any, guard: Any, jp_serverapp: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pre-save hooks run after the guard, on the same model, and may change it in place:
    with one registered, cells are not kept. The check reads jupyter-server's private
    ``_pre_save_hooks``: this fails if upstream stops using it."""
    import inspect

    from jupyter_server.services.contents.manager import ContentsManager

    assert "self._pre_save_hooks" in inspect.getsource(ContentsManager.run_pre_save_hooks)
    manager = jp_serverapp.contents_manager
    monkeypatch.setattr(manager, "_pre_save_hooks", [])
    manager.register_pre_save_hook(lambda model, **kwargs: None)
    spy = ScanSpy(guard, monkeypatch)
    nb = notebook(*cells(2))
    for _ in range(2):
        assert (await api.save_notebook("hooked.ipynb", nb))[0] in (200, 201)
        assert spy.markers() == {0, 1}
        spy.scanned.clear()
    assert "hooked.ipynb" not in guard._clean._paths


def test_a_match_across_two_cells_does_not_hide_one_in_the_second() -> None:
    """hyperscan reports the leftmost start of a match end: a keyword ending one cell
    once hid the assignment starting the next. Each cell's findings are its own."""
    guard = SaveGuard()
    assignment = code_cell(": api_token = 'Zq8vN3kLp2Xw9Rt5mYb7'", cell_id="c")
    for before in ("# ask for the password", "# ask for it"):
        nb = notebook(code_cell(before, cell_id="p"), copy.deepcopy(assignment))
        with pytest.raises(SaveRefused) as refused:
            guard.check({"type": "notebook", "content": nb}, "n.ipynb", remember=True)
        assert [loc.cell_id for loc in refused.value.findings] == ["c"]


async def test_the_save_is_answered_before_its_clean_cells_are_kept(
    api: Any, guard: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keeping the clean cells is bookkeeping for the next save: the save's answer does
    not wait for it."""
    from jupyter_server.services.contents.handlers import ContentsHandler

    events: list[str] = []
    finish, remember = ContentsHandler.finish, guard._clean.remember

    def answered(self: Any, *args: Any, **kwargs: Any) -> Any:
        events.append("answered")
        return finish(self, *args, **kwargs)

    def kept(*args: Any, **kwargs: Any) -> None:
        events.append("kept")
        remember(*args, **kwargs)

    monkeypatch.setattr(ContentsHandler, "finish", answered)
    monkeypatch.setattr(guard._clean, "remember", kept)
    assert (await api.save_notebook("order.ipynb", notebook(*cells(2))))[0] in (200, 201)
    assert events == ["answered", "kept"]
    assert "order.ipynb" in guard._clean._paths


async def test_a_save_that_was_not_written_keeps_nothing(
    api: Any, guard: Any, jp_serverapp: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only a save that was written keeps its clean cells: after a failed write the next
    save scans them all."""
    manager = jp_serverapp.contents_manager

    async def disk_full(*args: Any, **kwargs: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(manager, "_save_notebook", disk_full)
    code, _body = await api.save_notebook("full.ipynb", notebook(*cells(2)))
    assert code == 500
    assert "full.ipynb" not in guard._clean._paths
    monkeypatch.undo()
    spy = ScanSpy(guard, monkeypatch)
    assert (await api.save_notebook("full.ipynb", notebook(*cells(2))))[0] in (200, 201)
    assert spy.markers() == {0, 1}


async def opened(api: Any, guard: Any, path: str) -> dict[str, Any]:
    """GET a notebook as JupyterLab opens it, and wait until the guard has kept its clean
    cells (it scans the answer after sending it)."""
    code, body = await api.call("GET", "api", "contents", path)
    assert code == 200, body
    for _ in range(500):
        if guard._clean.cells_kept(path):
            return body
        await asyncio.sleep(0.01)
    raise AssertionError(f"the guard kept no cell of {path} within 5 s of opening it")


async def settled(manager: Any) -> None:
    """Wait for the open scans in progress."""
    await asyncio.gather(*list((manager._qustody_opened or {}).values()))


async def test_a_notebook_opened_then_saved_has_only_its_changed_cells_scanned(
    api: Any, guard: Any, jp_root_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first save of a notebook opened in JupyterLab scans only the cells changed
    since it was opened: the guard scanned what the GET served."""
    (jp_root_dir / "opened.ipynb").write_text(json.dumps(notebook(*cells(4))))
    served = (await opened(api, guard, "opened.ipynb"))["content"]
    assert guard._clean.cells_kept("opened.ipynb") == 4
    spy = ScanSpy(guard, monkeypatch)
    served["cells"][1]["source"] += "# edited\n"
    code, body = await api.save_notebook("opened.ipynb", served)
    assert code == 200, body
    assert spy.markers() == {1}


async def test_a_cell_opened_with_a_credential_is_still_refused_at_its_save(
    api: Any, guard: Any, jp_root_dir: Path
) -> None:
    """A credential already on disk (written by a kernel or a git pull) is in a cell the
    open does not keep: saving the notebook unchanged is refused."""
    on_disk = notebook(*cells(2), code_cell(f'token = "{GITHUB_TOKEN}"', cell_id="key"))
    (jp_root_dir / "leaky.ipynb").write_text(json.dumps(on_disk))
    served = (await opened(api, guard, "leaky.ipynb"))["content"]
    assert guard._clean.cells_kept("leaky.ipynb") == 2
    code, body = await api.save_notebook("leaky.ipynb", served)
    assert code == 422, body
    assert [f["cell_id"] for f in body["findings"]] == ["key"]


async def test_only_the_contents_handlers_get_of_a_notebook_is_kept(
    api: Any, guard: Any, jp_root_dir: Path, jp_serverapp: Any
) -> None:
    """A GET without content, the manager's own reads (a copy, an in-process caller) and a
    file keep nothing: only the model the handler answered with is left to the guard."""
    (jp_root_dir / "source.ipynb").write_text(json.dumps(notebook(*cells(3))))
    (jp_root_dir / "notes.txt").write_text("marker-1\n")
    code, _ = await api.call("GET", "api", "contents", "source.ipynb", content="0")
    assert code == 200
    await jp_serverapp.contents_manager.get("source.ipynb")
    code, copied = await api.call("POST", "api", "contents", "", body={"copy_from": "source.ipynb"})
    assert code == 201, copied
    assert (await api.call("GET", "api", "contents", "notes.txt"))[0] == 200
    (jp_root_dir / "control.ipynb").write_text(json.dumps(notebook(*cells(2))))
    await opened(api, guard, "control.ipynb")  # the handler's GET of a notebook is kept
    await settled(jp_serverapp.contents_manager)
    assert guard._clean.cells_kept("control.ipynb") == 2
    assert guard._clean.cells_kept("source.ipynb") == 0
    assert guard._clean.cells_kept(copied["path"]) == 0


async def test_repeated_gets_of_a_notebook_queue_one_scan(
    api: Any, guard: Any, jp_root_dir: Path, jp_serverapp: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that GETs notebooks in a loop queues one open scan per path, and a few in
    all (MAX_OPEN_SCANS), not one copy of the notebook per request."""
    from server_ext.contents import MAX_OPEN_SCANS

    manager = jp_serverapp.contents_manager
    names = [f"loop{i}.ipynb" for i in range(MAX_OPEN_SCANS + 3)]
    for name in names:
        (jp_root_dir / name).write_text(json.dumps(notebook(*cells(2))))
    release = threading.Event()
    scanned: list[str] = []
    remember = guard.remember_opened

    def held(content: Any, path: str) -> int:
        release.wait(30)  # the first scan holds the scanning thread until every GET is in
        scanned.append(path)
        return int(remember(content, path))

    monkeypatch.setattr(guard, "remember_opened", held)
    try:
        for _ in range(5):
            assert (await api.call("GET", "api", "contents", names[0]))[0] == 200
        for name in names[1:]:
            assert (await api.call("GET", "api", "contents", name))[0] == 200
        await asyncio.sleep(0.1)  # the answers' call_soon steps have run
        assert sorted(manager._qustody_opened) == sorted(names[:MAX_OPEN_SCANS])
    finally:
        release.set()
    await settled(manager)
    assert sorted(scanned) == sorted(names[:MAX_OPEN_SCANS])
    assert guard._clean.cells_kept(names[0]) == 2
    assert guard._clean.cells_kept(names[-1]) == 0
    # Done, a path is scanned again when it is opened again.
    await opened(api, guard, names[-1])
    assert guard._clean.cells_kept(names[-1]) == 2


async def test_a_read_by_an_event_listener_during_the_get_is_not_kept(
    api: Any, guard: Any, jp_root_dir: Path, jp_serverapp: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """jupyter-server's contents events start their listeners as tasks while the GET is
    answered; a listener that reads the same notebook (and may change what it read) does
    not hand the guard its objects as if they were the answer: one scan, of the answer."""
    manager = jp_serverapp.contents_manager
    (jp_root_dir / "asked.ipynb").write_text(json.dumps(notebook(*cells(2))))
    read: list[Any] = []
    scanned: list[Any] = []
    remember = guard.remember_opened

    def spy(content: Any, path: str) -> int:
        scanned.append(content)
        return int(remember(content, path))

    monkeypatch.setattr(guard, "remember_opened", spy)

    async def listener(logger: Any, schema_id: str, data: dict[str, Any]) -> None:
        if data.get("path") == "asked.ipynb" and not read:
            read.append(await manager.get("asked.ipynb"))

    manager.event_logger.add_listener(schema_id=manager.event_schema_id, listener=listener)
    try:
        await opened(api, guard, "asked.ipynb")
        for _ in range(500):
            if read:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)  # a scan the listener's read started would be queued by now
        await settled(manager)
    finally:
        manager.event_logger.remove_listener(schema_id=manager.event_schema_id,
                                             listener=listener)
    assert read and read[0]["type"] == "notebook"
    assert len(scanned) == 1 and scanned[0] is not read[0]["content"]
    assert guard._clean.cells_kept("asked.ipynb") == 2
