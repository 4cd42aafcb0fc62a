"""The Vault broker: HashiCorp Vault KV v2, read with each user's own Vault token.

At a spawn the hub logs in to Vault's JWT auth method with the user's own OIDC ID
token (``auth_state["id_token"]``, stored by the authenticator), so what a server
receives is exactly what Vault's policies give that user: the hub holds no policy
that can read everyone's secrets. The user's token is kept only while the server runs
(for ``refresh``) and revoked when it stops.

Layout in KV v2 (``kv_mount``): one secret per path
``<base_path>/<kind>/<namespace>/<NAME>`` whose data is ``{"value": ..., "class": ...}``
(what ``qustody secrets put`` stores in the embedded broker), e.g.
``qustody/user/alice/QISKIT_IBM_TOKEN``. Namespaces a user can read are listed in
``namespaces`` (templates); paths the user's policy denies are skipped.

The hub's own login (``hub_auth``: AppRole, optionally with a response-wrapped
secret id, or JWT) is used only to revoke leases a read returned, and the tokens of
servers that were running when the hub restarted: what each running server obtained (the
token's *accessor*, never the token, and lease ids) is kept in ``release_file``, so a
restarted hub still revokes them when those servers stop.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import tempfile
import threading
import urllib.parse
from collections.abc import Callable
from functools import partial
from typing import Any

import hvac
from hvac import exceptions as vault_errors
from traitlets import Bool, Float, List, Unicode, validate
from traitlets.config import LoggingConfigurable

from ..traits import HintedEnum
from .model import (
    CLASS,
    MIN_VALUE_BYTES,
    NAME,
    SERVICE_KINDS,
    Namespace,
    Secret,
    SecretError,
    SecretExists,
    check_class,
    check_name,
    check_value,
    parse_namespace,
)


def hub_policy() -> str:
    """The Vault policy of the hub's own login (``hub_auth``): revoke leases, and revoke
    users' tokens by accessor after a hub restart. It reads nothing."""
    return (
        'path "sys/leases/revoke" { capabilities = ["update"] }\n'
        'path "auth/token/revoke-accessor" { capabilities = ["update"] }\n'
    )


