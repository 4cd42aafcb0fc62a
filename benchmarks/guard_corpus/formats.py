"""Credential formats, one entry per kind of credential the major scanners know.

Sources of the *list* (not of any text): the rule families of gitleaks' default
configuration, Kingfisher's and TruffleHog's detector lists, GitHub's
secret-scanning partner patterns, and the quantum / research-cloud providers our
users hold accounts with. Each entry states the format as a fact: prefix,
alphabet, length, structure. Templates use ``{<alphabet><n>}`` for ``n`` random
characters (alphabets below) and ``{uuid}``.

``name`` is the environment variable a user would keep the value in; it is the
vendor context of formats that have no distinctive prefix (``keyword=True``).
"""

from __future__ import annotations

import base64
import json
import random
import re
import string
from collections.abc import Callable
from dataclasses import dataclass

ALPHABETS = {
    "a": string.ascii_letters + string.digits,
    "A": string.ascii_uppercase + string.digits,
    "U": string.ascii_uppercase,
    "L": string.ascii_lowercase,
    "l": string.ascii_lowercase + string.digits,
    "d": string.digits,
    "h": "0123456789abcdef",
    "H": "0123456789ABCDEF",
    "u": string.ascii_letters + string.digits + "-_",
    "b": string.ascii_letters + string.digits + "+/",
    "w": string.ascii_letters + string.digits + "_",
    "z": "abcdefghijklmnopqrstuvwxyz234567",  # base32, lower case
    "Z": "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567",  # base32, upper case
    "C": "QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L",  # bech32 data characters, upper case
    "p": string.ascii_letters + string.digits + "!%*-_",  # passwords safe in URLs
    "c": "./" + string.ascii_letters + string.digits,  # crypt(3)'s base64
}
_FIELD = re.compile(r"\{(uuid|[A-Za-z]\d+)\}")


@dataclass(frozen=True)
class Sample:
    """``text`` is what a user pastes; ``secrets`` are the parts that must not reach disk."""

    text: str
    secrets: tuple[str, ...]

    @property
    def multiline(self) -> bool:
        return "\n" in self.text


@dataclass(frozen=True)
class Format:
    id: str
    family: str
    provider: str
    name: str  # environment variable / config key a user keeps it in
    make: Callable[[random.Random], Sample]
    #: True when the value has no distinctive shape: only its vendor context identifies it.
    keyword: bool = False

    def sample(self, variant: int = 0) -> Sample:
        return self.make(random.Random(f"{self.id}#{variant}"))


