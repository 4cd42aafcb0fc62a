"""Values delivered to the server are redacted from saved outputs in every common
encoding, and refused in sources, through the contents REST API of a real jupyter-server,
even where no detector pattern would match them."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
from qtest import code_cell, notebook, stream

# Low-entropy-looking, no known format, with characters every encoding changes.
VALUE = 'plain words/with+odd "chars" é 1'
OTHER = "second-delivered-value-777"


def forms(value: str) -> dict[str, str]:
    raw = value.encode()
    return {
        "exact": value,
        "json": json.dumps(value)[1:-1],
        "base64": base64.b64encode(raw).decode(),
        "base64-unpadded": base64.b64encode(raw).decode().rstrip("="),
        "base64-urlsafe": base64.urlsafe_b64encode(raw).decode(),
        "base64-urlsafe-unpadded": base64.urlsafe_b64encode(raw).decode().rstrip("="),
        "url": quote(value, safe=""),
        "url-plus": quote_plus(value, safe=""),
        "hex": raw.hex(),
        "HEX": raw.hex().upper(),
    }


def output_text(saved: str) -> str:
    text = json.loads(saved)["cells"][0]["outputs"][0]["text"]
    return "".join(text) if isinstance(text, list) else str(text)


@pytest.fixture
def guard(jp_serverapp: Any) -> Any:
    g = jp_serverapp.web_app.settings["qustody_guard"]
    g.set_known_values([VALUE, OTHER])
    return g


@pytest.mark.parametrize("form", list(forms(VALUE)))
async def test_each_encoding_is_redacted_from_outputs(
    api: Any, guard: Any, jp_root_dir: Path, form: str
) -> None:
    encoded = forms(VALUE)[form]
    nb = notebook(code_cell("print(x)", [stream(f"the value: {encoded} (end)\n")]))
    code, body = await api.save_notebook("out.ipynb", nb)
    assert code in (200, 201), body
    saved = (jp_root_dir / "out.ipynb").read_text()
    for text in forms(VALUE).values():
        assert text not in saved
    assert "the value: [REDACTED:known-secret] (end)" in output_text(saved)
    assert encoded not in json.dumps(body)


async def test_a_source_holding_a_delivered_value_is_refused(
    api: Any, guard: Any, jp_root_dir: Path
) -> None:
    nb = notebook(code_cell(f"token = {OTHER!r}"))
    code, body = await api.save_notebook("src.ipynb", nb)
    assert code == 422
    assert OTHER not in json.dumps(body) and "known-secret" in body["message"]
    assert not (jp_root_dir / "src.ipynb").exists()
    code, body = await api.save_text(
        "notes.txt", f"remember {base64.b64encode(OTHER.encode()).decode()}"
    )
    assert code == 422 and not (jp_root_dir / "notes.txt").exists()


async def test_warn_mode_does_not_let_a_delivered_value_through(
    api: Any, guard: Any, jp_root_dir: Path
) -> None:
    guard.path_modes = {"scratch/**": "warn"}
    (jp_root_dir / "scratch").mkdir()
    nb = notebook(code_cell("print(x)", [stream(OTHER.encode().hex() + "\n")]))
    code, _ = await api.save_notebook("scratch/w.ipynb", nb)
    assert code in (200, 201)
    assert OTHER.encode().hex() not in (jp_root_dir / "scratch" / "w.ipynb").read_text()


async def test_values_stay_known_after_rotation_and_unrelated_text_is_untouched(
    api: Any, guard: Any, jp_root_dir: Path
) -> None:
    guard.set_known_values(["rotated-value-after-the-old-one"])
    text = f"{VALUE} | rotated-value-after-the-old-one | plain words with odd chars\n"
    code, _ = await api.save_notebook("r.ipynb", notebook(code_cell("x", [stream(text)])))
    assert code in (200, 201)
    out = output_text((jp_root_dir / "r.ipynb").read_text())
    assert out == "[REDACTED:known-secret] | [REDACTED:known-secret] | plain words with odd chars\n"


async def test_secrets_api_lists_nothing_without_a_hub(api: Any) -> None:
    code, body = await api.call("GET", "qustody", "api", "secrets")
    assert code == 200 and body["secrets"] == []
    code, body = await api.call("POST", "qustody", "api", "secrets", "refresh", body={})
    assert code == 502 and "not started by a hub" in body["message"]
