"""The ``qustody`` service: what user servers and the QPU gateway ask of the hub.

A hub-managed JupyterHub service (``python -m hub_ext.server_api --config=FILE``, the
file written by ``hub.server_api`` at each hub start from the hub's settings). Under
``JUPYTERHUB_SERVICE_PREFIX`` it serves:

- ``POST api/secrets/{redeem,refresh,store}`` (secrets_routes.py),
- ``POST api/audit/events`` (audit_routes.py),
- ``GET api/qpu/credentials/<backend>`` (credentials_route.py),
- ``GET api/health``, and ``GET metrics`` (scope ``read:metrics``).

It holds what the hub no longer needs to: the secret store's master key (or the Vault
login), the redeemed sessions, and the audit log's list of delivered values, which it
cuts out of every record it writes, servers' reports included. Callers are identified by
the hub (``HubAuth``); the user's roles, groups, auth state and servers come from the
hub's REST API with this service's own token (hub_rest.py). Every few seconds it asks
which servers still run, and forgets (and releases the leases of) those that are gone.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from jupyterhub.utils import url_path_join
from tornado import httpserver, ioloop, netutil, web
from tornado.httpclient import AsyncHTTPClient
from traitlets import Float, Unicode
from traitlets.config import Application

from ..audit.hub import hub_audit, reset_hub_audit, service_settings
from ..qpu.auth import HubResolver, HubUnavailable
from ..ratelimit import setup_limits
from ..secrets.delivery import SecretDelivery
from ..secrets.model import SecretError
from ..secrets.tickets import load_ticket_key
from . import audit_routes, credentials_route, secrets_routes
from .base import ServiceHandler
from .hub_rest import HubRest

log = logging.getLogger("qustody.server_api")


class HealthHandler(web.RequestHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish('{"status": "ok", "service": "qustody"}')


class MetricsHandler(ServiceHandler):
    """``GET metrics``: the counters of the records this service writes (servers' guard
    reports, secret deliveries and refusals; hub_ext/audit/metrics.py), in Prometheus
    text format, for a token with ``read:metrics`` (as JupyterHub's ``/hub/metrics``)."""

    async def get(self) -> None:
        identity = await self.identity()
        if identity is None or "read:metrics" not in identity.scopes:
            raise web.HTTPError(403, "Reading metrics needs a token with read:metrics.")
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(generate_latest())


class ServerApi(Application):
    name = "qustody-server-api"
    description = "The hub's qustody service: secret claims, audit reports, QPU credentials."

    config_file = Unicode("", config=True, help="The config file the hub wrote for it.")
    ticket_key_file = Unicode(
        "", config=True,
        help="The key the hub signs claim tickets with (hub_ext.secrets.tickets); empty: "
        "no secret delivery (the secret routes answer 404).")
    courses_dir = Unicode(
        "", config=True, help="The hub's course files (their shared secrets and terms).")
    roles_max_age = Float(
        300.0, config=True,
        help="""The hub's ``auth_refresh_age``: roles re-checked with the identity provider
        longer ago than this (plus 5 s) deliver no secrets (503). 0: not checked.""")
    reconcile_interval = Float(
        5.0, config=True,
        help="Seconds between asking the hub which servers still run (a stopped "
        "server's session is forgotten and its leases released).")

    aliases = {"config": "ServerApi.config_file"}  # noqa: RUF012 - traitlets' own shape

    def setup(self) -> dict[str, Any]:
        """Everything the routes share, from the config; a bad setting stops here."""
        if self.config_file:
            self.load_config_file(self.config_file)
        api_url = os.environ.get("JUPYTERHUB_API_URL", "")
        token = os.environ.get("JUPYTERHUB_API_TOKEN", "")
        if not api_url or not token:
            raise SystemExit("hub_ext.server_api: run as a hub-managed service (no "
                             "JUPYTERHUB_API_URL / JUPYTERHUB_API_TOKEN)")
        audit = self.config.AuditLog
        if not (audit.get("path") or audit.get("db_url")):  # run by hand: the environment's
            for name, value in (service_settings() or {}).items():
                setattr(audit, name, value)
        hub_audit(self.config)  # this process's audit log: a bad setting stops here
        settings: dict[str, Any] = {
            "limits": setup_limits(self.config),
            "resolver": HubResolver(api_url, cache_seconds=0),
            "hub": HubRest(api_url, token),
            "roles_max_age": self.roles_max_age,
            "delivery": None,
            "credentials": None,
        }
        if self.ticket_key_file:
            try:
                key = load_ticket_key(self.ticket_key_file)
            except ValueError as e:
                raise SystemExit(f"hub_ext.server_api: {e}") from None
            delivery = SecretDelivery(self.config, ticket_key=key)
            if self.courses_dir:
                from ..courses.hub import closed_lookup, live_courses, shared_secrets

                current = live_courses(Path(self.courses_dir))
                delivery.course_closed = closed_lookup(current)
                delivery.course_secrets = shared_secrets(current)
            settings["delivery"] = delivery
            from ..qpu.secret_source import SecretStoreCredentials, hub_reader_settings

            reader = hub_reader_settings(self.config)
            if reader is not None:
                settings["credentials"] = SecretStoreCredentials(**reader)
        return settings

    def make_app(self, settings: dict[str, Any], prefix: str) -> web.Application:
        routes: list[Any] = [(prefix, HealthHandler),  # the hub's health check asks here
                             (url_path_join(prefix, "api/health"), HealthHandler),
                             (url_path_join(prefix, "metrics"), MetricsHandler)]
        for module in (secrets_routes, audit_routes, credentials_route):
            routes += [(url_path_join(prefix, path), handler)
                       for path, handler in module.ROUTES]
        return web.Application(routes, **settings)


class Reconcile:
    """Forget the sessions of servers the hub no longer has (or has started anew) and
    release what they were given, and release what an earlier run gave servers that are
    gone (the broker keeps that list). A server must be missing from two listings in a
    row: a page of the listing that went wrong never costs a running server its leases."""

    def __init__(self, delivery: SecretDelivery, hub: HubRest) -> None:
        self.delivery = delivery
        self.hub = hub
        self._missing: set[tuple[str, str]] = set()

    async def __call__(self) -> None:
        sessions = self.delivery.sessions()
        held = await asyncio.to_thread(self.delivery.broker.outstanding)
        if not sessions and not held:
            self._missing.clear()
            return
        try:
            running = await self.hub.running()
        except HubUnavailable as e:
            log.warning("qustody service: could not list the hub's servers (%s)", e)
            return
        missing = set()
        for key in {*sessions, *held}:
            session = sessions.get(key)
            started = running.get(key)
            if started is not None and not (session and session.started
                                            and started != session.started):
                continue
            if started is None and key not in self._missing:
                missing.add(key)  # gone in one listing: forgotten if gone in the next
                continue
            user, server = key
            await asyncio.to_thread(self.delivery.server_stopped, user, server, session)
            log.info("qustody service: %s/%s is gone; its secrets are released", user, server)
        self._missing = missing


def main(argv: list[str] | None = None) -> None:
    """One process (its state, the redeemed sessions, is in memory); the hub restarts it
    if it dies, and servers started before that redeem again at their next start."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="[%(levelname)1.1s %(asctime)s %(name)s] %(message)s")
    # a class of students starting at once: many hub questions in flight
    AsyncHTTPClient.configure(None, max_clients=64)
    app = ServerApi()
    app.initialize(argv)
    try:
        settings = app.setup()
    except (ValueError, OSError, SecretError) as e:
        raise SystemExit(f"hub_ext.server_api: {e}") from None
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/qustody/")
    url = urlparse(os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:8084"))
    ip, port = url.hostname or "127.0.0.1", url.port or 8084
    try:
        sockets = netutil.bind_sockets(port, ip)
    except OSError as e:
        raise SystemExit(f"hub_ext.server_api: cannot listen on {ip}:{port}: {e.strerror}"
                         ) from None
    # the routes refuse bodies over their own limits (at most 80 KiB: a stored secret)
    # with a 413 that says so; a body over 1 MiB is not even read (the connection closes)
    server = httpserver.HTTPServer(app.make_app(settings, prefix), xheaders=False,
                                   max_body_size=1024 * 1024)
    server.add_sockets(sockets)
    delivery = settings["delivery"]
    if delivery is not None:
        ioloop.PeriodicCallback(Reconcile(delivery, settings["hub"]),
                                app.reconcile_interval * 1000).start()
    print(f"qustody service on {url.geturl()} (prefix {prefix})", file=sys.stderr, flush=True)
    loop = ioloop.IOLoop.current()
    # the hub stops its services with SIGINT, which a parent may have left ignored
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.asyncio_loop.add_signal_handler(sig, loop.stop)  # type: ignore[attr-defined]
    loop.start()
    server.stop()
    reset_hub_audit()  # what was emitted reaches the log before the process exits
