"""The server's side of secret delivery: redeem the claim ticket, keep the secrets.

At start-up the extension takes the claim ticket out of its environment (so kernels
never inherit it), redeems it at the hub with the server's own hub API token, and
keeps what comes back in memory. For tools that read files, each secret is also
written to ``<files_dir>/<NAME>`` (0600, in a 0700 directory on the container's tmpfs).
Kernels read them with :mod:`server_ext.secrets`; ``POST /qustody/api/secrets/refresh``
fetches current values again (rotated values replace old ones; revoked ones vanish);
no endpoint of the server ever returns a value.
Every value ever delivered is handed to the save guard, which redacts it (and its
encodings) from outputs and refuses sources holding it.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import tempfile
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from traitlets import Bool, Float, List, Unicode
from traitlets.config import LoggingConfigurable

TICKET_ENV = "QUSTODY_SECRETS_TICKET"
#: Set by the image's entry point: a 0600 file on the tmpfs holding the ticket.
TICKET_FILE_ENV = "QUSTODY_SECRETS_TICKET_FILE"
DIR_ENV = "QUSTODY_SECRETS_DIR"


class DeliveryError(Exception):
    """Redeeming, refreshing or storing failed; the message holds no value and no token.
    ``status`` is the hub's HTTP status when it answered with a refusal."""

    def __init__(self, message: str, status: int | None = None, detail: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail or message  # the hub's own words, when it gave some


class SecretClient(LoggingConfigurable):
    """Claims this server's secrets from the hub and serves them to kernels."""

    write_files = Bool(
        True,
        config=True,
        help="""Write each secret to ``files_dir/<NAME>`` (mode 0600) for tools that read
        credentials from files. Off: kernels get values only through the REST API.""",
    )
    files_dir = Unicode(
        "",
        config=True,
        help="""Directory for the secret files, created 0700. Keep it on a tmpfs (the
        Qustody image's ``/run/jupyter`` is one) so values never reach a disk or the
        home volume. Empty: ``$JUPYTER_RUNTIME_DIR/secrets``, or without that variable a
        new private directory (``mkdtemp``) of this server's own.""",
    )
    kernel_env = List(
        Unicode(),
        config=True,
        help="""Names of secrets also given to kernels as environment variables (of the
        kernel process only, never the server's or the container's). ``["*"]`` gives
        all. Empty (default): none; kernels call ``server_ext.secrets.get_secret``.""",
    )
    claim_at_start = Bool(
        True,
        config=True,
        help="""Redeem the claim ticket at start-up. Off: this server claims no secrets
        (its ticket is still removed from the environment and expires unused).""",
    )
    timeout = Float(
        10.0,
        config=True,
        help="Seconds to wait for the hub when redeeming or refreshing.",
    )

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._secrets: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self.on_values: list[Any] = []  # callbacks given every value ever delivered
        self._all_values: set[str] = set()
        self.broker = ""
        #: The class the hub lets this server store its user's secrets of, or None.
        self.self_service_class: str | None = None

    # -- talking to the hub ----------------------------------------------------------

    def _call(self, endpoint: str, body: dict[str, Any], listing: bool = True) -> dict[str, Any]:
        api = os.environ.get("QUSTODY_API_URL", "")
        token = os.environ.get("JUPYTERHUB_API_TOKEN", "")
        if not api or not token:
            raise DeliveryError("not started by a hub (no QUSTODY_API_URL/JUPYTERHUB_API_TOKEN)")
        request = urllib.request.Request(  # noqa: S310 - the hub's own http(s) URL
            f"{api.rstrip('/')}/api/secrets/{endpoint}",
            data=json.dumps(body, ensure_ascii=False).encode(),  # the size the user sent
            headers={"Authorization": f"token {token}", "Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                result = json.loads(response.read())
        except urllib.error.HTTPError as e:
            try:
                message = str(json.loads(e.read()).get("message", ""))[:300]
            except (ValueError, AttributeError):
                message = ""
            raise DeliveryError(f"the hub answered {e.code}: {message}", e.code, message) from None
        except (OSError, ValueError) as e:
            raise DeliveryError(f"the hub could not be reached ({type(e).__name__})") from None
        listed = isinstance(result, dict) and isinstance(result.get("secrets"), list)
        if not isinstance(result, dict) or (listing and not listed):
            raise DeliveryError("the hub's answer is not a secrets list")
        return result

    def redeem(self) -> int:
        """Redeem the ticket from the environment (and remove it there). Returns the count."""
        ticket = _take_ticket()
        if not self.claim_at_start:
            self.log.info("Qustody secrets: not claimed (SecretClient.claim_at_start is off)")
            return 0
        if not ticket:
            self.log.info("Qustody secrets: no claim ticket; this server has no secrets")
            return 0
        return self._apply(self._call("redeem", {"ticket": ticket}))

    def refresh(self) -> int:
        return self._apply(self._call("refresh", {}))

    def store(self, name: str, value: str) -> dict[str, Any]:
        """Store a new secret of this server's user at the hub (its self-service class),
        then refresh, so ``get_secret(name)`` works and the guard knows the value at once.
        Returns the stored secret's name, class and version; DeliveryError says why not."""
        stored = self._call("store", {"name": name, "value": value}, listing=False)
        out = {k: stored.get(k) for k in ("name", "class", "version", "namespace")}
        try:
            self.refresh()
        except DeliveryError as e:  # stored all the same: say so, not "not stored"
            self.log.warning("Qustody secrets: stored %s, but the refresh failed: %s", name, e)
            out["warning"] = f"stored, but not delivered yet ({e}); refresh the secrets panel"
        return out

    def _apply(self, result: dict[str, Any]) -> int:
        fresh: dict[str, dict[str, Any]] = {}
        for item in result["secrets"]:
            if (
                isinstance(item, dict)
                and isinstance(item.get("name"), str)
                and isinstance(item.get("value"), str)
            ):
                fresh[item["name"]] = {
                    "name": item["name"],
                    "class": str(item.get("class", "")),
                    "version": item.get("version"),
                    "value": item["value"],
                }
        with self._lock:
            self._all_values |= {s["value"] for s in fresh.values()}
            values = set(self._all_values)
            self._secrets = fresh
            self.broker = str(result.get("broker", ""))
            own = result.get("self_service_class")
            self.self_service_class = own if isinstance(own, str) and own else None
        for callback in self.on_values:
            callback(values)  # the guard learns values before any kernel can print them
        if self.write_files:
            self._write_files(fresh)
        self.log.info(
            "Qustody secrets: %d delivered (%s)", len(fresh), ", ".join(sorted(fresh)) or "none"
        )
        return len(fresh)

    # -- what kernels see ------------------------------------------------------------

    _private_dir: Path | None = None

    @property
    def directory(self) -> Path:
        if self.files_dir:
            return Path(self.files_dir)
        runtime = os.environ.get("JUPYTER_RUNTIME_DIR")
        if runtime:
            return Path(runtime) / "secrets"
        # No runtime directory (a local process): a fresh private one for this server. A
        # fixed path such as /tmp/secrets would be shared by every server of the same Unix
        # user, each overwriting the others' secrets.
        if self._private_dir is None:
            self._private_dir = Path(tempfile.mkdtemp(prefix="qustody-secrets-"))
            atexit.register(shutil.rmtree, self._private_dir, True)  # values leave with us
        return self._private_dir

    def _write_files(self, fresh: dict[str, dict[str, Any]]) -> None:
        d = self.directory
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(d, 0o700)
        for old in d.iterdir():
            if old.name not in fresh:
                old.unlink(missing_ok=True)
        for name, item in fresh.items():
            tmp = d / f".{name}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(item["value"])
            os.replace(tmp, d / name)

    def names(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {"name": s["name"], "class": s["class"], "version": s["version"]}
                for s in sorted(self._secrets.values(), key=lambda s: s["name"])
            ]

    def value(self, name: str) -> str | None:
        with self._lock:
            item = self._secrets.get(name)
        return None if item is None else str(item["value"])

    def kernel_environment(self) -> dict[str, str]:
        wanted = set(self.kernel_env)
        with self._lock:
            return {
                n: str(s["value"]) for n, s in self._secrets.items() if "*" in wanted or n in wanted
            }


def _take_ticket() -> str:
    """The ticket from the environment or the entry point's file; both are removed."""
    ticket = os.environ.pop(TICKET_ENV, "")
    path = os.environ.pop(TICKET_FILE_ENV, "")
    if path:
        try:
            with open(path, encoding="utf-8") as f:
                ticket = f.read().strip()
        except OSError:
            pass  # no ticket: this server starts without secrets
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)
    return ticket


def start_secrets(serverapp: Any, guard: Any, log: Any) -> SecretClient:
    """Create the client, let the guard know every value, claim the secrets (blocking:
    the server answers nobody before this returns), and tell kernels where they are.

    Call it only once the guard runs: a server whose guard could not start claims
    nothing, so no value can reach a save unredacted.
    """
    client = SecretClient(config=serverapp.config, log=log)
    client.on_values.append(guard.set_known_values)
    os.environ[DIR_ENV] = str(client.directory)  # inherited by kernels (a path, no value)
    try:
        client.redeem()
    except DeliveryError as e:
        log.error("Qustody secrets: could not claim this server's secrets: %s", e)
    sessions = getattr(serverapp, "session_manager", None)
    if sessions is not None and client.kernel_env:
        original = sessions.get_kernel_env

        def with_secrets(path: str | None, name: Any = None) -> dict[str, str]:
            return {**original(path, name), **client.kernel_environment()}

        sessions.get_kernel_env = with_secrets
    return client
