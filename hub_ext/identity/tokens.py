"""Verify OpenID Connect ID tokens ourselves: signature (provider JWKS), iss, aud, exp, nonce.

oauthenticator can read claims from an ID token without checking its signature; the hub
never does that. Keys come from the provider's ``jwks_uri``; an unknown ``kid`` triggers
one refetch (key rotation), rate-limited so forged tokens cannot make the hub hammer the
provider.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import jwt

#: Asymmetric algorithms only: "none" and HS* (a shared client secret) are never accepted.
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


class IdTokenError(Exception):
    """An ID token was refused. ``reason`` is a login-refused audit reason; the message
    says what was wrong without quoting the token."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


FetchJson = Callable[[str], Awaitable[dict[str, Any]]]


@dataclass
class JwksCache:
    """The provider's signing keys, refetched when a token names a ``kid`` we lack."""

    jwks_uri: str
    fetch_json: FetchJson
    min_refetch_interval: float = 10.0
    keys: dict[str, jwt.PyJWK] = field(default_factory=dict)
    fetched_at: float = 0.0

    async def refresh(self) -> None:
        document = await self.fetch_json(self.jwks_uri)
        keys: dict[str, jwt.PyJWK] = {}
        for entry in document.get("keys", []):
            if entry.get("use", "sig") != "sig" or "kid" not in entry:
                continue
            try:
                keys[entry["kid"]] = jwt.PyJWK(entry)
            except jwt.PyJWTError:
                continue  # an algorithm or key type we do not support: skip, not fail
        self.keys = keys
        self.fetched_at = time.monotonic()

    async def key(self, kid: str) -> jwt.PyJWK:
        if kid not in self.keys and (
            not self.fetched_at or time.monotonic() - self.fetched_at >= self.min_refetch_interval
        ):
            await self.refresh()
        if kid not in self.keys:
            raise IdTokenError(
                "invalid-token", "the ID token is signed with a key the provider does not publish"
            )
        return self.keys[kid]


@dataclass(frozen=True)
class Expected:
    """What a valid ID token must say."""

    issuer: str
    audience: str
    algorithms: frozenset[str] = ASYMMETRIC_ALGORITHMS
    leeway: float = 30.0
    max_age: float = 600.0


async def verify_id_token(
    raw: str, jwks: JwksCache, expected: Expected, nonce: str | None
) -> dict[str, Any]:
    """The verified claims of ``raw``, or :class:`IdTokenError`.

    ``nonce`` is the one this login sent (None on refresh: a refreshed ID token carries
    no new nonce); ``max_age`` bounds how old ``iat`` may be.
    """
    try:
        header = jwt.get_unverified_header(raw)
    except jwt.PyJWTError as e:
        raise IdTokenError("invalid-token", "the ID token is not a well-formed JWT") from e
    alg = header.get("alg", "")
    if alg not in expected.algorithms:
        raise IdTokenError("invalid-token", f"ID token algorithm {alg!r} is not accepted")
    key = await jwks.key(str(header.get("kid", "")))
    try:
        claims: dict[str, Any] = jwt.decode(
            raw,
            key=key.key,
            algorithms=[alg],
            audience=expected.audience,
            issuer=expected.issuer,
            leeway=expected.leeway,
            options={"require": ["iss", "aud", "exp", "iat", "sub"]},
        )
    except jwt.ExpiredSignatureError as e:
        raise IdTokenError("token-expired", "the ID token has expired") from e
    except jwt.InvalidAudienceError as e:
        raise IdTokenError("audience-mismatch", "the ID token was issued to another client") from e
    except jwt.InvalidIssuerError as e:
        raise IdTokenError("issuer-mismatch", "the ID token comes from another issuer") from e
    except jwt.PyJWTError as e:
        raise IdTokenError("invalid-token", f"the ID token is invalid ({type(e).__name__})") from e
    audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
    if len(audiences) > 1 and claims.get("azp") != expected.audience:
        raise IdTokenError(
            "audience-mismatch", "the ID token names several audiences but not us as azp"
        )
    if time.time() - float(claims["iat"]) > expected.max_age + expected.leeway:
        raise IdTokenError("token-expired", "the ID token was issued too long ago")
    if nonce is not None and not hmac.compare_digest(str(claims.get("nonce", "")), nonce):
        raise IdTokenError("invalid-token", "the ID token's nonce does not match this login")
    return claims
