"""Vendor tokens with a documented prefix or structure (issue 13's breadth).

One detector per vendor format, written from each format's public description
(prefix, alphabet, length). A prefix that random text could produce by chance
(``s.``, ``fw_``, ``live_``) comes with a gate on the value: it must mix character
classes the way a generated token does, so identifiers and words pass.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace

from ..detector import Detector, rx
from ..entropy import has_digit_lower_upper, shannon, word_share
from ..filters import Candidate, is_code_expression, is_label_or_reference, is_placeholder
from ._common import format_token, literal_gate, vendor


def _random_looking(min_entropy: float, upper: bool = True) -> Callable[[Candidate], bool]:
    """The value has digits, lower case (and upper case) letters and the entropy of a
    generated token: ``test_model_fits_2d_arrays`` and ``s.getElementsByTagName`` do not."""

    def gate(c: Candidate) -> bool:
        return has_digit_lower_upper(c.secret, upper) and shannon(c.secret) >= min_entropy

    return gate


def _tail_gate(skip: int, min_entropy: float) -> Callable[[Candidate], bool]:
    """After its ``skip``-byte prefix the value has a digit and a generated token's entropy
    (``API-DOCUMENTATIONREFERENCE`` has neither)."""

    def gate(c: Candidate) -> bool:
        tail = c.secret[skip:]
        return any(48 <= b <= 57 for b in tail) and shannon(tail) >= min_entropy

    return gate


_password_gate = literal_gate(2.5, 3.0)


def _typed_password(c: Candidate) -> bool:
    """A password typed where one belongs, unless it is a placeholder, a label or a path
    (``--password smtp_password``, ``$(cat ~/.pw)`` is never read this far)."""
    assigned = replace(c, assigned=True)
    return (
        _password_gate(c)
        and not is_placeholder(assigned)
        and not is_label_or_reference(assigned)
    )


#: An environment variable's assignment of a password, up to the value: an upper-case
#: name (after ``export``, ``%env``, ``set`` or a comment's ``#``) that starts a line, a
#: shell word, a table cell or a string (``\\n`` too: a printed string's ``repr``); not a
#: call's keyword argument (``run(ADMIN_PASSWORD=pw)``).
_ENV_PASSWORD_NAME = re.compile(
    rb"(?:^|(?<=[\s\"'>|`!])|(?<=\\n))(?P<shell>#[ \t]*|!?(?:export|%env|set)[ \t]+)?"
    rb"(?P<name>[A-Z][A-Z0-9_]*(?:PASSWORD|PASSWD|_PASS))=$"
)


#: FTP's anonymous login takes any address as its password (``anonymous@``).
_ANONYMOUS = re.compile(rb"""[(,]\s*[rbuRBU]?["'](?:anonymous|ftp|guest)["']\s*,""", re.IGNORECASE)


def _paired_password(c: Candidate) -> bool:
    return _typed_password(c) and not _ANONYMOUS.search(c.line)


#: A line a code cell hands to the shell (``!docker run -e ...``, ``%env``, ``%set_env``).
_SHELL_LINE = re.compile(rb"^[ \t]*(?:!|%(?:env|set_env)\b)")
#: Values that switch a setting, not passwords (``FIRST_PASS=enabled``).
_SETTING_WORD = re.compile(
    rb"(?i)^(?:true|false|yes|no|on|off|enabled?|disabled?|none|null|auto|default|required|"
    rb"optional|unset|empty|skip)$"
)


def _env_password(c: Candidate) -> bool:
    """``DB_PASSWORD=whiteduke`` in a ``.env`` line is a password whatever it reads as,
    so only the keyword gate's lower limit applies; a value that repeats the name
    (``POSTGRES_PASSWORD=postgres``, a default), a placeholder or a label is not one."""
    at = c.line.find(b"=" + c.secret)
    m = _ENV_PASSWORD_NAME.search(c.line, max(0, at - 120), at + 1) if at >= 0 else None
    if m is None or c.secret.lower() in m.group("name").lower():
        return False
    if _SETTING_WORD.match(c.secret) or (b"/" in c.secret and word_share(c.secret) >= 0.5):
        return False  # MULTI_PASS=disabled, BUILD_PASS=src/main: a setting or a path
    # (A %%bash or %%writefile .env cell is text, not code: notebook.py reads it so.)
    shell = m.group("shell") is not None or _SHELL_LINE.match(c.line) is not None
    plain_line = not (c.in_code or shell) and not m.group("name").endswith(b"_PASS")
    if plain_line and len(c.secret) >= 8 and _password_gate(c):
        return False  # generic-keyword (or a vendor's rule) reports a random-looking one
    assigned = replace(c, assigned=True)
    if c.in_code and not shell and is_code_expression(assigned):
        return False  # Python's DB_PASSWORD=get_password(), not a shell's %env line
    return (
        shannon(c.secret) >= 2.5
        and not is_placeholder(assigned)
        and not is_label_or_reference(assigned)
    )


def _gated(det: Detector, gate: Callable[[Candidate], bool], in_binary: bool = False) -> Detector:
    """``det`` confirmed by ``gate`` instead, and over binary payloads only with
    ``in_binary``; every other field as ``det`` has it but its ``screen`` (the first half of
    the gate it had)."""
    return replace(det, validate=gate, screen=None, in_binary=in_binary)


def _behind(
    id: str, title: str, anchor: bytes, value: str, back: int, in_binary: bool = True
) -> Detector:
    """A token whose distinctive part is in its middle or end (found ``back`` bytes back)."""
    return Detector(
        id=id, title=title, anchor=anchor, value=rx(value), back=back, in_binary=in_binary
    )


def _secret_in(id: str, title: str, anchor: bytes, value: str, in_binary: bool = True) -> Detector:
    """A credential inside a larger structure (a URL); ``value`` names the secret group."""
    return Detector(id=id, title=title, anchor=anchor, value=rx(value), in_binary=in_binary)


_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_UUIDISH = r"[0-9a-z]{8}-[0-9a-z]{4}-[0-9a-z]{4}-[0-9a-z]{4}-[0-9a-z]{12}"

DETECTORS: tuple[Detector, ...] = (
    # --- source hosting, CI, packages -------------------------------------------------------
    format_token(
        "gitlab-runner-registration-token",
        "GitLab runner registration token",
        rb"\bGR1348941[A-Za-z0-9_-]{20}",
        r"GR1348941[A-Za-z0-9_-]{20,40}",
        9,
    ),
    _secret_in(
        "gitlab-session-cookie",
        "GitLab session cookie",
        rb"_gitlab_session=[0-9a-z]{32}",
        r"_gitlab_session=(?P<secret>[0-9a-z]{32})(?![0-9a-z])",
    ),
    format_token(
        "bitbucket-app-password",
        "Bitbucket app password",
        rb"\bATBB[A-Za-z0-9]{32}",
        r"ATBB[A-Za-z0-9_=.-]{32,40}",
        4,
    ),
    format_token(
        "atlassian-api-token",
        "Atlassian (Jira, Confluence) API token",
        rb"\bATATT3[A-Za-z0-9_=-]{32}",
        r"ATATT3[A-Za-z0-9_=-]{150,250}",
        6,
    ),
    format_token(
        "adafruit-io-key",
        "Adafruit IO key",
        rb"\baio_[A-Za-z0-9]{28}",
        r"aio_[A-Za-z0-9]{28}",
        4,
    ),
    format_token(
        "dependency-track-api-key",
        "Dependency-Track API key",
        # Since Dependency-Track 4.13 a key has a public id first: odt_<8>_<32>.
        rb"\bodt_[A-Za-z0-9]{8}_?[A-Za-z0-9]{24}",
        r"odt_(?:[A-Za-z0-9]{8}_)?[A-Za-z0-9]{32}",
        4,
    ),
    format_token(
        "ionic-token",
        "Ionic (Appflow) personal access token",
        rb"\bion_[A-Za-z0-9]{42}",
        r"ion_[A-Za-z0-9]{42}",
        4,
    ),
    format_token(
        "mongodb-atlas-service-account-secret",
        "MongoDB Atlas service account client secret",
        rb"\bmdb_sa_sk_[A-Za-z0-9_-]{40}",
        r"mdb_sa_sk_[A-Za-z0-9_-]{40,64}",
        10,
    ),
    _gated(
        format_token(
            "posthog-personal-api-key",
            "PostHog personal API key",
            rb"\bphx_[A-Za-z0-9_]{43}",
            r"phx_[A-Za-z0-9_]{43}",
            4,
        ),
        _random_looking(3.8),
    ),
    format_token(
        "tavily-api-key",
        "Tavily API key",
        rb"\btvly-[A-Za-z0-9-]{32}",
        r"tvly-(?:dev-|prod-)?[A-Za-z0-9]{32}",
        5,
    ),
    format_token(
        "salesforce-access-token",
        "Salesforce access token (org id ! session)",
        rb"\b00D[A-Za-z0-9]{12}(?:[A-Za-z0-9]{3})?![A-Za-z0-9._]{8}",
        r"00D[A-Za-z0-9]{12}(?:[A-Za-z0-9]{3})?![A-Za-z0-9._]{80,200}(?<!\.)",
        3,
    ),
    _secret_in(
        "sonarqube-login",
        "SonarQube token passed as sonar.login / sonar.token",
        rb"sonar\.(?:login|token)[\"']?[\s=:,]{1,4}[\"']?[a-f0-9]{40}",
        r"sonar\.(?:login|token)[\"']?[\s=:,]{1,4}[\"']?(?P<secret>[a-f0-9]{40})(?![a-f0-9])",
    ),
    format_token(
        "circleci-token",
        "CircleCI personal or project API token",
        rb"\bCCIP(?:AT|RJ)_[A-Za-z0-9]{22}_",
        r"CCIP(?:AT|RJ)_[A-Za-z0-9]{22}_[a-f0-9]{40}",
        7,
    ),
    format_token(
        "buildkite-token", "Buildkite API token", rb"\bbkua_[a-z0-9]{40}", r"bkua_[a-z0-9]{40}", 5
    ),
    format_token(
        "sourcegraph-token",
        "Sourcegraph access token",
        # The middle part is the issuing instance's id, or "local" (sgp_local_...).
        rb"\bsgp_(?:[a-fA-F0-9]{16}|local_[a-fA-F0-9]{10})",
        r"sgp_(?:[a-fA-F0-9]{16}_|local_)?[a-fA-F0-9]{40}",
        4,
    ),
    format_token(
        "sourcegraph-license-key",
        "Sourcegraph license key",
        rb"\bslk_[a-f0-9]{64}",
        r"slk_[a-f0-9]{64}",
        4,
    ),
    format_token(
        "segment-api-token",
        "Segment public API token",
        rb"\bsgp_[A-Za-z0-9]{64}",
        r"sgp_[A-Za-z0-9]{64}",
        4,
    ),
    format_token(
        "sonarqube-token",
        "SonarQube / SonarCloud token",
        # Hexadecimal as SonarQube issues them; other scanners' rules allow any letter.
        rb"\bsq[upa]_[a-z0-9]{40}",
        r"sq[upa]_[a-z0-9]{40}",
        4,
    ),
    format_token(
        "jfrog-reference-token",
        "JFrog reference token",
        rb"\bcmVmdGtu[A-Za-z0-9]{32}",
        r"cmVmdGtu[A-Za-z0-9]{56}",
        8,
        in_binary=False,
    ),
    format_token(
        "docker-hub-token",
        "Docker Hub personal or organisation access token",
        rb"\bdckr_(?:pat|oat)_[A-Za-z0-9_-]{20}",
        r"dckr_(?:pat|oat)_[A-Za-z0-9_-]{27,32}",
        9,
    ),
    format_token(
        "rubygems-token",
        "RubyGems API key",
        rb"\brubygems_[a-f0-9]{48}",
        r"rubygems_[a-f0-9]{48}",
        9,
    ),
    format_token(
        "clojars-token",
        "Clojars deploy token",
        rb"\bCLOJARS_[a-z0-9]{60}",
        r"CLOJARS_[a-z0-9]{60}",
        8,
    ),
    format_token("nuget-api-key", "NuGet API key", rb"\boy2[a-z0-9]{43}", r"oy2[a-z0-9]{43}", 3),
    _gated(
        format_token(
            "cratesio-token",
            "crates.io API token",
            rb"\bcio[A-Za-z0-9]{32}",
            r"cio[A-Za-z0-9]{32}",
            3,
        ),
        _random_looking(4.0),
    ),
    format_token(
        "pulumi-token", "Pulumi access token", rb"\bpul-[a-f0-9]{40}", r"pul-[a-f0-9]{40}", 4
    ),
    _behind(
        "terraform-cloud-token",
        "HashiCorp Terraform Cloud / Enterprise token",
        rb"\.atlasv1\.[A-Za-z0-9_=-]{20}",
        r"(?<![A-Za-z0-9])(?P<secret>[a-z0-9]{14}\.atlasv1\.[A-Za-z0-9_=-]{60,70})(?![A-Za-z0-9_=-])",
        15,
    ),
    _gated(
        format_token(
            "octopus-deploy-api-key",
            "Octopus Deploy API key",
            rb"\bAPI-[A-Z0-9]{26}",
            r"API-[A-Z0-9]{26}",
            4,
        ),
        _tail_gate(4, 3.5),
    ),
    format_token(
        "harness-token",
        "Harness personal or service-account token",
        rb"\b(?:pat|sat)\.[A-Za-z0-9_-]{22}\.",
        r"(?:pat|sat)\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9]{24}\.[A-Za-z0-9]{20}",
        4,
    ),
    format_token(
        "readme-api-key", "ReadMe API key", rb"\brdme_[a-z0-9]{70}", r"rdme_[a-z0-9]{70}", 5
    ),
    format_token(
        "postman-api-key",
        "Postman API key",
        rb"\bPMAK-[a-fA-F0-9]{24}-",
        r"PMAK-[a-fA-F0-9]{24}-[a-fA-F0-9]{34}",
        5,
    ),
    format_token(
        "prefect-api-key",
        "Prefect Cloud API key",
        rb"\bpnu_[A-Za-z0-9]{36}",
        r"pnu_[A-Za-z0-9]{36}",
        4,
    ),
    format_token(
        "doppler-token",
        "Doppler token",
        rb"\bdp\.(?:pt|st|sa|ct|scim|audit)\.",
        r"dp\.(?:pt|st|sa|ct|scim|audit)\.(?:[a-z0-9_-]{1,40}\.)?[A-Za-z0-9]{40,44}",
        6,
    ),
    format_token(
        "infracost-api-key",
        "Infracost API key",
        rb"\bico-[A-Za-z0-9]{32}",
        r"ico-[A-Za-z0-9]{32}",
        4,
    ),
    format_token(
        "scalingo-token",
        "Scalingo API token",
        rb"\btk-us-[A-Za-z0-9_-]{48}",
        r"tk-us-[A-Za-z0-9_-]{48}",
        6,
    ),
    format_token(
        "defined-networking-key",
        "Defined Networking API key",
        rb"\bdnkey-[A-Za-z0-9=_-]{26}-",
        r"dnkey-[A-Za-z0-9=_-]{26}-[A-Za-z0-9=_-]{52}",
        6,
    ),
    format_token(
        "tailscale-key",
        "Tailscale API, auth or OAuth client key",
        rb"\btskey-(?:api|auth|client|scim|webhook)-[A-Za-z0-9]{6}",
        r"tskey-(?:api|auth|client|scim|webhook)-[A-Za-z0-9]{6,20}-[A-Za-z0-9]{20,40}",
        11,
    ),
    format_token(
        "fly-token",
        "Fly.io access token",
        rb"\bf(?:o1|m1a|m1r|m2)_[A-Za-z0-9_+/-]{20}",
        r"(?:fo1_[A-Za-z0-9_-]{43}|fm(?:1a|1r|2)_[A-Za-z0-9+/=_-]{100,2000})",
        4,
    ),
    format_token(
        "render-api-key", "Render API key", rb"\brnd_[A-Za-z0-9]{32}", r"rnd_[A-Za-z0-9]{32}", 4
    ),
    format_token(
        "netlify-token",
        "Netlify personal access token",
        rb"\bnf[pcou]_[A-Za-z0-9]{36}",
        r"nf[pcou]_[A-Za-z0-9]{36,40}",
        4,
    ),
    format_token(
        "heroku-api-key",
        "Heroku API key",
        rb"\bHRKU-[A-Za-z0-9_-]{30}",
        r"HRKU-[A-Za-z0-9_-]{60}",
        5,
    ),
    format_token(
        "supabase-token",
        "Supabase access token or secret key",
        rb"\bsb(?:p_[a-f0-9]{40}|_secret_[A-Za-z0-9_-]{20})",
        r"sb(?:p_[a-f0-9]{40}|_secret_[A-Za-z0-9_-]{31,40})",
        4,
    ),
    format_token(
        "planetscale-token",
        "PlanetScale service token, password or OAuth token",
        rb"\bpscale_(?:tkn|pw|oauth)_[A-Za-z0-9_=.-]{32}",
        r"pscale_(?:tkn|pw|oauth)_[A-Za-z0-9_=.-]{32,64}",
        11,
    ),
    # --- clouds -------------------------------------------------------------------------------
    format_token(
        "aws-bedrock-api-key",
        "Amazon Bedrock API key (long-term)",
        rb"\bABSK[A-Za-z0-9+/]{100}",
        r"ABSK[A-Za-z0-9+/]{100,400}={0,2}",
        4,
    ),
    format_token(
        "aws-session-token",
        "AWS temporary session token",
        rb"\b(?:IQoJb3JpZ2luX2Vj|FwoGZXIvYXdzE)[A-Za-z0-9+/]{20}",
        r"(?:IQoJb3JpZ2luX2Vj|FwoGZXIvYXdzE)[A-Za-z0-9+/]{100,2000}={0,2}",
        0,
        in_binary=False,
    ),
    format_token(
        "gcp-oauth-access-token",
        "Google OAuth 2.0 access token",
        rb"\bya29\.[A-Za-z0-9_-]{20}",
        r"ya29\.[A-Za-z0-9_-]{30,2000}",
        5,
    ),
    _gated(
        format_token(
            "gcp-oauth-refresh-token",
            "Google OAuth 2.0 refresh token",
            rb"\b1//0[A-Za-z0-9_-]{30}",
            r"1//0[A-Za-z0-9_-]{30,500}",
            4,
        ),
        _random_looking(4.0),
    ),
    _behind(
        "azure-openai-key",
        "Azure OpenAI / AI services key (84 characters)",
        rb"JQQJ9[A-Za-z0-9]{3}",
        r"(?<![A-Za-z0-9])(?P<secret>[A-Za-z0-9]{76}JQQJ9[A-Za-z0-9]{3})(?![A-Za-z0-9])",
        80,
    ),
    _behind(
        "azure-devops-pat",
        "Azure DevOps personal access token (84 characters, AZDO at 76)",
        rb"AZDO[A-Za-z0-9]{4}",
        r"(?<![A-Za-z0-9])(?P<secret>[A-Za-z0-9]{76}AZDO[A-Za-z0-9]{4})(?![A-Za-z0-9])",
        80,
    ),
    _behind(
        # Microsoft's identifiable keys (DevOps, AI services, Cosmos DB ...): 52 random
        # characters, the signature JQQJ, then the version, date and service tag.
        "azure-identifiable-key",
        "Azure identifiable key (84 characters, JQQJ at 52)",
        rb"JQQJ[A-Za-z0-9]{4}",
        r"(?<![A-Za-z0-9])(?P<secret>[A-Za-z0-9]{52}JQQJ[A-Za-z0-9]{28})(?![A-Za-z0-9])",
        56,
    ),
    _secret_in(
        "azure-sas-token",
        "Azure shared access signature (sig= in a SAS URL)",
        rb"[?&;]sig=[A-Za-z0-9%+/]{30}",
        r"[?&;]sig=(?P<secret>[A-Za-z0-9%+/]{30,120}(?:%3D|=){0,2})",
    ),
    format_token(
        "alibaba-access-key-id",
        "Alibaba Cloud AccessKey ID",
        rb"\bLTAI[A-Za-z0-9]{20}",
        r"LTAI[A-Za-z0-9]{12,20}",
        4,
    ),
    format_token(
        "tencent-secret-id",
        "Tencent Cloud SecretId",
        rb"\bAKID[A-Za-z0-9]{32}",
        r"AKID[A-Za-z0-9]{32}",
        4,
    ),
    format_token(
        "yandex-api-key",
        "Yandex Cloud API key",
        rb"\bAQVN[A-Za-z0-9_-]{35}",
        r"AQVN[A-Za-z0-9_-]{35,38}",
        4,
    ),
    format_token(
        "yandex-iam-token",
        "Yandex Cloud IAM token",
        rb"\bt1\.[A-Za-z0-9_-]{8}",
        r"t1\.[A-Za-z0-9_-]+={0,2}\.[A-Za-z0-9_-]{86}={0,2}",
        3,
    ),
    _gated(
        format_token(
            "yandex-static-key",
            "Yandex Cloud static access key",
            rb"\bYC[A-Za-z0-9_-]{38}",
            r"YC[A-Za-z0-9_-]{38}",
            2,
        ),
        _random_looking(4.0),
    ),
    _gated(
        format_token(
            "scaleway-access-key",
            "Scaleway access key",
            rb"\bSCW[A-Z0-9]{17}",
            r"SCW[A-Z0-9]{17}",
            3,
        ),
        _tail_gate(3, 3.3),
    ),
    format_token(
        "digitalocean-token",
        "DigitalOcean personal access, OAuth or refresh token",
        rb"\bdo[opr]_v1_[a-f0-9]{64}",
        r"do[opr]_v1_[a-f0-9]{64}",
        7,
    ),
    format_token(
        "cloudflare-origin-ca-key",
        "Cloudflare Origin CA key",
        rb"\bv1\.0-[a-f0-9]{24}",
        r"v1\.0-[a-f0-9]{24,64}-[a-f0-9]{64,200}(?:-[a-f0-9]{16,128})?",
        5,
    ),
    format_token(
        "databricks-token",
        "Databricks personal access token",
        rb"\bdapi[a-f0-9]{32}",
        r"dapi[a-f0-9]{32}(?:-[0-9])?",
        4,
    ),
    format_token(
        "clickhouse-cloud-secret",
        "ClickHouse Cloud API secret",
        rb"\b4b1d[A-Za-z0-9]{38}",
        r"4b1d[A-Za-z0-9]{38}",
        4,
    ),
    format_token(
        "openshift-token",
        "OpenShift user token",
        rb"\bsha256~[A-Za-z0-9_-]{43}",
        r"sha256~[A-Za-z0-9_-]{43}",
        7,
    ),
    # --- AI services ------------------------------------------------------------------------
    format_token(
        "pinecone-api-key",
        "Pinecone API key",
        rb"\bpcsk_[A-Za-z0-9]{5}",
        r"pcsk_[A-Za-z0-9]{5,6}_[A-Za-z0-9]{50,70}",
        5,
    ),
    format_token(
        "groq-api-key", "Groq API key", rb"\bgsk_[A-Za-z0-9]{52}", r"gsk_[A-Za-z0-9]{52}", 4
    ),
    format_token(
        "replicate-token", "Replicate API token", rb"\br8_[A-Za-z0-9]{37}", r"r8_[A-Za-z0-9]{37}", 3
    ),
    format_token(
        "xai-api-key", "xAI API key", rb"\bxai-[A-Za-z0-9]{80}", r"xai-[A-Za-z0-9]{80}", 4
    ),
    format_token(
        "perplexity-api-key",
        "Perplexity API key",
        rb"\bpplx-[A-Za-z0-9]{48}",
        r"pplx-[A-Za-z0-9]{48}",
        5,
    ),
    format_token(
        "langsmith-api-key",
        "LangSmith API key",
        rb"\blsv2_(?:pt|sk)_[a-f0-9]{32}_",
        r"lsv2_(?:pt|sk)_[a-f0-9]{32}_[a-f0-9]{10}",
        8,
    ),
    _gated(
        format_token(
            "fireworks-api-key",
            "Fireworks AI API key",
            rb"\bfw_[A-Za-z0-9]{24}",
            r"fw_[A-Za-z0-9]{24}",
            3,
        ),
        _random_looking(3.8),
    ),
    format_token(
        "elevenlabs-api-key", "ElevenLabs API key", rb"\bsk_[a-f0-9]{48}", r"sk_[a-f0-9]{48}", 3
    ),
    _gated(
        format_token(
            "sk-api-key",
            "sk- API key (DeepSeek, Stability AI and other OpenAI-compatible services)",
            rb"\bsk-[A-Za-z0-9]{32}",
            r"sk-(?:[a-f0-9]{32}|[A-Za-z0-9]{48})",
            3,
        ),
        _tail_gate(3, 3.5),
        in_binary=False,
    ),
    format_token(
        "openrouter-api-key",
        "OpenRouter API key",
        rb"\bsk-or-v1-[a-f0-9]{64}",
        r"sk-or-v1-[a-f0-9]{64}",
        9,
    ),
    format_token(
        "nvidia-api-key",
        "NVIDIA API key",
        rb"\bnvapi-[A-Za-z0-9_-]{64}",
        r"nvapi-[A-Za-z0-9_-]{64}",
        6,
    ),
    format_token(
        "neptune-api-token",
        "neptune.ai API token",
        rb"\beyJhcGlfYWRkcmVzcyI6[A-Za-z0-9+/]{20}",
        r"eyJhcGlfYWRkcmVzcyI6[A-Za-z0-9+/]{40,400}={0,2}",
        0,
        in_binary=False,
    ),
    # --- payments and commerce --------------------------------------------------------------
    format_token(
        "stripe-webhook-secret",
        "Stripe webhook signing secret",
        rb"\bwhsec_[A-Za-z0-9]{32}",
        r"whsec_[A-Za-z0-9+/=]{32,64}",
        6,
    ),
    format_token(
        "square-access-token",
        "Square access token",
        rb"\bEAAA[A-Za-z0-9_-]{59}",
        r"EAAA[A-Za-z0-9_-]{59,64}",
        4,
    ),
    format_token(
        "facebook-access-token",
        "Meta (Facebook, Instagram) access token",
        rb"\bEAA[B-Z][A-Za-z0-9]{60}",
        r"EAA[B-Z][A-Za-z0-9]{96,400}",
        3,
        in_binary=False,
    ),
    _gated(
        format_token(
            "facebook-app-access-token",
            "Meta app access token (app id|secret)",
            rb"\b[0-9]{15,16}\|[A-Za-z0-9_-]{27}",
            r"[0-9]{15,16}\|[A-Za-z0-9_-]{27,40}",
            0,
        ),
        lambda c: shannon(c.secret.split(b"|", 1)[1]) >= 3.8,
    ),
    format_token(
        "braintree-access-token",
        "PayPal Braintree access token",
        rb"access_token\$(?:production|sandbox)\$",
        r"access_token\$(?:production|sandbox)\$[0-9a-z]{16}\$[0-9a-f]{32}",
        0,
    ),
    format_token(
        "shopify-token",
        "Shopify access token or shared secret",
        rb"\bshp(?:at|ca|pa|ss)_[a-fA-F0-9]{32}",
        r"shp(?:at|ca|pa|ss)_[a-fA-F0-9]{32}",
        6,
    ),
    format_token(
        "flutterwave-secret-key",
        "Flutterwave secret or encryption key",
        rb"\bFLWSECK",
        r"FLWSECK(?:_TEST)?(?:-[a-hA-H0-9]{32}-X|[a-hA-H0-9]{12})",
        7,
    ),
    format_token(
        "razorpay-key",
        "Razorpay API key id",
        rb"\brzp_(?:live|test)_[A-Za-z0-9]{14}",
        r"rzp_(?:live|test)_[A-Za-z0-9]{14}",
        9,
    ),
    format_token(
        "plaid-access-token",
        "Plaid access token",
        rb"\baccess-(?:sandbox|development|production)-[0-9a-f]{8}-",
        rf"access-(?:sandbox|development|production)-{_UUID}",
        0,
    ),
    format_token(
        "shippo-token",
        "Shippo API token",
        rb"\bshippo_(?:live|test)_[a-fA-F0-9]{40}",
        r"shippo_(?:live|test)_[a-fA-F0-9]{40}",
        12,
    ),
    _gated(
        format_token(
            "live-test-hex-key",
            "live_/test_ API key of hex digits (Lob and others)",
            rb"\b(?:live|test)_(?:pub_)?[a-f0-9]{30}",
            r"(?:live|test)_(?:pub_)?[a-f0-9]{31,35}",
            5,
        ),
        lambda c: shannon(c.secret.rsplit(b"_", 1)[1]) >= 3.3,
    ),
    _gated(
        format_token(
            "live-test-api-key",
            "live_/test_ API key (Mollie, GoCardless and others)",
            rb"\b(?:live|test)_[A-Za-z0-9][A-Za-z0-9_-]{29}",
            r"(?:live|test)_[A-Za-z0-9][A-Za-z0-9_-]{29,60}",
            5,
        ),
        _random_looking(4.0),
    ),
    format_token(
        "duffel-token",
        "Duffel access token",
        rb"\bduffel_(?:test|live)_[A-Za-z0-9_=-]{43}",
        r"duffel_(?:test|live)_[A-Za-z0-9_=-]{43}",
        12,
    ),
    format_token(
        "easypost-api-key",
        "EasyPost production or test API key",
        rb"\bEZ[AT]K[A-Za-z0-9]{54}",
        r"EZ[AT]K[A-Za-z0-9]{54}",
        4,
    ),
    _gated(
        format_token(
            "adyen-api-key",
            "Adyen API key",
            rb"\bAQE[A-Za-z0-9]{20}",
            r"AQE[A-Za-z0-9+/=._-]{60,300}",
            3,
        ),
        _random_looking(4.0),
    ),
    # --- messaging and e-mail ---------------------------------------------------------------
    format_token(
        "slack-app-token",
        "Slack app-level token",
        rb"\bxapp-[0-9]-[A-Z0-9]{9}",
        r"xapp-[0-9]-[A-Z0-9]+-[0-9]+-[a-z0-9]+",
        5,
    ),
    format_token(
        "slack-config-token",
        "Slack configuration (refresh) token",
        rb"\bxoxe(?:\.xox[bp])?-[0-9]-[A-Za-z0-9]{20}",
        r"xoxe(?:\.xox[bp])?-[0-9]-[A-Za-z0-9]{140,170}",
        5,
    ),
    _secret_in(
        "slack-workflow-webhook",
        "Slack workflow webhook URL",
        rb"hooks\.slack\.com/(?:triggers|workflows)/T[A-Z0-9]{8}",
        r"hooks\.slack\.com/(?:triggers|workflows)/(?P<secret>T[A-Za-z0-9_]{8,}/[A-Za-z0-9_/]{20,200})",
    ),
    _secret_in(
        "discord-webhook",
        "Discord webhook URL",
        rb"discord(?:app)?\.com/api/webhooks/[0-9]{17}",
        r"discord(?:app)?\.com/api/webhooks/(?P<secret>[0-9]{17,20}/[A-Za-z0-9_-]{60,70})",
    ),
    _secret_in(
        "teams-webhook",
        "Microsoft Teams incoming webhook URL",
        # The current host (<tenant>.webhook.office.com/webhookb2/), the retired one
        # (outlook.office.com/webhook/), and the signature newer URLs end with.
        # The ids are UUIDs; read as any letters and digits in their shape, as other
        # scanners' rules do, since the host and path already tell.
        rb"(?:webhook\.office\.com/webhookb2|outlook\.office\.com/webhook)/[a-z0-9-]{8}",
        rf"(?:webhook\.office\.com/webhookb2|outlook\.office\.com/webhook)/(?P<secret>{_UUIDISH}@"
        rf"{_UUIDISH}/IncomingWebhook/[A-Za-z0-9]{{32}}/{_UUIDISH}(?:/[A-Za-z0-9_-]{{20,200}})?)",
    ),
    _secret_in(
        "sidekiq-credentials",
        "Sidekiq Enterprise/Pro credentials (BUNDLE_ENTERPRISE__CONTRIBSYS__COM=id:secret, "
        "bundle config enterprise.contribsys.com id:secret)",
        rb"(?:BUNDLE_(?:ENTERPRISE|GEMS)__CONTRIBSYS__COM"
        rb"|(?:enterprise|gems)\.contribsys\.com[ \t])",
        r"(?:BUNDLE_(?:ENTERPRISE|GEMS)__CONTRIBSYS__COM[\"']?[ \t]{0,4}[:=][ \t]{0,4}[\"']?"
        r"|(?:enterprise|gems)\.contribsys\.com[ \t]+)"
        r"(?P<secret>[a-f0-9]{8}:[a-f0-9]{8})(?![A-Za-z0-9])",
    ),
    _secret_in(
        "zapier-webhook",
        "Zapier catch hook URL",
        rb"hooks\.zapier\.com/hooks/catch/[0-9]{4}",
        r"hooks\.zapier\.com/hooks/catch/(?P<secret>[0-9]{4,12}/[A-Za-z0-9]{5,16})",
    ),
    _secret_in(
        "twilio-account-credentials",
        "Twilio account SID with its auth token (SID:token)",
        rb"\bAC[a-f0-9]{32}:[a-f0-9]{8}",
        r"AC[a-f0-9]{32}:(?P<secret>[a-f0-9]{32})(?![a-f0-9])",
    ),
    format_token(
        "mailgun-api-key",
        "Mailgun API key",
        rb"\bkey-[a-f0-9]{32}",
        r"key-[a-f0-9]{32}",
        4,
    ),
    _gated(
        format_token(
            "mandrill-api-key",
            "Mailchimp Transactional (Mandrill) API key",
            rb"\bmd-[A-Za-z0-9_-]{22}",
            r"md-[A-Za-z0-9_-]{22}",
            3,
        ),
        _random_looking(3.8),
    ),
    format_token(
        "brevo-api-key",
        "Brevo (Sendinblue) API or SMTP key",
        rb"\bx(?:keysib|smtpsib)-[a-f0-9]{64}-",
        r"x(?:keysib|smtpsib)-[a-f0-9]{64}-[A-Za-z0-9]{16}",
        8,
    ),
    format_token(
        "telnyx-api-key",
        "Telnyx API key",
        rb"\bKEY[0-9A-F]{32}_",
        r"KEY[0-9A-F]{32}_[A-Za-z0-9]{22}",
        3,
    ),
    format_token(
        "pubnub-secret-key",
        "PubNub secret key",
        rb"\bsec-c-[A-Za-z0-9]{20}",
        r"sec-c-[A-Za-z0-9+/=]{40,60}",
        6,
    ),
    format_token(
        "intercom-access-token",
        "Intercom access token",
        rb"\bdG9rO[A-Za-z0-9+/]{50}",
        r"dG9rO[A-Za-z0-9+/]{50,60}={0,2}",
        0,
        in_binary=False,
    ),
    format_token(
        "twitter-bearer-token",
        "X (Twitter) app bearer token",
        rb"\bA{22}[A-Za-z0-9%]{10}",
        r"A{20,22}[A-Za-z0-9%]{80,140}",
        0,
        in_binary=False,
    ),
    # --- observability and SaaS -------------------------------------------------------------
    format_token(
        "newrelic-key",
        "New Relic user, admin, insert or browser key",
        rb"\bNR(?:AK|AA|II|JS)-[A-Za-z0-9_-]{19}",
        r"NR(?:AK-[A-Z0-9]{27}|AA-[a-f0-9]{27}|II-[A-Za-z0-9_-]{32}|JS-[a-f0-9]{19})",
        5,
    ),
    _behind(
        "newrelic-license-key",
        "New Relic ingest license key",
        # A region prefix (eu01xx) may start it.
        rb"[a-f0-9]{8}NRAL",
        r"(?<![A-Za-z0-9])(?P<secret>[a-z0-9]{36}NRAL)(?![A-Za-z0-9])",
        44,
    ),
    format_token(
        "sentry-token",
        "Sentry user or organisation auth token",
        rb"\bsntry[us]_[A-Za-z0-9]{20}",
        r"(?:sntryu_[a-f0-9]{64}|sntrys_eyJ[A-Za-z0-9+/=_-]{60,500})",
        7,
    ),
    format_token(
        "grafana-token",
        "Grafana Cloud or service-account token, or API key",
        rb"\b(?:glc_[A-Za-z0-9+/]{32}|glsa_[A-Za-z0-9]{32}_|eyJrIjoi[A-Za-z0-9]{40})",
        r"(?:glc_[A-Za-z0-9+/]{32,400}={0,3}|glsa_[A-Za-z0-9]{32}_[A-Fa-f0-9]{8}|eyJrIjoi[A-Za-z0-9+/]{40,400}={0,3})",
        4,
    ),
    format_token(
        "dynatrace-token",
        "Dynatrace API token",
        rb"\bdt0c01\.[A-Z0-9]{24}\.",
        r"dt0c01\.[A-Z0-9]{24}\.[A-Z0-9]{64}",
        7,
    ),
    format_token(
        "launchdarkly-key",
        "LaunchDarkly SDK, mobile or API key",
        rb"\b(?:sdk|mob|api)-[0-9a-f]{8}-[0-9a-f]{4}-",
        rf"(?:sdk|mob|api)-{_UUID}",
        4,
    ),
    replace(
        format_token(
            "airtable-pat",
            "Airtable personal access token",
            rb"\bpat[A-Za-z0-9]{14}\.[a-f0-9]{64}",
            r"pat[A-Za-z0-9]{14}\.[a-f0-9]{64}",
            3,
        ),
        in_markup=False,  # "pat" begins every <path of a drawing
    ),
    format_token(
        "figma-token",
        "Figma access token",
        rb"\bfig[dou]_[A-Za-z0-9_-]{40}",
        r"fig[dou]_[A-Za-z0-9_-]{40}",
        5,
    ),
    _behind(
        "asana-pat",
        "Asana personal access token",
        rb"[0-9]{4}:[a-f0-9]{32}",
        r"(?<![0-9A-Za-z/])(?P<secret>[12]/[0-9]{12,20}(?:/[0-9]{12,20})?:[a-f0-9]{32})(?![A-Za-z0-9])",
        48,
    ),
    format_token(
        "trello-token", "Trello token", rb"\bATTA[A-Fa-f0-9]{60}", r"ATTA[A-Fa-f0-9]{60,72}", 4
    ),
    format_token(
        "typeform-token",
        "Typeform personal access token",
        rb"\btfp_[A-Za-z0-9_.=-]{40}",
        r"tfp_[A-Za-z0-9_.=-]{59,70}",
        4,
    ),
    format_token(
        "contentful-pat",
        "Contentful personal access token",
        rb"\bCFPAT-[A-Za-z0-9_-]{43}",
        r"CFPAT-[A-Za-z0-9_-]{43}",
        6,
    ),
    format_token(
        "ubidots-token",
        "Ubidots API token",
        rb"\bBBFF-[A-Za-z0-9]{30}",
        r"BBFF-[A-Za-z0-9]{30}",
        5,
    ),
    format_token(
        "pagarme-api-key",
        "Pagar.me API key",
        rb"\bak_(?:live|test)_[A-Za-z0-9]{30}",
        r"ak_(?:live|test)_[A-Za-z0-9]{30,40}",
        8,
    ),
    format_token(
        "teamwork-token",
        "Teamwork (Projects, Desk, CRM, Spaces) API token",
        rb"\btkn\.v1_[A-Za-z0-9]{20}",
        r"tkn\.v1_[A-Za-z0-9+/]{60,90}={0,2}",
        7,
    ),
    format_token(
        "frameio-token",
        "Frame.io API token",
        rb"\bfio-u-[A-Za-z0-9_=-]{64}",
        r"fio-u-[A-Za-z0-9_=-]{64}",
        6,
    ),
    format_token(
        "mapbox-secret-token",
        "Mapbox secret or temporary access token",
        rb"\b[st]k\.eyJ[A-Za-z0-9_-]{20}",
        r"[st]k\.eyJ[A-Za-z0-9_-]{20,100}\.[A-Za-z0-9_-]{22}",
        6,
    ),
    format_token(
        "dropbox-token",
        "Dropbox short- or long-lived access token",
        rb"\b(?:sl\.[A-Za-z0-9_=-]{100}|[a-z0-9]{11}AAAAAAAAAA[A-Za-z0-9_=-]{20})",
        r"(?:sl\.(?:u\.)?[A-Za-z0-9_=-]{130,1500}|[a-z0-9]{11}AAAAAAAAAA[A-Za-z0-9_=-]{43})",
        0,  # a long-lived token starts with random characters: no public prefix
    ),
    format_token(
        "hubspot-pat",
        "HubSpot private app access token",
        rb"\bpat-(?:na|eu)[12]-[0-9a-f]{8}-",
        rf"pat-(?:na|eu)[12]-{_UUID}",
        8,
    ),
    _behind(
        "maxmind-license-key",
        "MaxMind license key",
        rb"_mmk",
        r"(?<![A-Za-z0-9_])(?P<secret>[A-Za-z0-9]{6}_[A-Za-z0-9]{29}_mmk)(?![A-Za-z0-9_-])",
        36,
    ),
    format_token(
        "notion-token",
        "Notion integration token",
        rb"\b(?:ntn_[0-9]{11}[A-Za-z0-9]{20}|secret_[A-Za-z0-9]{43})",
        r"(?:ntn_[0-9]{11}[A-Za-z0-9]{35}|secret_[A-Za-z0-9]{43})",
        4,
    ),
    format_token(
        "linear-api-key",
        "Linear API key",
        rb"\blin_(?:api|oauth)_[A-Za-z0-9]{40}",
        r"lin_(?:api|oauth)_[A-Za-z0-9]{40}",
        8,
    ),
    vendor(
        "wolfram-alpha-appid",
        "Wolfram|Alpha AppID",
        r"wolfram",
        r"app_?id|api_?key|key",
        r"[A-Za-z0-9-]",
        17,
    ),
    vendor(
        "sumologic-access-id",
        "Sumo Logic access id",
        r"sumo",
        r"access_?id",
        r"[A-Za-z0-9]",
        14,
    ),
    # A password typed on a command line or in a .netrc is often a placeholder
    # (``user:password``, ``changeme``), so these get the keyword placeholder words and
    # entropy gate; ``!curl`` in a code cell is a shell line, never a Python expression.
    Detector(
        id="curl-user-password",
        title="Password given to curl -u / --user",
        anchor=rb"\bcurl\s",
        value=rx(
            r"curl[^\n]{0,200}?\s(?:-u|--user)[\s=]{1,4}[\"']?[^\s:\"']{1,64}:"
            r"(?P<secret>[^\s\"']{4,128})"
        ),
        validate=_typed_password,
    ),
    Detector(
        id="cli-password-flag",
        title="Password given as a command-line option (--password X, -Password X)",
        # The option's own dash; a name ending in it is no option (reset-password X).
        anchor=rb"-(?:password|passwd|pwd)(?:[ \t=]|[\"'][ \t]*,)",
        caseless=True,
        value=rx(
            r"(?i)(?<![A-Za-z0-9_./])-(?:password|passwd|pwd)(?:"
            # --password "two words&more": the whole quoted value
            r"[ \t]*(?:=|[ \t])[ \t]*(?P<q>[\"'])(?P<secret>[^\"'\n$`]{6,127})(?P=q)"
            # --password=value (not a variable, template, substitution or next option)
            r"|[ \t]*(?:=|[ \t])[ \t]*(?P<secret2>[^\s\"'`$%<>(){}\[\]|;&-][^\s\"'`;|&]{5,127})"
            # a subprocess argument list: "--password", "value"
            r"|[\"'][ \t]*,[ \t]*[\"'](?P<secret3>[^\"'\n$`-][^\"'\n$`]{5,127})[\"'])"
        ),
        validate=_typed_password,
    ),
    Detector(
        id="credential-pair",
        title="Password given with a user name to code (auth=('user', 'X'), "
        "HTTPBasicAuth('user', 'X'), server.login('user', 'X'), NetworkCredential('user', 'X'))",
        # A tuple, never a list: ``allowed_auth = ["basic", "kerberos"]`` names methods.
        anchor=rb"(?:\bauth[ \t]*=[ \t]*\(|(?:BasicAuth|DigestAuth|NetworkCredential|\.login)\()",
        value=rx(
            r"(?:(?<![\w.])auth[ \t]*=[ \t]*\("
            r"|(?:BasicAuth|DigestAuth|NetworkCredential|\.login)\()"
            r"\s{0,40}(?P<user>[rbuRBU]?[\"'][^\"'\n]{1,128}[\"']"
            r"|[A-Za-z_][\w.]{0,64}(?:\[[^\]\n]{1,40}\])?)\s{0,40},\s{0,40}"
            r"[rbuRBU]?(?P<q>[\"'])(?P<secret>[^\"'\n]{4,128})(?P=q)"
        ),
        validate=_paired_password,
    ),
    Detector(
        id="xml-config-password",
        title="Password in an XML setting (<add key=\"ClearTextPassword\" value=\"X\"/>, "
        "NuGet.config, app.config)",
        anchor=rb"<add[ \t]+key=\"",
        value=rx(
            r"(?i)<add\s+key=\"[^\"\n]{0,60}?(?:password|passwd|pwd|secret|token|api_?key)"
            r"[^\"\n]{0,20}\"\s+value=\"(?P<secret>[^\"\n]{4,128})\""
        ),
        validate=_typed_password,
    ),
    Detector(
        id="env-file-password",
        title="Password set in an environment file or shell line (DB_PASSWORD=X)",
        anchor=rb"(?:PASSWORD|PASSWD|_PASS)=[^\s\"'`$]",
        # Not into a call's brackets or its next argument (f(ADMIN_PASSWORD=pw, x=1)), nor
        # a repr's escaped line break.
        value=rx(
            r"(?:PASSWORD|PASSWD|_PASS)="
            r"(?P<secret>[^\s\"'`$#(){}\[\],;\\][^\s\"'`#(){}\[\],;\\]{5,127})"
        ),
        validate=_env_password,
    ),
    Detector(
        id="netrc-password",
        title="Password in a .netrc entry (machine ... login ... password ...)",
        anchor=rb"\bmachine\s",
        value=rx(r"machine\s+\S+\s+login\s+\S+\s+password\s+(?P<secret>[^\s\"']{4,128})"),
        validate=_typed_password,
    ),
    Detector(
        id="kubernetes-secret-data",
        title="Value in the data: block of a Kubernetes Secret manifest",
        anchor=rb"\bkind:[ \t]{0,4}Secret\b",
        # The first value under data:/stringData: (base64 or plain); a manifest in a
        # triple-quoted string is text, so the value is read as a literal.
        value=rx(
            r"kind:[ \t]{0,4}Secret\b[\s\S]{0,800}?\n[ \t]*(?:data|stringData):[ \t]*\r?\n"
            r"[ \t]+[\w.-]{1,64}:[ \t]*[\"']?(?P<secret>[A-Za-z0-9+/=_.-]{8,512})"
        ),
        window=1500,
        validate=_typed_password,
    ),
    # --- identity and secrets managers -------------------------------------------------------
    format_token(
        "onepassword-secret-key",
        "1Password account secret key",
        rb"\bA3-[A-Z0-9]{6}-",
        r"A3-[A-Z0-9]{6}-(?:[A-Z0-9]{11}|[A-Z0-9]{6}-[A-Z0-9]{5})-[A-Z0-9]{5}-[A-Z0-9]{5}-[A-Z0-9]{5}",
        3,
    ),
    format_token(
        "onepassword-service-account-token",
        "1Password service-account token",
        rb"\bops_eyJ[A-Za-z0-9+/=]{20}",
        r"ops_eyJ[A-Za-z0-9+/=_-]{100,2000}",
        7,
    ),
    Detector(
        id="age-secret-key",
        title="age encryption secret key",
        anchor=rb"AGE-SECRET-KEY-1[QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L]{20}",
        value=rx(
            r"(?i)(?P<secret>AGE-SECRET-KEY-1[QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L]{58})(?![A-Za-z0-9])"
        ),
        caseless=True,
        public_prefix=16,
        in_binary=True,
    ),
    format_token(
        "authress-key",
        "Authress service client access key",
        rb"\b(?:sc|ext|scauth|authress)_[a-z0-9]{5}",
        r"(?:sc|ext|scauth|authress)_[a-z0-9]{5,30}\.[a-z0-9]{4,6}\.acc[_-][a-z0-9-]{10,32}\.[A-Za-z0-9+/_=-]{30,120}",
        0,
    ),
    format_token(
        "settlemint-token",
        "SettleMint access token",
        rb"\bsm_(?:pat|aat|sat)_[A-Za-z0-9]{16}",
        r"sm_(?:pat|aat|sat)_[A-Za-z0-9]{16}",
        7,
    ),
    format_token(
        "intra42-client-secret",
        "42 intra OAuth client secret",
        rb"\bs-s4t2(?:ud|af)-[a-f0-9]{64}",
        r"s-s4t2(?:ud|af)-[a-f0-9]{64}",
        9,
    ),
    replace(
        _gated(
            format_token(
                "vault-legacy-token",
                "HashiCorp Vault / OpenBao token in the legacy s. format",
                rb"\bs\.[A-Za-z0-9]{24}",
                r"s\.[A-Za-z0-9]{24}(?![.])",
                2,
            ),
            _random_looking(3.8),
        ),
        in_markup=False,  # a two-byte literal: drawings are full of it
    ),
    format_token(
        "infisical-token",
        "Infisical service token",
        rb"\bst\.[0-9a-f]{8}-",
        rf"st\.{_UUID}\.[a-f0-9]{{32}}\.[a-f0-9]{{32}}",
        3,
    ),
)
