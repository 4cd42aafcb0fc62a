"""The pages a person meets when sign-in is refused: a title, what happened in words, a
way forward ("Sign in again") and whom to ask.

JupyterHub's error page shows ``status_message`` as its heading and the message below it;
a plain ``HTTPError(403, message)`` puts the message in both. ``SignInRefused`` sets a
short ``reason`` (the heading and the HTTP reason phrase) and the body through
``jupyterhub_html_message``, the hook JupyterHub's ``write_error`` reads for custom HTML.
"""

from __future__ import annotations

from html import escape

from tornado import web


class SignInRefused(web.HTTPError):
    """An HTTP error whose page says what happened, how to go on and whom to ask."""

    def __init__(
        self,
        status: int,
        title: str,
        message: str,
        *,
        retry_url: str = "",
        retry_label: str = "Sign in again",
        contact: str = "your hub administrator",
    ) -> None:
        # tornado >= 6.5 keeps the message as given (no %-formatting without args)
        super().__init__(status, message, reason=title)
        parts = [f'<span class="qustody-refusal">{escape(message)}</span>']
        if retry_url:
            parts.append(
                f'<a class="btn btn-primary qustody-retry" href="{escape(retry_url)}">'
                f"{escape(retry_label)}</a>"
            )
        parts.append(
            f'<span class="qustody-contact">If this keeps happening, ask {escape(contact)}.'
            "</span>"
        )
        self.jupyterhub_message = message
        self.jupyterhub_html_message = "<br><br>".join(parts)
