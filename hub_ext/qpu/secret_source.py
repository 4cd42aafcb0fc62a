"""``QpuGateway.credentials`` backed by the secret broker's store (embedded or Vault).

``qpu_gateway`` (hub.py) writes ``c.QpuGateway.credentials = SecretStoreCredentials(...)``
into the generated gateway config from the hub's ``SecretBroker`` settings
(``gateway_settings``):

- embedded store: ``store="hub"``. The gateway asks the hub's ``qustody`` service
  (``GET <service_url>api/qpu/credentials/<backend>``, with the API token the hub gave
  the ``qpu`` service); the service reads the store with its master key and answers that
  backend's ``service:qpu`` entry only (hub_ext/server_api). The gateway holds no key:
  its config and environment name neither the master key nor its file, so nothing it is
  given decrypts a user's secret (run as the hub's own unix user, the default, it could
  still read the key file from disk: docs/qpu.md says how to separate them).
  ``store="embedded"`` (the store opened read-only with the master key) is the hub's
  own reader behind that endpoint; the gateway refuses to start with it.
- Vault: KV v2 read with the gateway's own token or AppRole.

Each call reads the store again, so a rotation is seen by the next job; a missing entry
or an unreadable store raises ``CredentialError`` naming the backend and where its
credentials were looked for, never a value. Layout: hub_ext/secrets/provider.py.

The gateway reads the ``service:qpu`` namespace and nothing else, enforced on every path:

- hub: the ``qustody`` service serves only ``service:qpu`` entries and only to the
  ``qpu`` service's token; the backend name is checked on both sides.
- embedded: the only input is a backend name, checked as a service entry name (no
  ``/``, no ``:``), and the namespace is the constant ``service:qpu``; a row relabelled
  into that namespace by a database writer fails to open (its value is sealed with the
  namespace it was written in) and is reported, never returned.
- Vault: the read path is ``<mount>/data/<base>/service/qpu/<backend>`` with every part
  checked, and before the first read with a token (each new token, each AppRole login)
  the gateway asks Vault what that token may do on users', projects', courses' and other
  services' paths (``sys/capabilities-self``, allowed to every token by Vault's default
  policy). A token that could read any of them is refused: the gateway's policy must be
  ``vault_policy()``, read on ``service/qpu/*`` only.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import sqlite3
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

from traitlets import Bool, Float, Unicode, default, validate
from traitlets.config import Config, LoggingConfigurable

from hub_ext.secrets import provider
from hub_ext.secrets.embedded import EmbeddedStore
from hub_ext.secrets.masterkey import load_master_key
from hub_ext.secrets.model import SecretError, check_name, parse_namespace

from .credentials import CredentialError

STORES = ("hub", "embedded", "vault")
#: one segment of a Vault mount or base path: no empty segment, no "." or ".."
_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}")
#: namespaces the gateway must not be able to read (probed with random names)
_FOREIGN = ("user", "project", "course")


def _checked_path(value: str, what: str) -> str:
    parts = value.split("/")
    if not value or not all(_SEGMENT.fullmatch(p) and p not in (".", "..") for p in parts):
        raise ValueError(
            f"SecretStoreCredentials.{what} = {value!r}: give '/'-separated names of letters, "
            "digits, '_', '.', '-' (no empty part, no '..'), as the hub's VaultBroker setting"
        )
    return value


def vault_policy(kv_mount: str = "secret", base_path: str = "qustody") -> str:
    """The Vault policy (HCL) to give the gateway's token or AppRole: read on the
    ``service/qpu`` entries, nothing else."""
    return (f'path "{kv_mount}/data/{base_path}/service/qpu/*" '
            '{ capabilities = ["read"] }\n')


class SecretStoreCredentials(LoggingConfigurable):
    """Provider credentials of the gateway's backends, read from the secret broker."""

    store = Unicode(
        "hub",
        config=True,
        help="""``hub``: ask the hub, which reads its embedded store (manage it with
        ``qustody secrets qpu``) and answers the ``service:qpu`` entries to the gateway's
        own token only; the gateway holds no key. ``vault``: HashiCorp Vault KV v2 at
        ``<vault_kv_mount>/<vault_base_path>/service/qpu/<backend>``, read with the
        gateway's own token. ``embedded``: the store opened read-only with the hub's
        master key, for the hub's own use (the gateway refuses it: whoever holds the
        master key can decrypt every user's secret).""",
    )
    service_url = Unicode(
        config=True,
        help="""The hub's ``qustody`` service (``store='hub'``; hub_ext.server_api), e.g.
        ``http://127.0.0.1:8000/services/qustody/``. Default: ``$QUSTODY_API_URL``. The
        token is always the gateway's own ``$JUPYTERHUB_API_TOKEN``, read from the
        environment, never from a config file.""",
    )
    hub_timeout = Float(10.0, config=True, help="Seconds to wait for the service's answer.")
    db_path = Unicode("", config=True, help="The embedded store's SQLite file (the hub's).")
    master_key_file = Unicode(
        "",
        config=True,
        help="""``store='embedded'`` only (the hub's reader): the hub's master key file
        (mode 0600). Read at each call; never copied. Never give it to the gateway.""",
    )
    master_key_env = Unicode(
        "QUSTODY_SECRETS_MASTER_KEY",
        config=True,
        help="""``store='embedded'`` only: environment variable holding the master key;
        wins over the file when set.""",
    )
    vault_url = Unicode("", config=True, help="Vault address (``store='vault'``).")
    vault_ca_file = Unicode("", config=True, help="CA bundle of Vault's certificate.")
    vault_kv_mount = Unicode("secret", config=True, help="Mount point of the KV v2 engine.")
    vault_base_path = Unicode("qustody", config=True, help="Path under the mount (as the hub's).")
    vault_timeout = Float(10.0, config=True, help="Seconds to wait for Vault.")
    vault_token_file = Unicode(
        config=True,
        help="""File holding the gateway's Vault token (0600), with read access to
        ``<vault_kv_mount>/data/<vault_base_path>/service/qpu/*`` only. Read at each
        call, so a renewed token is picked up. Default: ``$QUSTODY_QPU_VAULT_TOKEN_FILE``.""",
    )
    vault_approle_role_id = Unicode(
        "", config=True, help="AppRole role id of the gateway (instead of a token file)."
    )
    vault_approle_secret_id_file = Unicode(
        "", config=True, help="File holding the gateway's AppRole secret id (0600)."
    )
    vault_approle_secret_id_wrapped = Bool(
        False, config=True, help="The secret id file holds a response-wrapping token."
    )

    @default("service_url")
    def _default_service_url(self) -> str:
        return os.environ.get("QUSTODY_API_URL", "")

    @default("vault_token_file")
    def _default_token_file(self) -> str:
        return os.environ.get("QUSTODY_QPU_VAULT_TOKEN_FILE", "")

    @validate("vault_kv_mount", "vault_base_path")
    def _valid_vault_path(self, proposal: Any) -> str:
        return _checked_path(str(proposal["value"]), proposal["trait"].name)

    @validate("vault_url")
    def _valid_vault_url(self, proposal: Any) -> str:
        from hub_ext.secrets.vault import valid_url

        value = str(proposal["value"])
        return valid_url(value, "SecretStoreCredentials.vault_url") if value else ""

    @validate("store")
    def _valid_store(self, proposal: Any) -> str:
        if proposal["value"] not in STORES:
            raise ValueError("SecretStoreCredentials.store must be 'hub', 'vault' or 'embedded'")
        return str(proposal["value"])

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if self.store == "embedded" and not self.db_path:
            raise ValueError("SecretStoreCredentials.db_path is not set (the hub's store)")
        if self.store == "embedded" and not (self.master_key_file or self.master_key_env):
            raise ValueError("SecretStoreCredentials: set master_key_file (the hub's key)")
        if self.store == "hub" and not self.service_url.startswith(("http://", "https://")):
            raise ValueError(
                "SecretStoreCredentials.service_url is not an http(s) URL: set it to the "
                "hub's qustody service (hub_ext.server_api; qpu_gateway(credentials_url=...) "
                "does) or $QUSTODY_API_URL"
            )
        if self.store == "vault" and not self.vault_url:
            raise ValueError("SecretStoreCredentials.vault_url is not set")
        if self.store == "vault" and not (self.vault_token_file or self.vault_approle_role_id):
            raise ValueError(
                "SecretStoreCredentials: give the gateway a Vault login: vault_token_file "
                "(or $QUSTODY_QPU_VAULT_TOKEN_FILE) or vault_approle_role_id"
            )
        self._approle: Any = None
        self._lock = threading.Lock()
        self._scoped: set[str] = set()  # hashes of the tokens found limited to service:qpu

    def __deepcopy__(self, memo: dict[int, Any]) -> SecretStoreCredentials:
        """One source per gateway: traitlets copies config values, and this holds a lock."""
        return self

    def holds_master_key(self) -> bool:
        """Whether this source decrypts the store itself (the hub's reader, never the
        gateway's: the master key opens every user's secret too)."""
        return self.store == "embedded"

    def where(self, backend: str) -> str:
        """Where ``backend``'s credentials are looked for (for messages)."""
        if self.store == "vault":
            return f"Vault {self.vault_kv_mount}/{self._vault_path(backend)}"
        if self.store == "hub":
            return f"{provider.entry(backend)} in the hub's secret store"
        return f"{provider.entry(backend)} in the secret store {self.db_path}"

    def read(self, backend: str) -> dict[str, str] | None:
        """The backend's fields, or None when it has none; ``SecretError`` otherwise."""
        check_name(backend, parse_namespace(provider.NAMESPACE))
        return {"hub": self._hub, "vault": self._vault, "embedded": self._embedded}[
            self.store](backend)

    def __call__(self, backend: str) -> Mapping[str, str]:
        try:
            fields = self.read(backend)
        except SecretError as e:
            raise CredentialError(
                f"provider credentials for backend {backend!r} are unavailable: {e}"
            ) from None
        if fields is None:
            raise CredentialError(
                f"backend {backend!r} has no provider credentials: {self.where(backend)} "
                f"does not exist; an admin adds them with `qustody secrets qpu put {backend}`"
            )
        return fields

    # -- hub -------------------------------------------------------------------------------

    def _hub(self, backend: str) -> dict[str, str] | None:
        token = os.environ.get("JUPYTERHUB_API_TOKEN", "")
        if not token:
            raise SecretError(
                "the gateway has no hub API token ($JUPYTERHUB_API_TOKEN): run it as the "
                "hub's managed service"
            )
        url = (self.service_url.rstrip("/") + "/api/qpu/credentials/"
               + urllib.parse.quote(backend, safe=""))
        # the scheme was checked (http/https) in __init__; no proxy from the environment
        # ever sees the token
        request = urllib.request.Request(url, headers={"Authorization": f"token {token}"})  # noqa: S310
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(request, timeout=self.hub_timeout) as answer:
                body = json.loads(answer.read(1024 * 1024))
        except urllib.error.HTTPError as e:
            raise SecretError(f"the hub refused the gateway's read ({e.code}: "
                              f"{_hub_message(e)})") from None
        except (OSError, ValueError) as e:
            raise SecretError(
                f"the hub's qustody service at {self.service_url} cannot be asked "
                f"({type(e).__name__})"
            ) from None
        fields = body.get("fields") if isinstance(body, dict) else None
        if fields is None:
            return None
        if not isinstance(fields, dict) or not fields or not all(
            isinstance(k, str) and provider.FIELD.fullmatch(k) and isinstance(v, str) and v
            for k, v in fields.items()
        ):
            raise SecretError("the hub's answer is not a map of field names to text")
        return {str(k): str(v) for k, v in fields.items()}

    # -- embedded --------------------------------------------------------------------------

    def _embedded(self, backend: str) -> dict[str, str] | None:
        key = load_master_key(self.master_key_file, self.master_key_env, create=False)
        store = EmbeddedStore(self.db_path, key, read_only=True)
        try:
            return provider.read_fields(store, backend)
        except sqlite3.Error as e:
            raise SecretError(f"the secret store {self.db_path} cannot be read ({e})") from None
        finally:
            store.close()

    # -- Vault -----------------------------------------------------------------------------

    def _vault_path(self, backend: str) -> str:
        return f"{self.vault_base_path}/service/qpu/{backend}"

    def _vault(self, backend: str) -> dict[str, str] | None:
        from hvac import exceptions as vault_errors
        from requests import RequestException

        path = self._vault_path(backend)
        where = f"{self.vault_kv_mount}/{path}"
        for attempt in (1, 2):
            try:
                result = self._vault_client(fresh=attempt == 2).secrets.kv.v2.read_secret_version(
                    path=path, mount_point=self.vault_kv_mount, raise_on_deleted_version=True
                )
                break
            except vault_errors.InvalidPath:
                return None
            except vault_errors.Forbidden:
                if attempt == 1 and self.vault_approle_role_id:
                    continue  # the AppRole token may have expired: log in again once
                raise SecretError(
                    f"Vault refused the gateway's read of {where} (permission denied): check "
                    "its token and policy"
                ) from None
            except vault_errors.VaultError as e:
                raise SecretError(f"Vault failed reading {where} ({type(e).__name__})") from None
            except RequestException as e:
                raise SecretError(
                    f"Vault at {self.vault_url} cannot be reached ({type(e).__name__})"
                ) from None
        data = (result.get("data") or {}).get("data") or {}
        if not isinstance(data, dict) or not data or not all(
            isinstance(k, str) and provider.FIELD.fullmatch(k) and isinstance(v, str) and v
            for k, v in data.items()
        ):
            raise SecretError(
                f"Vault {where} must hold fields of text (field names: letters, digits, '_')"
            )
        for k, v in data.items():
            provider.check_field_value(k, v)
        return {str(k): str(v) for k, v in data.items()}

    def _vault_client(self, fresh: bool = False) -> Any:
        from hub_ext.secrets.vault import _read, approle_login, vault_client

        if not self.vault_approle_role_id:
            token = _read(self.vault_token_file, "SecretStoreCredentials.vault_token_file")
            client = vault_client(self.vault_url, self.vault_ca_file, self.vault_timeout, token)
            self._check_scope(client)
            return client
        with self._lock:
            if self._approle is None or fresh:
                client = vault_client(self.vault_url, self.vault_ca_file, self.vault_timeout)
                approle_login(
                    client,
                    self.vault_approle_role_id,
                    self.vault_approle_secret_id_file,
                    self.vault_approle_secret_id_wrapped,
                    "SecretStoreCredentials.vault_approle_secret_id_file",
                )
                self._check_scope(client)
                self._approle = client
            return self._approle

    def foreign_paths(self) -> list[str]:
        """Paths the gateway's token must not read: another user's, project's and
        course's entries and another service's, under random names."""
        probe = "qpu-probe-" + secrets.token_hex(4)
        base = f"{self.vault_kv_mount}/data/{self.vault_base_path}"
        return [*(f"{base}/{kind}/{probe}/{probe.upper().replace('-', '_')}"
                  for kind in _FOREIGN),
                f"{base}/service/{probe}/entry", f"{base}/{probe}",
                f"{self.vault_kv_mount}/data/{probe}"]

    def _check_scope(self, client: Any) -> None:
        """Refuse a token that could read anything outside ``service/qpu`` (once per
        token: its hash is remembered, never the token)."""
        from requests import RequestException

        mark = hashlib.sha256(str(client.token).encode()).hexdigest()
        if mark in self._scoped:
            return
        paths = self.foreign_paths()
        try:
            answer = client.adapter.post("/v1/sys/capabilities-self", json={"paths": paths})
            body = answer.json() if hasattr(answer, "json") else answer
        except RequestException as e:
            raise SecretError(
                f"Vault at {self.vault_url} cannot be reached ({type(e).__name__})"
            ) from None
        except Exception as e:
            raise SecretError(
                "Vault did not say what the gateway's token may read (sys/capabilities-self: "
                f"{type(e).__name__}); the gateway reads nothing with a token it cannot check"
            ) from None
        data = body.get("data", body) if isinstance(body, dict) else {}
        for path in paths:
            caps = data.get(path) if isinstance(data, dict) else None
            if not isinstance(caps, list):
                raise SecretError(
                    "Vault did not say what the gateway's token may do on "
                    f"{path} (sys/capabilities-self); the gateway reads nothing with a token "
                    "it cannot check"
                )
            if set(caps) - {"deny"}:
                raise SecretError(
                    f"the gateway's Vault token may {'/'.join(sorted(caps))} {path}, outside "
                    "service/qpu: give it only the policy "
                    f"{vault_policy(self.vault_kv_mount, self.vault_base_path).strip()}"
                )
        self._scoped.add(mark)


