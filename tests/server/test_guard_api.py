"""The save guard through the contents REST API of a real jupyter-server."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest
from qtest import (
    AWS_KEY_ID,
    GITHUB_TOKEN,
    IBM_QUANTUM_TOKEN,
    code_cell,
    execute_result,
    markdown_cell,
    notebook,
    stream,
)

SECRETS = (GITHUB_TOKEN, AWS_KEY_ID, IBM_QUANTUM_TOKEN)
SAVED = (200, 201)  # 201 when the save created the file


def assert_no_secret(*texts: object) -> None:
    """Neither the value nor its JSON-escaped form appears anywhere in ``texts``."""
    for text in texts:
        blob = text if isinstance(text, str) else json.dumps(text)
        for secret in SECRETS:
            assert secret not in blob
            assert json.dumps(secret)[1:-1] not in blob


def listing(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# -- refusing sources ------------------------------------------------------------------

REFUSED_NOTEBOOKS = [
    pytest.param(
        notebook(code_cell(f'token = "{GITHUB_TOKEN}"', cell_id="k1")),
        0,
        "k1",
        1,
        "github-token",
        id="code-cell",
    ),
    pytest.param(
        notebook(code_cell("x = 1"), markdown_cell(f"My key:\n\n`{AWS_KEY_ID}`", cell_id="md")),
        1,
        "md",
        3,
        "aws-access-key-id",
        id="markdown-cell",
    ),
    pytest.param(
        notebook(
            {"cell_type": "raw", "id": "raw1", "metadata": {}, "source": f"key {GITHUB_TOKEN}"}
        ),
        0,
        "raw1",
        1,
        "github-token",
        id="raw-cell",
    ),
    pytest.param(
        notebook({**code_cell("x = 1", cell_id="meta"), "metadata": {"tags": [GITHUB_TOKEN]}}),
        0,
        "meta",
        1,
        "github-token",
        id="cell-metadata",
    ),
    pytest.param(
        notebook(
            code_cell(
                "from qiskit_ibm_runtime import QiskitRuntimeService\n"
                f'service = QiskitRuntimeService(channel="ibm_quantum", token="{IBM_QUANTUM_TOKEN}")',
                cell_id="ibm",
            )
        ),
        0,
        "ibm",
        2,
        "ibm-quantum-token",
        id="qiskit-runtime-token",
    ),
    pytest.param(
        notebook(code_cell("x = 1"), metadata={"auth": {"token": GITHUB_TOKEN}}),
        None,
        None,
        1,
        "github-token",
        id="notebook-metadata",
    ),
]


@pytest.mark.parametrize(("nb", "cell", "cell_id", "line", "detector"), REFUSED_NOTEBOOKS)
async def test_notebook_with_key_in_source_is_refused(
    api, jp_root_dir, server_logs, nb, cell, cell_id, line, detector
):
    code, body = await api.save_notebook("work/analysis.ipynb", nb)
    assert code == 422
    message = body["message"]
    assert message.startswith("Save refused: work/analysis.ipynb contains 1 credential")
    where = f"cell {cell} (id {cell_id!r})" if cell is not None else "/metadata"
    assert where in message
    assert f"line {line}: {detector} " in message
    assert_no_secret(body, server_logs.text)
    # Nothing was written: no notebook, no checkpoint, no temp file, no directory.
    assert listing(jp_root_dir) == []


async def test_refusal_leaves_existing_file_and_checkpoints_untouched(api, jp_root_dir):
    clean = notebook(code_cell("print('hello')"))
    assert (await api.save_notebook("keep.ipynb", clean))[0] in SAVED
    before = (jp_root_dir / "keep.ipynb").read_bytes()
    code, _ = await api.call("POST", "api", "contents", "keep.ipynb", "checkpoints")
    assert code == 201
    files_before = listing(jp_root_dir)
    checkpoint = next(p for p in jp_root_dir.rglob("*-checkpoint.ipynb"))
    checkpoint_before = checkpoint.read_bytes()

    code, _ = await api.save_notebook("keep.ipynb", notebook(code_cell(f"key = '{GITHUB_TOKEN}'")))
    assert code == 422
    assert (jp_root_dir / "keep.ipynb").read_bytes() == before
    assert checkpoint.read_bytes() == checkpoint_before
    assert listing(jp_root_dir) == files_before


async def test_refusal_lists_every_finding(api):
    nb = notebook(
        code_cell(f"a = '{GITHUB_TOKEN}'\nb = 2\nc = '{AWS_KEY_ID}'", cell_id="one"),
        markdown_cell("nothing here"),
        code_cell(f"d = '{GITHUB_TOKEN}'", cell_id="three"),
    )
    code, body = await api.save_notebook("many.ipynb", nb)
    assert code == 422
    message = body["message"]
    assert "contains 3 credentials" in message
    assert "cell 0 (id 'one'), source, line 1: github-token ghp_…" in message
    assert "cell 0 (id 'one'), source, line 3: aws-access-key-id AKIA…" in message
    assert "cell 2 (id 'three'), source, line 1: github-token" in message


TEXT_FILES = {
    "settings.py": f'GITHUB_TOKEN = "{GITHUB_TOKEN}"\n',
    "local.env": f"AWS_ACCESS_KEY_ID={AWS_KEY_ID}\n",
    "config.yaml": f"github:\n  token: {GITHUB_TOKEN}\n",
    "creds.json": json.dumps({"token": GITHUB_TOKEN}),
    "NOTES.md": f"remember `{GITHUB_TOKEN}`\n",
    "notes.txt": f"aws {AWS_KEY_ID}\n",
    "setup.cfg": f"[auth]\ntoken = {GITHUB_TOKEN}\n",
    "app.ini": f"[aws]\nkey_id = {AWS_KEY_ID}\n",
    "pyproject.toml": f'[tool.x]\ntoken = "{GITHUB_TOKEN}"\n',
    "run.sh": f"export GH_TOKEN={GITHUB_TOKEN}\n",
}


@pytest.mark.parametrize("name", sorted(TEXT_FILES))
async def test_text_file_with_key_is_refused(api, jp_root_dir, server_logs, name):
    code, body = await api.save_text(name, TEXT_FILES[name])
    assert code == 422, body
    assert "Save refused" in body["message"]
    assert_no_secret(body, server_logs.text)
    assert listing(jp_root_dir) == []


async def test_base64_upload_of_env_file_is_refused(api, jp_root_dir):
    content = base64.b64encode(f"GH={GITHUB_TOKEN}\n".encode()).decode()
    code, body = await api.save(
        "prod.env", {"type": "file", "format": "base64", "content": content}
    )
    assert code == 422
    assert "github-token" in body["message"]
    assert listing(jp_root_dir) == []


async def test_non_utf8_file_is_still_scanned_for_formats(api, jp_root_dir):
    data = b"\xff\xfe binary \x00 " + GITHUB_TOKEN.encode() + b" \x80"
    code, body = await api.save(
        "blob.bin", {"type": "file", "format": "base64", "content": base64.b64encode(data).decode()}
    )
    assert code == 422
    assert "github-token" in body["message"]
    assert listing(jp_root_dir) == []


@pytest.mark.parametrize("encoding", ["latin-1", "utf-16", "utf-16-be-with-bom"])
async def test_text_in_another_encoding_is_scanned_as_text(api, jp_root_dir, encoding):
    """A Latin-1 ``.env`` ("Configuración") and UTF-16 from Notepad or PowerShell 5's
    ``>``: read as text, so the detectors of bare secrets and keywords run (a binary read
    ran only those of formats with a prefix)."""
    aws_secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzq8Rk2Tv4L"
    text = (f"# Configuración\nAWS_SECRET_ACCESS_KEY={aws_secret}\n"
            "DB_PASSWORD=Xk9#mP2vL7qR4tQz\n")
    data = (b"\xfe\xff" + text.encode("utf-16-be") if encoding == "utf-16-be-with-bom"
            else text.encode(encoding))
    code, body = await api.save(
        "conf.env", {"type": "file", "format": "base64", "content": base64.b64encode(data).decode()}
    )
    assert code == 422, body
    assert "aws-secret-access-key" in body["message"] and "generic-keyword" in body["message"]
    assert listing(jp_root_dir) == []


# -- redacting outputs -----------------------------------------------------------------


def _output_notebook() -> dict:
    half = len(GITHUB_TOKEN) // 2
    ansi = f"\x1b[0;31mValueError\x1b[0m: bad token \x1b[1;32m{AWS_KEY_ID}\x1b[0m"
    return notebook(
        code_cell(
            "run()",
            [
                stream(f"token is {GITHUB_TOKEN}\n"),
                # One value printed in two chunks (flush between them).
                stream(f"split: {GITHUB_TOKEN[:half]}"),
                stream(f"{GITHUB_TOKEN[half:]} done\n"),
                execute_result(
                    {
                        "text/plain": [f"'{GITHUB_TOKEN}'"],
                        "text/html": f"<b>{AWS_KEY_ID}</b>",
                        "text/markdown": f"key `{GITHUB_TOKEN}`",
                        "application/json": {"nested": {"list": ["x", f"{AWS_KEY_ID}"]}},
                        "image/png": base64.b64encode(bytes(range(256)) * 64).decode(),
                    }
                ),
                {
                    "output_type": "error",
                    "ename": "ValueError",
                    "evalue": f"bad token {AWS_KEY_ID}",
                    "traceback": [ansi, "line 2"],
                },
            ],
            cell_id="out",
        ),
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "widgets": {
                "application/vnd.jupyter.widget-state+json": {
                    "state": {"m1": {"model_name": "TextModel", "state": {"value": GITHUB_TOKEN}}},
                    "version_major": 2,
                    "version_minor": 0,
                }
            },
        },
    )


async def test_outputs_are_redacted_and_saved(api, jp_root_dir, server_logs):
    code, body = await api.save_notebook("out.ipynb", _output_notebook())
    assert code in SAVED, body
    assert body["qustody"]["mode"] == "block"
    assert body["qustody"]["redacted"] == 9
    on_disk = (jp_root_dir / "out.ipynb").read_text()
    assert_no_secret(on_disk, body, server_logs.text)
    saved = json.loads(on_disk)
    outputs = saved["cells"][0]["outputs"]
    assert "".join(outputs[0]["text"]) == "token is [REDACTED:github-token]\n"
    # The split value is redacted across both chunks; the chunks stay separate outputs.
    assert (
        "".join(outputs[1]["text"]) + "".join(outputs[2]["text"])
        == "split: [REDACTED:github-token] done\n"
    )
    data = outputs[3]["data"]
    assert "".join(data["text/plain"]) == "'[REDACTED:github-token]'"
    assert "[REDACTED:aws-access-key-id]" in "".join(data["text/html"])
    assert data["application/json"]["nested"]["list"][1] == "[REDACTED:aws-access-key-id]"
    assert data["image/png"] == base64.b64encode(bytes(range(256)) * 64).decode()
    assert outputs[4]["evalue"] == "bad token [REDACTED:aws-access-key-id]"
    assert "[REDACTED:aws-access-key-id]" in outputs[4]["traceback"][0]
    widget = saved["metadata"]["widgets"]["application/vnd.jupyter.widget-state+json"]
    assert widget["state"]["m1"]["state"]["value"] == "[REDACTED:github-token]"


async def test_clean_notebook_is_saved_unchanged(api, jp_root_dir):
    nb = notebook(code_cell("import os\ntoken = os.environ['GH_TOKEN']", [stream("ok\n")]))
    code, body = await api.save_notebook("clean.ipynb", nb)
    assert code in SAVED
    assert "qustody" not in body
    assert (
        "".join(json.loads((jp_root_dir / "clean.ipynb").read_text())["cells"][0]["source"])
        == nb["cells"][0]["source"]
    )


# -- allow-listing ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        f'token = "{GITHUB_TOKEN}"  # pragma: allowlist secret',
        f'token = "{GITHUB_TOKEN}"  # gitleaks:allow',
        f'# pragma: allowlist nextline secret\ntoken = "{GITHUB_TOKEN}"',
        'token = "<YOUR_TOKEN>"',
        "token = os.environ['TOKEN']",
        "password = getpass()",
        'api_key = "xxxxxxxxxxxxxxxxxxxx"',
    ],
    ids=["pragma", "gitleaks", "nextline-pragma", "placeholder", "environ", "getpass", "xxxx"],
)
async def test_allowlisted_and_placeholder_values_save(api, jp_root_dir, source):
    code, body = await api.save_notebook("ok.ipynb", notebook(code_cell(source)))
    assert code in SAVED, body
    assert (jp_root_dir / "ok.ipynb").exists()


# -- configuration ---------------------------------------------------------------------


@pytest.fixture
def guard_config(jp_server_config):
    return jp_server_config


class TestConfigured:
    @pytest.fixture
    def jp_server_config(self):
        return {
            "ServerApp": {"jpserver_extensions": {"server_ext": True}},
            "SaveGuard": {
                "allowed_values": [AWS_KEY_ID],
                "path_modes": {"scratch/*": "warn", "redacted/*": "redact"},
                "max_file_size": 4096,
            },
        }

    async def test_allowed_value_is_not_a_finding(self, api):
        code, _ = await api.save_text("a.txt", f"id {AWS_KEY_ID}\n")
        assert code in SAVED

    async def test_warn_mode_saves_and_reports(self, api, jp_root_dir):
        (jp_root_dir / "scratch").mkdir()
        code, body = await api.save_text("scratch/n.txt", f"t {GITHUB_TOKEN}\n")
        assert code in SAVED
        assert body["qustody"]["mode"] == "warn"
        assert [f["detector"] for f in body["qustody"]["findings"]] == ["github-token"]
        assert_no_secret(body)

    async def test_redact_mode_redacts_sources(self, api, jp_root_dir):
        (jp_root_dir / "redacted").mkdir()
        code, body = await api.save_notebook(
            "redacted/n.ipynb", notebook(code_cell(f"t = '{GITHUB_TOKEN}'"))
        )
        assert code in SAVED
        assert body["qustody"]["redacted"] == 1
        saved = json.loads((jp_root_dir / "redacted" / "n.ipynb").read_text())
        assert "".join(saved["cells"][0]["source"]) == "t = '[REDACTED:github-token]'"

    async def test_over_size_limit_is_refused_not_skipped(self, api, jp_root_dir):
        code, body = await api.save_text("big.txt", "a" * 5000)
        assert code == 413
        assert "larger than the 4,096 bytes" in body["message"]
        assert listing(jp_root_dir) == []


class TestBrokenConfiguration:
    @pytest.fixture
    def jp_server_config(self):
        return {
            "ServerApp": {"jpserver_extensions": {"server_ext": True}},
            "SaveGuard": {"detectors": ["github-token", "no-such-detector"]},
        }

    async def test_every_save_is_refused_with_the_reason(self, api, jp_root_dir):
        code, body = await api.save_text("a.txt", "harmless\n")
        assert code == 503
        assert "could not start" in body["message"]
        assert "no-such-detector" in body["message"]
        assert listing(jp_root_dir) == []


# -- failing closed --------------------------------------------------------------------


async def test_internal_error_refuses_the_save(
    api, jp_serverapp, jp_root_dir, server_logs, monkeypatch
):
    assert (await api.save_text("f.txt", "v1\n"))[0] in SAVED
    guard = jp_serverapp.web_app.settings["qustody_guard"]

    def broken(*args, **kwargs):
        raise RuntimeError(f"engine exploded while reading {GITHUB_TOKEN}")

    monkeypatch.setattr(guard.engine, "scan", broken)
    code, body = await api.save_text("f.txt", "v2\n")
    assert code == 500
    assert "the credential check failed (RuntimeError)" in body["message"]
    assert "traceback" not in body
    assert (jp_root_dir / "f.txt").read_text() == "v1\n"
    assert_no_secret(body, server_logs.text)
    assert "Qustody guard failed on f.txt: RuntimeError" in server_logs.text


async def test_status_endpoint_reports_policy(api):
    code, body = await api.call("GET", "qustody", "api", "guard")
    assert code == 200
    assert body["default_mode"] == "block"
    assert "github-token" in [d["id"] for d in body["detectors"]]
    assert "public-ip" not in [d["id"] for d in body["detectors"]]


async def test_scan_endpoint_is_a_dry_run(api, jp_root_dir):
    model = {
        "path": "x.ipynb",
        "type": "notebook",
        "content": notebook(code_cell(f"k = '{GITHUB_TOKEN}'")),
    }
    code, body = await api.call("POST", "qustody", "api", "scan", body=model)
    assert code == 200
    assert body["action"] == "refuse"
    assert body["findings"][0]["detector"] == "github-token"
    assert body["findings"][0]["cell"] == 0
    assert_no_secret(body)
    assert listing(jp_root_dir) == []


async def test_a_bad_scan_body_is_a_400_that_quotes_nothing(api, server_logs):
    """The scan endpoint's bodies carry credentials: a malformed one is refused with the
    contents API's own parser, never logged (jupyter-server's logs it at debug level) and
    never a 500 (non-UTF-8)."""
    for raw in (f'{{"path": "x.py", "content": "{GITHUB_TOKEN}"'.encode(), b"\xff\xfe{}"):
        code, body = await api.call("POST", "qustody", "api", "scan", raw=raw)
        assert code == 400, body
    assert GITHUB_TOKEN not in server_logs.text


async def test_large_saves_are_checked_off_the_event_loop(api, jp_serverapp, monkeypatch):
    """A notebook up to INLINE_CHECK_BYTES is checked on the loop (a thread hop would cost
    more than the check); a larger one, a copy, and any check that would wait for the
    engine to compile, in a worker thread, so the loop serves other requests meanwhile."""
    import threading

    from server_ext.contents import INLINE_CHECK_BYTES

    guard = jp_serverapp.web_app.settings["qustody_guard"]
    threads: list[tuple[str, threading.Thread]] = []
    real_check = guard.check

    def recording_check(model, path, **options):
        threads.append((path, threading.current_thread()))
        return real_check(model, path, **options)

    monkeypatch.setattr(guard, "check", recording_check)
    big = "x = 1  # " + "y" * INLINE_CHECK_BYTES
    # The server loads the guard's engine in a thread as it starts; on a loaded machine the
    # first save may come before it is ready, and would then rightly be checked off the loop.
    for _ in range(600):
        if guard.ready:
            break
        await asyncio.sleep(0.05)
    assert guard.ready
    assert (await api.save_notebook("small.ipynb", notebook(code_cell("x = 1"))))[0] in SAVED
    assert (await api.save_notebook("big.ipynb", notebook(code_cell(big))))[0] in SAVED
    code, _ = await api.call(
        "POST", "api", "contents", body={"copy_from": "small.ipynb"}
    )
    assert code == 201
    # while the engine compiles (start-up, a secret delivered), a check would wait for it
    monkeypatch.setattr(type(guard), "ready", property(lambda self: False))
    assert (await api.save_notebook("waits.ipynb", notebook(code_cell("x = 2"))))[0] in SAVED
    on = {path: thread is threading.main_thread() for path, thread in threads}
    assert on == {"small.ipynb": True, "big.ipynb": False, "small-Copy1.ipynb": False,
                  "waits.ipynb": False}
