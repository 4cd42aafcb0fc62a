"""The login's OAuth state is Qustody's own: it round-trips, a browser's garbage reads as
no state, and the page to return to stays on this hub."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from hub_ext.identity.oauth_state import (
    decode_state,
    encode_state,
    local_next_url,
    new_state_id,
    pkce_pair,
)

ROOT = Path(__file__).resolve().parents[2]


def test_the_state_round_trips_and_garbage_is_no_state() -> None:
    state = {"state_id": new_state_id(), "next_url": "/hub/home", "nonce": "n", "issued_at": 1.5}
    assert decode_state(encode_state(state)) == state
    for garbage in (None, "", "!!!", "bm90IGpzb24", encode_state([1, 2]), b"\xff\xfe", "é"):
        assert decode_state(garbage) == {}, garbage  # type: ignore[arg-type]
    assert new_state_id() != new_state_id() and len(new_state_id()) == 32


def test_pkce_challenge_is_the_s256_of_the_verifier() -> None:
    import base64
    import hashlib

    verifier, challenge = pkce_pair()
    assert 43 <= len(verifier) <= 128
    digest = hashlib.sha256(verifier.encode()).digest()
    assert challenge == base64.urlsafe_b64encode(digest).decode().rstrip("=")


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("/user/alice/lab?x=1", "/user/alice/lab?x=1"),
        ("https://evil.example/steal", "/steal"),
        ("//evil.example/steal", "/steal"),
        ("\\\\evil.example\\steal", "/%5C%5Cevil.example%5Csteal"),
        ("hub/home", "/hub/home"),
        ("", None),
        (None, None),
    ],
)
def test_the_page_to_return_to_is_a_path_on_this_hub(given: str | None, expected: str | None
                                                     ) -> None:
    assert local_next_url(given) == expected


def test_no_module_imports_a_private_name_of_jupyterhub_or_oauthenticator() -> None:
    """Only supported extension points: a private name needs the one documented shim
    (hub_ext/upstream.py), which reaches it through the class, not an import."""
    found = []
    for path in (ROOT / "hub_ext").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in (
                "jupyterhub", "oauthenticator"):
                found += [f"{path.relative_to(ROOT)}: {a.name}" for a in node.names
                          if a.name.startswith("_")]
    assert found == []
