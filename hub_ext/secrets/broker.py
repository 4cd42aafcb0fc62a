"""The broker interface the hub delivers from, and its configuration.

``SecretBroker`` (traitlets) chooses the implementation and holds the settings that
matter at delivery; ``Broker`` is what an implementation provides.
"""

from __future__ import annotations

import os
from typing import Any, Protocol

from traitlets import Bool, Float, Int, Unicode, validate
from traitlets.config import LoggingConfigurable

from ..traits import HintedEnum
from .model import CLASS, Secret


class Broker(Protocol):
    """Where the secrets of one spawn come from."""

    broker_name: str

    def secrets_for_spawn(
        self, user: str, server: str, auth_state: dict[str, Any] | None
    ) -> list[Secret]:
        """Every secret the user may hold (the class policy filters them afterwards)."""

    def course_secrets(
        self, user: str, server: str, auth_state: dict[str, Any] | None, course: str,
        names: tuple[str, ...],
    ) -> list[Secret]:
        """The named current secrets of namespace ``course:<course>`` (a course file's
        shared secrets, for one of its members); missing names are left out."""

    def release(self, user: str, server: str) -> None:
        """The server stopped: revoke whatever was obtained for it (tokens, leases)."""

    def outstanding(self) -> list[tuple[str, str]]:
        """(user, server) of everything obtained and not yet released (an earlier run's
        included), so that what a stopped server held is revoked whoever stopped it."""

    def add_own(
        self,
        user: str,
        server: str,
        auth_state: dict[str, Any] | None,
        name: str,
        cls: str,
        value: str,
        at_most: int,
    ) -> Secret:
        """Store a new secret in the user's own namespace, as the user (self-service):
        SecretExists for a name they have, SecretError for anything else refused."""

    def discard_own(
        self, user: str, server: str, auth_state: dict[str, Any] | None, name: str
    ) -> None:
        """Undo ``add_own`` (its audit record could not be written)."""


class SecretBroker(LoggingConfigurable):
    """Where users' secrets come from and how servers claim them."""

    backend = HintedEnum(
        ("embedded", "vault"),
        "embedded",
        "use 'embedded' (the encrypted store on the hub machine) or 'vault' (OpenBao or "
        "Vault; configure c.VaultBroker)",
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
    ticket_key_file = Unicode(
        "",
        config=True,
        help="""The key (0600) the hub signs claim tickets with and the ``qustody`` service
        checks them with. Set by ``hub_ext.server_api.hub.server_api`` (created when
        missing); empty: no tickets, so servers get no secrets.""",
    )

    self_service_class = Unicode(
        "",
        config=True,
        help="""Class of the secrets users store themselves, from their running server, in
        their own ``user:<name>`` namespace (JupyterLab's "move to a secret" after a
        refused save). Empty (default): users cannot store secrets; admins do
        (``qustody secrets put``). It must not be a restricted class
        (``SecretClassPolicy.restricted_classes``), and a user may store only if the class
        policy delivers this class to their server's profile and roles, so the value comes
        back to ``get_secret``. Users never overwrite an existing secret this way.

        .. versionadded:: 0.2
        """,
    )
    self_service_limit = Int(
        50,
        config=True,
        help="""Most secrets a user may hold in their own namespace before self-service
        storing is refused (1-1000): a bound on what one user can put in the store.""",
    )

    @validate("self_service_class")
    def _valid_self_service_class(self, proposal: Any) -> str:
        value = str(proposal["value"])
        if value and not CLASS.fullmatch(value):
            raise ValueError(
                f"SecretBroker.self_service_class {value[:64]!r} is not a class name "
                "(lowercase letters, digits, '-'), or empty to turn self-service off"
            )
        return value

    @validate("self_service_limit")
    def _valid_self_service_limit(self, proposal: Any) -> int:
        if not 1 <= proposal["value"] <= 1000:
            raise ValueError("SecretBroker.self_service_limit must be between 1 and 1000")
        return int(proposal["value"])

    @validate("ticket_ttl")
    def _valid_ttl(self, proposal: Any) -> float:
        if not 1 <= proposal["value"] <= 60:
            raise ValueError("SecretBroker.ticket_ttl must be between 1 and 60 seconds")
        return float(proposal["value"])

    def state_path(self, name: str) -> str:
        return os.path.join(os.path.abspath(os.environ.get("QUSTODY_STATE_DIR", ".demo")), name)
