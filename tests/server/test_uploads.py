"""Chunked uploads (LargeFileManager) are checked whole, and a refused one leaves nothing."""

from __future__ import annotations

import base64

from qtest import GITHUB_TOKEN, code_cell, notebook, stream

SAVED = (200, 201)


def chunks(data: bytes, size: int) -> list[tuple[int, bytes]]:
    parts = [data[i : i + size] for i in range(0, len(data), size)]
    return [(-1 if i == len(parts) - 1 else i + 1, part) for i, part in enumerate(parts)]


async def upload(api, path: str, data: bytes, size: int) -> list[tuple[int, dict]]:
    replies = []
    for number, part in chunks(data, size):
        model = {
            "type": "file",
            "format": "base64",
            "chunk": number,
            "content": base64.b64encode(part).decode(),
        }
        replies.append(await api.save(path, model))
    return replies


def staging_dirs(tmp_root):
    return [p for p in tmp_root.glob("qustody-uploads-*") for _ in p.iterdir()]


async def test_clean_upload_is_written_only_when_complete(api, jp_root_dir):
    data = b"".join(f"line {i}\n".encode() for i in range(5000))
    replies = []
    for number, part in chunks(data, 4096):
        model = {
            "type": "file",
            "format": "base64",
            "chunk": number,
            "content": base64.b64encode(part).decode(),
        }
        replies.append(await api.save("data.csv", model))
        if number != -1:
            # Staged outside the served directory: nothing visible until the last chunk.
            assert not (jp_root_dir / "data.csv").exists()
    assert all(code in SAVED for code, _ in replies)
    assert (jp_root_dir / "data.csv").read_bytes() == data


async def test_key_split_across_chunks_is_refused_and_nothing_remains(
    api, jp_root_dir, jp_serverapp
):
    # The token straddles the boundary of the first and second chunk.
    data = b"x" * 4090 + f" {GITHUB_TOKEN} \n".encode() + b"y" * 5000
    replies = await upload(api, "leak.txt", data, 4096)
    code, body = replies[-1]
    assert code == 422
    assert "github-token" in body["message"]
    assert GITHUB_TOKEN not in str(replies)
    assert sorted(jp_root_dir.iterdir()) == []
    staging = jp_serverapp.contents_manager._qustody_staging._dir
    assert list(staging.iterdir()) == []


async def test_uploaded_notebook_gets_outputs_redacted(api, jp_root_dir):
    import json

    nb = notebook(code_cell("print(t)", [stream(f"{GITHUB_TOKEN}\n")]))
    data = json.dumps(nb).encode()
    replies = await upload(api, "up.ipynb", data, 100)
    code, _ = replies[-1]
    assert code in SAVED
    on_disk = (jp_root_dir / "up.ipynb").read_text()
    assert GITHUB_TOKEN not in on_disk
    assert "[REDACTED:github-token]" in on_disk


async def test_chunk_without_its_predecessors_is_refused(api, jp_root_dir):
    model = {
        "type": "file",
        "format": "base64",
        "chunk": 3,
        "content": base64.b64encode(b"abc").decode(),
    }
    code, body = await api.save("orphan.txt", model)
    assert code == 400
    assert "interrupted" in body["message"]
    assert not (jp_root_dir / "orphan.txt").exists()


async def test_malformed_chunk_content_is_refused(api, jp_root_dir):
    first = {
        "type": "file",
        "format": "base64",
        "chunk": 1,
        "content": base64.b64encode(b"abc").decode(),
    }
    assert (await api.save("bad.txt", first))[0] in SAVED
    bad = {"type": "file", "format": "base64", "chunk": -1, "content": "!!!not base64!!!"}
    code, body = await api.save("bad.txt", bad)
    assert code == 400
    assert "malformed base64" in body["message"]
    assert not (jp_root_dir / "bad.txt").exists()


class TestUploadLimit:
    async def test_upload_over_the_limit_stops_at_the_chunk_that_crosses_it(
        self, api, jp_root_dir, jp_serverapp
    ):
        jp_serverapp.web_app.settings["qustody_guard"].max_file_size = 10_000
        replies = await upload(api, "huge.bin", b"z" * 30_000, 4096)
        codes = [code for code, _ in replies]
        assert codes[:2] == [201, 201] or codes[:2] == [200, 200]
        assert 413 in codes
        assert not (jp_root_dir / "huge.bin").exists()
