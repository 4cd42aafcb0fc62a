"""The base of Qustody's hub-managed pages (the auditor page, the instructor page).

Users sign in through the hub (HubOAuth). Every request is checked: the service's own
access scope and whatever the page asks more (``allowed``); anyone else gets a page that
says who may use it and how to get access, or a JSON 403 on the API. A POST sent with the
login cookie must carry the page's XSRF token; one sent with a token needs none.
"""

from __future__ import annotations

import json
from typing import Any

from jupyterhub.services.auth import HubOAuthenticated, UserNotAllowed
from tornado import template, web

#: One error page for every Qustody service page (autoescaped, as templates are).
ERROR_PAGE = template.Template(
    """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>{{ status }} {{ reason }} · {{ title }}</title>
<style>body{font-family:system-ui,sans-serif;margin:3rem;color:#222}h1{color:#a1260d}</style>
</head>
<body>
<h1 id="error-status">{{ status }} {{ reason }}</h1>
<p id="error-message">{{ message }}</p>
</body>
</html>
""",
    name="qustody-error-page",
    autoescape="xhtml_escape",
)


class ServicePage(HubOAuthenticated, web.RequestHandler):  # type: ignore[misc]
    #: JSON errors (an API route) instead of the error page
    api = False
    #: what the page is, in the refusal of a form posted without its XSRF token
    page_name = "the page"
    #: the product's name in the error page's title
    page_title = "Qustody"
    _denied: str | None = None

    @property
    def hub_scopes(self) -> set[str]:
        return {self.settings["access_scope"]}

    def allowed(self, model: dict[str, Any]) -> bool:
        """Whether the signed-in user (their hub model) may use this page."""
        raise NotImplementedError

    def denied_message(self, name: str) -> str:
        """Why ``name`` may not use the page, and whom to ask."""
        raise NotImplementedError

    def login_message(self) -> str:
        """What an API caller without credentials must send."""
        raise NotImplementedError

    def check_hub_user(self, model: dict[str, Any]) -> dict[str, Any]:
        if not self.hub_auth.check_scopes({self.settings["access_scope"]}, model) or (
            not self.allowed(model)
        ):
            self._denied = str(model.get("name", "?"))
            raise UserNotAllowed(model)
        return model

    def prepare(self) -> None:
        if self.current_user is not None:
            # After authentication, so a token-authenticated POST needs no XSRF token
            # (tornado's own early check would refuse it); cookie POSTs must carry one.
            if self.request.method not in ("GET", "HEAD", "OPTIONS"):
                self.check_xsrf_cookie()
            return
        if self._denied is not None:
            raise web.HTTPError(403, self.denied_message(self._denied))
        if self.api:
            raise web.HTTPError(403, self.login_message())
        if self.request.method not in ("GET", "HEAD"):
            # HubOAuth ignores a login cookie on a form post without its XSRF token
            raise web.HTTPError(
                403,
                f"This form must be sent from {self.page_name} (its XSRF token is missing or "
                "wrong). Reload the page and try again.",
            )
        self.redirect(self.get_login_url())

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        error = kwargs.get("exc_info", (None, None, None))[1]
        message = (
            error.log_message
            if isinstance(error, web.HTTPError) and error.log_message
            else self._reason
        )
        if self.api:
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps({"status": status_code, "message": message}))
            return
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(
            ERROR_PAGE.generate(
                status=status_code, reason=self._reason, message=message, title=self.page_title
            )
        )
