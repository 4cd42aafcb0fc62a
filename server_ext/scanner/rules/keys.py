"""Private keys, tokens with a self-describing structure, credentials inside URLs and headers."""

from __future__ import annotations

import base64
import binascii
import json
import re

from ..detector import Detector, Kind, rx
from ..filters import Candidate

_BASE64_RUN = re.compile(rb"[A-Za-z0-9+/=]{32}")
#: A line break: real, or escaped once (a JSON string) or twice (the repr of one).
_NL = r"(?:\r?\n|\\{1,2}(?:r\\{1,2})?n)"


def _pem_body(c: Candidate) -> bool:
    """A real key block has key material after the header, not just the header in prose.

    Key material comes in base64 lines of 64 (PEM) or 70 (OpenSSH) characters; words of
    prose after a quoted header never make a 32-character run.
    """
    return _BASE64_RUN.search(c.secret) is not None


def _jwt_header(c: Candidate) -> bool:
    head = c.secret.split(b".", 1)[0]
    try:
        decoded = json.loads(base64.urlsafe_b64decode(head + b"=" * (-len(head) % 4)))
    except (ValueError, binascii.Error):
        return False
    return isinstance(decoded, dict) and "alg" in decoded


# Documentation's stand-ins for a password in a URL: "postgresql://user:password@localhost".
_URL_PLACEHOLDER = re.compile(
    rb"(?i)^(?:pass(?:word|wd)?|pwd|secret|changeme|(?:my|your)_?pass(?:word)?|<[^<>]*>|"
    rb"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?|x{3,}|\*{3,})$"
)


def _url_password(c: Candidate) -> bool:
    """Not a stand-in (``password``, ``<password>``, ``${DB_PASS}``, ``***``), nor the user
    name repeated (``postgres:postgres@``)."""
    if _URL_PLACEHOLDER.match(c.secret):
        return False
    return c.line.find(b"//" + c.secret + b":" + c.secret + b"@") < 0


#: Where a line of a wrapped value ends: a line break (real or escaped), a quote, the end.
_LINE_END = r"""(?=\r?\n|\\{1,2}[rn]|["'`]|$)"""
_LINE_BREAKS = re.compile(_NL.encode())


def _encoded_pem_body(c: Candidate) -> bool:
    """Decoded, the block has key material after its header (``_pem_body``), not a
    stand-in (``<paste your key here>``, ``...``) or a header cut short."""
    data = _LINE_BREAKS.sub(b"", c.secret).rstrip(b"=")
    try:
        decoded = base64.b64decode(data[: len(data) - len(data) % 4])
    except (ValueError, binascii.Error):
        return False
    _, _, body = decoded.partition(b"-----\n")
    return _BASE64_RUN.search(body) is not None


def _base64_head(header: bytes) -> bytes:
    """The base64 of ``header``'s whole 3-byte groups: what every encoding of a text that
    starts with ``header`` starts with, whatever follows."""
    return base64.b64encode(header[: len(header) - len(header) % 3])


#: A private key block base64-encoded whole, header included, as Kubernetes secrets
#: (``tls.key: LS0tLS1CRUdJTi...``), environment variables and JSON configs carry one.
#: Certificates and public keys encode other headers, so they are not matched.
_BASE64_PRIVATE_HEADS = b"|".join(
    _base64_head(b"-----BEGIN " + kind + b"-----")
    for kind in (
        b"RSA PRIVATE KEY", b"EC PRIVATE KEY", b"DSA PRIVATE KEY", b"OPENSSH PRIVATE KEY",
        b"ENCRYPTED PRIVATE KEY", b"PRIVATE KEY", b"PGP PRIVATE KEY BLOCK",
    )
)  # fmt: skip


