"""Notebooks are never trusted in a Qustody server (``QustodyApp.trust_notebooks``).

A trusted notebook's outputs run their scripts when it is opened. The hub serves every
user's server from its own origin, and course staff and admins open other users'
servers: a student who trusts a notebook of their own (the trust command, or the
signature secret kept in their home) would run script in the staff member's browser,
with the hub's cookies. Untrusted, JupyterLab shows HTML outputs sanitised and runs no
script; a cell run again shows its outputs as usual.
"""

from __future__ import annotations

from typing import Any

from tornado.web import HTTPError

REFUSED = (
    "Notebooks are not trusted on this hub: a trusted notebook's scripts would run in the "
    "browser of anyone who opens it on your server (course staff, admins). Run its cells "
    "again to see their outputs."
)


class UntrustedNotebooks:
    """Contents-manager mixin: no notebook is signed, marked trusted or trusted on request,
    unless ``qustody_trust`` is set (from ``QustodyApp.trust_notebooks``)."""

    qustody_trust = False

    def trust_notebook(self, path: str) -> Any:
        if self.qustody_trust:
            return super().trust_notebook(path)  # type: ignore[misc]
        raise HTTPError(403, REFUSED)

    def mark_trusted_cells(self, nb: Any, path: str = "") -> None:
        if self.qustody_trust:
            super().mark_trusted_cells(nb, path)  # type: ignore[misc]
            return
        self.notary.mark_cells(nb, False)  # type: ignore[attr-defined]

    def check_and_sign(self, nb: Any, path: str = "", **kwargs: Any) -> None:
        if self.qustody_trust:
            super().check_and_sign(nb, path, **kwargs)  # type: ignore[misc]
        # otherwise nothing is signed: a signature is what makes a notebook trusted
