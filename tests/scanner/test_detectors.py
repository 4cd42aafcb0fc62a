"""Decision table for every detector: payloads that must be flagged and look-alikes that must not.

Fake credentials are built here from seeded pseudo-random strings, so they have the right
shape without being anybody's key and without the placeholder words the filters drop on
purpose. Templates mark where the secret goes with ``{S}``.
"""

from __future__ import annotations

import base64
import json
import random
import re
import string
from collections import Counter

import pytest

from server_ext.scanner import rules
from server_ext.scanner.detector import Detector
from server_ext.scanner.engine import Engine, Finding, SegmentKind
from server_ext.scanner.rules import named, vendors

CODE, TEXT, BINARY = SegmentKind.CODE, SegmentKind.TEXT, SegmentKind.BINARY

ALNUM = string.ascii_letters + string.digits
HEX = string.digits + "abcdef"
B64 = ALNUM + "+/"
URLSAFE = ALNUM + "-_"
UPPER = string.ascii_uppercase + string.digits
DIGITS = string.digits
LOWER = string.ascii_lowercase + string.digits
CRYPT = "./" + string.ascii_letters + string.digits


def fake(label: str, n: int, alphabet: str = ALNUM) -> str:
    """``n`` characters of ``alphabet``, the same on every run (seeded by ``label``)."""
    rng = random.Random(label)
    return "".join(rng.choice(alphabet) for _ in range(n))


def pem_base64(label: str, seed: str, n: int) -> str:
    """A ``label`` block with ``n`` random base64 characters, base64-encoded whole."""
    block = f"-----BEGIN {label}-----\n{fake(seed, n, B64)}\n-----END {label}-----\n"
    return base64.b64encode(block.encode()).decode()


def wrap(s: str, width: int) -> list[str]:
    return [s[i : i + width] for i in range(0, len(s), width)]


