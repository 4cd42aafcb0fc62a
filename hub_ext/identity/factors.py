"""Sign-in factors (OIDC ``amr`` values) named the way a person would name them."""

from __future__ import annotations

from collections.abc import Iterable

#: RFC 8176 authentication method references, as a person would name them.
AMR_WORDS: dict[str, str] = {
    "hwk": "a hardware security key",
    "swk": "a software key on your device",
    "otp": "a one-time code from an authenticator app",
    "sms": "a code sent by text message",
    "tel": "a phone call",
    "mfa": "any second factor your provider offers",
    "mca": "several separate factors",
    "fpt": "a fingerprint",
    "face": "face recognition",
    "iris": "an iris scan",
    "retina": "a retina scan",
    "vbm": "voice recognition",
    "pin": "a PIN",
    "sc": "a smart card",
    "kba": "security questions",
    "geo": "your location",
    "pop": "a key you hold on your device",
    "user": "user presence on your device",
    "wia": "Windows sign-in",
    "rba": "a risk check by your provider",
    "pwd": "a password",
}


def factors_in_words(codes: Iterable[str]) -> str:
    """``{"hwk", "otp"}`` -> ``a hardware security key or a one-time code from ...``."""
    words = [AMR_WORDS.get(c, f"the method {c!r}") for c in sorted(set(codes))]
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " or " + words[-1]
