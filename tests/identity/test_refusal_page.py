"""The refusal error's page parts: escaped, '%' kept, factors named in words."""

from __future__ import annotations

from hub_ext.identity.factors import factors_in_words
from hub_ext.identity.refusal import SignInRefused


def test_messages_are_escaped_and_keep_their_percent_signs() -> None:
    e = SignInRefused(403, "Sign-in refused", "issuer https://idp/%7Erealm <b>x</b>",
                      retry_url='/hub/oauth_login?a="1"', contact="it@<example>")
    assert e.get_message() == "issuer https://idp/%7Erealm <b>x</b>"  # logs: as given
    assert e.reason == "Sign-in refused"
    html = e.jupyterhub_html_message
    assert "issuer https://idp/%7Erealm &lt;b&gt;x&lt;/b&gt;" in html and "<b>" not in html
    assert 'href="/hub/oauth_login?a=&quot;1&quot;"' in html
    assert "ask it@&lt;example&gt;." in html


def test_no_retry_button_without_a_retry_url() -> None:
    assert "qustody-retry" not in SignInRefused(403, "T", "m").jupyterhub_html_message


def test_factors_in_words() -> None:
    assert factors_in_words({"otp", "hwk"}) == (
        "a hardware security key or a one-time code from an authenticator app"
    )
    assert factors_in_words({"hwk", "mfa", "otp"}).count(", ") == 1
    assert factors_in_words({"zz"}) == "the method 'zz'"