def b64url_json(obj: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


# --- fake credentials -------------------------------------------------------------------------

RSA_BODY = "\n".join(wrap("MIIEowIBAAKCAQEA" + fake("rsa", 1560, B64) + "==", 64))
OPENSSH_BODY = "\n".join(
    wrap(
        "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW"
        + fake("ssh", 330, B64),
        70,
    )
)
# As in a service-account JSON file: line breaks are the two characters backslash and n.
PKCS8_ESCAPED = "\\n".join(wrap("MIIEvQIBADANBgkqhkiG9w0BAQEFAASC" + fake("pkcs8", 1200, B64), 64))
PUBLIC_KEY_BODY = "\n".join(
    wrap("MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA" + fake("pub", 330, B64), 64)
)
PUTTY_ED25519 = "AAAAIB" + fake("ppk-ed", 38, B64)
PUTTY_RSA_LINES = [fake(f"ppk-rsa{i}", 64, B64) for i in range(3)]

JWT = ".".join(
    [
        b64url_json({"alg": "HS256", "typ": "JWT"}),
        b64url_json({"sub": "ada@qlab.org", "exp": 1767225600}),
        fake("jwt", 43, URLSAFE),
    ]
)
# Same shape, but the first part is not a JOSE header (no "alg").
NOT_A_JWT = ".".join(
    [
        b64url_json({"kind": "circuit", "qubits": 27}),
        b64url_json({"shots": 4096}),
        fake("nj", 20, URLSAFE),
    ]
)

PASSWORD = fake("pw", 16, ALNUM + "!@%-_")
AWS_KEY_ID = "AKIA" + fake("akia", 16, UPPER)
AWS_SESSION_KEY_ID = "ASIA" + fake("asia", 16, UPPER)
AWS_SECRET = fake("aws-secret", 40, B64)
COS_HMAC_SECRET = fake("cos", 48, HEX)
GCP_API_KEY = "AIza" + fake("aiza", 35, URLSAFE)
GCP_KEY_ID = fake("gcp-kid", 40, HEX)
GCP_OAUTH = "GOCSPX-" + fake("gocspx", 28, URLSAFE)
AZURE_STORAGE = fake("azure-storage", 86, B64) + "=="
AZURE_SAS = fake("azure-sas", 43, B64) + "="
AZURE_AD = fake("entra-head", 3) + "8Q~" + fake("entra", 34, ALNUM + "_~.-")
IBM_CLOUD_KEY = fake("ibm-cloud", 44, URLSAFE)

GITHUB = "ghp_" + fake("ghp", 36)
GITHUB_FINE = "github_pat_" + fake("ghfg1", 22) + "_" + fake("ghfg2", 59)
GITLAB = "glpat-" + fake("glpat", 20, URLSAFE)
SLACK = "xoxb-" + fake("s1", 12, DIGITS) + "-" + fake("s2", 13, DIGITS) + "-" + fake("s3", 24)
SLACK_HOOK = "T" + fake("ht", 8, UPPER) + "/B" + fake("hb", 10, UPPER) + "/" + fake("hs", 24)
STRIPE = "sk_live_" + fake("stripe", 99)
STRIPE_RESTRICTED = "rk_live_" + fake("stripe-rk", 24)
OPENAI = "sk-proj-" + fake("oai1", 74, URLSAFE) + "T3BlbkFJ" + fake("oai2", 74, URLSAFE)
OPENAI_LEGACY = "sk-" + fake("oail1", 20) + "T3BlbkFJ" + fake("oail2", 20)
ANTHROPIC = "sk-ant-api03-" + fake("ant", 93, URLSAFE) + "AA"
HUGGINGFACE = "hf_" + fake("hf", 34)
VAULT = "hvs.CAESI" + fake("vault", 86, URLSAFE)
NPM = "npm_" + fake("npm", 36)
# Legacy npm tokens were UUIDs: harmless alone, a credential after ``_authToken=``.
NPM_LEGACY = "-".join(fake(f"npmu{i}", n, HEX) for i, n in enumerate((8, 4, 4, 4, 12)))
PYPI = "pypi-AgEIcHlwaS5vcmc" + fake("pypi", 150, URLSAFE)
SENDGRID = "SG." + fake("sg1", 22, URLSAFE) + "." + fake("sg2", 43, URLSAFE)
MAILCHIMP = fake("mc", 32, HEX) + "-us14"
TELEGRAM = "7" + fake("tg1", 9, DIGITS) + ":AA" + fake("tg2", 33, URLSAFE)
TWILIO = "SK" + fake("twilio", 32, HEX)
SQUARE_ACCESS = "sq0atp-" + fake("sqa", 22, URLSAFE)
SQUARE_SECRET = "sq0csp-" + fake("sqc", 43, URLSAFE)
DISCORD = "MT" + fake("dc1", 24) + "." + fake("dc2", 6, URLSAFE) + "." + fake("dc3", 38, URLSAFE)
ARTIFACTORY = "AKCp8" + fake("jfrog", 68)
SOFTLAYER = fake("softlayer", 64, HEX)

IBM_QUANTUM = fake("ibmq", 128, HEX)
DWAVE = "DEV-" + fake("dwave", 40, HEX)
IONQ = fake("ionq", 32)
QCS_REFRESH = fake("qcs", 43, URLSAFE)
IQM = fake("iqm", 44, URLSAFE)
AZURE_QUANTUM = fake("azq", 52)

BASE64_BLOB = fake("b64", 44, B64)
FERNET = base64.urlsafe_b64encode(random.Random("fernet").randbytes(32)).decode()
HEX_64 = fake("hex64", 64, HEX)
HEX_40 = fake("hex40", 40, HEX)
SHA256 = fake("sha256", 64, HEX)
GIT_SHA = fake("git", 40, HEX)

# --- should flag ------------------------------------------------------------------------------


def flag(detector: str, template: str, secret: str, id: str, kind: SegmentKind = TEXT):
    return pytest.param(detector, template, secret, kind, id=id)


FLAGS = [
    # keys.py
    flag(
        "private-key",
        "-----BEGIN RSA PRIVATE KEY-----\n{S}\n-----END RSA PRIVATE KEY-----\n",
        RSA_BODY,
        "private-key-rsa-pem-file",
    ),
    flag(
        "private-key",
        'KEY = """-----BEGIN OPENSSH PRIVATE KEY-----\n{S}\n-----END OPENSSH PRIVATE KEY-----\n"""\n',
        OPENSSH_BODY,
        "private-key-openssh-in-notebook-string",
        CODE,
    ),
    flag(
        "private-key",
        '  "private_key": "-----BEGIN PRIVATE KEY-----\\n{S}\\n-----END PRIVATE KEY-----\\n",\n',
        PKCS8_ESCAPED,
        "private-key-escaped-in-service-account-json",
    ),
    flag(
        "putty-private-key",
        "PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\nComment: ada@qlab\nPublic-Lines: 2\n"
        + fake("ppk-pub", 64, B64)
        + "\n"
        + fake("ppk-pub2", 40, B64)
        + "\nPrivate-Lines: 1\n{S}\nPrivate-MAC: "
        + fake("mac", 64, HEX)
        + "\n",
        PUTTY_ED25519,
        "putty-ed25519-ppk",
    ),
    flag(
        "putty-private-key",
        "PuTTY-User-Key-File-2: ssh-rsa\r\nEncryption: none\r\nPrivate-Lines: 3\r\n{S}\r\nPrivate-MAC: "
        + fake("mac2", 40, HEX)
        + "\r\n",
        "\r\n".join(PUTTY_RSA_LINES),
        "putty-rsa-ppk-crlf-multiline",
    ),
    flag(
        "jwt",
        'r = requests.get(url, headers={"Authorization": "Bearer {S}"})\n',
        JWT,
        "jwt-bearer-header-in-code",
        CODE,
    ),
    flag("jwt", "access_token: {S}\ntoken_type: Bearer\n", JWT, "jwt-printed-oauth-response"),
    flag("jwt", "SESSION_JWT={S}\n", JWT, "jwt-in-env-file"),
    flag(
        "url-password",
        "DATABASE_URL=postgresql://qadmin:{S}@db.qlab.internal:5432/experiments\n",
        PASSWORD,
        "url-password-postgres-in-env-file",
    ),
    flag(
        "url-password",
        'engine = create_engine("mysql+pymysql://runner:{S}@10.0.4.12/results")\n',
        PASSWORD,
        "url-password-sqlalchemy-in-code",
        CODE,
    ),
    flag(
        "url-password",
        "!git clone https://ada:{S}@gitlab.qlab.org/lab/circuits.git\n",
        fake("git-pw", 20),
        "url-password-git-clone",
    ),
    flag(
        "authorization-header",
        'r = requests.get(url, headers={"Authorization": "Bearer {S}"})\n',
        fake("bearer", 40),
        "authorization-bearer-in-code",
        CODE,
    ),
    flag(
        "authorization-header",
        '!curl -H "Authorization: Token {S}" https://api.qlab.org/v1/jobs\n',
        fake("tok", 40),
        "authorization-token-in-curl",
    ),
    flag(
        "authorization-header",
        "Authorization: Basic {S}\n",
        base64.b64encode(f"runner:{PASSWORD}".encode()).decode(),
        "authorization-basic-in-http-dump",
    ),
    flag(
        "authorization-header",
        '!curl -H "Authorization: SSWS {S}" https://qlab.okta.com/api/v1/users\n',
        "00" + fake("ssws", 40, URLSAFE),
        "authorization-okta-ssws",
    ),
    flag(
        "vault-unseal-key",
        "Unseal Key 1: {S}\nUnseal Key 2: (printed once)\n",
        fake("unseal1", 43, B64) + "=",
        "vault-operator-init-output",
    ),
    flag(
        "vault-unseal-key",
        "!bao operator unseal {S}\n",
        fake("unseal2", 43, B64) + "=",
        "openbao-operator-unseal",
    ),
    flag(
        "vault-unseal-key",
        "Recovery Key 3 (hex): {S}\n",
        fake("unseal3", 66, HEX),
        "vault-recovery-key-hex",
    ),
    # cloud.py
    flag(
        "aws-access-key-id",
        'braket = boto3.client("braket", region_name="us-east-1", aws_access_key_id="{S}")\n',
        AWS_KEY_ID,
        "aws-key-id-in-boto3-call",
        CODE,
    ),
    flag(
        "aws-access-key-id",
        "[default]\naws_access_key_id = {S}\nregion = us-east-1\n",
        AWS_KEY_ID,
        "aws-key-id-in-credentials-file",
    ),
    flag(
        "aws-access-key-id",
        "{'AccessKeyId': '{S}', 'Expiration': datetime.datetime(2025, 1, 1)}\n",
        AWS_SESSION_KEY_ID,
        "aws-session-key-id-printed",
    ),
    flag(
        "aws-secret-access-key",
        "[default]\naws_secret_access_key = {S}\n",
        AWS_SECRET,
        "aws-secret-in-credentials-file",
    ),
    flag(
        "aws-secret-access-key",
        'session = boto3.Session(aws_secret_access_key="{S}", region_name="us-west-1")\n',
        AWS_SECRET,
        "aws-secret-in-boto3-session",
        CODE,
    ),
    flag(
        "aws-secret-access-key",
        'AWS_SECRET_ACCESS_KEY="{S}"\n',
        AWS_SECRET,
        "aws-secret-in-env-file",
    ),
    flag(
        "ibm-cos-hmac-secret",
        '"cos_hmac_keys": {\n  "access_key_id": "'
        + fake("cos-id", 32, HEX)
        + '",\n  "secret_access_key": "{S}"\n}\n',
        COS_HMAC_SECRET,
        "ibm-cos-hmac-in-credentials-json",
    ),
    flag(
        "ibm-cos-hmac-secret",
        'cos = ibm_boto3.client("s3", aws_access_key_id=hmac_id, aws_secret_access_key="{S}")\n',
        COS_HMAC_SECRET,
        "ibm-cos-hmac-in-ibm-boto3",
        CODE,
    ),
    flag(
        "gcp-api-key",
        'gmaps = googlemaps.Client(key="{S}")\n',
        GCP_API_KEY,
        "gcp-api-key-in-code",
        CODE,
    ),
    flag("gcp-api-key", "GOOGLE_API_KEY={S}\n", GCP_API_KEY, "gcp-api-key-in-env-file"),
    flag(
        "gcp-service-account-key",
        '{\n  "type": "service_account",\n  "project_id": "qlab-sim",\n  "private_key_id": "{S}",\n  "client_email": "runner@qlab-sim.iam.gserviceaccount.com"\n}\n',
        GCP_KEY_ID,
        "gcp-key-id-in-service-account-json",
    ),
    flag(
        "gcp-service-account-key",
        "{'type': 'service_account', 'project_id': 'qlab-sim', 'private_key_id': '{S}'}\n",
        GCP_KEY_ID,
        "gcp-key-id-in-printed-dict",
    ),
    flag(
        "gcp-oauth-client-secret",
        '{"installed": {"client_id": "1234-abc.apps.googleusercontent.com", "client_secret": "{S}"}}\n',
        GCP_OAUTH,
        "gcp-oauth-secret-in-client-secret-json",
    ),
    flag(
        "gcp-oauth-client-secret",
        "GOOGLE_CLIENT_SECRET={S}\n",
        GCP_OAUTH,
        "gcp-oauth-secret-in-env-file",
    ),
    flag(
        "azure-storage-key",
        'AZURE_STORAGE_CONNECTION_STRING="DefaultEndpointsProtocol=https;AccountName=qlabdata;AccountKey={S};EndpointSuffix=core.windows.net"\n',
        AZURE_STORAGE,
        "azure-storage-key-in-env-file",
    ),
    flag(
        "azure-storage-key",
        'svc = BlobServiceClient.from_connection_string("DefaultEndpointsProtocol=https;AccountName=qlabdata;AccountKey={S}")\n',
        AZURE_STORAGE,
        "azure-storage-key-in-code",
        CODE,
    ),
    flag(
        "azure-shared-access-key",
        'bus = ServiceBusClient.from_connection_string("Endpoint=sb://qlab.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey={S}")\n',
        AZURE_SAS,
        "azure-service-bus-key-in-code",
        CODE,
    ),
    flag(
        "azure-shared-access-key",
        "IOTHUB_CONNECTION_STRING=HostName=qlab-hub.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey={S}\n",
        AZURE_SAS,
        "azure-iot-hub-key-in-env-file",
    ),
    flag(
        "azure-ad-client-secret",
        "AZURE_CLIENT_SECRET={S}\n",
        AZURE_AD,
        "entra-client-secret-in-env-file",
    ),
    flag(
        "azure-ad-client-secret",
        'cred = ClientSecretCredential(tenant_id=tenant, client_id=app, client_secret="{S}")\n',
        AZURE_AD,
        "entra-client-secret-in-code",
        CODE,
    ),
    flag(
        "ibm-cloud-api-key",
        "IBM_CLOUD_API_KEY={S}\n",
        IBM_CLOUD_KEY,
        "ibm-cloud-api-key-in-env-file",
    ),
    flag(
        "ibm-cloud-api-key",
        'ibm_api_key = "{S}"\n',
        IBM_CLOUD_KEY,
        "ibm-cloud-api-key-in-code",
        CODE,
    ),
    flag(
        "ibm-cloud-api-key",
        'ibmcloud_api_key = "{S}"\nregion = "eu-de"\n',
        IBM_CLOUD_KEY,
        "ibm-cloud-api-key-in-terraform-tfvars",
    ),
    # platforms.py
    flag("github-token", "GITHUB_TOKEN={S}\n", GITHUB, "github-token-in-env-file"),
    flag("github-token", 'g = Github("{S}")\n', GITHUB, "github-token-in-pygithub-call", CODE),
    flag(
        "github-token",
        "origin\thttps://{S}@github.com/qlab/circuits.git (fetch)\n",
        GITHUB,
        "github-token-in-git-remote-output",
    ),
    flag(
        "github-fine-grained-token",
        "GH_TOKEN={S}\n",
        GITHUB_FINE,
        "github-fine-grained-in-env-file",
    ),
    flag(
        "github-fine-grained-token",
        'headers = {"Authorization": "token {S}"}\n',
        GITHUB_FINE,
        "github-fine-grained-in-header",
        CODE,
    ),
    flag("gitlab-token", "GITLAB_TOKEN={S}\n", GITLAB, "gitlab-token-in-env-file"),
    flag(
        "gitlab-token",
        'gl = gitlab.Gitlab("https://gitlab.qlab.org", private_token="{S}")\n',
        GITLAB,
        "gitlab-token-in-code",
        CODE,
    ),
    flag(
        "slack-token", 'client = WebClient(token="{S}")\n', SLACK, "slack-bot-token-in-code", CODE
    ),
    flag("slack-token", "slack:\n  bot_token: {S}\n", SLACK, "slack-bot-token-in-yaml"),
    flag(
        "slack-webhook",
        'requests.post("https://hooks.slack.com/services/{S}", json={"text": "job done"})\n',
        SLACK_HOOK,
        "slack-webhook-in-code",
        CODE,
    ),
    flag(
        "slack-webhook",
        "SLACK_WEBHOOK_URL=https://hooks.slack.com/services/{S}\n",
        SLACK_HOOK,
        "slack-webhook-in-env-file",
    ),
    flag("stripe-key", 'stripe.api_key = "{S}"\n', STRIPE, "stripe-secret-key-in-code", CODE),
    flag(
        "stripe-key",
        "STRIPE_SECRET_KEY={S}\n",
        STRIPE_RESTRICTED,
        "stripe-restricted-key-in-env-file",
    ),
    flag(
        "openai-api-key",
        'client = OpenAI(api_key="{S}")\n',
        OPENAI,
        "openai-project-key-in-code",
        CODE,
    ),
    flag("openai-api-key", "OPENAI_API_KEY={S}\n", OPENAI_LEGACY, "openai-legacy-key-in-env-file"),
    flag(
        "anthropic-api-key",
        'client = anthropic.Anthropic(api_key="{S}")\n',
        ANTHROPIC,
        "anthropic-key-in-code",
        CODE,
    ),
    flag("anthropic-api-key", "ANTHROPIC_API_KEY={S}\n", ANTHROPIC, "anthropic-key-in-env-file"),
    flag(
        "huggingface-token",
        'from huggingface_hub import login\nlogin(token="{S}")\n',
        HUGGINGFACE,
        "huggingface-token-in-login",
        CODE,
    ),
    flag("huggingface-token", "HF_TOKEN={S}\n", HUGGINGFACE, "huggingface-token-in-env-file"),
    flag(
        "vault-token",
        'client = hvac.Client(url="https://vault.qlab.org", token="{S}")\n',
        VAULT,
        "vault-token-in-hvac-client",
        CODE,
    ),
    flag("vault-token", "export VAULT_TOKEN={S}\n", VAULT, "vault-token-in-shell-export"),
    flag("npm-token", "//registry.npmjs.org/:_authToken={S}\n", NPM, "npm-token-in-npmrc"),
    flag("npm-token", "NPM_TOKEN={S}\n", NPM, "npm-token-in-env-file"),
    flag(
        "npmrc-auth-token",
        "//registry.npmjs.org/:_authToken={S}\n",
        NPM_LEGACY,
        "npmrc-legacy-uuid-token",
    ),
    flag(
        "npmrc-auth-token",
        "@qlab:registry=https://npm.qlab.org/\n//npm.qlab.org/:_authToken={S}\n",
        fake("npmrc", 64, ALNUM + "._-"),
        "npmrc-private-registry-token",
    ),
    flag(
        "pypi-token",
        "[pypi]\n  username = __token__\n  password = {S}\n",
        PYPI,
        "pypi-token-in-pypirc",
    ),
    flag("pypi-token", "TWINE_PASSWORD={S}\n", PYPI, "pypi-token-in-ci-env"),
    flag(
        "sendgrid-api-key",
        'sg = SendGridAPIClient("{S}")\n',
        SENDGRID,
        "sendgrid-key-in-code",
        CODE,
    ),
    flag("sendgrid-api-key", "SENDGRID_API_KEY={S}\n", SENDGRID, "sendgrid-key-in-env-file"),
    flag(
        "mailchimp-api-key",
        'client.set_config({"api_key": "{S}", "server": "us14"})\n',
        MAILCHIMP,
        "mailchimp-key-in-code",
        CODE,
    ),
    flag("mailchimp-api-key", "MAILCHIMP_API_KEY={S}\n", MAILCHIMP, "mailchimp-key-in-env-file"),
    flag(
        "telegram-bot-token",
        'bot = telebot.TeleBot("{S}")\n',
        TELEGRAM,
        "telegram-token-in-code",
        CODE,
    ),
    flag("telegram-bot-token", "TELEGRAM_BOT_TOKEN={S}\n", TELEGRAM, "telegram-token-in-env-file"),
    flag(
        "twilio-api-key",
        'client = Client("{S}", api_secret, account_sid)\n',
        TWILIO,
        "twilio-key-in-code",
        CODE,
    ),
    flag("twilio-api-key", "TWILIO_API_KEY={S}\n", TWILIO, "twilio-key-in-env-file"),
    flag(
        "square-oauth-secret",
        'client = Client(access_token="{S}", environment="production")\n',
        SQUARE_ACCESS,
        "square-access-token-in-code",
        CODE,
    ),
    flag(
        "square-oauth-secret",
        "SQUARE_APPLICATION_SECRET={S}\n",
        SQUARE_SECRET,
        "square-oauth-secret-in-env-file",
    ),
    flag("discord-bot-token", 'client.run("{S}")\n', DISCORD, "discord-token-in-code", CODE),
    flag("discord-bot-token", "DISCORD_TOKEN={S}\n", DISCORD, "discord-token-in-env-file"),
    flag(
        "artifactory-api-key",
        "ARTIFACTORY_API_KEY={S}\n",
        ARTIFACTORY,
        "artifactory-key-in-env-file",
    ),
    flag(
        "artifactory-api-key",
        'requests.get(url, headers={"X-JFrog-Art-Api": "{S}"})\n',
        ARTIFACTORY,
        "artifactory-key-in-header",
        CODE,
    ),
    flag("softlayer-api-key", "SOFTLAYER_API_KEY={S}\n", SOFTLAYER, "softlayer-key-in-env-file"),
    flag(
        "softlayer-api-key",
        "[softlayer]\nusername = ada\napi_key = {S}\nendpoint_url = https://api.softlayer.com/xmlrpc/v3.1/\n",
        SOFTLAYER,
        "softlayer-key-in-config-file",
    ),
    flag(
        "softlayer-api-key",
        'client = SoftLayer.create_client_from_env(username="ada", api_key="{S}")\n',
        SOFTLAYER,
        "softlayer-key-in-client-call",
        CODE,
    ),
    flag("public-ip", "ssh ada@{S} -p 2222\n", "34.117.59.81", "public-ip-in-ssh-command"),
    flag("public-ip", "JUPYTER_HOST={S}\n", "52.14.200.7", "public-ip-in-env-file"),
    # quantum.py
    flag(
        "ibm-quantum-token",
        'service = QiskitRuntimeService(channel="ibm_quantum", token="{S}")\n',
        IBM_QUANTUM,
        "ibm-quantum-token-in-runtime-service",
        CODE,
    ),
    flag(
        "ibm-quantum-token",
        'QiskitRuntimeService.save_account(\n    channel="ibm_quantum_platform",\n    token="{S}",\n    overwrite=True,\n)\n',
        IBM_CLOUD_KEY,
        "ibm-quantum-token-in-save-account",
        CODE,
    ),
    flag(
        "ibm-quantum-token",
        'IBMQ.save_account("{S}")\n',
        IBM_QUANTUM,
        "ibm-quantum-token-in-legacy-ibmq",
        CODE,
    ),
    flag(
        "ibm-quantum-token", "QISKIT_IBM_TOKEN={S}\n", IBM_QUANTUM, "ibm-quantum-token-in-env-file"
    ),
    flag(
        "dwave-leap-token",
        'sampler = DWaveSampler(token="{S}")\n',
        DWAVE,
        "dwave-token-in-sampler",
        CODE,
    ),
    flag(
        "dwave-leap-token",
        "[defaults]\nendpoint = https://cloud.dwavesys.com/sapi/\ntoken = {S}\n",
        DWAVE,
        "dwave-token-in-dwave-conf",
    ),
    flag(
        "ionq-api-key", 'provider = IonQProvider(token="{S}")\n', IONQ, "ionq-key-in-provider", CODE
    ),
    flag("ionq-api-key", "IONQ_API_KEY={S}\n", IONQ, "ionq-key-in-env-file"),
    # A bare value's leading b/f/r/u is part of it, not a Python string prefix.
    flag(
        "ionq-api-key",
        "IONQ_API_KEY={S}\n",
        "f" + fake("ionq-f", 31),
        "ionq-key-starting-with-f-in-env-file",
    ),
    flag(
        "quantinuum-credential",
        'quantinuum:\n  email: ada@qlab.org\n  password: "{S}"\n',
        PASSWORD,
        "quantinuum-password-in-yaml",
    ),
    flag(
        "quantinuum-credential",
        "QUANTINUUM_API_TOKEN={S}\n",
        fake("qtok", 40, URLSAFE),
        "quantinuum-token-in-env-file",
    ),
    flag(
        "rigetti-qcs-token",
        '[credentials.default.token_payload]\nrefresh_token = "{S}"\nscope = "openid offline_access"\n',
        QCS_REFRESH,
        "rigetti-refresh-token-in-secrets-toml",
    ),
    flag(
        "rigetti-qcs-token",
        "QCS_REFRESH_TOKEN={S}\n",
        QCS_REFRESH,
        "rigetti-refresh-token-in-env-file",
    ),
    flag(
        "pasqal-credential",
        'from pasqal_cloud import SDK\nsdk = SDK(username="ada@qlab.org", password="{S}", project_id=PROJECT_ID)\n',
        PASSWORD,
        "pasqal-password-in-sdk",
        CODE,
    ),
    flag("pasqal-credential", "PASQAL_PASSWORD={S}\n", PASSWORD, "pasqal-password-in-env-file"),
    flag(
        "iqm-token",
        'provider = IQMProvider("https://cocos.resonance.meetiqm.com/garnet", token="{S}")\n',
        IQM,
        "iqm-token-in-provider",
        CODE,
    ),
    flag("iqm-token", "IQM_TOKEN={S}\n", IQM, "iqm-token-in-env-file"),
    flag(
        "azure-quantum-connection-string",
        "AZURE_QUANTUM_CONNECTION_STRING=SubscriptionId="
        + NPM_LEGACY
        + ";ResourceGroupName=qlab;WorkspaceName=qlab-ws;ApiKey={S};QuantumEndpoint=https://eastus.quantum.azure.com/;\n",
        AZURE_QUANTUM,
        "azure-quantum-in-env-file",
    ),
    flag(
        "azure-quantum-connection-string",
        'ws = Workspace.from_connection_string("SubscriptionId='
        + NPM_LEGACY
        + ';ResourceGroupName=qlab;WorkspaceName=qlab-ws;ApiKey={S};QuantumEndpoint=https://westeurope.quantum.azure.com/")\n',
        AZURE_QUANTUM,
        "azure-quantum-in-code",
        CODE,
    ),
    # generic.py
    flag(
        "generic-keyword", "PASSWORD={S}\n", "hunter2hunter9", "generic-password-bare-in-env-file"
    ),
    flag(
        "generic-keyword",
        'conn = psycopg.connect(host="db", user="runner", password="{S}")\n',
        "Tr0ub4dor&3",
        "generic-password-kwarg-in-code",
        CODE,
    ),
    flag(
        "generic-keyword",
        'database:\n  host: db.qlab.internal\n  password: "{S}"\n',
        PASSWORD,
        "generic-password-in-yaml",
    ),
    flag(
        "generic-keyword",
        '{"api_key": "{S}", "region": "eu-de"}\n',
        fake("json-key", 32),
        "generic-api-key-in-json",
    ),
    flag(
        "generic-keyword",
        'api_key: str = "{S}"\n',
        fake("annotated", 24),
        "generic-api-key-annotated-in-code",
        CODE,
    ),
    flag(
        "generic-keyword",
        "Login with:\n  user: runner\n  Password: {S}\n",
        "Qb7-lamp-Orbit",
        "generic-password-printed-output",
    ),
    flag(
        "generic-keyword", 'contraseña = "{S}"\n', "Zq8mP2vL9xwQ", "generic-spanish-keyword", CODE
    ),
    # Unquoted, but inside a string literal: text, not a variable name.
    flag(
        "generic-keyword",
        'conn = pyodbc.connect("Server=db;Uid=runner;Password={S};")\n',
        "Tr0ub4dor3x",
        "generic-password-in-connection-string-in-code",
        CODE,
    ),
    # A JSON body written inside a string literal: the quotes around name and value are escaped.
    flag(
        "generic-keyword",
        'body = "{\\"username\\": \\"ada\\", \\"password\\": \\"{S}\\"}"\n',
        "Kx9fQ2mZ7pLw",
        "generic-password-in-escaped-json-body",
        CODE,
    ),
    # A credential that contains a credential word, or starts like a CSS selector, is no label.
    flag("generic-keyword", 'password = "{S}"\n', "SuperSecret!2024x", "generic-password-has-secret", CODE),
    # a password named by a bare "pass" ending the name
    flag("generic-keyword", 'DB_PASS = "{S}"\n', "*Ke6-cEJ!iUH%qHm", "generic-db-pass", CODE),
    flag("generic-keyword", 'smtppass = "{S}"\n', "Xk9pQ2mZ7abcQ", "generic-run-together-pass", CODE),
    flag("generic-keyword", "DBPASS={S}\n", "Xk9pQ2mZ7abcQ", "generic-pass-env-file"),
    flag("generic-keyword", 'api_key = "{S}"\n', "tokenA8fK2mQ9xZ3pL7wR", "generic-key-has-token", CODE),
    flag("generic-keyword", 'password = "{S}"\n', "#Kx9fQ2mZ7pLw", "generic-password-hash-sign", CODE),
    # A .pypirc in a triple-quoted string: the line alone looks like code, the value does not.
    flag(
        "generic-keyword",
        'PYPIRC = """\n[pypi]\nusername = runner\npassword = {S}\n"""\n',
        "bMgOhM9s1voFoufU3D0W",
        "generic-password-bare-in-a-triple-quoted-config",
        CODE,
    ),
    # Passwords with ";", "(" and "," are not cut at them when the part before is too short.
    flag("generic-keyword", "DB_PASSWORD={S}\n", "Kx9;fQ2mZ7pLw", "generic-password-semicolon-env"),
    flag("generic-keyword", "DB_PASSWORD={S}\n", "abcd1234&xyz9", "generic-password-ampersand-env"),
    flag("generic-keyword", "GET /v1/jobs?api_key={S}&limit=10\n", "A8fK2mQ9xZ3pL7wRt5Yb", "generic-url-query"),
    flag("generic-keyword", "password: {S}\n", "Kx9;fQ2m(Z7p,Lw", "generic-password-punctuated-out"),
    flag(
        "generic-keyword",
        'conn = "host=db;user=sa;password={S}"\n',
        "Kx9;fQ2mZ7pLw",
        "generic-password-with-semicolon-ending-a-connection-string",
        CODE,
    ),
    flag(
        "base64-high-entropy",
        'fernet = Fernet(b"{S}")\n',
        FERNET,
        "base64-fernet-key-in-code",
        CODE,
    ),
    flag(
        "base64-high-entropy",
        '{"session_blob": "{S}", "user": "ada"}\n',
        BASE64_BLOB,
        "base64-blob-in-json",
    ),
    flag("base64-high-entropy", 'signing: "{S}"\n', BASE64_BLOB, "base64-blob-in-yaml"),
    flag("hex-high-entropy", 'HMAC_KEY_HEX = "{S}"\n', HEX_64, "hex-hmac-key-in-code", CODE),
    flag("hex-high-entropy", '{"webhook_signing": "{S}"}\n', HEX_40, "hex-signing-value-in-json"),
    flag("keyword-context", "connecting with credential {S}\n", fake("kc1", 40), "prose-credential"),
    flag("keyword-context", "Your API key is: {S}\n", fake("kc2", 32), "prose-api-key-is"),
    # An id word in another clause of the line does not make the value an id.
    flag(
        "keyword-context",
        "user_id=42 connecting with credential {S}\n",
        "A8fK2mQ9xZ3pL7wRt5Yb",
        "prose-credential-after-an-id-elsewhere-on-the-line",
    ),
    flag(
        "keyword-context",
        "commit 3f2a1b checked out; your api key is {S}\n",
        fake("kc4", 24),
        "prose-key-after-a-commit-clause",
    ),
    # Random letters without digits, upper-case-and-digit keys, and passwords with ; and ,.
    flag("keyword-context", "sending Bearer {S}\n", "JrEKyKYJDPnd_rYavAeoTucE", "prose-no-digits"),
    flag("keyword-context", "using api key {S}\n", "9WE0DPY0GGAA0D1E", "prose-upper-alnum-key"),
    flag("keyword-context", "logged in with password {S}\n", "Kx9;fQ2m,Z7pLw!x", "prose-pw-semicolon"),
    # The credential word may end a longer name, glued in any case (``<vendor>_key``,
    # ``<vendor>KEY=``, ``<vendor>SECRET``): config listings and printed settings.
    flag("keyword-context", "atera_key = {S}\n", fake("kc5", 32, LOWER), "glued-vendor-key"),
    flag("keyword-context", "geckoboardKEY={S}\n", fake("kc6", 40), "glued-upper-key"),
    flag("keyword-context", "zerobounceSECRET {S}\n", fake("kc7", 32, LOWER), "glued-secret"),
    flag("keyword-context", "deepgramKEY {S}\n", fake("kc8", 48), "glued-upper-key-no-sign"),
    flag(
        "keyword-context",
        '<setting name="SmtpPassword" value="{S}" />\n',
        fake("kc9", 24),
        "xml-config-key-value",
    ),
    # The word starts inside a longer match of other words (hyperscan reports the
    # leftmost start: "api key" in "newsapi key"), and ACCESS/PRIVATE as key names.
    flag("keyword-context", "newsapi KEY {S}\n", fake("kc10", 32, HEX), "word-after-glued-api"),
    flag("keyword-context", "mailboxlayer ACCESS {S}\n", fake("kc11", 32, HEX), "upper-access"),
    flag("keyword-context", "nimble PRIVATE {S}\n", fake("kc12", 30), "upper-private"),
    flag("keyword-context", "logzPrivateAccess={S}\n", fake("kc13", 36), "glued-private-access"),
    # A credential that leads a listing of settings is still one.
    # (the listing after it goes with it)
    flag("keyword-context", "api key: {S}\n", "Xy9aB3cD5eF7gH1jKq2,region:us-east-1",
         "credential-before-listing"),
    # In code an unquoted random word is a literal, not a variable: underscores, and a
    # lower-case token whose digits sit inside its parts.
    flag("generic-keyword", "chatbot_token = {S}\n", "Z1VuI6jJ_fwA4MxLF4sFz7drsDOEW05p",
         "code-unquoted-random-with-underscore", CODE),
    flag("keyword-context", "uplead_key={S}\n", "f6ameo8gaperc4j4g4tg9lbsqwbnak3c",
         "code-unquoted-lowercase-token", CODE),
    flag("keyword-context", "mailsac TOKEN {S}\n", "k_za123xr456yc789bg0mfq8su9krty0pq1342b5dn76ji",
         "code-unquoted-lowercase-token-with-underscore", CODE),
    flag("generic-keyword", "openweatherapikey={S}\n", "cd2b1d12d01ae2deffecfebafcc3c31d",
         "code-unquoted-hex-token", CODE),
    flag("generic-keyword", "edenai_token = {S}\n",
         "rh83qVzJzCOvCOhriyaTA2VPQeiloqUCgpY8.LdWOFn1swiWcakqgLrUSDhRhZgLuzl5pBJXHwzqyjvK4oF8B",
         "code-unquoted-dotted-token", CODE),
    # hashes.py
    flag("password-hash", "admin:{S}:19000:0:99999:7:::\n",
         "$6$" + fake("sha512salt", 16, CRYPT) + "$" + fake("sha512", 86, CRYPT), "shadow-sha512"),
    flag("password-hash", 'hashed = b"{S}"\n',
         "$2b$12$" + fake("bcrypt", 53, CRYPT), "bcrypt-in-code", CODE),
    flag("password-hash", "runner:{S}\n", "$1$" + fake("md5s", 8, CRYPT) + "$" + fake("md5", 22, CRYPT),
         "htpasswd-md5-crypt"),
    flag("password-hash", "c.ServerApp.password = 'argon2:{S}'\n",
         "$argon2id$v=19$m=10240,t=10,p=8$" + fake("a2s", 22, B64) + "$" + fake("a2h", 43, B64),
         "jupyter-argon2-password", CODE),
    flag("kerberos-hash", "{S}\n",
         "$krb5asrep$23$svc@QLAB.ORG:" + fake("asrep1", 32, HEX) + "$" + fake("asrep2", 220, HEX),
         "asrep-roast-output"),
    flag("kerberos-hash", "{S}\n",
         "$krb5tgs$23$*svc$QLAB.ORG$http/web*$" + fake("tgs1", 32, HEX) + "$" + fake("tgs2", 400, HEX),
         "kerberoast-output"),
    flag("kerberos-hash", "{S}\n",
         "$krb5asrep$18$svc$QLAB.ORG$" + fake("aes1", 24, "0123456789ABCDEF") + "$"
         + fake("aes2", 160, "0123456789ABCDEF"), "rubeus-aes-asrep"),
    flag(
        "private-key-base64",
        "data:\n  tls.key: {S}\n",
        pem_base64("RSA PRIVATE KEY", "b64rsa", 128),
        "kubernetes-secret-rsa-key",
    ),
    flag(
        "private-key-base64",
        'PRIVATE_KEY_B64="{S}"\n',
        pem_base64("PRIVATE KEY", "b64p8", 256),
        "env-var-pkcs8-key",
    ),
    flag(
        "private-key-base64",
        "$ base64 key.pem\n{S}\n",
        "\n".join(wrap(pem_base64("EC PRIVATE KEY", "b64ec", 160), 76)),
        "base64-wrapped-at-76",
    ),
    # The line after the key is not part of it.
    flag(
        "private-key-base64",
        "$ base64 key.pem\n{S}\nreal 0m0.002s\n",
        "\n".join(wrap(pem_base64("RSA PRIVATE KEY", "b64next", 130), 76)),
        "base64-wrapped-then-another-line",
    ),
    flag(
        "private-key-base64",
        "PRIVATE_KEY_B64={S}\nNEXT_VAR=value\n",
        pem_base64("RSA PRIVATE KEY", "b64next2", 130),
        "base64-then-another-variable",
    ),
    flag("quoted-line", "'{S}'\n", fake("ql1", 40), "repr-of-a-token"),
    flag("quoted-line", 'Out[3]:\n"{S}"\n', fake("ql2", 32, HEX), "repr-of-a-hex-token"),
]

# --- should not flag --------------------------------------------------------------------------


def clean(detector: str, payload: str, id: str, kind: SegmentKind = TEXT):
    return pytest.param(detector, payload, kind, id=id)


CLEAN = [
    clean(
        "private-key",
        "The file starts with -----BEGIN OPENSSH PRIVATE KEY----- and ends with the matching END line, then ssh-keygen reads it.\n",
        "private-key-header-in-prose",
    ),
    clean(
        "private-key",
        "-----BEGIN RSA PRIVATE KEY-----\n<paste the key material here>\n-----END RSA PRIVATE KEY-----\n",
        "private-key-template",
    ),
    clean(
        "private-key",
        f"-----BEGIN PUBLIC KEY-----\n{PUBLIC_KEY_BODY}\n-----END PUBLIC KEY-----\n",
        "public-key-block",
    ),
    clean(
        "putty-private-key",
        f"PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\nPublic-Lines: 2\n{fake('ppk-pub', 64, B64)}\n{fake('ppk-pub2', 40, B64)}\n",
        "putty-public-part-only",
    ),
    clean("jwt", f"widget state: {NOT_A_JWT}\n", "jwt-shape-without-jose-header"),
    clean("jwt", f"header = {b64url_json({'alg': 'HS256', 'typ': 'JWT'})}\n", "jwt-header-alone"),
    clean(
        "url-password",
        "DATABASE_URL=postgresql://runner:${DB_PASSWORD}@db.qlab.internal:5432/experiments\n",
        "url-password-env-reference",
    ),
    clean(
        "url-password",
        'engine = create_engine("postgresql://runner:<password>@localhost/results")\n',
        "url-password-angle-placeholder",
        CODE,
    ),
    clean(
        "url-password",
        "See https://docs.qlab.org:8443/runbooks and http://localhost:8888/lab/tree\n",
        "url-with-port-not-password",
    ),
    clean(
        "authorization-header",
        'headers = {"Authorization": f"Bearer {token}"}\n',
        "authorization-fstring-variable",
        CODE,
    ),
    clean(
        "authorization-header",
        'headers = {"Authorization": "Bearer " + os.environ["API_TOKEN"]}\n',
        "authorization-concatenated-env",
        CODE,
    ),
    clean(
        "authorization-header",
        "Authorization: Bearer <YOUR_TOKEN>\n",
        "authorization-angle-placeholder",
    ),
    clean(
        "aws-access-key-id",
        f"The key id looks like {AWS_KEY_ID[:19]} but this one is cut short.\n",
        "aws-key-id-too-short",
    ),
    clean(
        "aws-access-key-id",
        'aws_access_key_id = os.environ["AWS_ACCESS_KEY_ID"]\n',
        "aws-key-id-from-environ",
        CODE,
    ),
    clean(
        "aws-secret-access-key",
        'aws_secret_access_key = os.environ["AWS_SECRET_ACCESS_KEY"]\n',
        "aws-secret-from-environ",
        CODE,
    ),
    clean(
        "aws-secret-access-key",
        "aws_secret_access_key = <secret access key>\n",
        "aws-secret-angle-placeholder",
    ),
    clean(
        "ibm-cos-hmac-secret",
        '"secret_access_key": "{{ cos_hmac_secret }}"\n',
        "ibm-cos-hmac-jinja-template",
    ),
    clean(
        "ibm-cos-hmac-secret",
        'cos = ibm_boto3.client("s3", aws_secret_access_key=getpass("COS HMAC secret: "))\n',
        "ibm-cos-hmac-from-getpass",
        CODE,
    ),
    clean("gcp-api-key", "GOOGLE_API_KEY=AIzaSy...\n", "gcp-api-key-elided-in-docs"),
    clean(
        "gcp-api-key",
        f"Browser keys look like {GCP_API_KEY[:30]} and are 39 characters long.\n",
        "gcp-api-key-too-short-in-prose",
    ),
    clean(
        "gcp-service-account-key",
        '{"type": "service_account", "private_key_id": "", "private_key": ""}\n',
        "gcp-key-id-empty",
    ),
    clean(
        "gcp-service-account-key",
        f'{{"type": "service_account", "client_id": "{fake("cid", 21, DIGITS)}"}}\n',
        "gcp-client-id-not-key-id",
    ),
    clean(
        "gcp-oauth-client-secret", "client_secret: GOCSPX-<your secret>\n", "gcp-oauth-placeholder"
    ),
    clean(
        "azure-storage-key",
        "AccountKey=<storage account key>;EndpointSuffix=core.windows.net\n",
        "azure-storage-placeholder",
    ),
    clean(
        "azure-storage-key",
        'conn = f"DefaultEndpointsProtocol=https;AccountName={account};AccountKey={key}"\n',
        "azure-storage-fstring",
        CODE,
    ),
    clean(
        "azure-shared-access-key",
        'conn = f"Endpoint=sb://qlab.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey={sas_key}"\n',
        "azure-sas-fstring",
        CODE,
    ),
    clean(
        "azure-ad-client-secret",
        'cred = ClientSecretCredential(tenant_id, client_id, client_secret=os.environ["AZURE_CLIENT_SECRET"])\n',
        "entra-secret-from-environ",
        CODE,
    ),
    clean(
        "ibm-cloud-api-key",
        "IBM_CLOUD_API_KEY=${IBM_CLOUD_API_KEY}\n",
        "ibm-cloud-key-env-reference",
    ),
    clean(
        "ibm-cloud-api-key",
        'authenticator = IAMAuthenticator(apikey=os.environ["IBMCLOUD_API_KEY"])\n',
        "ibm-cloud-key-from-environ",
        CODE,
    ),
    clean("github-token", "GITHUB_TOKEN=ghp_your_token_here\n", "github-token-placeholder"),
    clean(
        "github-token",
        'g = Github(os.environ["GITHUB_TOKEN"])\n',
        "github-token-from-environ",
        CODE,
    ),
    clean(
        "github-token",
        "!git clone https://$GITHUB_TOKEN@github.com/qlab/circuits.git\n",
        "github-token-shell-variable",
    ),
    clean(
        "github-fine-grained-token",
        "Fine-grained tokens start with github_pat_ and are longer than classic ones.\n",
        "github-fine-grained-prefix-in-prose",
    ),
    clean(
        "gitlab-token",
        'gl = gitlab.Gitlab(url, private_token=os.environ["GITLAB_TOKEN"])\n',
        "gitlab-token-from-environ",
        CODE,
    ),
    clean("slack-token", "SLACK_BOT_TOKEN=xoxb-your-bot-token\n", "slack-token-placeholder"),
    clean(
        "slack-webhook",
        "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX\n",
        "slack-webhook-docs-placeholder",
    ),
    clean(
        "stripe-key",
        f"STRIPE_PUBLISHABLE_KEY=pk_live_{fake('pk', 99)}\n",
        "stripe-publishable-key-is-public",
    ),
    clean("openai-api-key", "OPENAI_API_KEY=sk-proj-...\n", "openai-key-elided"),
    clean(
        "openai-api-key",
        'client = OpenAI(api_key=os.environ["OPENAI_API_KEY"])\n',
        "openai-key-from-environ",
        CODE,
    ),
    clean("anthropic-api-key", "ANTHROPIC_API_KEY=sk-ant-api03-...\n", "anthropic-key-elided"),
    clean(
        "huggingface-token", 'tokenizer = "bert-base-uncased"\n', "huggingface-tokenizer-name", CODE
    ),
    clean(
        "huggingface-token",
        'path = hf_hub_download(repo_id="qlab/qnn-weights", filename="model.safetensors")\n',
        "huggingface-hub-download-call",
        CODE,
    ),
    clean(
        "vault-token",
        'client = hvac.Client(url=VAULT_ADDR, token=os.environ["VAULT_TOKEN"])\n',
        "vault-token-from-environ",
        CODE,
    ),
    clean("npm-token", "NPM_TOKEN=npm_\n", "npm-token-prefix-only"),
    clean(
        "npmrc-auth-token", "//registry.npmjs.org/:_authToken=${NPM_TOKEN}\n", "npmrc-env-reference"
    ),
    clean(
        "pypi-token",
        "[pypi]\n  username = __token__\n  password = <your PyPI API token>\n",
        "pypi-token-placeholder",
    ),
    clean(
        "sendgrid-api-key", "SendGrid keys look like SG.<id>.<secret>\n", "sendgrid-shape-in-prose"
    ),
    clean(
        "mailchimp-api-key",
        f"cache/{fake('md5', 32, HEX)}-users.json\n",
        "mailchimp-hex-followed-by-users",
    ),
    clean(
        "telegram-bot-token",
        'bot = telebot.TeleBot(os.environ["TELEGRAM_BOT_TOKEN"])\n',
        "telegram-token-from-environ",
        CODE,
    ),
    clean("telegram-bot-token", "2024061512:30:00 job finished\n", "telegram-shape-timestamp"),
    clean(
        "twilio-api-key",
        f"TWILIO_ACCOUNT_SID=AC{fake('sid', 32, HEX)}\n",
        "twilio-account-sid-is-an-id",
    ),
    clean(
        "square-oauth-secret",
        f"SQUARE_APPLICATION_ID=sq0idp-{fake('sqid', 22, URLSAFE)}\n",
        "square-application-id-is-public",
    ),
    clean(
        "discord-bot-token",
        'client.run(os.environ["DISCORD_TOKEN"])\n',
        "discord-token-from-environ",
        CODE,
    ),
    clean(
        "discord-bot-token",
        f"MT{fake('dc1', 24)}.{fake('dc2', 6, URLSAFE)}.short\n",
        "discord-shape-too-short",
    ),
    clean(
        "artifactory-api-key",
        "ARTIFACTORY_API_KEY=${ARTIFACTORY_API_KEY}\n",
        "artifactory-env-reference",
    ),
    clean(
        "softlayer-api-key",
        'client = SoftLayer.create_client_from_env(username=user, api_key=os.environ["SL_API_KEY"])\n',
        "softlayer-key-from-environ",
        CODE,
    ),
    clean("public-ip", "JUPYTER_HOST=34.117.59.81\n", "public-ip-off-by-default"),
    clean(
        "ibm-quantum-token",
        'service = QiskitRuntimeService(channel="ibm_quantum", token=os.environ["QISKIT_IBM_TOKEN"])\n',
        "ibm-quantum-token-from-environ",
        CODE,
    ),
    clean(
        "ibm-quantum-token",
        'service = QiskitRuntimeService(channel="ibm_quantum", token="<IBM_QUANTUM_TOKEN>")\n',
        "ibm-quantum-token-angle-placeholder",
        CODE,
    ),
    clean(
        "ibm-quantum-token",
        'service = QiskitRuntimeService(channel="ibm_quantum", token="MY_IBM_QUANTUM_TOKEN")\n',
        "ibm-quantum-token-name-placeholder",
        CODE,
    ),
    clean(
        "ibm-quantum-token",
        'QiskitRuntimeService.save_account(channel="ibm_quantum", token=getpass("IBM Quantum token: "))\n',
        "ibm-quantum-token-from-getpass",
        CODE,
    ),
    clean(
        "dwave-leap-token",
        'sampler = DWaveSampler(token=os.getenv("DWAVE_API_TOKEN"))\n',
        "dwave-token-from-getenv",
        CODE,
    ),
    clean(
        "dwave-leap-token",
        f"commit {GIT_SHA}\nAuthor: Jonathan Smithson <js@qlab.org>\n",
        "dwave-shape-git-log-sha",
    ),
    clean(
        "ionq-api-key",
        'provider = IonQProvider(token=getpass("IonQ API key: "))\n',
        "ionq-key-from-getpass",
        CODE,
    ),
    clean("ionq-api-key", "IONQ_API_KEY=<your-ionq-key>\n", "ionq-key-placeholder"),
    clean(
        "quantinuum-credential",
        "quantinuum:\n  email: ada@qlab.org\n  password: ${QUANTINUUM_PASSWORD}\n",
        "quantinuum-env-reference",
    ),
    clean(
        "quantinuum-credential",
        'backend = QuantinuumBackend(device_name="H1-1E")\nbackend.login()\n',
        "quantinuum-interactive-login",
        CODE,
    ),
    clean(
        "rigetti-qcs-token",
        '[credentials.default.token_payload]\naccess_token = ""\nrefresh_token = ""\n',
        "rigetti-empty-secrets-toml",
    ),
    clean(
        "pasqal-credential",
        "sdk = SDK(username=USERNAME, password=getpass(), project_id=PROJECT_ID)  # pasqal_cloud\n",
        "pasqal-password-from-getpass",
        CODE,
    ),
    clean("iqm-token", "IQM_TOKENS_FILE=/home/ada/.iqm/tokens.json\n", "iqm-tokens-file-path"),
    clean(
        "iqm-token",
        'provider = IQMProvider(url, token=os.environ["IQM_TOKEN"])\n',
        "iqm-token-from-environ",
        CODE,
    ),
    clean(
        "azure-quantum-connection-string",
        "SubscriptionId=...;ResourceGroupName=qlab;WorkspaceName=qlab-ws;ApiKey=<api key>\n",
        "azure-quantum-placeholder",
    ),
    clean("generic-keyword", "password = getpass()\n", "generic-password-getpass", CODE),
    clean(
        "generic-keyword",
        'password = os.environ["DB_PASSWORD"]\n',
        "generic-password-from-environ",
        CODE,
    ),
    clean("generic-keyword", 'author = "Jonathan Smithson"\n', "generic-author-is-not-auth", CODE),
    clean(
        "generic-keyword",
        'if password == "hunter2hunter9":\n    grant()\n',
        "generic-password-comparison",
        CODE,
    ),
    clean(
        "generic-keyword",
        "Please enter your password: (at least 12 characters)\n",
        "generic-password-prompt-prose",
    ),
    clean("generic-keyword", 'token = "<YOUR_TOKEN>"\n', "generic-token-angle-placeholder", CODE),
    clean("generic-keyword", "password = password_from_vault2\n", "generic-bare-name-with-digit", CODE),
    # A short password ends at ";" in a connection string: the rest is the next field.
    clean(
        "generic-keyword",
        "Server=db;Password=ab1;Database=analytics2024;\n",
        "generic-connection-string-short-field-is-not-extended",
    ),
    clean(
        "keyword-context",
        "The fingerprint of key: 3f2a9c1d7e8b6a5f4c3d2e1f0a9b8c7d\n",
        "context-fingerprint-of-key",
    ),
    clean("keyword-context", "api key id: A8fK2mQ9xZ3pL7wRt5Yb\n", "context-key-id"),
    clean("vault-unseal-key", "Unseal Key Shares: 5\nvault operator unseal -migrate\n", "unseal-settings"),
    # A certificate and a public key, base64-encoded the same way, are public.
    clean(
        "private-key-base64",
        "tls.crt: " + pem_base64("CERTIFICATE", "b64crt", 256) + "\n",
        "kubernetes-secret-certificate",
    ),
    # A stand-in block, encoded: no key material after the header.
    clean(
        "private-key-base64",
        "tls.crt: " + base64.b64encode(
            b"-----BEGIN RSA PRIVATE KEY-----\n<paste your key here>\n-----END RSA PRIVATE KEY-----\n"
        ).decode() + "\n",
        "encoded-placeholder-block",
    ),
    clean(
        "private-key-base64",
        "pub: " + pem_base64("PUBLIC KEY", "b64pub", 256) + "\n",
        "public-key",
    ),
    # A word that ends in a credential word is not one; a public key is public.
    clean("keyword-context", "monkey: a8Fk29dj3kdlQ0xZ7pLm\n", "word-ending-in-key"),
    clean("keyword-context", "hotkey: Xk29aQ7LmP0vB3nR5tY8\n", "glued-lower-case-hotkey"),
    # A minified script's keyword table lists names and numbers, not a credential.
    clean(
        "keyword-context",
        "{public:152,private:152,protected:152,virtual:154,extern:160,static:162}\n",
        "minified-keyword-table",
    ),
    clean("keyword-context", "w={key:!0,ref:!0,__self:!0,__source:!0};\n", "minified-props"),
    # access/private are key names only as names (upper case, glued), never in prose.
    clean("keyword-context", "Grant access to 3fa85f64-5717-4562-b3fc-2c963f66afa6 now\n",
          "prose-grant-access"),
    clean("keyword-context", "private   i-0abc123def4567890\n", "listing-private-instance"),
    clean("keyword-context", "access is private to AcmeCorp2024-internal-only\n",
          "prose-private-to"),
    # ML run names join their parts with "_": names, not literals.
    clean("generic-keyword", "token = xgb_lr0_1_md6_ne500\n", "code-run-name", CODE),
    clean("keyword-context", "ckpt_key = resnet50_fp16_bs64_lr3e4\n", "code-ckpt-name", CODE),
    clean("keyword-context", "token = model.layer4_bottleneck3_conv2d\n", "code-attribute", CODE),
    clean("password-hash", "$1$$1$$1$$1$$1$$1$$1$$1$$1$$1$$1$$1$\n", "dollar-ones"),
    clean("keyword-context", "token = conv1_bn1_relu2_pool3_fc4\n", "code-layer-name", CODE),
    clean("password-hash", "cost $2 per $1000 of shots, $5 minimum\n", "dollar-amounts"),
    clean("password-hash", "$6$rounds=5000$short$tooshort\n", "truncated-sha512-crypt"),
    clean("kerberos-hash", "hashcat -m 18200 '$krb5asrep$23$...' wordlist.txt\n", "elided-hash"),
    # Keys that are data: a table's partition or row key, a cache key, an object key.
    clean(
        "keyword-context",
        '{"partitionKey": "3fa85f64-5717-4562-b3fc-2c963f66afa6", "rowKey": "a8Fk29dj3kdlQ0xZ"}\n',
        "table-partition-and-row-keys",
    ),
    clean("keyword-context", "primaryKey: a8Fk29dj3kdlQ0xZ\n", "primary-key"),
    clean("keyword-context", "cache_key: 9f86d081884c7d659a2feaa0c55ad015\n", "cache-key"),
    clean(
        "keyword-context",
        's3_key = "data/2024/part-0001-a8Fk29dj3k.parquet"\n',
        "s3-object-key",
        CODE,
    ),
    # Public keys under any name.
    clean(
        "keyword-context",
        "ssh_host_ed25519_key: AAAAC3NzaC1lZDI1NTE5AAAAIKx9fQ2mZ7pLwR4tY8u\n",
        "ssh-host-public-key",
    ),
    clean("keyword-context", "verify_key: MCowBQYDK2VwAyEAKx9fQ2mZ7pLwR4tY8u\n", "verify-key"),
    clean("keyword-context", "publickey: A8fK2mQ9xZ3pL7wRt5Yb0c\n", "glued-public-key"),
    clean("keyword-context", "ssh-publickey A8fK2mQ9xZ3pL7wRt5Yb0c\n", "glued-ssh-public-key"),
    # A lock file pins a package by its digest.
    clean(
        "quoted-line",
        "'sonarqube-reporter-1.2.4.tgz#3b335d612137949d2f21fcc6c8c8164db7603227'\n",
        "pinned-package-digest",
    ),
    clean("keyword-context", "using token ModelCheckpointCallbackHandler\n", "context-camel-case-name"),
    clean("keyword-context", "secret key: SECRETKEYBASEVALUE\n", "context-upper-words-no-digits"),
    clean("generic-keyword", 'password = "changeme"\n', "generic-password-changeme", CODE),
    # words that end in "pass" and name no password
    clean("generic-keyword", 'bypass = "cache_layer_v2"\n', "generic-bypass", CODE),
    clean("generic-keyword", 'lowpass = "butterworth"\n', "generic-lowpass", CODE),
    clean("generic-keyword", 'FORWARD_PASS = "fused_kernel_v3"\n', "generic-forward-pass", CODE),
    clean("generic-keyword", 'compass = "NNW"\nencompass = "Xk9pQ2mZ7abcQ"\n', "generic-compass",
          CODE),
    clean("generic-keyword", 'password = "abc12"\n', "generic-password-too-short", CODE),
    clean(
        "generic-keyword",
        "auth:\n  password: required\n  token: enabled\n",
        "generic-config-words-in-yaml",
    ),
    clean(
        "base64-high-entropy",
        f'"integrity": "sha512-{fake("sri", 86, B64)}=="\n',
        "base64-integrity-hash",
    ),
    clean(
        "base64-high-entropy", '{"run": "3f2b8c1e-9a4d-4e7b-b1c2-7d5e6f8a9b0c"}\n', "base64-uuid"
    ),
    clean(
        "base64-high-entropy",
        'ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"\n',
        "base64-alphabet-constant",
        CODE,
    ),
    clean("hex-high-entropy", f'sha256 = "{SHA256}"\n', "hex-sha256-value", CODE),
    clean(
        "hex-high-entropy",
        f'{{"commit": "{GIT_SHA}", "branch": "main"}}\n',
        "hex-git-commit-in-json",
    ),
    clean("hex-high-entropy", f'"ETag": "{fake("etag", 32, HEX)}"\n', "hex-etag"),
    clean("keyword-context", "tokens model_state_dict_v2_checkpoint\n", "prose-identifier"),
    clean("quoted-line", "'distilbert-base-uncased-finetuned'\n", "repr-of-a-model-name"),
]


# --- the table --------------------------------------------------------------------------------

DEFAULT = Engine(d for d in rules.ALL if d.default_enabled)
EVERYTHING = Engine(rules.ALL)


def engine_for(detector: str) -> Engine:
    return DEFAULT if rules.BY_ID[detector].default_enabled else EVERYTHING


def spans(data: bytes, findings: list[Finding]) -> list[tuple[str, bytes]]:
    return [(f.detector, data[f.start : f.end]) for f in findings]


@pytest.mark.parametrize(("detector", "template", "secret", "kind"), FLAGS)
def test_flags(detector: str, template: str, secret: str, kind: SegmentKind) -> None:
    assert "{S}" in template
    data = template.replace("{S}", secret).encode()
    findings = engine_for(detector).scan_one(data, kind)
    assert spans(data, findings) == [(detector, secret.encode())]
    # The reported line is the line the secret starts on.
    assert findings[0].line == data[: findings[0].start].count(b"\n") + 1
    assert findings[0].secret == secret.encode()


@pytest.mark.parametrize(("detector", "payload", "kind"), CLEAN)
def test_does_not_flag(detector: str, payload: str, kind: SegmentKind) -> None:
    data = payload.encode()
    assert spans(data, DEFAULT.scan_one(data, kind)) == []


def test_every_detector_has_cases() -> None:
    flagged = Counter(p.values[0] for p in FLAGS)
    cleared = Counter(p.values[0] for p in CLEAN)
    assert set(flagged) | set(cleared) <= set(rules.BY_ID), "a case names an unknown detector"
    # Vendor formats and key names have their own table (test_vendor_detectors.py).
    elsewhere = {d.id for d in (*vendors.DETECTORS, *named.DETECTORS)}
    thin = [
        d.id
        for d in rules.ALL
        if d.id not in elsewhere and (flagged[d.id] < 2 or cleared[d.id] < 1)
    ]
    assert thin == []


# --- the catalogue ----------------------------------------------------------------------------


def test_ids_are_unique_and_kebab_case() -> None:
    ids = [d.id for d in rules.ALL]
    assert len(ids) == len(set(ids))
    assert [i for i in ids if not re.fullmatch(r"[a-z0-9]+(?:-[a-z0-9]+)*", i)] == []
    assert set(rules.BY_ID) == set(ids)


@pytest.mark.parametrize("detector", rules.ALL, ids=lambda d: d.id)
def test_anchor_compiles(detector: Detector) -> None:
    Engine([detector])  # hyperscan rejects an anchor at compile time


def test_whole_catalogue_compiles() -> None:
    assert len(Engine(rules.ALL).detectors) == len(rules.ALL)


def test_public_ip_is_off_by_default_but_works_when_enabled() -> None:
    assert "public-ip" not in rules.DEFAULT_IDS
    data = b"ssh ada@34.117.59.81\nscp run.log ada@192.168.1.20:/tmp/\ncurl http://127.0.0.1:8888\n"
    assert DEFAULT.scan_one(data) == []
    enabled = Engine([*(rules.BY_ID[i] for i in rules.DEFAULT_IDS), rules.BY_ID["public-ip"]])
    # Private and loopback addresses are not reported.
    assert spans(data, enabled.scan_one(data)) == [("public-ip", b"34.117.59.81")]


# --- pragmas ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(
            f"GITHUB_TOKEN={GITHUB}  # pragma: allowlist secret\n", id="inline-detect-secrets"
        ),
        pytest.param(f'token = "{GITHUB}"  # gitleaks:allow\n', id="inline-gitleaks"),
        pytest.param(
            f"# pragma: allowlist nextline secret\nGITHUB_TOKEN={GITHUB}\n", id="nextline"
        ),
        pytest.param(
            f'password = "{PASSWORD}"  # pragma: allowlist secret\n', id="inline-on-keyword-match"
        ),
    ],
)
def test_pragma_suppresses(payload: str) -> None:
    assert DEFAULT.scan_one(payload.encode(), CODE) == []


