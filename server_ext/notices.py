"""``GET /qustody/api/notices``: the security alerts about this server's user.

The audit service raises alerts from the audit log (hub_ext/audit/alerts.py); those about
one user, of the rules the hub's admin shows users, come back here with what to do, and
the JupyterLab extension shows each once. Asked with this server's own hub token, so a
user sees only their own (the service filters by the token's user).
"""

from __future__ import annotations

import json

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from tornado import web

from .hub_services import ServiceUnavailable, ask_service

_NO_AUDIT = ("NO_AUDIT", "This server has no audit service to ask (it is not running under "
             "a hub with Qustody's audit service).")


class NoticesHandler(APIHandler):
    # the same power as the user's kernels, which hold the same token
    auth_resource = "kernels"

    @web.authenticated
    @authorized
    async def get(self) -> None:
        try:
            answer = await ask_service("QUSTODY_AUDIT_URL", "The audit service", "GET",
                                       "api/my-alerts", missing=_NO_AUDIT,
                                       noun="an audit service")
        except ServiceUnavailable as e:
            self.set_status(e.status)
            self.finish(json.dumps(e.body))
            return
        alerts = answer.get("alerts")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps({"notices": alerts if isinstance(alerts, list) else []}))


NOTICE_HANDLERS = [(r"/qustody/api/notices", NoticesHandler)]
