"""The broker interface the hub delivers from, and its configuration.

``SecretBroker`` (traitlets) chooses the implementation and holds the settings that
matter at delivery; ``Broker`` is what an implementation provides.
"""

from __future__ import annotations

import os
from typing import Any, Protocol

from traitlets import Bool, Float, Unicode, validate
from traitlets.config import LoggingConfigurable

from .model import Secret


class Broker(Protocol):
    """Where the secrets of one spawn come from."""

    broker_name: str

    def secrets_for_spawn(
        self, user: str, server: str, auth_state: dict[str, Any] | None
    ) -> list[Secret]:
        """Every secret the user may hold (the class policy filters them afterwards)."""

    def release(self, user: str, server: str) -> None:
        """The server stopped: revoke whatever was obtained for it (tokens, leases)."""


class SecretBroker(LoggingConfigurable):
    """Where users' secrets come from and how servers claim them."""

    backend = Unicode(
        "embedded",
        config=True,
        help="""``embedded`` (default): the encrypted SQLite store on the hub machine
        (``qustody secrets`` manages it). ``vault``: HashiCorp Vault KV v2, read with
        each user's own Vault token (configure ``VaultBroker``).""",
    )
    db_path = Unicode(
        "",
        config=True,
        help="""SQLite file of the embedded store (created 0600). Empty: ``secrets.sqlite``
        in ``$QUSTODY_STATE_DIR``.""",
    )
    master_key_file = Unicode(
        "",
        config=True,
        help="""File holding the embedded store's master key: base64 of 32 random bytes,
        mode 0600 (``openssl rand -base64 32``). Losing it loses every secret; keep it
        out of the store's backups. Empty: ``secrets.key`` in ``$QUSTODY_STATE_DIR``.""",
    )
    master_key_env = Unicode(
        "QUSTODY_SECRETS_MASTER_KEY",
        config=True,
        help="""Environment variable that, when set, holds the master key (base64) and
        takes precedence over ``master_key_file``.""",
    )
    create_master_key = Bool(
        False,
        config=True,
        help="""Create ``master_key_file`` with a new random key if it does not exist (the
        demo does). Off by default: a production hub must not silently start a new,
        empty store because its key file went missing.""",
    )
    ticket_ttl = Float(
        30.0,
        config=True,
        help="""Seconds a claim ticket stays valid after the spawn (at most 60). A server
        that has not redeemed its ticket by then starts without secrets.""",
    )

    @validate("backend")
    def _valid_backend(self, proposal: Any) -> str:
        if proposal["value"] not in ("embedded", "vault"):
            raise ValueError("SecretBroker.backend must be 'embedded' or 'vault'")
        return str(proposal["value"])

    @validate("ticket_ttl")
    def _valid_ttl(self, proposal: Any) -> float:
        if not 1 <= proposal["value"] <= 60:
            raise ValueError("SecretBroker.ticket_ttl must be between 1 and 60 seconds")
        return float(proposal["value"])

    def state_path(self, name: str) -> str:
        return os.path.join(os.path.abspath(os.environ.get("QUSTODY_STATE_DIR", ".demo")), name)
