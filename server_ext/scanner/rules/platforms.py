"""Developer platforms and SaaS tokens with documented prefixes."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

from ..detector import Detector, Kind, rx
from ..entropy import has_digit_lower_upper
from ..filters import Candidate
from ._common import format_token as _token


def _public_ip(c: Candidate) -> bool:
    try:
        return ipaddress.ip_address(c.secret.decode()).is_global
    except ValueError:
        return False


def _stripe_generated(c: Candidate) -> bool:
    """A live key shorter than Stripe's 24 characters (older keys, other scanners'
    examples) must mix digits and both cases: ``sk_live_YourSecretKeyHere`` is a
    placeholder."""
    tail = c.secret[8:]
    return len(tail) >= 24 or has_digit_lower_upper(tail)


DETECTORS = (
    _token(
        "github-token",
        "GitHub token",
        rb"\bgh[pousr]_[A-Za-z0-9]{36}",
        r"gh[pousr]_[A-Za-z0-9]{36,251}",
        4,
    ),
    _token(
        "github-fine-grained-token",
        "GitHub fine-grained personal access token",
        rb"\bgithub_pat_[A-Za-z0-9_]{22}",
        r"github_pat_[A-Za-z0-9_]{22,255}",
        11,
    ),
    _token(
        "gitlab-token",
        "GitLab token",
        rb"\bgl(?:pat|dt|rt|ptt|ft|imt|oas|soat|cbt|agent|ffct)-[A-Za-z0-9_-]{20}",
        r"gl(?:pat|dt|rt|ptt|ft|imt|oas|soat|cbt|agent|ffct)-[A-Za-z0-9_.-]{20,255}",
        6,
    ),
    _token(
        "slack-token",
        "Slack token",
        # Real tokens have numeric workspace/user ids after the prefix ("xoxb-123...-...").
        rb"\bxox[abposr]-[0-9]{6}",
        r"xox[abposr]-[0-9]{6,}-[A-Za-z0-9-]{8,255}",
        5,
    ),
    Detector(
        id="slack-webhook",
        title="Slack incoming webhook URL",
        anchor=rb"hooks\.slack\.com/services/T[A-Za-z0-9_]{8}",
        value=rx(
            r"hooks\.slack\.com/services/(?P<secret>T[A-Za-z0-9_]{8,}/B[A-Za-z0-9_]{8,}/[A-Za-z0-9_]{24})"
        ),
        in_binary=True,
    ),
    replace(
        _token(
            "stripe-key",
            "Stripe secret or restricted key",
            rb"\b[sr]k_(?:live_[0-9a-zA-Z]{12}|test_[0-9a-zA-Z]{24})",
            r"[sr]k_(?:live_[0-9a-zA-Z]{12,247}|test_[0-9a-zA-Z]{24,247})",
            8,
        ),
        validate=_stripe_generated,
    ),
    _token(
        "openai-api-key",
        "OpenAI API key",
        rb"\bsk-(?:(?:proj|svcacct|admin)-[A-Za-z0-9_-]{40}|[A-Za-z0-9]{20}T3BlbkFJ)",
        r"sk-(?:(?:proj|svcacct|admin)-[A-Za-z0-9_-]{40,300}|[A-Za-z0-9]{20}T3BlbkFJ[A-Za-z0-9]{20})",
        8,
    ),
    _token(
        "anthropic-api-key",
        "Anthropic API key",
        rb"\bsk-ant-(?:api|admin)[0-9]{2,3}-[A-Za-z0-9_-]{40}",
        r"sk-ant-(?:api|admin)[0-9]{2,3}-[A-Za-z0-9_-]{40,200}",
        13,
    ),
    _token(
        "huggingface-token",
        "Hugging Face access token",
        rb"\b(?:hf|api_org)_[A-Za-z0-9]{34}",
        r"(?:hf|api_org)_[A-Za-z0-9]{34}",
        3,
    ),
    _token(
        "vault-token",
        "HashiCorp Vault token",
        rb"\bhv[sbr]\.[A-Za-z0-9_-]{24}",
        r"hv[sbr]\.[A-Za-z0-9_-]{24,300}",
        4,
    ),
    Detector(
        id="vault-unseal-key",
        title="Vault / OpenBao unseal or recovery key (operator init output, operator unseal)",
        # `operator init` prints "Unseal Key 1: <base64>" (or "Recovery Key 1:"), with
        # "-format=json" a list under "unseal_keys_b64"/"unseal_keys_hex"; the key is then
        # typed as `vault operator unseal <key>` (or `bao ...`).
        anchor=rb"(?:(?:unseal|recovery) key \d{1,2}(?: \(hex\))?: |operator unseal )",
        value=rx(
            r"(?i)(?:(?:unseal|recovery) key \d{1,2}(?: \(hex\))?: |operator unseal (?:-\S+ )*)"
            r"(?P<secret>[A-Za-z0-9+/]{43,88}={0,2}|[a-f0-9]{64,130})(?![A-Za-z0-9+/=])"
        ),
        kind=Kind.VENDOR,
        caseless=True,
    ),
    _token("npm-token", "npm access token", rb"\bnpm_[A-Za-z0-9]{36}", r"npm_[A-Za-z0-9]{36}", 4),
    Detector(
        id="npmrc-auth-token",
        title="npm registry _authToken in .npmrc",
        anchor=rb":_authToken=",
        value=rx(r":_authToken=\s*(?P<secret>[A-Za-z0-9._-]{20,300})"),
        kind=Kind.VENDOR,
    ),
    _token(
        "pypi-token",
        "PyPI upload token",
        rb"\bpypi-AgE[A-Za-z0-9_-]{16}",
        r"pypi-AgE[A-Za-z0-9_-]{50,}",
        8,
    ),
    _token(
        "sendgrid-api-key",
        "SendGrid API key",
        rb"\bSG\.[A-Za-z0-9_-]{22}\.",
        r"SG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}",
        3,
    ),
    _token(
        "mailchimp-api-key",
        "Mailchimp API key",
        rb"\b[0-9a-f]{32}-us[0-9]",
        r"[0-9a-f]{32}-us[0-9]{1,2}",
        0,
    ),
    _token(
        "telegram-bot-token",
        "Telegram bot token",
        rb"\b[0-9]{8,10}:[A-Za-z0-9_-]{34}",
        r"[0-9]{8,10}:[A-Za-z0-9_-]{34,35}",
        0,
        in_binary=False,
    ),
    _token(
        "twilio-api-key", "Twilio API key SID", rb"\bSK[0-9a-fA-F]{32}", r"SK[0-9a-fA-F]{32}", 2
    ),
    _token(
        "square-oauth-secret",
        "Square OAuth secret / access token",
        rb"\bsq0(?:csp|atp)-[0-9A-Za-z_-]{22}",
        r"sq0(?:csp|atp)-[0-9A-Za-z_-]{22,43}",
        7,
    ),
    replace(
        _token(
            "discord-bot-token",
            "Discord bot token",
            rb"\b[MNO][A-Za-z0-9_-]{23,25}\.[A-Za-z0-9_-]{6}\.",
            r"[MNO][A-Za-z0-9_-]{23,25}\.[A-Za-z0-9_-]{6}\.[A-Za-z0-9_-]{27,38}",
            0,
        ),
        # The dots alone are a weak literal: this anchor cost a fifth of the text scan.
        text_anchor=rb"\b[MNO][A-Za-z0-9_-]{23}",
        in_markup=False,  # no literal at all
    ),
    _token(
        "artifactory-api-key",
        "JFrog Artifactory API key",
        rb"\bAKC[a-zA-Z0-9]{10}",
        r"AKC[a-zA-Z0-9]{69,}",
        3,
        in_binary=False,
    ),
    Detector(
        id="softlayer-api-key",
        title="IBM SoftLayer API key",
        anchor=rb"(?:softlayer|\bsl_)",
        # ``SOFTLAYER_API_KEY=``, ``SoftLayer.create_client_from_env(api_key=...)`` and the
        # ``~/.softlayer`` file, where ``api_key`` is a line below ``[softlayer]``.
        value=rx(
            r"(?i)(?:softlayer|sl_)[\s\S]{0,80}?(?:api_?key|key)[\"'\]]{0,2}\s{0,8}[:=]\s{0,8}"
            r"[\"']?(?P<secret>[a-z0-9]{64})(?![a-z0-9])"
        ),
        kind=Kind.VENDOR,
        caseless=True,
    ),
    Detector(
        id="public-ip",
        title="Public IPv4 address (not a credential; off by default)",
        anchor=rb"\b(?:[0-9]{1,3}\.){3}[0-9]",
        value=rx(r"(?P<secret>(?:[0-9]{1,3}\.){3}[0-9]{1,3})(?![0-9.])"),
        validate=_public_ip,
        default_enabled=False,
    ),
)