DETECTORS = (
    Detector(
        id="private-key",
        title="PEM/OpenSSH/PGP private key",
        anchor=rb"-----BEGIN (?:[A-Z0-9]+ ){0,3}PRIVATE KEY",
        value=rx(
            # The secret is the key material from its first to its last base64 character,
            # so a redaction keeps the BEGIN/END lines and the line breaks around them.
            r"-----BEGIN (?:[A-Z0-9]+ ){0,3}PRIVATE KEY(?: BLOCK)?-----"
            r"(?:[\s\"':,]|\\{1,2}[nr]){0,64}"
            # An encrypted legacy PEM key (RFC 1421) has Proc-Type and DEK-Info headers.
            rf"(?:Proc-Type:[ -~]{{1,40}}?{_NL}[ \t]*DEK-Info:[ -~]{{1,100}}?{_NL}"
            r"(?:[\s\"':,]|\\{1,2}[nr]){0,16})?"
            r"(?P<secret>[A-Za-z0-9+/=](?:[A-Za-z0-9+/=\s\"':,]|\\{1,2}[nr]){30,16000}[A-Za-z0-9+/=])"
        ),
        window=16200,
        validate=_pem_body,
        in_binary=True,
    ),
    Detector(
        id="private-key-base64",
        title="Private key block, base64-encoded (Kubernetes secret, environment variable)",
        anchor=rb"(?:" + _BASE64_PRIVATE_HEADS + rb")[A-Za-z0-9+/]{16}",
        value=rx(
            # On one line, or wrapped as ``base64`` prints it (76 characters a line): a
            # line continues the key only if it is base64 to its end, so the line after
            # the key (``NEXT_VAR=...``, ``real 0m0.002s``) is not taken for part of it.
            r"(?P<secret>(?:" + _BASE64_PRIVATE_HEADS.decode() + r")[A-Za-z0-9+/]{16,24000}"
            rf"(?:{_NL}[A-Za-z0-9+/]{{4,200}}={{0,2}}{_LINE_END}){{0,400}}={{0,2}})"
        ),
        window=24100,
        validate=_encoded_pem_body,
    ),
    Detector(
        id="putty-private-key",
        title="PuTTY private key file",
        anchor=rb"Private-Lines: [0-9]",
        # The private lines, without the line break after the last one.
        value=rx(
            # Lines may be indented (a YAML block) or joined by escaped newlines (a repr).
            rf"Private-Lines: \d+{_NL}[ \t]*"
            rf"(?P<secret>[A-Za-z0-9+/=]{{16,}}(?:{_NL}[ \t]*[A-Za-z0-9+/=]{{16,}}){{0,63}})"
        ),
        window=8000,
    ),
    Detector(
        id="jwt",
        title="JSON Web Token",
        anchor=rb"\beyJ[A-Za-z0-9_-]{8}",
        value=rx(r"(?P<secret>eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*)"),
        window=16384,  # the whole token must be redacted, and JWTs with many claims are long
        validate=_jwt_header,
        in_binary=True,
    ),
    Detector(
        id="url-password",
        title="Password in a URL (user:password@host)",
        anchor=rb"://[^\s:/@\"'<>]{1,64}:",
        value=rx(
            r"://(?P<user>[^\s:/@\"'<>]{1,64}):(?P<secret>[^\s:/@\"'<>]{3,128})@[A-Za-z0-9\[]"
        ),
        validate=_url_password,
        in_binary=True,
    ),
    Detector(
        id="authorization-header",
        title="HTTP Authorization header value (Basic, Bearer, Token, SSWS)",
        # SSWS: Okta's scheme for its API tokens.
        anchor=rb"authorization[\"']?\s{0,4}[:=,]\s{0,4}[\"']?(?:basic|bearer|token|ssws) ",
        value=rx(
            r"(?i)authorization[\"']?\s{0,4}[:=,]\s{0,4}[\"']?(?:basic|bearer|token|ssws) "
            r"(?P<secret>[A-Za-z0-9._~+/=-]{16,2048})"
        ),
        kind=Kind.VENDOR,
        caseless=True,
        window=2200,
        min_entropy=3.0,
    ),
)
