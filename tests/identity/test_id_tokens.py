"""ID-token verification with real keys and signatures, keys served over real HTTP.

A JWKS document is served from 127.0.0.1; tokens are signed with real RSA/EC keys. The
verifier must accept only tokens signed by a published key, for our client, from our
issuer, unexpired, with this login's nonce — and pick up a rotated key.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from hub_ext.identity.tokens import Expected, IdTokenError, JwksCache, verify_id_token

ISSUER = "https://idp.example.test"
CLIENT = "qustody-hub"
NONCE = "n-0S6_WzA2Mj"


def good_claims() -> dict[str, Any]:
    now = int(time.time())
    return {
        "iss": ISSUER,
        "aud": CLIENT,
        "sub": "rita",
        "iat": now,
        "exp": now + 60,
        "nonce": NONCE,
    }


class Keys:
    def __init__(self) -> None:
        self.private: dict[str, Any] = {}
        self.published: list[dict[str, Any]] = []
        self.fetches = 0

    def add(self, kid: str, key: Any, alg: str = "RS256", publish: bool = True) -> None:
        self.private[kid] = (key, alg)
        if publish:
            jwk = json.loads(jwt.algorithms.get_default_algorithms()[alg].to_jwk(key.public_key()))
            self.published.append({**jwk, "kid": kid, "use": "sig", "alg": alg})

    def sign(self, kid: str, **overrides: Any) -> str:
        claims = {**good_claims(), **overrides}
        claims = {k: v for k, v in claims.items() if v is not None}
        key, alg = self.private[kid]
        return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid})


@pytest.fixture
def keys() -> Iterator[tuple[Keys, str]]:
    store = Keys()
    store.add("k1", rsa.generate_private_key(public_exponent=65537, key_size=2048))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            store.fetches += 1
            body = json.dumps({"keys": store.published}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield store, f"http://127.0.0.1:{server.server_address[1]}/jwks"
    server.shutdown()
    server.server_close()


async def fetch_json(url: str) -> dict[str, Any]:
    def get() -> dict[str, Any]:
        with requests.get(url, timeout=10) as response:
            response.raise_for_status()
            return dict(response.json())

    return await asyncio.to_thread(get)


def verify(raw: str, jwks: JwksCache, nonce: str | None = NONCE, **expected: Any) -> dict[str, Any]:
    return asyncio.run(verify_id_token(raw, jwks, Expected(ISSUER, CLIENT, **expected), nonce))


def test_valid_token_verifies(keys: tuple[Keys, str]) -> None:
    store, url = keys
    claims = verify(store.sign("k1"), JwksCache(url, fetch_json))
    assert claims["sub"] == "rita"


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda s: s.sign("k1", aud="another-client"), "audience-mismatch"),
        (lambda s: s.sign("k1", iss="https://evil.example.test"), "issuer-mismatch"),
        (
            lambda s: s.sign("k1", exp=int(time.time()) - 120, iat=int(time.time()) - 180),
            "token-expired",
        ),
        (
            lambda s: s.sign("k1", iat=int(time.time()) - 3600, exp=int(time.time()) + 60),
            "token-expired",
        ),
        (lambda s: s.sign("k1", nonce="replayed-nonce"), "invalid-token"),
        (lambda s: s.sign("k1", nonce=None), "invalid-token"),
        (lambda s: s.sign("k1", aud=[CLIENT, "other"]), "audience-mismatch"),
        (lambda s: s.sign("k1", exp=None), "invalid-token"),
        (lambda s: s.sign("k1")[:-8] + "AAAAAAAA", "invalid-token"),  # tampered signature
        (lambda s: jwt.encode(good_claims(), None, algorithm="none"), "invalid-token"),
        (
            lambda s: jwt.encode(
                good_claims(),
                "client-secret-guess-of-32-bytes!!",
                algorithm="HS256",
                headers={"kid": "k1"},
            ),
            "invalid-token",
        ),
        ("not a jwt", "invalid-token"),
    ],
    ids=[
        "wrong-aud",
        "wrong-iss",
        "expired",
        "issued-long-ago",
        "wrong-nonce",
        "no-nonce",
        "multi-aud-no-azp",
        "no-exp",
        "tampered",
        "alg-none",
        "hs256-secret",
        "garbage",
    ],
)
def test_bad_tokens_are_refused(keys: tuple[Keys, str], make: Any, reason: str) -> None:
    store, url = keys
    raw = make if isinstance(make, str) else make(store)
    with pytest.raises(IdTokenError) as refused:
        verify(raw, JwksCache(url, fetch_json))
    assert refused.value.reason == reason
    assert raw not in str(refused.value)


def test_forged_token_signed_with_an_unpublished_key_is_refused(keys: tuple[Keys, str]) -> None:
    _, url = keys
    # the attacker reuses the provider's kid with their own key
    forger = Keys()
    forger.add("k1", rsa.generate_private_key(public_exponent=65537, key_size=2048), publish=False)
    with pytest.raises(IdTokenError, match="invalid"):
        verify(forger.sign("k1"), JwksCache(url, fetch_json))
    forger.add("k-unknown", ec.generate_private_key(ec.SECP256R1()), alg="ES256", publish=False)
    with pytest.raises(IdTokenError, match="key the provider does not publish"):
        verify(forger.sign("k-unknown"), JwksCache(url, fetch_json))


def test_rotated_key_is_fetched_once_and_unknown_kids_are_rate_limited(
    keys: tuple[Keys, str],
) -> None:
    store, url = keys
    jwks = JwksCache(url, fetch_json, min_refetch_interval=0)
    verify(store.sign("k1"), jwks)
    assert store.fetches == 1
    store.add("k2", ec.generate_private_key(ec.SECP256R1()), alg="ES256")  # rotation
    assert verify(store.sign("k2"), jwks)["sub"] == "rita"
    assert store.fetches == 2
    verify(store.sign("k1"), jwks)
    assert store.fetches == 2  # known kid: no fetch

    limited = JwksCache(url, fetch_json, min_refetch_interval=60)
    verify(store.sign("k1"), limited)
    for _ in range(5):
        with pytest.raises(IdTokenError):
            verify(_unknown_kid(store), limited)
    assert store.fetches == 3  # one fetch for `limited`, none for the five unknown kids


def _unknown_kid(store: Keys) -> str:
    key, alg = store.private["k1"]
    return jwt.encode(good_claims(), key, algorithm=alg, headers={"kid": "never-published"})