def rand(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def uuid(rng: random.Random) -> str:
    h = rand(rng, ALPHABETS["h"], 32)
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"


def expand(template: str, rng: random.Random) -> str:
    def one(m: re.Match[str]) -> str:
        spec = m.group(1)
        if spec == "uuid":
            return uuid(rng)
        return rand(rng, ALPHABETS[spec[0]], int(spec[1:]))

    return _FIELD.sub(one, template)


def b64url(obj: object) -> str:
    return (
        base64.urlsafe_b64encode(json.dumps(obj, separators=(",", ":")).encode())
        .rstrip(b"=")
        .decode()
    )


FORMATS: list[Format] = []


def T(id: str, family: str, provider: str, name: str, template: str, keyword: bool = False) -> None:
    """A single-token format given by a template."""

    def make(rng: random.Random) -> Sample:
        value = expand(template, rng)
        return Sample(value, (value,))

    FORMATS.append(Format(id, family, provider, name, make, keyword))


def K(id: str, family: str, provider: str, name: str, template: str) -> None:
    """A value without a distinctive shape: found only by its vendor's name nearby."""
    T(id, family, provider, name, template, keyword=True)


def S(id: str, family: str, provider: str, name: str, keyword: bool = False):  # type: ignore[no-untyped-def]
    """A structured sample built by a function (connection strings, key files, JSON)."""

    def register(fn: Callable[[random.Random], Sample]) -> Callable[[random.Random], Sample]:
        FORMATS.append(Format(id, family, provider, name, fn, keyword))
        return fn

    return register


# --- source hosting and CI ---------------------------------------------------------------------
T("github-pat", "vcs", "GitHub", "GITHUB_TOKEN", "ghp_{a36}")
T("github-oauth", "vcs", "GitHub", "GITHUB_OAUTH_TOKEN", "gho_{a36}")
T("github-user-to-server", "vcs", "GitHub", "GH_APP_USER_TOKEN", "ghu_{a36}")
T("github-server-to-server", "vcs", "GitHub", "GH_APP_INSTALLATION_TOKEN", "ghs_{a36}")
T("github-refresh", "vcs", "GitHub", "GH_REFRESH_TOKEN", "ghr_{a76}")
T("github-fine-grained-pat", "vcs", "GitHub", "GH_TOKEN", "github_pat_11{A20}_{a59}")
T("gitlab-pat", "vcs", "GitLab", "GITLAB_TOKEN", "glpat-{u20}")
T("gitlab-pat-routable", "vcs", "GitLab", "GITLAB_TOKEN", "glpat-{u27}.01.{l9}")
T("gitlab-deploy-token", "vcs", "GitLab", "GITLAB_DEPLOY_TOKEN", "gldt-{u20}")
T("gitlab-runner-token", "vcs", "GitLab", "CI_RUNNER_TOKEN", "glrt-{u20}")
T("gitlab-pipeline-trigger", "vcs", "GitLab", "GITLAB_TRIGGER_TOKEN", "glptt-{h40}")
T("gitlab-feed-token", "vcs", "GitLab", "GITLAB_FEED_TOKEN", "glft-{u20}")
T("gitlab-incoming-mail", "vcs", "GitLab", "GITLAB_INCOMING_EMAIL_TOKEN", "glimt-{u25}")
T("gitlab-agent-token", "vcs", "GitLab", "GITLAB_AGENT_TOKEN", "glagent-{u50}")
T("gitlab-oauth-secret", "vcs", "GitLab", "GITLAB_OAUTH_SECRET", "gloas-{u64}")
T("gitlab-scim-token", "vcs", "GitLab", "GITLAB_SCIM_TOKEN", "glsoat-{u20}")
T("gitlab-cicd-job-token", "vcs", "GitLab", "CI_JOB_TOKEN", "glcbt-{h1}_{u20}")
T("gitlab-feature-flag-token", "vcs", "GitLab", "UNLEASH_CLIENT_TOKEN", "glffct-{u20}")
T("gitlab-runner-registration", "vcs", "GitLab", "REGISTRATION_TOKEN", "GR1348941{u20}")
T("gitlab-session-cookie", "vcs", "GitLab", "GITLAB_COOKIE", "_gitlab_session={l32}")
K("bitbucket-client-secret", "vcs", "Bitbucket", "BITBUCKET_CLIENT_SECRET", "{u64}")
T("bitbucket-app-password", "vcs", "Bitbucket", "BITBUCKET_APP_PASSWORD", "ATBB{a32}{H8}")
T("atlassian-api-token", "vcs", "Atlassian", "JIRA_API_TOKEN", "ATATT3xFfGF0{u170}={H8}")
K("atlassian-legacy-token", "vcs", "Atlassian", "CONFLUENCE_API_TOKEN", "{a24}")
K("azure-devops-pat", "vcs", "Azure DevOps", "AZURE_DEVOPS_EXT_PAT", "{z52}")
T("azure-devops-pat-v2", "vcs", "Azure DevOps", "AZURE_DEVOPS_PAT", "{a76}AZDO{a4}")
T("azure-identifiable-key", "cloud", "Azure", "AZURE_OPENAI_API_KEY", "{a52}JQQJ99{a18}ACOG{a4}")
T("circleci-pat", "ci", "CircleCI", "CIRCLECI_TOKEN", "CCIPAT_{a22}_{h40}")
K("circleci-token", "ci", "CircleCI", "CIRCLE_TOKEN", "{h40}")
K("travisci-token", "ci", "Travis CI", "TRAVIS_TOKEN", "{u22}")
K("droneci-token", "ci", "Drone", "DRONE_TOKEN", "{a32}")
T("buildkite-token", "ci", "Buildkite", "BUILDKITE_API_TOKEN", "bkua_{h40}")
T("dependency-track-key", "ci", "Dependency-Track", "DTRACK_API_KEY", "odt_{a32}")
T("dependency-track-key-v2", "ci", "Dependency-Track", "DTRACK_API_KEY", "odt_{a8}_{a32}")
T("ionic-token", "ci", "Ionic", "IONIC_TOKEN", "ion_{a42}")
K("codecov-token", "ci", "Codecov", "CODECOV_TOKEN", "{uuid}")
T("sourcegraph-token", "vcs", "Sourcegraph", "SRC_ACCESS_TOKEN", "sgp_{h16}_{h40}")
T("sourcegraph-local-token", "vcs", "Sourcegraph", "SRC_ACCESS_TOKEN", "sgp_local_{h40}")
T("sourcegraph-license-key", "vcs", "Sourcegraph", "SOURCEGRAPH_LICENSE_KEY", "slk_{h64}")
T("sonarqube-token", "ci", "SonarQube", "SONAR_TOKEN", "squ_{h40}")


@S("sonarqube-login", "ci", "SonarQube", "SONAR_LOGIN")
def _sonar_login(rng: random.Random) -> Sample:
    token = expand("{h40}", rng)
    return Sample(f"mvn sonar:sonar -Dsonar.login={token}", (token,))


T("jfrog-api-key", "ci", "JFrog", "ARTIFACTORY_API_KEY", "AKCp8{a68}")
T("jfrog-reference-token", "ci", "JFrog", "JFROG_ACCESS_TOKEN", "cmVmdGtuOjAxOjE3{a48}")
T("docker-hub-pat", "ci", "Docker Hub", "DOCKERHUB_TOKEN", "dckr_pat_{u27}")
T("npm-token", "packages", "npm", "NPM_TOKEN", "npm_{a36}")
T("pypi-upload-token", "packages", "PyPI", "PYPI_API_TOKEN", "pypi-AgEIcHlwaS5vcmc{u140}")
T(
    "testpypi-upload-token",
    "packages",
    "PyPI",
    "TEST_PYPI_API_TOKEN",
    "pypi-AgENdGVzdC5weXBpLm9yZw{u140}",
)
T("rubygems-token", "packages", "RubyGems", "GEM_HOST_API_KEY", "rubygems_{h48}")
T("clojars-token", "packages", "Clojars", "CLOJARS_TOKEN", "CLOJARS_{l60}")
T("nuget-api-key", "packages", "NuGet", "NUGET_API_KEY", "oy2{l43}")
T("cratesio-token", "packages", "crates.io", "CARGO_REGISTRY_TOKEN", "cio{a32}")
K("anaconda-token", "packages", "Anaconda", "ANACONDA_TOKEN", "{l2}-{uuid}")
T("pulumi-token", "ci", "Pulumi", "PULUMI_ACCESS_TOKEN", "pul-{h40}")
T("terraform-cloud-token", "ci", "HashiCorp", "TFE_TOKEN", "{l14}.atlasv1.{u67}")
T("octopus-api-key", "ci", "Octopus Deploy", "OCTOPUS_API_KEY", "API-{A26}")
T("harness-pat", "ci", "Harness", "HARNESS_API_KEY", "pat.{u22}.{a24}.{a20}")
T("readme-api-key", "ci", "ReadMe", "README_API_KEY", "rdme_{l70}")
T("postman-api-key", "ci", "Postman", "POSTMAN_API_KEY", "PMAK-{h24}-{h34}")
T("prefect-api-key", "ci", "Prefect", "PREFECT_API_KEY", "pnu_{a36}")
T("doppler-token", "ci", "Doppler", "DOPPLER_TOKEN", "dp.pt.{a43}")
T("doppler-service-token", "ci", "Doppler", "DOPPLER_TOKEN", "dp.st.dev.{a40}")
T("infracost-key", "ci", "Infracost", "INFRACOST_API_KEY", "ico-{a32}")
T("scalingo-token", "ci", "Scalingo", "SCALINGO_API_TOKEN", "tk-us-{u48}")
T("defined-networking-key", "ci", "Defined Networking", "DN_API_KEY", "dnkey-{u26}-{u52}")
T("tailscale-key", "ci", "Tailscale", "TS_AUTHKEY", "tskey-auth-{a17}-{a33}")
T("fly-token", "cloud", "Fly.io", "FLY_API_TOKEN", "fo1_{u43}")
T("render-api-key", "cloud", "Render", "RENDER_API_KEY", "rnd_{a32}")
T("netlify-pat", "cloud", "Netlify", "NETLIFY_AUTH_TOKEN", "nfp_{a36}")
K("vercel-token", "cloud", "Vercel", "VERCEL_TOKEN", "{a24}")
T("heroku-api-key-v2", "cloud", "Heroku", "HEROKU_API_KEY", "HRKU-AA{u58}")
K("heroku-api-key", "cloud", "Heroku", "HEROKU_API_KEY", "{uuid}")
T("supabase-token", "cloud", "Supabase", "SUPABASE_ACCESS_TOKEN", "sbp_{h40}")
T("supabase-secret-key", "cloud", "Supabase", "SUPABASE_SECRET_KEY", "sb_secret_{u32}")
T("planetscale-token", "database", "PlanetScale", "PLANETSCALE_SERVICE_TOKEN", "pscale_tkn_{u43}")
T("planetscale-password", "database", "PlanetScale", "PLANETSCALE_PASSWORD", "pscale_pw_{u43}")
T("planetscale-oauth", "database", "PlanetScale", "PLANETSCALE_OAUTH_TOKEN", "pscale_oauth_{u43}")

# --- clouds ------------------------------------------------------------------------------------
T("aws-access-key-id", "cloud", "AWS", "AWS_ACCESS_KEY_ID", "AKIA{Z16}")
T("aws-session-key-id", "cloud", "AWS", "AWS_ACCESS_KEY_ID", "ASIA{Z16}")
K("aws-secret-access-key", "cloud", "AWS", "AWS_SECRET_ACCESS_KEY", "{b40}")
T("aws-bedrock-key", "cloud", "AWS", "AWS_BEARER_TOKEN_BEDROCK", "ABSK{b132}")
K("aws-session-token", "cloud", "AWS", "AWS_SESSION_TOKEN", "IQoJb3JpZ2luX2Vj{b300}")
T("aws-braket-key-id", "quantum", "AWS Braket", "AWS_ACCESS_KEY_ID", "AKIA{Z16}")
K("aws-braket-secret", "quantum", "AWS Braket", "AWS_SECRET_ACCESS_KEY", "{b40}")
T("gcp-api-key", "cloud", "Google Cloud", "GOOGLE_API_KEY", "AIza{u35}")
T("gcp-oauth-client-secret", "cloud", "Google Cloud", "GOOGLE_CLIENT_SECRET", "GOCSPX-{u28}")
T("gcp-oauth-access-token", "cloud", "Google Cloud", "GOOGLE_OAUTH_TOKEN", "ya29.a0{u150}")
T("gcp-oauth-refresh-token", "cloud", "Google Cloud", "GOOGLE_REFRESH_TOKEN", "1//0{u60}")
T("azure-entra-client-secret", "cloud", "Azure", "AZURE_CLIENT_SECRET", "{a3}8Q~{u34}")
K("azure-openai-key", "ai", "Azure OpenAI", "AZURE_OPENAI_API_KEY", "{h32}")
T("azure-openai-key-v2", "ai", "Azure OpenAI", "AZURE_OPENAI_API_KEY", "{a76}JQQJ99{a2}")
T("azure-apim-key", "cloud", "Azure", "APIM_SUBSCRIPTION_KEY", "{h32}", keyword=True)
T("azure-function-key", "cloud", "Azure", "AZURE_FUNCTION_KEY", "{u54}==", keyword=True)
K("alibaba-secret", "cloud", "Alibaba Cloud", "ALIBABA_CLOUD_ACCESS_KEY_SECRET", "{a30}")
T("alibaba-key-id", "cloud", "Alibaba Cloud", "ALIBABA_CLOUD_ACCESS_KEY_ID", "LTAI{a20}")
T("tencent-secret-id", "cloud", "Tencent Cloud", "TENCENTCLOUD_SECRET_ID", "AKID{a32}")
T("yandex-api-key", "cloud", "Yandex Cloud", "YC_API_KEY", "AQVN{u36}")
T("yandex-iam-token", "cloud", "Yandex Cloud", "YC_TOKEN", "t1.{u20}.{u86}")
T("yandex-static-key", "cloud", "Yandex Cloud", "YC_ACCESS_KEY", "YC{u38}")
K("oracle-oci-auth-token", "cloud", "Oracle Cloud", "OCI_AUTH_TOKEN", "{p20}")
T("scaleway-key", "cloud", "Scaleway", "SCW_ACCESS_KEY", "SCW{A17}")
K("scaleway-secret", "cloud", "Scaleway", "SCW_SECRET_KEY", "{uuid}")
T("digitalocean-pat", "cloud", "DigitalOcean", "DIGITALOCEAN_TOKEN", "dop_v1_{h64}")
T("digitalocean-oauth", "cloud", "DigitalOcean", "DIGITALOCEAN_ACCESS_TOKEN", "doo_v1_{h64}")
T("digitalocean-refresh", "cloud", "DigitalOcean", "DIGITALOCEAN_REFRESH_TOKEN", "dor_v1_{h64}")
K("linode-token", "cloud", "Linode", "LINODE_TOKEN", "{h64}")
K("vultr-key", "cloud", "Vultr", "VULTR_API_KEY", "{A36}")
K("hetzner-token", "cloud", "Hetzner", "HCLOUD_TOKEN", "{a64}")
K("cloudflare-api-token", "cloud", "Cloudflare", "CLOUDFLARE_API_TOKEN", "{u40}")
K("cloudflare-global-key", "cloud", "Cloudflare", "CLOUDFLARE_API_KEY", "{h37}")
T("cloudflare-origin-ca", "cloud", "Cloudflare", "CF_ORIGIN_CA_KEY", "v1.0-{h24}-{h146}")
T("databricks-token", "database", "Databricks", "DATABRICKS_TOKEN", "dapi{h32}")
T("clickhouse-cloud-secret", "database", "ClickHouse", "CLICKHOUSE_SECRET", "4b1d{a38}")
K("snowflake-password", "database", "Snowflake", "SNOWFLAKE_PASSWORD", "{p20}")
T(
    "mongodb-atlas-key",
    "database",
    "MongoDB Atlas",
    "MONGODB_ATLAS_PRIVATE_KEY",
    "{uuid}",
    keyword=True,
)
T(
    "mongodb-atlas-service-account",
    "database",
    "MongoDB Atlas",
    "MDB_MCP_API_CLIENT_SECRET",
    "mdb_sa_sk_{u40}",
)
K("pinecone-legacy-key", "ai", "Pinecone", "PINECONE_API_KEY", "{uuid}")
T("pinecone-key", "ai", "Pinecone", "PINECONE_API_KEY", "pcsk_{a6}_{a63}")
K("upstash-token", "database", "Upstash", "UPSTASH_REDIS_REST_TOKEN", "A{a70}=")
K("firebase-secret", "cloud", "Firebase", "FIREBASE_DATABASE_SECRET", "{a40}")

# --- AI and ML services ------------------------------------------------------------------------
T("openai-project-key", "ai", "OpenAI", "OPENAI_API_KEY", "sk-proj-{u74}T3BlbkFJ{u74}")
T("openai-legacy-key", "ai", "OpenAI", "OPENAI_API_KEY", "sk-{a20}T3BlbkFJ{a20}")
T("openai-svcacct-key", "ai", "OpenAI", "OPENAI_API_KEY", "sk-svcacct-{u74}T3BlbkFJ{u74}")
T("openai-admin-key", "ai", "OpenAI", "OPENAI_ADMIN_KEY", "sk-admin-{u74}T3BlbkFJ{u74}")
T("anthropic-api-key", "ai", "Anthropic", "ANTHROPIC_API_KEY", "sk-ant-api03-{u93}AA")
T("anthropic-admin-key", "ai", "Anthropic", "ANTHROPIC_ADMIN_KEY", "sk-ant-admin01-{u93}AA")
T("huggingface-token", "ai", "Hugging Face", "HF_TOKEN", "hf_{a34}")
T("huggingface-org-token", "ai", "Hugging Face", "HF_ORG_TOKEN", "api_org_{a34}")
T("groq-key", "ai", "Groq", "GROQ_API_KEY", "gsk_{a52}")
T("replicate-token", "ai", "Replicate", "REPLICATE_API_TOKEN", "r8_{a37}")
T("xai-key", "ai", "xAI", "XAI_API_KEY", "xai-{a80}")
T("perplexity-key", "ai", "Perplexity", "PERPLEXITY_API_KEY", "pplx-{a48}")
T("langsmith-key", "ai", "LangSmith", "LANGSMITH_API_KEY", "lsv2_pt_{h32}_{h10}")
T("fireworks-key", "ai", "Fireworks", "FIREWORKS_API_KEY", "fw_{a24}")
T("elevenlabs-key", "ai", "ElevenLabs", "ELEVENLABS_API_KEY", "sk_{h48}")
T("deepseek-key", "ai", "DeepSeek", "DEEPSEEK_API_KEY", "sk-{h32}")
T("stability-key", "ai", "Stability AI", "STABILITY_API_KEY", "sk-{a48}")
T("nvidia-nim-key", "ai", "NVIDIA", "NVIDIA_API_KEY", "nvapi-{u64}")
T("openrouter-key", "ai", "OpenRouter", "OPENROUTER_API_KEY", "sk-or-v1-{h64}")
K("cohere-key", "ai", "Cohere", "COHERE_API_KEY", "{a40}")
K("mistral-key", "ai", "Mistral", "MISTRAL_API_KEY", "{a32}")
K("together-key", "ai", "Together", "TOGETHER_API_KEY", "{h64}")
K("wandb-key", "ai", "Weights & Biases", "WANDB_API_KEY", "{h40}")
K("deepgram-key", "ai", "Deepgram", "DEEPGRAM_API_KEY", "{h40}")
K("assemblyai-key", "ai", "AssemblyAI", "ASSEMBLYAI_API_KEY", "{h32}")
K("clarifai-pat", "ai", "Clarifai", "CLARIFAI_PAT", "{h32}")
K("comet-key", "ai", "Comet", "COMET_API_KEY", "{a25}")
K(
    "neptune-token",
    "ai",
    "Neptune",
    "NEPTUNE_API_TOKEN",
    "eyJhcGlfYWRkcmVzcyI6Imh0dHBzOi8vYXBwLm5lcHR1bmUuYWkiLCJhcGlfdXJsIjoiaHR0cHM6Ly9hcHAubmVwdHVuZS5haSIsImFwaV9rZXkiOiI{a60}In0=",
)
T("kaggle-key", "ai", "Kaggle", "KAGGLE_KEY", "{h32}", keyword=True)
T("roboflow-key", "ai", "Roboflow", "ROBOFLOW_API_KEY", "{a20}", keyword=True)
K("wolfram-appid", "ai", "Wolfram Alpha", "WOLFRAM_APP_ID", "{A6}-{A10}")
T("privateai-key", "ai", "Private AI", "PAI_API_KEY", "{h32}", keyword=True)

# --- payments and commerce ---------------------------------------------------------------------
T("stripe-secret-live", "payments", "Stripe", "STRIPE_SECRET_KEY", "sk_live_51{a97}")
T("stripe-secret-test", "payments", "Stripe", "STRIPE_SECRET_KEY", "sk_test_51{a97}")
T("stripe-restricted", "payments", "Stripe", "STRIPE_RESTRICTED_KEY", "rk_live_51{a97}")
T("stripe-webhook-secret", "payments", "Stripe", "STRIPE_WEBHOOK_SECRET", "whsec_{a32}")
T("square-access-token", "payments", "Square", "SQUARE_ACCESS_TOKEN", "EAAA{u60}")
T("square-oauth-secret", "payments", "Square", "SQUARE_APP_SECRET", "sq0csp-{u43}")
T("square-legacy-token", "payments", "Square", "SQUARE_TOKEN", "sq0atp-{u22}")
T(
    "paypal-braintree",
    "payments",
    "PayPal Braintree",
    "BRAINTREE_ACCESS_TOKEN",
    "access_token$production${l16}${h32}",
)
T("shopify-access-token", "payments", "Shopify", "SHOPIFY_ACCESS_TOKEN", "shpat_{h32}")
T("shopify-custom-app", "payments", "Shopify", "SHOPIFY_TOKEN", "shpca_{h32}")
T("shopify-private-app", "payments", "Shopify", "SHOPIFY_PASSWORD", "shppa_{h32}")
T("shopify-shared-secret", "payments", "Shopify", "SHOPIFY_SHARED_SECRET", "shpss_{h32}")
T("flutterwave-secret", "payments", "Flutterwave", "FLW_SECRET_KEY", "FLWSECK_TEST-{h32}-X")
T("flutterwave-encryption", "payments", "Flutterwave", "FLW_ENCRYPTION_KEY", "FLWSECK_TEST{h12}")
T("razorpay-key", "payments", "Razorpay", "RAZORPAY_KEY_ID", "rzp_live_{a14}")
T("paystack-secret", "payments", "Paystack", "PAYSTACK_SECRET_KEY", "sk_live_{h40}")
T("mollie-key", "payments", "Mollie", "MOLLIE_API_KEY", "live_{a30}")
T("gocardless-token", "payments", "GoCardless", "GOCARDLESS_ACCESS_TOKEN", "live_{u40}")
T("plaid-access-token", "payments", "Plaid", "PLAID_ACCESS_TOKEN", "access-production-{uuid}")
K("plaid-secret", "payments", "Plaid", "PLAID_SECRET", "{h30}")
T("duffel-token", "payments", "Duffel", "DUFFEL_ACCESS_TOKEN", "duffel_test_{u43}")
T("easypost-key", "payments", "EasyPost", "EASYPOST_API_KEY", "EZAK{a54}")
T("easypost-test-key", "payments", "EasyPost", "EASYPOST_TEST_API_KEY", "EZTK{a54}")
T("shippo-token", "payments", "Shippo", "SHIPPO_API_TOKEN", "shippo_live_{h40}")
T("lob-key", "payments", "Lob", "LOB_API_KEY", "live_{h35}")
T("adyen-key", "payments", "Adyen", "ADYEN_API_KEY", "AQE{u30}.{u30}+{u40}")
K("coinbase-key", "payments", "Coinbase", "COINBASE_API_SECRET", "{a64}")
K("binance-secret", "payments", "Binance", "BINANCE_API_SECRET", "{a64}")
K("kraken-secret", "payments", "Kraken", "KRAKEN_PRIVATE_KEY", "{b86}==")
K("kucoin-secret", "payments", "KuCoin", "KUCOIN_API_SECRET", "{uuid}")
K("bittrex-secret", "payments", "Bittrex", "BITTREX_API_SECRET", "{a32}")
K("finicity-secret", "payments", "Finicity", "FINICITY_APP_KEY", "{a20}")
K("finnhub-key", "payments", "Finnhub", "FINNHUB_API_KEY", "{l20}")
K("alpha-vantage-key", "payments", "Alpha Vantage", "ALPHAVANTAGE_API_KEY", "{A16}")

# --- messaging and e-mail ----------------------------------------------------------------------
T("slack-bot-token", "messaging", "Slack", "SLACK_BOT_TOKEN", "xoxb-{d12}-{d13}-{a24}")
T("slack-user-token", "messaging", "Slack", "SLACK_USER_TOKEN", "xoxp-{d12}-{d12}-{d13}-{h32}")
T("slack-app-token", "messaging", "Slack", "SLACK_APP_TOKEN", "xapp-1-A{A10}-{d13}-{h64}")
T("slack-config-token", "messaging", "Slack", "SLACK_CONFIG_TOKEN", "xoxe.xoxp-1-{a164}")
T("slack-refresh-token", "messaging", "Slack", "SLACK_REFRESH_TOKEN", "xoxe-1-{a146}")
T(
    "slack-webhook",
    "messaging",
    "Slack",
    "SLACK_WEBHOOK_URL",
    "https://hooks.slack.com/services/T{A10}/B{A10}/{a24}",
)
T(
    "slack-workflow-webhook",
    "messaging",
    "Slack",
    "SLACK_WORKFLOW_URL",
    "https://hooks.slack.com/triggers/T{A10}/{d13}/{h32}",
)
T("discord-bot-token", "messaging", "Discord", "DISCORD_TOKEN", "MT{a24}.{u6}.{u38}")
T(
    "discord-webhook",
    "messaging",
    "Discord",
    "DISCORD_WEBHOOK",
    "https://discord.com/api/webhooks/{d19}/{u68}",
)
K("discord-client-secret", "messaging", "Discord", "DISCORD_CLIENT_SECRET", "{u32}")
T("telegram-bot-token", "messaging", "Telegram", "TELEGRAM_BOT_TOKEN", "7{d9}:AA{u33}")
T(
    "teams-webhook",
    "messaging",
    "Microsoft Teams",
    "TEAMS_WEBHOOK_URL",
    "https://qlab.webhook.office.com/webhookb2/{uuid}@{uuid}/IncomingWebhook/{h32}/{uuid}",
)
T(
    "teams-webhook-legacy",
    "messaging",
    "Microsoft Teams",
    "TEAMS_WEBHOOK_URL",
    "https://outlook.office.com/webhook/{uuid}@{uuid}/IncomingWebhook/{h32}/{uuid}",
)


@S("zapier-webhook", "productivity", "Zapier", "ZAPIER_HOOK_URL")
def _zapier(rng: random.Random) -> Sample:
    # The account and hook ids are the secret part; the host is public.
    hook = expand("{d7}/{l7}", rng)
    return Sample(f"https://hooks.zapier.com/hooks/catch/{hook}/", (hook,))


T("adafruit-io-key", "productivity", "Adafruit IO", "ADAFRUIT_IO_KEY", "aio_{a28}")
T("tavily-api-key", "ai", "Tavily", "TAVILY_API_KEY", "tvly-{a32}")
T("salesforce-access-token", "productivity", "Salesforce", "SF_ACCESS_TOKEN", "00D{a12}!{a96}")
T("posthog-personal-key", "observability", "PostHog", "POSTHOG_PERSONAL_API_KEY", "phx_{w43}")
T("twilio-api-key", "messaging", "Twilio", "TWILIO_API_KEY", "SK{h32}")
K("twilio-auth-token", "messaging", "Twilio", "TWILIO_AUTH_TOKEN", "{h32}")
T("sendgrid-key", "messaging", "SendGrid", "SENDGRID_API_KEY", "SG.{u22}.{u43}")
T("brevo-key", "messaging", "Brevo (Sendinblue)", "BREVO_API_KEY", "xkeysib-{h64}-{a16}")
T("mailgun-key", "messaging", "Mailgun", "MAILGUN_API_KEY", "key-{h32}")
K("mailgun-private", "messaging", "Mailgun", "MAILGUN_PRIVATE_KEY", "{h32}-{h8}-{h8}")
T("mailchimp-key", "messaging", "Mailchimp", "MAILCHIMP_API_KEY", "{h32}-us14")
T("mandrill-key", "messaging", "Mailchimp Transactional", "MANDRILL_API_KEY", "md-{u22}")
K("postmark-token", "messaging", "Postmark", "POSTMARK_SERVER_TOKEN", "{uuid}")
T("telnyx-key", "messaging", "Telnyx", "TELNYX_API_KEY", "KEY{H32}_{a22}")
K("vonage-secret", "messaging", "Vonage", "VONAGE_API_SECRET", "{a16}")
K("messagebird-key", "messaging", "MessageBird", "MESSAGEBIRD_API_KEY", "{a25}")
K("pusher-secret", "messaging", "Pusher", "PUSHER_APP_SECRET", "{h20}")
K("ably-key", "messaging", "Ably", "ABLY_API_KEY", "{u6}.{u6}:{u43}")
T("pubnub-secret", "messaging", "PubNub", "PUBNUB_SECRET_KEY", "sec-c-{b48}")
K("mattermost-token", "messaging", "Mattermost", "MATTERMOST_TOKEN", "{l26}")
K("intercom-token", "messaging", "Intercom", "INTERCOM_ACCESS_TOKEN", "dG9rO{a55}=")
K("zendesk-token", "messaging", "Zendesk", "ZENDESK_API_TOKEN", "{a40}")
K("gitter-token", "messaging", "Gitter", "GITTER_TOKEN", "{h40}")
K(
    "twitter-bearer",
    "messaging",
    "X / Twitter",
    "TWITTER_BEARER_TOKEN",
    "AAAAAAAAAAAAAAAAAAAAA{a70}%3D{a50}",
)
T(
    "twitter-access-token",
    "messaging",
    "X / Twitter",
    "TWITTER_ACCESS_TOKEN",
    "{d19}-{a40}",
    keyword=True,
)
K("twitter-api-secret", "messaging", "X / Twitter", "TWITTER_API_SECRET", "{a50}")
T("facebook-page-token", "messaging", "Meta", "FB_PAGE_ACCESS_TOKEN", "EAAC{a180}")
T("facebook-app-token", "messaging", "Meta", "FACEBOOK_ACCESS_TOKEN", "{d16}|{u27}")
K("facebook-secret", "messaging", "Meta", "FACEBOOK_APP_SECRET", "{h32}")
K("linkedin-secret", "messaging", "LinkedIn", "LINKEDIN_CLIENT_SECRET", "{a16}")
K("twitch-token", "messaging", "Twitch", "TWITCH_OAUTH_TOKEN", "{l30}")
K("reddit-secret", "messaging", "Reddit", "REDDIT_CLIENT_SECRET", "{u27}")
K("spotify-secret", "messaging", "Spotify", "SPOTIFY_CLIENT_SECRET", "{h32}")
K("youtube-key", "messaging", "YouTube", "YOUTUBE_OAUTH_SECRET", "{u24}")

# --- observability, productivity, SaaS ---------------------------------------------------------
K("datadog-api-key", "observability", "Datadog", "DD_API_KEY", "{h32}")
K("datadog-app-key", "observability", "Datadog", "DD_APP_KEY", "{h40}")
T("newrelic-user-key", "observability", "New Relic", "NEW_RELIC_API_KEY", "NRAK-{A27}")
T("newrelic-insert-key", "observability", "New Relic", "NEW_RELIC_INSERT_KEY", "NRII-{u32}")
T("newrelic-license-key", "observability", "New Relic", "NEW_RELIC_LICENSE_KEY", "{h36}NRAL")
T("newrelic-license-key-eu", "observability", "New Relic", "NEW_RELIC_LICENSE_KEY", "eu01xx{h30}NRAL")
T("segment-api-token", "observability", "Segment", "SEGMENT_PUBLIC_API_TOKEN", "sgp_{a64}")
T("newrelic-browser-key", "observability", "New Relic", "NEW_RELIC_BROWSER_KEY", "NRJS-{h19}")
T("sentry-user-token", "observability", "Sentry", "SENTRY_AUTH_TOKEN", "sntryu_{h64}")
T(
    "sentry-org-token",
    "observability",
    "Sentry",
    "SENTRY_AUTH_TOKEN",
    "sntrys_eyJpYXQiOjE3{a60}_{u43}",
)
T("grafana-cloud-token", "observability", "Grafana", "GRAFANA_CLOUD_TOKEN", "glc_{b120}=")
T("grafana-sa-token", "observability", "Grafana", "GRAFANA_SA_TOKEN", "glsa_{a32}_{h8}")
T("grafana-api-key", "observability", "Grafana", "GRAFANA_API_KEY", "eyJrIjoi{a70}")
T("dynatrace-token", "observability", "Dynatrace", "DT_API_TOKEN", "dt0c01.{A24}.{A64}")
K("honeycomb-key", "observability", "Honeycomb", "HONEYCOMB_API_KEY", "{a22}")
K("splunk-hec-token", "observability", "Splunk", "SPLUNK_HEC_TOKEN", "{uuid}")
T("sumologic-access-id", "observability", "Sumo Logic", "SUMO_ACCESS_ID", "su{a12}", keyword=True)
K("sumologic-key", "observability", "Sumo Logic", "SUMO_ACCESS_KEY", "{a64}")
K("pagerduty-key", "observability", "PagerDuty", "PAGERDUTY_TOKEN", "u+{u18}")
K("opsgenie-key", "observability", "Opsgenie", "OPSGENIE_API_KEY", "{uuid}")
K("launchdarkly-key", "observability", "LaunchDarkly", "LAUNCHDARKLY_SDK_KEY", "sdk-{uuid}")
T("launchdarkly-api", "observability", "LaunchDarkly", "LD_API_KEY", "api-{uuid}", keyword=True)
K("rollbar-token", "observability", "Rollbar", "ROLLBAR_ACCESS_TOKEN", "{h32}")
K("bugsnag-key", "observability", "Bugsnag", "BUGSNAG_API_KEY", "{h32}")
K("segment-key", "observability", "Segment", "SEGMENT_WRITE_KEY", "{a32}")
K("mixpanel-secret", "observability", "Mixpanel", "MIXPANEL_API_SECRET", "{h32}")
K("amplitude-key", "observability", "Amplitude", "AMPLITUDE_API_KEY", "{h32}")
T("notion-token", "productivity", "Notion", "NOTION_TOKEN", "ntn_{d11}{a35}")
T("notion-legacy-token", "productivity", "Notion", "NOTION_TOKEN", "secret_{a43}")
T("linear-key", "productivity", "Linear", "LINEAR_API_KEY", "lin_api_{a40}")
T("airtable-pat", "productivity", "Airtable", "AIRTABLE_TOKEN", "pat{a14}.{h64}")
K("airtable-key", "productivity", "Airtable", "AIRTABLE_API_KEY", "key{a14}")
T("figma-pat", "productivity", "Figma", "FIGMA_TOKEN", "figd_{u40}")
T("asana-pat", "productivity", "Asana", "ASANA_TOKEN", "2/{d16}/{d16}:{h32}")
K("trello-token", "productivity", "Trello", "TRELLO_TOKEN", "ATTA{h60}{H8}")
T("typeform-token", "productivity", "Typeform", "TYPEFORM_TOKEN", "tfp_{u44}_{u14}")
T("contentful-pat", "productivity", "Contentful", "CONTENTFUL_MANAGEMENT_TOKEN", "CFPAT-{u43}")
K("contentful-delivery", "productivity", "Contentful", "CONTENTFUL_ACCESS_TOKEN", "{u43}")
T("frameio-token", "productivity", "Frame.io", "FRAMEIO_TOKEN", "fio-u-{u64}")
T("mapbox-token", "productivity", "Mapbox", "MAPBOX_ACCESS_TOKEN", "sk.eyJ1Ijoi{a40}.{u22}")
T("mapbox-temporary-token", "productivity", "Mapbox", "MAPBOX_TOKEN", "tk.eyJ1Ijoi{a40}.{u22}")
T("teamwork-token", "productivity", "Teamwork", "TEAMWORK_API_TOKEN", "tkn.v1_{a71}=")
T("ubidots-token", "productivity", "Ubidots", "UBIDOTS_TOKEN", "BBFF-{a30}")


@S("sidekiq-credentials", "packages", "Sidekiq", "BUNDLER_CONFIG")
def _sidekiq(rng: random.Random) -> Sample:
    pair = expand("{h8}:{h8}", rng)
    return Sample(f"BUNDLE_ENTERPRISE__CONTRIBSYS__COM={pair}", (pair,))


T("pagarme-api-key", "payments", "Pagar.me", "PAGARME_API_KEY", "ak_live_{a30}")
T("dropbox-short-lived", "productivity", "Dropbox", "DROPBOX_TOKEN", "sl.{u135}")
T("dropbox-long-lived", "productivity", "Dropbox", "DROPBOX_TOKEN", "{l11}AAAAAAAAAA{u43}")
K("box-token", "productivity", "Box", "BOX_DEVELOPER_TOKEN", "{a32}")
T("zoom-jwt-secret", "productivity", "Zoom", "ZOOM_CLIENT_SECRET", "{a32}", keyword=True)
K("hubspot-key", "productivity", "HubSpot", "HUBSPOT_API_KEY", "{uuid}")
T("hubspot-pat", "productivity", "HubSpot", "HUBSPOT_ACCESS_TOKEN", "pat-na1-{uuid}")
K("algolia-admin-key", "productivity", "Algolia", "ALGOLIA_ADMIN_KEY", "{h32}")
K("freshbooks-token", "productivity", "FreshBooks", "FRESHBOOKS_TOKEN", "{a64}")
K("netlify-legacy", "cloud", "Netlify", "NETLIFY_AUTH_TOKEN", "{u43}")
T("maxmind-key", "productivity", "MaxMind", "MAXMIND_LICENSE_KEY", "{a6}_{a29}_mmk")
T("okta-token", "identity", "Okta", "OKTA_API_TOKEN", "00{u40}", keyword=True)
K("auth0-secret", "identity", "Auth0", "AUTH0_CLIENT_SECRET", "{u64}")
T(
    "onepassword-secret-key",
    "identity",
    "1Password",
    "OP_SECRET_KEY",
    "A3-{A6}-{A6}-{A5}-{A5}-{A5}-{A5}",
)
T(
    "onepassword-sa-token",
    "identity",
    "1Password",
    "OP_SERVICE_ACCOUNT_TOKEN",
    "ops_eyJzaWduSW5BZGRyZXNzIjoi{a200}",
)
T("age-secret-key", "identity", "age", "SOPS_AGE_KEY", "AGE-SECRET-KEY-1{C58}")
T("authress-key", "identity", "Authress", "AUTHRESS_KEY", "sc_{l10}.{l5}.acc_{l20}.{u64}")
T("settlemint-pat", "identity", "SettleMint", "SETTLEMINT_TOKEN", "sm_pat_{a16}")
T("intra42-secret", "identity", "42", "FT_CLIENT_SECRET", "s-s4t2ud-{h64}")
T("openshift-token", "cloud", "OpenShift", "OC_TOKEN", "sha256~{u43}")
T("kubernetes-sa-token", "cloud", "Kubernetes", "K8S_TOKEN", "{l6}.{l16}", keyword=True)
T("nytimes-key", "productivity", "NYTimes", "NYTIMES_API_KEY", "{a32}", keyword=True)

# --- secrets managers --------------------------------------------------------------------------
T("vault-service-token", "vault", "HashiCorp Vault", "VAULT_TOKEN", "hvs.CAESI{u86}")
T("vault-batch-token", "vault", "HashiCorp Vault", "VAULT_TOKEN", "hvb.AAAAAQ{u140}")
T("vault-recovery-token", "vault", "HashiCorp Vault", "VAULT_TOKEN", "hvr.{u24}")
T("vault-legacy-token", "vault", "HashiCorp Vault", "VAULT_TOKEN", "s.{a24}")
T("openbao-token", "vault", "OpenBao", "BAO_TOKEN", "s.{a24}")
K("vault-unseal-key", "vault", "HashiCorp Vault", "VAULT_UNSEAL_KEY", "{b43}=")


@S("vault-operator-init", "vault", "HashiCorp Vault", "VAULT_ADDR")
def _operator_init(rng: random.Random) -> Sample:
    keys = [expand("{b43}=", rng) for _ in range(3)]
    root = expand("hvs.{u24}", rng)
    lines = [f"Unseal Key {i}: {k}" for i, k in enumerate(keys, start=1)]
    return Sample("\n".join([*lines, "", f"Initial Root Token: {root}"]), (*keys, root))


T("newrelic-admin-key", "observability", "New Relic", "NEW_RELIC_ADMIN_KEY", "NRAA-{h27}")
T("okta-ssws-header", "identity", "Okta", "OKTA_AUTH_HEADER", "Authorization: SSWS 00{u40}")

K("consul-token", "vault", "HashiCorp Consul", "CONSUL_HTTP_TOKEN", "{uuid}")
T("infisical-token", "vault", "Infisical", "INFISICAL_TOKEN", "st.{uuid}.{h32}.{h32}")

# --- quantum and research clouds ---------------------------------------------------------------
K("ibm-quantum-legacy-token", "quantum", "IBM Quantum", "QISKIT_IBM_TOKEN", "{h128}")
K("ibm-quantum-platform-key", "quantum", "IBM Quantum", "QISKIT_IBM_TOKEN", "{u44}")
K("ibm-cloud-api-key", "quantum", "IBM Cloud", "IBM_CLOUD_API_KEY", "{u44}")
K("ibm-cos-hmac-secret", "quantum", "IBM Cloud", "COS_HMAC_SECRET_ACCESS_KEY", "{h48}")
T("dwave-leap-token", "quantum", "D-Wave", "DWAVE_API_TOKEN", "DEV-{h40}")
T("dwave-leap-token-project", "quantum", "D-Wave", "DWAVE_API_TOKEN", "ABC-{h40}")
K("ionq-key", "quantum", "IonQ", "IONQ_API_KEY", "{a32}")
K("quantinuum-password", "quantum", "Quantinuum", "QUANTINUUM_PASSWORD", "{p18}")
K("quantinuum-refresh-token", "quantum", "Quantinuum", "QNEXUS_REFRESH_TOKEN", "{u64}")
K("rigetti-qcs-refresh", "quantum", "Rigetti", "QCS_REFRESH_TOKEN", "{u43}")
K("pasqal-password", "quantum", "Pasqal", "PASQAL_PASSWORD", "{p16}")
K("pasqal-token", "quantum", "Pasqal", "PASQAL_TOKEN", "{u48}")
K("xanadu-cloud-key", "quantum", "Xanadu", "XANADU_CLOUD_API_KEY", "{u64}")
K("iqm-token", "quantum", "IQM", "IQM_TOKEN", "{u44}")
K("aqt-token", "quantum", "Alpine Quantum Technologies", "AQT_TOKEN", "{h32}")
K("quandela-token", "quantum", "Quandela", "QUANDELA_TOKEN", "_T_{u40}")
K("qbraid-key", "quantum", "qBraid", "QBRAID_API_KEY", "{a32}")
K("oqc-token", "quantum", "Oxford Quantum Circuits", "OQC_AUTH_TOKEN", "{u48}")
K("strangeworks-key", "quantum", "Strangeworks", "STRANGEWORKS_API_KEY", "{h32}")
K("classiq-token", "quantum", "Classiq", "CLASSIQ_API_KEY", "{u40}")


# --- structured samples ------------------------------------------------------------------------
def _jwt(rng: random.Random, alg: str, claims: dict[str, object], sig: int) -> str:
    return ".".join(
        [b64url({"alg": alg, "typ": "JWT"}), b64url(claims), rand(rng, ALPHABETS["u"], sig)]
    )


@S("jwt-hs256", "jwt", "JWT", "SESSION_JWT")
def _jwt_hs(rng: random.Random) -> Sample:
    v = _jwt(rng, "HS256", {"sub": f"user{rand(rng, ALPHABETS['d'], 5)}", "exp": 1893456000}, 43)
    return Sample(v, (v,))


@S("jwt-rs256", "jwt", "JWT", "ACCESS_TOKEN")
def _jwt_rs(rng: random.Random) -> Sample:
    claims = {
        "iss": "https://login.qlab.org",
        "sub": uuid(rng),
        "aud": "api",
        "scope": "jobs:write",
    }
    v = _jwt(rng, "RS256", claims, 342)
    return Sample(v, (v,))


@S("jwt-bearer-header", "jwt", "JWT", "AUTH_HEADER")
def _jwt_bearer(rng: random.Random) -> Sample:
    v = _jwt(rng, "ES256", {"sub": uuid(rng), "iat": 1767225600}, 86)
    return Sample(f"Authorization: Bearer {v}", (v,))


@S("ibm-cloud-iam-token", "quantum", "IBM Cloud", "IBM_IAM_TOKEN")
def _ibm_iam(rng: random.Random) -> Sample:
    claims = {
        "iam_id": f"IBMid-{rand(rng, ALPHABETS['A'], 10)}",
        "iss": "https://iam.cloud.ibm.com/identity",
    }
    v = _jwt(rng, "RS256", claims, 342)
    return Sample(v, (v,))


@S("xanadu-refresh-jwt", "quantum", "Xanadu", "XANADU_CLOUD_REFRESH_TOKEN")
def _xanadu(rng: random.Random) -> Sample:
    v = _jwt(rng, "HS256", {"typ": "Offline", "azp": "public", "sid": uuid(rng)}, 43)
    return Sample(v, (v,))


@S("azure-quantum-connection-string", "quantum", "Azure Quantum", "AZURE_QUANTUM_CONNECTION_STRING")
def _azq(rng: random.Random) -> Sample:
    key = rand(rng, ALPHABETS["a"], 52)
    text = (
        f"SubscriptionId={uuid(rng)};ResourceGroupName=qlab-rg;WorkspaceName=qlab-ws;"
        f"ApiKey={key};QuantumEndpoint=https://eastus.quantum.azure.com/;"
    )
    return Sample(text, (key,))


@S("azure-storage-connection-string", "cloud", "Azure", "AZURE_STORAGE_CONNECTION_STRING")
def _azs(rng: random.Random) -> Sample:
    key = rand(rng, ALPHABETS["b"], 86) + "=="
    return Sample(
        f"DefaultEndpointsProtocol=https;AccountName=qlabdata;AccountKey={key};EndpointSuffix=core.windows.net",
        (key,),
    )


@S("azure-sas-token", "cloud", "Azure", "AZURE_SAS_URL")
def _azsas(rng: random.Random) -> Sample:
    sig = rand(rng, ALPHABETS["b"], 43).replace("/", "%2F").replace("+", "%2B") + "%3D"
    return Sample(
        f"https://qlabdata.blob.core.windows.net/runs?sv=2022-11-02&ss=b&srt=co&sp=rwdlac&se=2027-01-01T00:00:00Z&spr=https&sig={sig}",
        (sig,),
    )


@S("azure-servicebus-connection-string", "cloud", "Azure", "SERVICEBUS_CONNECTION_STRING")
def _azsb(rng: random.Random) -> Sample:
    key = rand(rng, ALPHABETS["b"], 43) + "="
    return Sample(
        f"Endpoint=sb://qlab.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey={key}",
        (key,),
    )


@S("azure-cosmos-connection-string", "database", "Azure Cosmos DB", "COSMOS_CONNECTION_STRING")
def _cosmos(rng: random.Random) -> Sample:
    key = rand(rng, ALPHABETS["b"], 86) + "=="
    return Sample(
        f"AccountEndpoint=https://qlab.documents.azure.com:443/;AccountKey={key};", (key,)
    )


@S("gcp-service-account-json", "cloud", "Google Cloud", "GOOGLE_APPLICATION_CREDENTIALS_JSON")
def _gcp_sa(rng: random.Random) -> Sample:
    key_id = rand(rng, ALPHABETS["h"], 40)
    body = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQ" + rand(rng, ALPHABETS["b"], 1570)
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    pem = "-----BEGIN PRIVATE KEY-----\n" + "\n".join(lines) + "\n-----END PRIVATE KEY-----\n"
    doc = {
        "type": "service_account",
        "project_id": "qlab-sim",
        "private_key_id": key_id,
        "private_key": pem,
        "client_email": "runner@qlab-sim.iam.gserviceaccount.com",
        "client_id": rand(rng, ALPHABETS["d"], 21),
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": "https://oauth2.googleapis.com/token",
    }
    return Sample(json.dumps(doc, indent=2), (key_id, *lines[1:4]))


def _url(id: str, family: str, provider: str, name: str, template: str) -> None:
    """A connection URL whose password is the secret; ``{P}`` marks it."""

    def make(rng: random.Random) -> Sample:
        pw = rand(rng, ALPHABETS["a"], 4) + rand(rng, ALPHABETS["p"], 16)
        return Sample(expand(template, rng).replace("{P}", pw), (pw,))

    FORMATS.append(Format(id, family, provider, name, make))


_url(
    "postgres-url",
    "database",
    "PostgreSQL",
    "DATABASE_URL",
    "postgresql://qadmin:{P}@db.qlab.internal:5432/experiments",
)
_url(
    "postgres-sqlalchemy-url",
    "database",
    "PostgreSQL",
    "SQLALCHEMY_DATABASE_URI",
    "postgresql+psycopg://runner:{P}@10.0.4.12/results",
)
_url(
    "mysql-url",
    "database",
    "MySQL",
    "MYSQL_URL",
    "mysql+pymysql://analyst:{P}@mysql.qlab.org:3306/runs",
)
_url(
    "mongodb-srv-url",
    "database",
    "MongoDB",
    "MONGODB_URI",
    "mongodb+srv://qlab-app:{P}@cluster0.{l5}.mongodb.net/?retryWrites=true&w=majority",
)
_url(
    "redis-url",
    "database",
    "Redis",
    "REDIS_URL",
    "redis://default:{P}@redis-12345.c1.us-east-1.ec2.cloud.redislabs.com:12345/0",
)
_url(
    "amqp-url", "database", "RabbitMQ", "BROKER_URL", "amqps://worker:{P}@rabbit.qlab.org:5671/jobs"
)
_url(
    "mssql-url",
    "database",
    "SQL Server",
    "MSSQL_URL",
    "mssql+pyodbc://sa:{P}@sql.qlab.org:1433/lab?driver=ODBC+Driver+18+for+SQL+Server",
)
_url("ftp-url", "database", "FTP", "FTP_URL", "ftp://upload:{P}@ftp.qlab.org/incoming")
_url(
    "git-https-credential",
    "vcs",
    "Git",
    "GIT_REMOTE",
    "https://ada:{P}@git.qlab.org/lab/circuits.git",
)
_url(
    "jdbc-url",
    "database",
    "JDBC",
    "JDBC_URL",
    "jdbc:postgresql://db.qlab.org:5432/exp?user=runner&password={P}",
)
_url(
    "odbc-connection-string",
    "database",
    "SQL Server",
    "ODBC_CONNECTION",
    "Driver={ODBC Driver 18 for SQL Server};Server=tcp:sql.qlab.org,1433;Database=lab;Uid=runner;Pwd={P};Encrypt=yes;",
)
_url(
    "adonet-connection-string",
    "database",
    "SQL Server",
    "CONNECTION_STRING",
    "Server=sql.qlab.org;Database=lab;User Id=runner;Password={P};",
)
_url(
    "snowflake-url",
    "database",
    "Snowflake",
    "SNOWFLAKE_URL",
    "snowflake://analyst:{P}@qlab-xy12345/analytics/public?warehouse=compute_wh",
)
_url(
    "clickhouse-url",
    "database",
    "ClickHouse",
    "CLICKHOUSE_URL",
    "clickhouse://default:{P}@ch.qlab.org:8443/default?secure=true",
)
_url(
    "ldap-bind-url",
    "identity",
    "LDAP",
    "LDAP_URL",
    "ldaps://cn=admin,dc=qlab,dc=org:{P}@ldap.qlab.org",
)


@S("curl-basic-auth", "database", "HTTP", "CURL_AUTH")
def _curl_user(rng: random.Random) -> Sample:
    pw = rand(rng, ALPHABETS["a"], 18)
    return Sample(f"curl -u runner:{pw} https://api.qlab.org/v1/jobs", (pw,))


@S("http-basic-header", "database", "HTTP", "AUTH_HEADER")
def _basic(rng: random.Random) -> Sample:
    pw = rand(rng, ALPHABETS["a"], 18)
    enc = base64.b64encode(f"runner:{pw}".encode()).decode()
    return Sample(f"Authorization: Basic {enc}", (enc,))


@S("twilio-account-pair", "messaging", "Twilio", "TWILIO_CREDENTIALS")
def _twilio_pair(rng: random.Random) -> Sample:
    token = rand(rng, ALPHABETS["h"], 32)
    return Sample(f"AC{rand(rng, ALPHABETS['h'], 32)}:{token}", (token,))


@S("kubernetes-secret-yaml", "cloud", "Kubernetes", "K8S_SECRET")
def _k8s(rng: random.Random) -> Sample:
    val = base64.b64encode(rand(rng, ALPHABETS["a"], 24).encode()).decode()
    text = (
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: qpu-credentials\ntype: Opaque\n"
        f"data:\n  api-token: {val}\n"
    )
    return Sample(text, (val,))


@S("docker-config-auth", "ci", "Docker", "DOCKER_CONFIG_JSON")
def _docker_cfg(rng: random.Random) -> Sample:
    auth = base64.b64encode(f"qlab:{rand(rng, ALPHABETS['a'], 20)}".encode()).decode()
    return Sample(json.dumps({"auths": {"registry.qlab.org": {"auth": auth}}}, indent=2), (auth,))


@S("npmrc-auth-token", "packages", "npm", "NPMRC")
def _npmrc(rng: random.Random) -> Sample:
    tok = uuid(rng)
    return Sample(f"//registry.npmjs.org/:_authToken={tok}", (tok,))


@S("pypirc-password", "packages", "PyPI", "PYPIRC")
def _pypirc(rng: random.Random) -> Sample:
    pw = rand(rng, ALPHABETS["a"], 20)
    return Sample(f"[pypi]\nusername = runner\npassword = {pw}\n", (pw,))


# Typed passwords read as words more often than generated tokens do.
_WORDS = ("velvet", "orbit", "lantern", "quartz", "meadow", "copper", "harbor", "violet")


def _typed(rng: random.Random) -> str:
    return "".join(rng.sample(_WORDS, 2)) + rand(rng, ALPHABETS["d"], 2)


@S("cli-password-flag", "database", "MySQL", "MYSQL_COMMAND")
def _cli_password(rng: random.Random) -> Sample:
    pw = _typed(rng)
    return Sample(f"mysql -h db.qlab.org -u runner --password={pw} qlab", (pw,))


@S("requests-basic-auth", "database", "HTTP", "HTTP_CALL")
def _auth_pair(rng: random.Random) -> Sample:
    pw = _typed(rng)
    return Sample(f"requests.get('https://api.qlab.org/v1/jobs', auth=('runner', '{pw}'))", (pw,))


@S("env-file-password", "database", "PostgreSQL", "DB_SETTINGS")
def _env_password(rng: random.Random) -> Sample:
    pw = "".join(rng.sample(_WORDS, 2))  # no digit: only the variable's name tells
    return Sample(f"# database\nQLAB_DB_PASSWORD={pw}\n", (pw,))


@S("netrc-password", "vcs", "netrc", "NETRC")
def _netrc(rng: random.Random) -> Sample:
    pw = rand(rng, ALPHABETS["a"], 20)
    return Sample(f"machine api.qlab.org login runner password {pw}", (pw,))


T("bcrypt-hash", "identity", "bcrypt", "ADMIN_PASSWORD_HASH", "$2b$12${c53}")
T("sha512-crypt-hash", "identity", "crypt(3)", "SHADOW_HASH", "$6${c16}${c86}")
T("md5-crypt-hash", "identity", "crypt(3)", "HTPASSWD_HASH", "$1${c8}${c22}")
T("argon2-hash", "identity", "Argon2", "PASSWORD_HASH", "$argon2id$v=19$m=65536,t=3,p=4${b22}${b43}")
T("kerberos-asrep-hash", "identity", "Kerberos", "ASREP_HASH", "$krb5asrep$23$svc@QLAB.ORG:{h32}${h220}")


@S("dwave-config-file", "quantum", "D-Wave", "DWAVE_CONFIG")
def _dwave_conf(rng: random.Random) -> Sample:
    tok = "DEV-" + rand(rng, ALPHABETS["h"], 40)
    return Sample(
        f"[defaults]\nendpoint = https://cloud.dwavesys.com/sapi\ntoken = {tok}\n", (tok,)
    )


@S("qiskit-ibm-json", "quantum", "IBM Quantum", "QISKIT_IBM_JSON")
def _qiskit_json(rng: random.Random) -> Sample:
    tok = rand(rng, ALPHABETS["u"], 44)
    doc = {
        "default-ibm-quantum-platform": {
            "channel": "ibm_quantum_platform",
            "token": tok,
            "instance": "crn:v1:bluemix:public:quantum-computing:us-east:a/"
            + rand(rng, ALPHABETS["h"], 32)
            + "::",
        }
    }
    return Sample(json.dumps(doc, indent=2), (tok,))


# --- private keys ------------------------------------------------------------------------------
def _pem(
    id: str, family: str, provider: str, label: str, head: str, n: int, headers: str = ""
) -> None:
    def make(rng: random.Random) -> Sample:
        body = head + rand(rng, ALPHABETS["b"], n)
        lines = [body[i : i + 64] for i in range(0, len(body), 64)]
        text = f"-----BEGIN {label}-----\n{headers}" + "\n".join(lines) + f"\n-----END {label}-----"
        return Sample(text, tuple(lines[1:4]))

    FORMATS.append(Format(id, family, provider, "PRIVATE_KEY", make))


_pem("rsa-private-key", "keys", "PEM", "RSA PRIVATE KEY", "MIIEpAIBAAKCAQEA", 1560)
_pem("ec-private-key", "keys", "PEM", "EC PRIVATE KEY", "MHcCAQEEI", 112)
_pem("pkcs8-private-key", "keys", "PEM", "PRIVATE KEY", "MIIEvgIBADANBgkqhkiG9w0BAQEFAASC", 1560)
_pem(
    "pkcs8-encrypted-key",
    "keys",
    "PEM",
    "ENCRYPTED PRIVATE KEY",
    "MIIFHDBOBgkqhkiG9w0BBQ0wQTApBgkq",
    1600,
)
_pem("dsa-private-key", "keys", "PEM", "DSA PRIVATE KEY", "MIIBuwIBAAKBgQ", 560)
_pem(
    "rsa-private-key-encrypted-legacy",
    "keys",
    "PEM",
    "RSA PRIVATE KEY",
    "",
    1600,
    headers="Proc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,0F3A9C2B7D1E4F5A6B8C9D0E1F2A3B4C\n\n",
)
_pem(
    "openssh-private-key",
    "keys",
    "OpenSSH",
    "OPENSSH PRIVATE KEY",
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW",
    330,
)
_pem("pgp-private-key", "keys", "PGP", "PGP PRIVATE KEY BLOCK", "lQWGBGV", 2400)


def _pem_base64(id: str, label: str, head: str, n: int) -> None:
    """A key block base64-encoded whole, as a Kubernetes secret's ``tls.key`` holds it."""

    def make(rng: random.Random) -> Sample:
        body = head + rand(rng, ALPHABETS["b"], n)
        lines = [body[i : i + 64] for i in range(0, len(body), 64)]
        pem = f"-----BEGIN {label}-----\n" + "\n".join(lines) + f"\n-----END {label}-----\n"
        encoded = base64.b64encode(pem.encode()).decode()
        return Sample(f"tls.key: {encoded}", (encoded,))

    FORMATS.append(Format(id, "keys", "Kubernetes", "TLS_KEY_B64", make))


_pem_base64("rsa-private-key-base64", "RSA PRIVATE KEY", "MIIEpAIBAAKCAQEA", 1560)
_pem_base64("pkcs8-private-key-base64", "PRIVATE KEY", "MIIEvgIBADANBgkqhkiG9w0BAQEFAASC", 1560)


@S("putty-private-key-v3", "keys", "PuTTY", "PPK_FILE")
def _ppk3(rng: random.Random) -> Sample:
    priv = ["AAAAI" + rand(rng, ALPHABETS["b"], 59), rand(rng, ALPHABETS["b"], 40)]
    text = (
        "PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\nComment: ada@qlab\nPublic-Lines: 2\n"
        f"AAAAC3NzaC1lZDI1NTE5AAAAI{rand(rng, ALPHABETS['b'], 39)}\n{rand(rng, ALPHABETS['b'], 20)}\n"
        "Private-Lines: 2\n" + "\n".join(priv) + f"\nPrivate-MAC: {rand(rng, ALPHABETS['h'], 64)}"
    )
    return Sample(text, tuple(priv))


@S("putty-private-key-v2", "keys", "PuTTY", "PPK_FILE")
def _ppk2(rng: random.Random) -> Sample:
    priv = [rand(rng, ALPHABETS["b"], 64) for _ in range(4)]
    text = (
        "PuTTY-User-Key-File-2: ssh-rsa\nEncryption: none\nComment: rsa-key-20260101\nPublic-Lines: 1\n"
        f"AAAAB3NzaC1yc2EAAAABJQAAAQEA{rand(rng, ALPHABETS['b'], 36)}\n"
        "Private-Lines: 4\n" + "\n".join(priv) + f"\nPrivate-MAC: {rand(rng, ALPHABETS['h'], 40)}"
    )
    return Sample(text, tuple(priv))


BY_ID = {f.id: f for f in FORMATS}
assert len(BY_ID) == len(FORMATS), "duplicate format ids"
