"""Signing out only by the hub's own form.

JupyterHub signs out on a GET of ``/hub/logout`` and, with ``shutdown_on_logout`` (on
here), stops every server of the user. Any link or image to that address signs the
viewer out: on another site (the login cookie travels with a top-level navigation), and
in a notebook someone shared (rendered on the hub's own origin, so no header tells it
apart from the hub's own link). A GET therefore gets a page that asks; the sign-out is
its form's POST, which carries the hub's XSRF token, which no other page can read.
"""

from __future__ import annotations

import html
from typing import Any

from oauthenticator.oauth2 import OAuthLogoutHandler

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sign out?</title></head>
<body style="font-family: sans-serif; max-width: 36em; margin: 4em auto">
<h1>Sign out of the hub?</h1>
<p>Signing out stops your servers: running kernels, and what they hold in memory, are
lost. (A link elsewhere, or in a notebook, may have brought you here.)</p>
<form method="post" action="{action}">{xsrf}
<button type="submit">Sign out and stop my servers</button>
<a href="{home}">Stay signed in</a>
</form></body></html>
"""


class QustodyLogoutHandler(OAuthLogoutHandler):  # type: ignore[misc]
    async def get(self) -> None:
        if self.current_user is not None:
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
