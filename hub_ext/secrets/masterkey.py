"""The embedded store's master key: 32 random bytes from a file (0600) or the environment."""

from __future__ import annotations

import base64
import binascii
import os
import secrets
import stat
from pathlib import Path

from .model import SecretError

KEY_BYTES = 32


def _decode(text: str, where: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SecretError(
            f"{where} is not base64 (generate one with `openssl rand -base64 32`)"
        ) from None
    if len(key) != KEY_BYTES:
        raise SecretError(f"{where} must decode to {KEY_BYTES} bytes, not {len(key)}")
    return key


def load_master_key(path: str, env_var: str, create: bool) -> bytes:
    """The key from ``env_var`` if set, else from ``path`` (created when ``create``)."""
    if env_var and os.environ.get(env_var):
        return _decode(os.environ[env_var], f"the environment variable {env_var}")
    if not path:
        raise SecretError(
            "no master key: set SecretBroker.master_key_file or the environment variable "
            f"{env_var or '(SecretBroker.master_key_env)'}"
        )
    p = Path(path)
    if not p.exists():
        if not create:
            raise SecretError(
                f"the master key file {path} does not exist; create it with "
                f"`openssl rand -base64 32 > {path}; chmod 600 {path}`"
            )
        p.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode() + "\n")
    mode = p.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SecretError(f"the master key file {path} is readable by others: chmod 600 {path}")
    return _decode(p.read_text(), f"the master key file {path}")