def test_nextline_pragma_covers_only_the_next_line() -> None:
    data = f"# pragma: allowlist nextline secret\nA={GITHUB}\nB={GITLAB}\n".encode()
    assert spans(data, DEFAULT.scan_one(data)) == [("gitlab-token", GITLAB.encode())]


# --- segment kinds ----------------------------------------------------------------------------

# A PNG's worth of base64, as an output's image/png payload holds it.
PNG_B64 = base64.b64encode(b"\x89PNG\r\n\x1a\n" + random.Random("png").randbytes(48_000)).decode()


def test_binary_runs_only_binary_safe_detectors() -> None:
    binary_safe = [d for d in rules.ALL if d.in_binary]
    assert {"github-token", "private-key", "aws-access-key-id"} <= {d.id for d in binary_safe}
    assert not rules.BY_ID["generic-keyword"].in_binary
    # An octet-stream output that is partly text: a token and a keyword assignment.
    data = f'{PNG_B64[:4000]}\n{GITHUB}\npassword = "{PASSWORD}"\n{PNG_B64[4000:8000]}'.encode()
    assert spans(data, DEFAULT.scan_one(data, BINARY)) == [("github-token", GITHUB.encode())]
    # The same bytes as text: the keyword detector runs too.
    assert [f.detector for f in DEFAULT.scan_one(data, TEXT)] == ["github-token", "generic-keyword"]


