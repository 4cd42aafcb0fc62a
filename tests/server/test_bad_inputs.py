"""Every bad input gets a clear answer in bounded time and loses nothing on disk."""

from __future__ import annotations

import json

from qtest import GITHUB_TOKEN, code_cell, execute_result, notebook, stream

SAVED = (200, 201)


async def _existing(api, jp_root_dir, name="keep.ipynb"):
    assert (await api.save_notebook(name, notebook(code_cell("x = 1"))))[0] in SAVED
    return (jp_root_dir / name).read_bytes()


async def test_invalid_json_body(api, jp_root_dir):
    before = await _existing(api, jp_root_dir)
    code, body = await api.call(
        "PUT", "api", "contents", "keep.ipynb", raw=b'{"type": "notebook", "content": {'
    )
    assert code == 400
    assert "Invalid JSON" in body["message"]
    assert (jp_root_dir / "keep.ipynb").read_bytes() == before


async def test_non_utf8_body(api, jp_root_dir):
    before = await _existing(api, jp_root_dir)
    code, body = await api.call(
        "PUT", "api", "contents", "keep.ipynb", raw=b'{"type": "file", "content": "\xff\xfe"}'
    )
    assert code == 400
    assert body["message"] == "The request body is not UTF-8 text; nothing was saved."
    assert (jp_root_dir / "keep.ipynb").read_bytes() == before


async def test_notebook_content_that_is_not_a_notebook(api, jp_root_dir):
    before = await _existing(api, jp_root_dir)
    for content in (["not", "a", "dict"], {"cells": "nope"}, {"cells": [1, 2]}):
        code, body = await api.save(
            "keep.ipynb", {"type": "notebook", "format": "json", "content": content}
        )
        assert code == 400, content
        assert "not a valid notebook" in body["message"]
    assert (jp_root_dir / "keep.ipynb").read_bytes() == before


async def test_deeply_nested_metadata_is_refused_clearly(api, jp_root_dir):
    deep: dict = {}
    node = deep
    for _ in range(200):
        node["k"] = {}
        node = node["k"]
    nb = notebook({**code_cell("x = 1"), "metadata": deep})
    code, body = await api.save_notebook("deep.ipynb", nb)
    assert code == 400
    assert "deeper than 64 levels" in body["message"]
    assert not (jp_root_dir / "deep.ipynb").exists()


async def test_json_too_deep_to_parse(api, jp_root_dir):
    raw = b'{"type": "notebook", "content": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    code, _ = await api.call("PUT", "api", "contents", "deeper.ipynb", raw=raw)
    assert code == 400
    assert not (jp_root_dir / "deeper.ipynb").exists()


async def test_one_megabyte_line_of_spaces(api, jp_root_dir):
    source = "x = 1" + " " * 1_000_000 + f"# {GITHUB_TOKEN}"
    code, body = await api.save_notebook("spaces.ipynb", notebook(code_cell(source)))
    assert code == 422
    assert "github-token" in body["message"]
    clean = "x = 1" + " " * 1_000_000
    assert (await api.save_notebook("spaces.ipynb", notebook(code_cell(clean))))[0] in SAVED


async def test_hundred_thousand_outputs(api, jp_root_dir):
    outputs = [
        stream(f"{i}\n") if i % 2 else execute_result({"text/plain": str(i)})
        for i in range(100_000)
    ]
    outputs.append(stream(f"{GITHUB_TOKEN}\n", name="stderr"))
    code, body = await api.save_notebook("wide.ipynb", notebook(code_cell("loop()", outputs)))
    assert code in SAVED
    assert body["qustody"]["redacted"] == 1
    saved = json.loads((jp_root_dir / "wide.ipynb").read_text())
    assert len(saved["cells"][0]["outputs"]) == 100_001
    assert GITHUB_TOKEN not in json.dumps(saved)


async def test_hundred_megabyte_notebook(api, jp_root_dir):
    # 100 MB of text output (under the 100 MiB default limit) is checked and saved.
    chunk = "".join(f"row {i:08d} value {i * 7919 % 100000:05d}\n" for i in range(25_000))
    outputs = [stream(chunk) for _ in range(100_000_000 // len(chunk))]
    outputs.append(stream(f"leaked {GITHUB_TOKEN}\n"))
    code, body = await api.save_notebook("big.ipynb", notebook(code_cell("dump()", outputs)))
    assert code in SAVED, body
    assert body["qustody"]["redacted"] == 1
    assert (jp_root_dir / "big.ipynb").stat().st_size > 100_000_000
    with open(jp_root_dir / "big.ipynb") as f:
        assert GITHUB_TOKEN not in f.read()
