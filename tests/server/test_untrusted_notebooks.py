"""No notebook is trusted in a Qustody server: its outputs' scripts would run in the
browser of anyone who opens it there (course staff, admins), on the hub's origin."""

from __future__ import annotations

import json

import nbformat
from qtest import code_cell, notebook

SCRIPT = {"output_type": "display_data", "metadata": {},
          "data": {"application/javascript": "document.title = 'owned'"}}


def signed_file(root, manager, name: str) -> None:
    """A notebook with a script output, signed with this server's own notary (as the
    owner could: its secret is in their home)."""
    nb = nbformat.from_dict(notebook(code_cell("display(js)", [SCRIPT])))
    manager.notary.sign(nb)
    (root / name).write_text(json.dumps(nb))


async def test_trust_is_refused_and_a_signed_notebook_opens_untrusted(
    api, jp_root_dir, jp_serverapp
):
    manager = jp_serverapp.contents_manager
    signed_file(jp_root_dir, manager, "signed.ipynb")
    code, model = await api.call("GET", "api", "contents", "signed.ipynb")
    assert code == 200
    assert model["content"]["cells"][0]["metadata"]["trusted"] is False

    code, body = await api.call("POST", "api", "contents", "signed.ipynb", "trust")
    assert code == 403, body
    assert "Notebooks are not trusted on this hub" in json.dumps(body)  # an HTML page upstream
    code, model = await api.call("GET", "api", "contents", "signed.ipynb")
    assert model["content"]["cells"][0]["metadata"]["trusted"] is False

    # a save of cells the browser calls trusted signs nothing
    nb = notebook(code_cell("display(js)  # saved", [SCRIPT]))  # not the signed one
    nb["cells"][0]["metadata"]["trusted"] = True
    assert (await api.save_notebook("saved.ipynb", nb))[0] in (200, 201)
    saved = nbformat.reads((jp_root_dir / "saved.ipynb").read_text(), as_version=4)
    assert not manager.notary.check_signature(saved)