@pytest.mark.parametrize(("detector", "template", "secret", "kind"), FLAGS)
def test_binary_segment_uses_binary_safe_detectors_only(
    detector: str, template: str, secret: str, kind: SegmentKind
) -> None:
    data = template.replace("{S}", secret).encode()
    found = spans(data, engine_for(detector).scan_one(data, BINARY))
    assert {d for d, _ in found} <= {d.id for d in rules.ALL if d.in_binary}
    if rules.BY_ID[detector].in_binary:
        assert (detector, secret.encode()) in found


def test_base64_image_is_not_flagged() -> None:
    assert DEFAULT.scan_one(PNG_B64.encode(), BINARY) == []


@pytest.mark.parametrize(
    ("payload", "text", "code"),
    [
        # In a .env file or printed output a bare value is a literal; in source it is a name.
        pytest.param("PASSWORD=hunter2hunter9\n", True, False, id="bare-mixed-value"),
        pytest.param("password = user_password_var\n", False, False, id="bare-variable-name"),
        pytest.param("token = settings.api_token\n", False, False, id="bare-attribute"),
        pytest.param('password = "hunter2hunter9"\n', True, True, id="quoted-literal"),
        pytest.param(
            'dsn = "host=db password=hunter2hunter9"\n', True, True, id="bare-inside-string"
        ),
    ],
)
def test_code_and_text_read_bare_values_differently(payload: str, text: bool, code: bool) -> None:
    data = payload.encode()
    assert bool(DEFAULT.scan_one(data, TEXT)) is text
    assert bool(DEFAULT.scan_one(data, CODE)) is code


