"""A real OpenBao provisioned for the broker tests, with ID tokens signed by the test.

The JWT auth method trusts the test's own RSA key (``jwt_validation_pubkeys``), so a test
can mint any ID token it needs: another user's, expired, for another audience, signed
with another key. The hub-level test (tests/identity/test_vault_hub.py) uses the real
OpenID provider's JWKS instead.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass

import hvac
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from openbao import OpenBao
from openbao import put as bao_put

AUDIENCE = "qustody-hub"


def public_pem(key: rsa.RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class Vault:
    """A running, provisioned OpenBao (``bao``) and the key its JWT auth trusts."""

    bao: OpenBao
    key: rsa.RSAPrivateKey

    @property
    def url(self) -> str:
        return self.bao.url

    @property
    def root(self) -> str:
        return self.bao.root

    def id_token(
        self, user: str, key: rsa.RSAPrivateKey | None = None, ttl: int = 300, aud: str = AUDIENCE
    ) -> str:
        now = int(time.time())
        head = _b64(json.dumps({"alg": "RS256", "typ": "JWT", "kid": "test"}).encode())
        body = _b64(
            json.dumps(
                {
                    "iss": "https://idp.test",
                    "sub": f"sub-{user}",
                    "aud": aud,
                    "preferred_username": user,
                    "iat": now,
                    "nbf": now - 5,
                    "exp": now + ttl,
                }
            ).encode()
        )
        sig = (key or self.key).sign(f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{head}.{body}.{_b64(sig)}"

    def root_client(self) -> hvac.Client:
        return self.bao.client()

    def put(self, path: str, value: str, cls: str) -> int:
        return bao_put(self.bao, path, value, cls)
