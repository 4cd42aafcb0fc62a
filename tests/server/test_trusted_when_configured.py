"""A deployment may allow trusted notebooks again (``QustodyApp.trust_notebooks``):
then jupyter-server's own trust applies."""

from __future__ import annotations

from typing import Any

import pytest
from test_untrusted_notebooks import signed_file


@pytest.fixture
def jp_server_config() -> dict[str, Any]:
    return {"ServerApp": {"jpserver_extensions": {"server_ext": True}},
            "QustodyApp": {"trust_notebooks": True}}


async def test_trust_works_as_upstream_when_allowed(api, jp_root_dir, jp_serverapp):
    signed_file(jp_root_dir, jp_serverapp.contents_manager, "signed.ipynb")
    code, model = await api.call("GET", "api", "contents", "signed.ipynb")
    assert code == 200 and model["content"]["cells"][0]["metadata"]["trusted"] is True
    code, _ = await api.call("POST", "api", "contents", "signed.ipynb", "trust")
    assert code == 201