class VaultBroker(LoggingConfigurable):
    """Secrets from HashiCorp Vault, read with the user's identity."""

    broker_name = "vault"

    url = Unicode(
        "",
        config=True,
        help="Vault address, e.g. ``https://vault.example.org:8200``. Required.",
    )
    ca_file = Unicode(
        "",
        config=True,
        help="CA bundle that signed Vault's certificate (empty: the system's).",
    )
    kv_mount = Unicode("secret", config=True, help="Mount point of the KV version 2 engine.")
    base_path = Unicode("qustody", config=True, help="Path under the KV mount holding namespaces.")
    namespaces = List(
        Unicode(),
        default_value=["user:{username}"],
        config=True,
        help="""Namespaces read for a user (``{username}`` is replaced), first wins on a
        name clash, e.g. ``["user:{username}", "project:qaoa"]``. A namespace the user's
        Vault policy does not allow is skipped.""",
    )
    jwt_mount = Unicode("jwt", config=True, help="Mount point of Vault's JWT auth method.")
    jwt_role = Unicode(
        "qustody-user",
        config=True,
        help="""Vault JWT role users log in with. Give it a short ``token_ttl`` (minutes)
        and policies templated on the identity (``{{identity.entity.aliases...name}}``).""",
    )
    id_token_key = Unicode(
        "id_token",
        config=True,
        help="Key of the raw OIDC ID token in the user's ``auth_state``.",
    )
    hub_auth = HintedEnum(
        ("", "approle", "jwt"),
        "",
        "must be 'approle', 'jwt' or empty (no hub login: leases are not revoked)",
        config=True,
        help="""The hub's own Vault login, used only to revoke leases: ``approle``,
        ``jwt`` or empty (none; leases then expire with their TTL).""",
    )
    approle_role_id = Unicode("", config=True, help="AppRole role id of the hub.")
    approle_secret_id_file = Unicode(
        "",
        config=True,
        help="File holding the hub's AppRole secret id (0600).",
    )
    approle_secret_id_wrapped = Bool(
        False,
        config=True,
        help="""The file holds a response-wrapping token that wraps the secret id (Vault's
        secure introduction); the hub unwraps it once at start-up.""",
    )
    hub_jwt_file = Unicode("", config=True, help="File with the hub's JWT for ``hub_auth='jwt'``.")
    hub_jwt_role = Unicode("qustody-hub", config=True, help="Vault JWT role of the hub.")
    timeout = Float(10.0, config=True, help="Seconds to wait for Vault.")
    release_file = Unicode(
        "",
        config=True,
        help="""JSON file (0600) recording, per running server, the accessor of the user's
        Vault token and the lease ids its reads returned, so that a restarted hub revokes
        them when the server stops. Accessors can only look up or revoke a token, never
        read with it. Revoking by accessor needs ``hub_auth`` and ``update`` on
        ``auth/token/revoke-accessor`` in the hub's policy. Empty: ``vault-release.json``
        in ``$QUSTODY_STATE_DIR``.""",
    )

    @validate("url")
    def _valid_vault_url(self, proposal: Any) -> str:
        return valid_url(str(proposal["value"])) if proposal["value"] else ""

    @validate("namespaces")
    def _valid_namespaces(self, proposal: Any) -> list[str]:
        for template in proposal["value"]:
            try:
                ns = parse_namespace(template.replace("{username}", "x"))
            except SecretError as e:
                raise ValueError(f"VaultBroker.namespaces: {e}") from None
            if ns.kind in SERVICE_KINDS:
                raise ValueError(
                    f"VaultBroker.namespaces: {template} belongs to a hub service; users "
                    "never receive it"
                )
        return list(proposal["value"])

    _secret_id = ""  # the hub's AppRole secret id once unwrapped, for logging in again

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not self.url:
            raise SecretError("SecretBroker.backend is 'vault' but VaultBroker.url is not set")
        self._tokens: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()
        self._release_path = self.release_file or os.path.join(
            os.path.abspath(os.environ.get("QUSTODY_STATE_DIR", ".demo")), "vault-release.json"
        )
        # per server: {"accessor": ..., "leases": [...]}, this hub's and a previous one's
        self._obtained: dict[tuple[str, str], dict[str, Any]] = self._load_release()
        self._hub: hvac.Client | None = self._hub_login() if self.hub_auth else None
        if self._obtained and self._hub is None:
            self.log.warning(
                "Vault tokens of %d server(s) that ran before this hub started cannot be "
                "revoked when they stop (VaultBroker.hub_auth is not set): they expire "
                "with the JWT role's token_ttl", len(self._obtained),
            )

    # -- what a running server obtained, kept across hub restarts ------------------------

    def _load_release(self) -> dict[tuple[str, str], dict[str, Any]]:
        try:
            with open(self._release_path, encoding="utf-8") as f:
                raw = json.load(f)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            raise SecretError(
                f"VaultBroker.release_file {self._release_path} is unreadable ({e}): fix or "
                "remove it (tokens it listed then expire with their TTL)"
            ) from None
        out: dict[tuple[str, str], dict[str, Any]] = {}
        for key, entry in (raw if isinstance(raw, dict) else {}).items():
            user, _, server = str(key).rpartition("/")  # server names hold no '/'
            leases = entry.get("leases") if isinstance(entry, dict) else None
            if isinstance(entry, dict):
                out[(user, server)] = {
                    "accessor": str(entry.get("accessor") or ""),
                    "leases": [str(x) for x in leases] if isinstance(leases, list) else [],
                }
        return out

    def _save_release(self) -> None:
        """Atomically rewrite the file (callers hold ``_lock``)."""
        data = {f"{u}/{s}": entry for (u, s), entry in self._obtained.items()}
        folder = os.path.dirname(self._release_path) or "."
        os.makedirs(folder, mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".vault-release.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f)
                f.flush()
                os.fsync(f.fileno())  # a crash leaves the old file or the new, never empty
            os.replace(tmp, self._release_path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def _client(self, token: str | None = None) -> hvac.Client:
        return vault_client(self.url, self.ca_file, self.timeout, token)

    def _hub_login(self) -> hvac.Client:
        client = self._client()
        try:
            if self.hub_auth == "approle" and self._secret_id:  # logging in again
                client.auth.approle.login(role_id=self.approle_role_id,
                                          secret_id=self._secret_id)
            elif self.hub_auth == "approle":
                self._secret_id = approle_login(
                    client,
                    self.approle_role_id,
                    self.approle_secret_id_file,
                    self.approle_secret_id_wrapped,
                    "VaultBroker.approle_secret_id_file",
                )
            else:
                jwt = _read(self.hub_jwt_file, "VaultBroker.hub_jwt_file")
                client.auth.jwt.jwt_login(role=self.hub_jwt_role, jwt=jwt, path=self.jwt_mount)
        except vault_errors.VaultError as e:
            raise SecretError(f"the hub could not log in to Vault ({type(e).__name__})") from None
        return client

    # -- the Broker interface ----------------------------------------------------------

    def secrets_for_spawn(
        self, user: str, server: str, auth_state: dict[str, Any] | None
    ) -> list[Secret]:
        client = self._client(self._user_token(user, server, auth_state))
        out: dict[str, Secret] = {}
        leases: list[str] = []
        for template in self.namespaces:
            ns = parse_namespace(template.replace("{username}", user))
            for secret, lease in self._read_namespace(client, ns):
                if secret.name not in out:
                    out[secret.name] = secret
                if lease:
                    leases.append(lease)
        if leases:
            with self._lock:
                entry = self._obtained.setdefault((user, server), {"accessor": "", "leases": []})
                entry["leases"].extend(leases)
                self._save_release()
        return list(out.values())

    def course_secrets(
        self, user: str, server: str, auth_state: dict[str, Any] | None, course: str,
        names: tuple[str, ...],
    ) -> list[Secret]:
        """Read with the user's own Vault token: Vault's policies still decide (a path
        the token may not read gives nothing)."""
        client = self._client(self._user_token(user, server, auth_state))
        found = self._read_namespace(client, parse_namespace(f"course:{course}"), names)
        leases = [lease for _, lease in found if lease]
        if leases:
            with self._lock:
                entry = self._obtained.setdefault((user, server), {"accessor": "", "leases": []})
                entry["leases"].extend(leases)
                self._save_release()
        return [s for s, _ in found]

    def outstanding(self) -> list[tuple[str, str]]:
        with self._lock:
            return list(self._obtained)

    def release(self, user: str, server: str) -> None:
        with self._lock:
            token = self._tokens.pop((user, server), None)
            entry = self._obtained.pop((user, server), None)
        entry = entry or {"accessor": "", "leases": []}
        try:
            self._revoke(user, server, token, entry)
        except Exception as e:
            # Kept (in the release file too): the next start of this server, a release, or
            # a restarted hub revokes it. Until then it lives out its TTL.
            self.log.error("Vault: %s's token or leases (server %r) could not be revoked "
                           "(%s); kept to revoke later", user, server, type(e).__name__)
            with self._lock:
                if (user, server) not in self._obtained and (entry["accessor"] or entry["leases"]):
                    self._obtained[(user, server)] = entry
        # forgotten only after revoking: a failed write must not skip the revocation
        with self._lock:
            try:
                self._save_release()
            except OSError as e:
                self.log.error("Could not update VaultBroker.release_file %s: %s",
                               self._release_path, e)

    def _revoke(self, user: str, server: str, token: str | None, entry: dict[str, Any]) -> None:
        if token:
            with contextlib.suppress(vault_errors.Forbidden):  # already expired or revoked
                self._client(token).auth.token.revoke_self()
        elif entry["accessor"]:  # obtained before this hub started
            if self._hub is None:
                self.log.warning(
                    "%s's Vault token (server %r) from before the hub restarted is left to "
                    "expire: set VaultBroker.hub_auth to revoke it", user, server,
                )
            else:
                # an accessor that no longer exists (token expired) is a 400: nothing to do
                with contextlib.suppress(vault_errors.InvalidRequest):
                    self._as_hub(lambda hub: hub.auth.token.revoke_accessor(entry["accessor"]))
                entry["accessor"] = ""
        if entry["leases"] and self._hub is not None:
            for lease in list(entry["leases"]):
                self._as_hub(partial(_revoke_lease, lease))
                entry["leases"].remove(lease)

    def _as_hub(self, call: Callable[[hvac.Client], Any]) -> Any:
        """``call`` with the hub's own Vault client, logged in again once if Vault refuses
        it (its token's TTL ran out: it is never renewed). A refusal after that raises."""
        assert self._hub is not None
        try:
            return call(self._hub)
        except vault_errors.Forbidden:
            try:
                self._hub.auth.token.lookup_self()
            except vault_errors.Forbidden:  # the token is gone: log in again
                self._hub = self._hub_login()
                return call(self._hub)
            raise  # a live token Vault's policy refuses this: logging in again changes nothing

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
        """Written with the user's own Vault token, so Vault's policy decides whether they
        may; check-and-set 0 makes Vault itself refuse a name that exists."""
        ns = parse_namespace(f"user:{user}")
        check_name(name, ns)
        check_class(cls)
        text = check_value(value.encode("utf-8", "surrogatepass"))
        client = self._client(self._user_token(user, server, auth_state))
        base = f"{self.base_path}/{ns.kind}/{ns.name}"
        kv = client.secrets.kv.v2
        try:
            keys = kv.list_secrets(path=base, mount_point=self.kv_mount)["data"]["keys"]
        except vault_errors.InvalidPath:
            keys = []  # nothing stored yet
        except vault_errors.Forbidden:
            # without list, a stored secret would never be read back (nor counted)
            raise SecretError(
                f"Vault's policy does not let you list {self.kv_mount}/{base}: ask an admin "
                "to store it, or to allow list and create on your own path"
            ) from None
        if len(keys) >= at_most:
            raise SecretError(
                f"you already hold {len(keys)} secrets of your own, the most this hub allows "
                f"(SecretBroker.self_service_limit = {at_most}): ask an admin to remove some"
            )
        try:
            result = kv.create_or_update_secret(
                path=f"{base}/{name}",
                secret={"value": text, "class": cls},
                cas=0,
                mount_point=self.kv_mount,
            )
        except vault_errors.Forbidden:
            raise SecretError(
                f"Vault's policy does not let you write {self.kv_mount}/{base}/{name}: ask "
                "an admin to store it, or to allow writes to your own path"
            ) from None
        except vault_errors.InvalidRequest as e:
            if "check-and-set" not in str(e):
                raise SecretError(
                    f"Vault refused to store {name} ({type(e).__name__}); ask an admin"
                ) from None
            raise SecretExists(  # check-and-set 0: the path has versions
                f"you already have a secret named {name} in Vault: choose another name"
            ) from None
        version = int((result or {}).get("data", {}).get("version") or 1)
        return Secret(ns, name, cls, version, text)

    def discard_own(
        self, user: str, server: str, auth_state: dict[str, Any] | None, name: str
    ) -> None:
        client = self._client(self._user_token(user, server, auth_state))
        client.secrets.kv.v2.delete_metadata_and_all_versions(
            path=f"{self.base_path}/user/{user}/{name}", mount_point=self.kv_mount
        )

    # -- helpers -------------------------------------------------------------------------

    def _user_token(self, user: str, server: str, auth_state: dict[str, Any] | None) -> str:
        with self._lock:
            token = self._tokens.get((user, server))
        if token:
            try:
                self._client(token).auth.token.lookup_self()
                return token
            except vault_errors.VaultError:
                pass  # expired: log in again with the current ID token
        id_token = (auth_state or {}).get(self.id_token_key)
        if not isinstance(id_token, str) or not id_token:
            raise SecretError(
                f"{user} has no OIDC ID token in auth_state[{self.id_token_key!r}]: Vault "
                "secrets need an OIDC login with c.Authenticator.enable_auth_state = True"
            )
        client = self._client()
        try:
            result = client.auth.jwt.jwt_login(
                role=self.jwt_role, jwt=id_token, path=self.jwt_mount
            )
        except vault_errors.VaultError as e:
            raise SecretError(
                f"Vault refused {user}'s login ({type(e).__name__}): check the JWT role "
                f"{self.jwt_role!r} and that the ID token has not expired"
            ) from None
        token = str(result["auth"]["client_token"])
        with self._lock:
            stale = self._obtained.get((user, server), {}).get("accessor", "")
            self._tokens[(user, server)] = token
            entry = self._obtained.setdefault((user, server), {"accessor": "", "leases": []})
            entry["accessor"] = str(result["auth"].get("accessor") or "")
            self._save_release()
        if stale and stale != entry["accessor"] and self._hub is not None:
            # a token from before a hub restart that no stop released: revoke it now
            try:
                with contextlib.suppress(vault_errors.InvalidRequest):
                    self._as_hub(lambda hub: hub.auth.token.revoke_accessor(stale))
            except Exception as e:  # the new token is good; the old one lives out its TTL
                self.log.error("Vault: %s's earlier token (server %r) could not be revoked "
                               "(%s)", user, server, type(e).__name__)
        return token

    def _read_namespace(
        self, client: hvac.Client, ns: Namespace, names: tuple[str, ...] | None = None
    ) -> list[tuple[Secret, str]]:
        """Every secret of ``ns`` the token may read, or only ``names`` (read one by one,
        nothing else listed)."""
        base = f"{self.base_path}/{ns.kind}/{ns.name}"
        kv = client.secrets.kv.v2
        if names is not None:
            keys = list(names)
        else:
            try:
                keys = kv.list_secrets(path=base, mount_point=self.kv_mount)["data"]["keys"]
            except (vault_errors.Forbidden, vault_errors.InvalidPath):
                return []  # not this user's, or empty
        out: list[tuple[Secret, str]] = []
        for key in sorted(keys):
            if key.endswith("/") or not NAME.fullmatch(key):
                continue
            try:
                result = kv.read_secret_version(
                    path=f"{base}/{key}", mount_point=self.kv_mount, raise_on_deleted_version=True
                )
            except (vault_errors.Forbidden, vault_errors.InvalidPath):
                continue
            data = result["data"]["data"] or {}
            value, cls = data.get("value"), data.get("class")
            if not isinstance(value, str) or len(value.encode()) < MIN_VALUE_BYTES:
                self.log.warning("Vault secret %s/%s has no usable 'value'; skipped", ns, key)
                continue
            if not isinstance(cls, str) or not CLASS.fullmatch(cls):
                self.log.warning("Vault secret %s/%s has no valid 'class'; skipped", ns, key)
                continue
            version = int(result["data"]["metadata"]["version"])
            out.append((Secret(ns, key, cls, version, value), str(result.get("lease_id") or "")))
        return out


def vault_client(url: str, ca_file: str, timeout: float, token: str | None = None) -> hvac.Client:
    """A Vault client verifying TLS with ``ca_file`` (empty: the system's CAs)."""
    return hvac.Client(url=url, token=token, verify=ca_file or True, timeout=timeout)


def approle_login(
    client: hvac.Client, role_id: str, secret_id_file: str, wrapped: bool, what: str
) -> str:
    """Log ``client`` in with AppRole; the secret id is read from ``secret_id_file``
    (``what`` names the setting in errors), unwrapped first when ``wrapped``. Returns the
    secret id used, for a later login (a wrapping token unwraps once)."""
    secret_id = _read(secret_id_file, what, private=True)
    if wrapped:
        # The wrapping token authenticates its own unwrap (X-Vault-Token); passing it in
        # the body instead needs a caller that is already logged in, which we are not.
        client.token = secret_id
        try:
            unwrapped = client.sys.unwrap()
        finally:
            client.token = None
        secret_id = str(unwrapped["data"]["secret_id"])
    client.auth.approle.login(role_id=role_id, secret_id=secret_id)
    return secret_id


def _revoke_lease(lease: str, hub: hvac.Client) -> None:
    hub.sys.revoke_lease(lease_id=lease)


def _read(path: str, what: str, private: bool = False) -> str:
    """The stripped text of ``path``; with ``private``, refused when every user of the
    machine may read it (an AppRole secret id logs in as the hub).
    A Kubernetes service-account token (``hub_jwt_file``) is mounted readable: not
    checked."""
    if not path:
        raise SecretError(f"{what} is not set")
    try:
        with open(path) as f:
            # group-readable is how Docker and Kubernetes secrets are mounted (0440, 0444
            # with fsGroup); world-readable on a shared host is refused
            if private and os.fstat(f.fileno()).st_mode & 0o007:
                raise SecretError(f"{what} ({path}) may be read by every user of this "
                                  "machine: chmod 600 it")
            return f.read().strip()
    except OSError as e:
        raise SecretError(f"cannot read {what} ({path}): {e.strerror}") from None


def valid_url(url: str, what: str = "VaultBroker.url") -> str:
    """Vault's address: ``https://``, or ``http://`` to this machine only (a dev server):
    users' ID tokens and secret values travel on it."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return url
    if parts.scheme == "http" and _loopback(parts.hostname or ""):
        return url
    raise ValueError(
        f"{what} must be https://<host>[:port] ({url[:80]!r}): users' ID tokens "
        "and secrets travel on it (plain http:// only to 127.0.0.1, ::1 or localhost)"
    )


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
