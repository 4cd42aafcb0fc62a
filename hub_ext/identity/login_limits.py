"""A per-address rate limit on the login endpoints, before any OAuth work.

Anyone can call ``/hub/oauth_login`` (each call creates OAuth state and a redirect to the
provider) and ``/hub/oauth_callback`` (each call with a fresh state costs a token exchange
with the provider, and each refused one may write an audit record). :class:`LoginLimited`
charges both to one token bucket per client address (``RequestLimits.login_rate`` /
``login_burst``, apart from the buckets of the endpoints servers call) in ``prepare``,
before JupyterHub's own ``prepare`` and before the handler runs. An empty bucket answers
429 with ``Retry-After``: a page a browser user can read, or JSON for a client that asks
for it. Refusals of one address are logged and audited (``login-refused``,
``rate-limited``) at most once per ``RequestLimits.login_audit_every``, with a count.
"""

from __future__ import annotations

import json
from typing import Any

from tornado import web
from tornado.log import app_log

from hub_ext.audit.hub import hub_emit
from hub_ext.ratelimit import Limited, RequestLimits, hub_limits


class LoginRateLimited(web.HTTPError):
    """The 429 of a login request over its address's limit."""

    def __init__(self, limited: Limited) -> None:
        super().__init__(limited.status, limited.message, reason="Too Many Requests")
        self.limited = limited
        # JupyterHub's error page re-applies these (tornado's send_error clears the headers)
        self.headers = {"Retry-After": str(limited.retry_after)}


class LoginLimited(web.RequestHandler):
    """Mixin for the authenticator's login and callback handlers (first in the bases)."""

    async def prepare(self) -> None:
        limits = hub_limits(self.settings.get("config"))
        ip = limits.client_ip(self.request)
        limited = limits.check_login(ip)
        if limited is not None:
            self._report(limits, ip)
            await limits.hold_back()
            raise LoginRateLimited(limited)
        parent: Any = super().prepare()
        if parent is not None:
            await parent

    def _report(self, limits: RequestLimits, ip: str) -> None:
        count = limits.login_reports.refused(ip)
        if not count:
            return
        log = getattr(self, "log", app_log)  # JupyterHub's handlers log to the hub's log
        detail = (
            f"{count} sign-in request(s) from this address refused since the last record: "
            f"over RequestLimits.login_burst ({limits.login_burst}) at once or login_rate "
            f"({limits.login_rate:g}/s); none reached the identity provider"
        )
        log.warning("rate limit: login requests from %s refused: %s", ip, detail)
        issuer = str(getattr(self.settings.get("authenticator"), "issuer", ""))
        try:
            hub_emit(
                "login-refused",
                {
                    **({"ip": ip} if ip else {}),
                    "reason": "rate-limited",
                    "detail": detail,
                    **({"idp": issuer} if issuer else {}),
                },
            )
        except web.HTTPError as e:  # the audit log refused: the request is refused anyway
            log.error("rate limit: could not record the login refusal: %s", e)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        error = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(error, LoginRateLimited) and self._wants_json():
            self.set_header("Retry-After", str(error.limited.retry_after))
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps({"status": status_code, "message": error.limited.message}))
            return
        super().write_error(status_code, **kwargs)

    def _wants_json(self) -> bool:
        accept = self.request.headers.get("Accept", "")
        return "application/json" in accept and "text/html" not in accept

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, LoginRateLimited):
            return  # logged once per address and period by _report, not once per request
        super().log_exception(typ, value, tb)