def _hub_message(error: urllib.error.HTTPError) -> str:
    """The hub's JSON error message (it names no value), shortened."""
    try:
        body = json.loads(error.read(4096) or b"{}")
    except (OSError, ValueError):
        return str(error.reason)[:200]
    return str(body.get("message") if isinstance(body, dict) else error.reason)[:300]


def hub_reader_settings(c: Config) -> dict[str, Any] | None:
    """Settings of the hub's own reader of its embedded store (``store='embedded'``,
    behind the credentials endpoint), or None with the Vault broker."""
    from hub_ext.secrets.broker import SecretBroker

    broker = SecretBroker(config=c)
    if broker.backend == "vault":
        return None
    return {
        "store": "embedded",
        "db_path": os.path.abspath(broker.db_path or broker.state_path("secrets.sqlite")),
        "master_key_file": os.path.abspath(
            broker.master_key_file or broker.state_path("secrets.key")
        ),
        "master_key_env": broker.master_key_env,
    }


def gateway_settings(c: Config, service_url: str = "") -> dict[str, Any]:
    """``SecretStoreCredentials`` settings for the gateway, from the hub's config ``c``:
    ``store='hub'`` with the embedded broker, Vault's place with the Vault broker, then
    any ``c.SecretStoreCredentials`` given in the hub config (e.g. the gateway's Vault
    login). Never the master key nor its file."""
    from hub_ext.secrets.broker import SecretBroker

    broker = SecretBroker(config=c)
    settings: dict[str, Any]
    if broker.backend == "vault":
        vault = c.VaultBroker if "VaultBroker" in c else {}
        settings = {
            "store": "vault",
            "vault_url": vault.get("url", ""),
            "vault_ca_file": vault.get("ca_file", ""),
            "vault_kv_mount": vault.get("kv_mount", "secret"),
            "vault_base_path": vault.get("base_path", "qustody"),
        }
    else:
        settings = {"store": "hub", **({"service_url": service_url} if service_url else {})}
    own = c.SecretStoreCredentials if "SecretStoreCredentials" in c else {}
    settings.update({str(k): v for k, v in own.items()})
    if settings.get("store") == "embedded":
        raise ValueError(
            "c.SecretStoreCredentials.store = 'embedded' would give the QPU gateway the "
            "hub's master key, which decrypts every user's secret: leave it unset (the "
            "gateway asks the hub) or use 'vault'"
        )
    # a bad setting stops the hub here, not at a job (the URL is the gateway's own)
    SecretStoreCredentials(**{"service_url": "http://127.0.0.1/services/qustody/", **settings})
    return settings


def gateway_config_lines(c: Config, service_url: str = "") -> str:
    """The lines of the generated gateway config that set ``QpuGateway.credentials``
    (``service_url``: the hub's ``qustody`` service, which answers the embedded store's
    entries)."""
    settings = gateway_settings(c, service_url)
    return (
        "from hub_ext.qpu.secret_source import SecretStoreCredentials  # noqa: E402\n"
        f"c.QpuGateway.credentials = SecretStoreCredentials(**{settings!r})\n"
    )


__all__ = ["SecretStoreCredentials", "gateway_config_lines", "gateway_settings",
           "hub_reader_settings", "vault_policy"]
