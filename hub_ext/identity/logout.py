"""Signing out only from the hub's own pages.

JupyterHub signs out on a GET of ``/hub/logout`` and, with ``shutdown_on_logout`` (on
here), stops every server of the user. The login cookie travels with a top-level
navigation from any site, so a link on any page, or in a shared notebook, would stop a
researcher's kernels and running work. A navigation from another site (the browser's
``Sec-Fetch-Site`` header) gets a page that asks; the sign-out is its form's POST, which
carries the hub's XSRF token. The hub's own link and a typed address sign out at once.
"""

from __future__ import annotations

import html
from typing import Any

from oauthenticator.oauth2 import OAuthLogoutHandler

#: ``Sec-Fetch-Site`` values of a navigation the hub's own pages (or the user) started.
OWN = ("same-origin", "none")

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sign out?</title></head>
<body style="font-family: sans-serif; max-width: 36em; margin: 4em auto">
<h1>Sign out of the hub?</h1>
<p>A page on another site sent you here. Signing out stops your servers: running kernels
and unsaved work in them are lost.</p>
<form method="post" action="{action}">{xsrf}
<button type="submit">Sign out and stop my servers</button>
<a href="{home}">Stay signed in</a>
</form></body></html>
"""


class QustodyLogoutHandler(OAuthLogoutHandler):  # type: ignore[misc]
    async def get(self) -> None:
        site = self.request.headers.get("Sec-Fetch-Site", "")
        if site and site not in OWN and self.current_user is not None:
            self.set_header("Cache-Control", "no-store")
            self.finish(PAGE.format(
                action=html.escape(self.request.path, quote=True),
                xsrf=self.xsrf_form_html(),
                home=html.escape(self.hub.base_url, quote=True),
            ))
            return
        await super().get()

    async def post(self, *args: Any) -> None:
        # the confirmation form (JupyterHub checks its XSRF token before this runs)
        await super().get()
