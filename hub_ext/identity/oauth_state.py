"""The login's OAuth state, written and read by Qustody alone.

The state cookie holds the state id, the page to return to, the OIDC nonce, the PKCE
verifier and when the login began; the provider gets the state id only. The cookie is
signed by the hub (tornado's secure cookie, ``set_state_cookie``); this module encodes
its contents (base64url JSON, the same shape oauthenticator uses, so its public
``check_state`` would agree) without importing oauthenticator's private helpers: our
login and callback handlers, and the token request, read it through here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import secrets
from typing import Any
from urllib.parse import quote, urlparse


def encode_state(state: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(state).encode("utf-8")).decode("ascii")


def decode_state(text: str | bytes | None) -> dict[str, Any]:
    """The state in ``text``; {} when it is missing or not ours (never raises, never logs
    the text: it comes from the browser)."""
    if not text:
        return {}
    try:
        raw = text.encode("ascii") if isinstance(text, str) else text
        state = json.loads(base64.urlsafe_b64decode(raw).decode("utf-8"))
    except (ValueError, UnicodeError, binascii.Error):
        return {}
    return state if isinstance(state, dict) else {}


def new_state_id() -> str:
    return secrets.token_hex(16)


def pkce_pair() -> tuple[str, str]:
    """(verifier, S256 challenge): RFC 7636, 32 random octets, base64url."""
    verifier = secrets.token_urlsafe(32)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def local_next_url(value: str | None) -> str | None:
    """The ``next`` page as a path on this hub: no scheme or host (an open redirect), and
    no backslash a browser would read as a slash."""
    if not value:
        return None
    parts = urlparse(value.replace("\\", quote("\\")))
    return parts._replace(scheme="", netloc="", path="/" + parts.path.lstrip("/")).geturl()
