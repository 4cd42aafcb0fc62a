"""AWS (also the keys Amazon Braket uses), Google Cloud, Azure and IBM Cloud credentials."""

from __future__ import annotations

from ..detector import Detector, Kind, rx
from ._common import ASSIGN, STRING_PREFIX, format_token

_Q = rf"""{STRING_PREFIX}["'`]?"""

DETECTORS = (
    format_token(
        "aws-access-key-id",
        "AWS access key id (also used by Amazon Braket)",
        rb"\b(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}",
        r"(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}",
        4,
    ),
    Detector(
        id="aws-secret-access-key",
        title="AWS secret access key",
        anchor=rb"(?:aws_?secret(?:_access)?_?key|secret_?access_?key)",
        value=rx(
            rf"(?i)(?:aws_?secret(?:_access)?_?key|secret_?access_?key){ASSIGN}{_Q}"
            r"(?P<secret>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+])"
        ),
        kind=Kind.VENDOR,
        caseless=True,
        min_entropy=3.5,
    ),
    Detector(
        id="ibm-cos-hmac-secret",
        title="IBM Cloud Object Storage HMAC secret",
        anchor=rb"secret_?access_?key",
        value=rx(rf"(?i)secret_?access_?key{ASSIGN}{_Q}(?P<secret>[0-9a-f]{{48}})(?![0-9a-zA-Z])"),
        kind=Kind.VENDOR,
        caseless=True,
    ),
    format_token(
        "gcp-api-key",
        "Google Cloud API key",
        rb"\bAIza[0-9A-Za-z_-]{35}",
        r"AIza[0-9A-Za-z_-]{35}",
        4,
        in_binary=False,
    ),
    Detector(
        id="gcp-service-account-key",
        title="Google Cloud service-account key file (private_key_id)",
        # Double quotes in the JSON file, single quotes when a notebook prints the loaded dict.
        anchor=rb"[\"']private_key_id[\"']",
        value=rx(r"(?P<q>[\"'])private_key_id(?P=q)\s*:\s*(?P=q)(?P<secret>[0-9a-f]{40})(?P=q)"),
    ),
    format_token(
        "gcp-oauth-client-secret",
        "Google OAuth client secret",
        rb"\bGOCSPX-[A-Za-z0-9_-]{28}",
        r"GOCSPX-[A-Za-z0-9_-]{28}",
        7,
    ),
    Detector(
        id="azure-storage-key",
        title="Azure storage account key (AccountKey=)",
        anchor=rb"AccountKey=",
        value=rx(r"(?i)AccountKey=(?P<secret>[A-Za-z0-9+/]{86}==)"),
        caseless=True,
        in_binary=True,
    ),
    Detector(
        id="azure-shared-access-key",
        title="Azure Service Bus / Event Hubs / IoT SharedAccessKey",
        anchor=rb"SharedAccessKey=",
        value=rx(r"(?i)SharedAccessKey=(?P<secret>[A-Za-z0-9+/]{42,44}=?)(?![A-Za-z0-9+/=])"),
        caseless=True,
        in_binary=True,
    ),
    Detector(
        id="azure-ad-client-secret",
        title="Microsoft Entra ID (Azure AD) client secret",
        anchor=rb"[0-9]Q~[A-Za-z0-9_~.-]{31}",
        value=rx(
            r"(?<![A-Za-z0-9_~.-])(?P<secret>[A-Za-z0-9_~.-]{3}[0-9]Q~[A-Za-z0-9_~.-]{31,34})(?![A-Za-z0-9_~.-])"
        ),
        back=4,
        in_binary=True,
    ),
    Detector(
        id="ibm-cloud-api-key",
        title="IBM Cloud API key (IAM)",
        anchor=rb"ibm[\w.-]{0,30}(?:api_?key|apikey|iam_?key|_key|_token)",
        value=rx(
            rf"(?i)ibm[\w.-]{{0,30}}(?:api_?key|apikey|iam_?key|_key|_token)\w{{0,10}}{ASSIGN}{_Q}"
            r"(?P<secret>[A-Za-z0-9_-]{44})(?![A-Za-z0-9_-])"
        ),
        kind=Kind.VENDOR,
        caseless=True,
        min_entropy=3.5,
    ),
)