# --- pathological inputs ----------------------------------------------------------------------
# Each is 1 MB that would make a backtracking regex quadratic. No timing is asserted (the
# suite-wide timeout catches a hang); the results must be right, including a real token
# placed after the filler.

MB = 1 << 20
TAIL = f"\nGITHUB_TOKEN={GITHUB}\n"


def _filler(kind: str) -> str:
    if kind == "spaces":
        return " " * MB
    if kind == "password-assignments":
        return "password=" * (MB // 9)
    if kind == "open-quote-then-letters":
        return '"' + (string.ascii_letters * (MB // 52))
    if kind == "quotes-then-letters":
        return '"' * MB + string.ascii_letters
    if kind == "base64-line":
        return base64.b64encode(random.Random("mb").randbytes(MB * 3 // 4)).decode()
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "filler",
    [
        "spaces",
        "password-assignments",
        "open-quote-then-letters",
        "quotes-then-letters",
        "base64-line",
    ],
)
@pytest.mark.parametrize("kind", [TEXT, CODE, BINARY], ids=lambda k: k.value)
def test_pathological_input(filler: str, kind: SegmentKind) -> None:
    body = _filler(filler)
    assert DEFAULT.scan_one(body.encode(), kind) == []
    data = (body + TAIL).encode()
    found = DEFAULT.scan_one(data, kind)
    assert spans(data, found) == [("github-token", GITHUB.encode())]
    assert found[0].start == len(body) + len("\nGITHUB_TOKEN=")
    assert found[0].line == 2


def test_many_findings_in_one_segment() -> None:
    # 1 MB of distinct tokens, one per line: overlap resolution must not be quadratic. No vowels,
    # so no token contains a placeholder word ("your", "here", "todo") by chance.
    consonants = "BCDFGHJKLMNPQRSTVWZbcdfghjklmnpqrstvwz0123456789"
    tokens = [f"ghp_{fake(f'many{i}', 36, consonants)}" for i in range(MB // 41)]
    data = "\n".join(tokens).encode()
    found = DEFAULT.scan_one(data)
    assert [f.secret.decode() for f in found] == tokens
    assert [f.line for f in found] == list(range(1, len(tokens) + 1))


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("glpat-" + fake("glpat", 20, ALNUM), "glpat-"),
        ("gldt-" + fake("gldt", 20, ALNUM), "gldt-"),  # the detector counts 6 for glpat-
        ("sk-" + fake("oa", 20, ALNUM) + "T3BlbkFJ" + fake("oa2", 20, ALNUM), "sk-"),
        ("pscale_pw_" + fake("ps", 32, ALNUM), "pscale_pw_"),
    ],
)
def test_the_mask_shows_the_format_prefix_and_nothing_of_the_random_part(
    value: str, shown: str
) -> None:
    findings = DEFAULT.scan_one(f"x = '{value}'\n".encode(), CODE)
    assert len(findings) == 1
    assert findings[0].masked == shown + "********" + value[-3:]
    assert findings[0].fingerprint.startswith(shown + "…")
