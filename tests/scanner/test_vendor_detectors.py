"""Decision table for the vendor-format and key-name detectors (rules/vendors.py, named.py).

Each format is written here from its public description with seeded pseudo-random
characters, then checked three ways: printed in prose (TEXT), passed to a call in a
code cell (CODE), and truncated to a short fragment, which must not be flagged (issue
13: 8-character fragments in logs and docs are not credentials). Look-alikes that a
weak prefix could produce (identifiers, test names, words) are listed separately.
"""

from __future__ import annotations

import random
import string

import pytest

from server_ext.scanner import rules
from server_ext.scanner.engine import Engine, Finding, SegmentKind
from server_ext.scanner.rules import named, vendors

CODE, TEXT = SegmentKind.CODE, SegmentKind.TEXT
ALNUM = string.ascii_letters + string.digits
LOWER = string.ascii_lowercase + string.digits
UPPER = string.ascii_uppercase + string.digits
HEX = "0123456789abcdef"
URLSAFE = ALNUM + "-_"
B64 = ALNUM + "+/"
DIGITS = string.digits

ENGINE = Engine(d for d in rules.ALL if d.default_enabled)


def fake(label: str, n: int, alphabet: str = ALNUM) -> str:
    rng = random.Random(label)
    return "".join(rng.choice(alphabet) for _ in range(n))


def uuid(label: str) -> str:
    h = fake(label, 32, HEX)
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"


#: (detector, secret, context with {S}, or "" when the secret is the whole token).
TOKENS: list[tuple[str, str, str]] = [
    ("gitlab-runner-registration-token", "GR1348941" + fake("glrr", 20, URLSAFE), ""),
    ("gitlab-session-cookie", fake("gls", 32, LOWER), "Cookie: _gitlab_session={S}; path=/"),
    ("bitbucket-app-password", "ATBB" + fake("atbb", 32), ""),
    (
        "atlassian-api-token",
        "ATATT3xFfGF0" + fake("atl", 170, URLSAFE) + "=" + fake("atl2", 8, "0123456789ABCDEF"),
        "",
    ),
    ("circleci-token", "CCIPAT_" + fake("cci1", 22) + "_" + fake("cci2", 40, HEX), ""),
    ("buildkite-token", "bkua_" + fake("bk", 40, HEX), ""),
    ("buildkite-token", "bkua_" + fake("bk2", 40, LOWER), ""),
    ("sourcegraph-token", "sgp_" + fake("sg1", 16, HEX) + "_" + fake("sg2", 40, HEX), ""),
    ("sourcegraph-token", "sgp_local_" + fake("sg3", 40, HEX), ""),
    ("segment-api-token", "sgp_" + fake("seg", 64), ""),
    ("sourcegraph-license-key", "slk_" + fake("slk", 64, HEX), ""),
    ("ubidots-token", "BBFF-" + fake("ubi", 30), ""),
    ("sonarqube-token", "sqa_" + fake("sqa", 40, LOWER), ""),
    (
        "sidekiq-credentials",
        fake("skq1", 8, HEX) + ":" + fake("skq2", 8, HEX),
        "BUNDLE_ENTERPRISE__CONTRIBSYS__COM={S}",
    ),
    ("pagarme-api-key", "ak_live_" + fake("pgm", 30), ""),
    ("teamwork-token", "tkn.v1_" + fake("tw", 71) + "=", ""),
    ("sonarqube-token", "squ_" + fake("sq", 40, HEX), ""),
    ("jfrog-reference-token", "cmVmdGtuOjAxOjE3" + fake("jf", 48), ""),
    ("docker-hub-token", "dckr_pat_" + fake("dck", 27, URLSAFE), ""),
    ("rubygems-token", "rubygems_" + fake("rg", 48, HEX), ""),
    ("clojars-token", "CLOJARS_" + fake("clj", 60, LOWER), ""),
    ("nuget-api-key", "oy2" + fake("nuget", 43, LOWER), ""),
    ("cratesio-token", "cio" + fake("crates", 32), ""),
    ("pulumi-token", "pul-" + fake("pul", 40, HEX), ""),
    ("terraform-cloud-token", fake("tf1", 14, LOWER) + ".atlasv1." + fake("tf2", 67, URLSAFE), ""),
    ("octopus-deploy-api-key", "API-" + fake("octo", 26, UPPER), ""),
    (
        "harness-token",
        "pat." + fake("h1", 22, URLSAFE) + "." + fake("h2", 24) + "." + fake("h3", 20),
        "",
    ),
    ("readme-api-key", "rdme_" + fake("rdme", 70, LOWER), ""),
    ("postman-api-key", "PMAK-" + fake("pm1", 24, HEX) + "-" + fake("pm2", 34, HEX), ""),
    ("prefect-api-key", "pnu_" + fake("pnu", 36), ""),
    ("doppler-token", "dp.st.dev." + fake("dop", 40), ""),
    ("infracost-api-key", "ico-" + fake("ico", 32), ""),
    ("scalingo-token", "tk-us-" + fake("scal", 48, URLSAFE), ""),
    (
        "defined-networking-key",
        "dnkey-" + fake("dn1", 26, URLSAFE) + "-" + fake("dn2", 52, URLSAFE),
        "",
    ),
    ("tailscale-key", "tskey-auth-" + fake("ts1", 17) + "-" + fake("ts2", 33), ""),
    ("fly-token", "fo1_" + fake("fly", 43, URLSAFE), ""),
    ("render-api-key", "rnd_" + fake("rnd", 32), ""),
    ("netlify-token", "nfp_" + fake("nfp", 36), ""),
    ("heroku-api-key", "HRKU-AA" + fake("hrku", 58, URLSAFE), ""),
    ("supabase-token", "sbp_" + fake("sbp", 40, HEX), ""),
    ("planetscale-token", "pscale_tkn_" + fake("ps", 43, URLSAFE), ""),
    ("aws-bedrock-api-key", "ABSK" + fake("absk", 132, B64), ""),
    ("aws-session-token", "IQoJb3JpZ2luX2Vj" + fake("sts", 300, B64), ""),
    ("gcp-oauth-access-token", "ya29.a0" + fake("ya29", 150, URLSAFE), ""),
    ("gcp-oauth-refresh-token", "1//0" + fake("1//0", 60, URLSAFE), ""),
    ("azure-openai-key", fake("aoai", 76) + "JQQJ99" + fake("aoai2", 2), ""),
    ("azure-devops-pat", fake("ado", 76) + "AZDO" + fake("ado2", 4), ""),
    (
        "azure-identifiable-key",
        fake("aik", 52) + "JQQJ99" + fake("aik2", 18) + "ACOG" + fake("aik3", 4),
        "",
    ),
    (
        "azure-sas-token",
        fake("sas", 43, ALNUM) + "%3D",
        "https://qlab.blob.core.windows.net/runs?sv=2022-11-02&sp=r&sig={S}",
    ),
    ("alibaba-access-key-id", "LTAI" + fake("ltai", 20), ""),
    ("tencent-secret-id", "AKID" + fake("akid", 32), ""),
    ("yandex-api-key", "AQVN" + fake("aqvn", 36, URLSAFE), ""),
    ("yandex-iam-token", "t1." + fake("t1a", 20, URLSAFE) + "." + fake("t1b", 86, URLSAFE), ""),
    ("yandex-static-key", "YC" + fake("yc", 38, URLSAFE), ""),
    ("scaleway-access-key", "SCW" + fake("scw", 17, UPPER), ""),
    ("digitalocean-token", "dop_v1_" + fake("do", 64, HEX), ""),
    ("cloudflare-origin-ca-key", "v1.0-" + fake("cf1", 24, HEX) + "-" + fake("cf2", 146, HEX), ""),
    ("databricks-token", "dapi" + fake("dapi", 32, HEX), ""),
    ("clickhouse-cloud-secret", "4b1d" + fake("ch", 38), ""),
    ("openshift-token", "sha256~" + fake("oc", 43, URLSAFE), ""),
    ("pinecone-api-key", "pcsk_" + fake("pc1", 6) + "_" + fake("pc2", 63), ""),
    ("groq-api-key", "gsk_" + fake("gsk", 52), ""),
    ("replicate-token", "r8_" + fake("r8", 37), ""),
    ("xai-api-key", "xai-" + fake("xai", 80), ""),
    ("perplexity-api-key", "pplx-" + fake("pplx", 48), ""),
    ("langsmith-api-key", "lsv2_pt_" + fake("ls1", 32, HEX) + "_" + fake("ls2", 10, HEX), ""),
    ("fireworks-api-key", "fw_" + fake("fw", 24), ""),
    ("elevenlabs-api-key", "sk_" + fake("el", 48, HEX), ""),
    ("sk-api-key", "sk-" + fake("deepseek", 32, HEX), ""),
    ("openrouter-api-key", "sk-or-v1-" + fake("or", 64, HEX), ""),
    ("nvidia-api-key", "nvapi-" + fake("nv", 64, URLSAFE), ""),
    (
        "neptune-api-token",
        "eyJhcGlfYWRkcmVzcyI6Imh0dHBzOi8vYXBwLm5lcHR1bmUuYWki" + fake("nep", 60),
        "",
    ),
    ("stripe-webhook-secret", "whsec_" + fake("whsec", 32), ""),
    ("square-access-token", "EAAA" + fake("sq", 60, URLSAFE), ""),
    ("facebook-access-token", "EAAC" + fake("fb", 180), ""),
    ("facebook-app-access-token", fake("fbid", 16, DIGITS) + "|" + fake("fbs", 27, URLSAFE), ""),
    (
        "braintree-access-token",
        "access_token$production$" + fake("bt1", 16, LOWER) + "$" + fake("bt2", 32, HEX),
        "",
    ),
    ("shopify-token", "shpat_" + fake("shp", 32, HEX), ""),
    ("flutterwave-secret-key", "FLWSECK_TEST-" + fake("flw", 32, HEX) + "-X", ""),
    ("razorpay-key", "rzp_live_" + fake("rzp", 14), ""),
    ("plaid-access-token", "access-production-" + uuid("plaid"), ""),
    ("shippo-token", "shippo_live_" + fake("shippo", 40, HEX), ""),
    ("live-test-hex-key", "live_" + fake("lob", 35, HEX), ""),
    ("live-test-api-key", "live_" + fake("mollie", 30), ""),
    ("duffel-token", "duffel_test_" + fake("duffel", 43, URLSAFE), ""),
    ("easypost-api-key", "EZAK" + fake("ezak", 54), ""),
    ("adyen-api-key", "AQE" + fake("ad1", 30) + "." + fake("ad2", 40, URLSAFE), ""),
    (
        "slack-app-token",
        "xapp-1-A"
        + fake("xa1", 10, UPPER)
        + "-"
        + fake("xa2", 13, DIGITS)
        + "-"
        + fake("xa3", 64, HEX),
        "",
    ),
    ("slack-config-token", "xoxe.xoxp-1-" + fake("xoxe", 164, UPPER), ""),
    (
        "slack-workflow-webhook",
        "T" + fake("swt", 10, UPPER) + "/" + fake("sw2", 13, DIGITS) + "/" + fake("sw3", 32, HEX),
        "https://hooks.slack.com/triggers/{S}",
    ),
    (
        "discord-webhook",
        fake("dw1", 19, DIGITS) + "/" + fake("dw2", 68, URLSAFE),
        "https://discord.com/api/webhooks/{S}",
    ),
    (
        "teams-webhook",
        f"{uuid('t1')}@{uuid('t2')}/IncomingWebhook/{fake('t3', 32)}/{uuid('t4')}",
        "https://qlab.webhook.office.com/webhookb2/{S}",
    ),
    (
        "teams-webhook",
        f"{uuid('t5')}@{uuid('t6')}/IncomingWebhook/{fake('t7', 32, HEX)}/{uuid('t8')}",
        "https://outlook.office.com/webhook/{S}",
    ),
    (
        "teams-webhook",
        f"{uuid('t9')}@{uuid('t10')}/IncomingWebhook/{fake('t11', 32)}/{uuid('t12')}"
        f"/V2{fake('t13', 40, URLSAFE)}",
        "https://qlab.webhook.office.com/webhookb2/{S}",
    ),
    (
        "zapier-webhook",
        fake("zap1", 7, DIGITS) + "/" + fake("zap2", 7, LOWER),
        "https://hooks.zapier.com/hooks/catch/{S}/",
    ),
    ("adafruit-io-key", "aio_" + fake("aio", 28), ""),
    ("tavily-api-key", "tvly-" + fake("tvly", 32), ""),
    ("tavily-api-key", "tvly-dev-" + fake("tvlyd", 32), ""),
    ("salesforce-access-token", "00D" + fake("sf1", 12) + "!" + fake("sf2", 96, ALNUM + "._"), ""),
    (
        "salesforce-access-token",
        "00D" + fake("sf3", 15) + "!" + fake("sf4", 96, ALNUM + "._"),
        "logged in, session {S}.",
    ),
    ("sonarqube-login", fake("sonar", 40, HEX), "mvn sonar:sonar -Dsonar.login={S}"),
    ("posthog-personal-api-key", "phx_" + fake("phx", 43, ALNUM + "_"), ""),
    ("dependency-track-api-key", "odt_" + fake("odt", 32), ""),
    ("dependency-track-api-key", "odt_" + fake("odt1", 8) + "_" + fake("odt2", 32), ""),
    ("ionic-token", "ion_" + fake("ion", 42), ""),
    ("mongodb-atlas-service-account-secret", "mdb_sa_sk_" + fake("mdbsa", 40, URLSAFE), ""),
    ("twilio-account-credentials", fake("twtok", 32, HEX), "AC" + fake("twsid", 32, HEX) + ":{S}"),
    ("mailgun-api-key", "key-" + fake("mg", 32, HEX), ""),
    ("mandrill-api-key", "md-" + fake("md", 22, URLSAFE), ""),
    ("brevo-api-key", "xkeysib-" + fake("bv1", 64, HEX) + "-" + fake("bv2", 16), ""),
    ("telnyx-api-key", "KEY" + fake("tx1", 32, "0123456789ABCDEF") + "_" + fake("tx2", 22), ""),
    ("pubnub-secret-key", "sec-c-" + fake("pn", 48), ""),
    ("intercom-access-token", "dG9rO" + fake("ic", 55) + "=", ""),
    ("twitter-bearer-token", "A" * 22 + fake("tw1", 70) + "%3D" + fake("tw2", 40), ""),
    ("newrelic-key", "NRAK-" + fake("nrak", 27, UPPER), ""),
    ("newrelic-key", "NRAA-" + fake("nraa", 27, HEX), ""),
    ("newrelic-license-key", fake("nral", 36, HEX) + "NRAL", ""),
    ("sentry-token", "sntryu_" + fake("sntry", 64, HEX), ""),
    ("grafana-token", "glsa_" + fake("glsa", 32) + "_" + fake("glsa2", 8, HEX), ""),
    ("dynatrace-token", "dt0c01." + fake("dt1", 24, UPPER) + "." + fake("dt2", 64, UPPER), ""),
    ("launchdarkly-key", "sdk-" + uuid("ld"), ""),
    ("airtable-pat", "pat" + fake("at1", 14) + "." + fake("at2", 64, HEX), ""),
    ("figma-token", "figd_" + fake("figma", 40, URLSAFE), ""),
    (
        "asana-pat",
        "2/" + fake("as1", 16, DIGITS) + "/" + fake("as2", 16, DIGITS) + ":" + fake("as3", 32, HEX),
        "",
    ),
    ("trello-token", "ATTA" + fake("trello", 64, HEX), ""),
    ("typeform-token", "tfp_" + fake("tfp", 59, URLSAFE), ""),
    ("contentful-pat", "CFPAT-" + fake("cfpat", 43, URLSAFE), ""),
    ("frameio-token", "fio-u-" + fake("fio", 64, URLSAFE), ""),
    (
        "mapbox-secret-token",
        "sk.eyJ1IjoicWxhYiIsImEiOi" + fake("mb1", 20) + "." + fake("mb2", 22, URLSAFE),
        "",
    ),
    ("dropbox-token", "sl." + fake("dbx", 135, URLSAFE), ""),
    ("hubspot-pat", "pat-na1-" + uuid("hs"), ""),
    ("maxmind-license-key", fake("mm1", 6) + "_" + fake("mm2", 29) + "_mmk", ""),
    ("notion-token", "ntn_" + fake("ntn1", 11, DIGITS) + fake("ntn2", 35), ""),
    ("linear-api-key", "lin_api_" + fake("lin", 40), ""),
    (
        "onepassword-secret-key",
        "A3-" + "-".join(fake(f"op{i}", n, UPPER) for i, n in enumerate((6, 6, 5, 5, 5, 5))),
        "",
    ),
    ("onepassword-service-account-token", "ops_eyJzaWduSW5BZGRyZXNzIjoi" + fake("ops", 200), ""),
    (
        "age-secret-key",
        "AGE-SECRET-KEY-1" + fake("age", 58, "QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L"),
        "",
    ),
    (
        "authress-key",
        "sc_"
        + fake("au1", 10, LOWER)
        + "."
        + fake("au2", 5, LOWER)
        + ".acc_"
        + fake("au3", 20, LOWER)
        + "."
        + fake("au4", 64, URLSAFE),
        "",
    ),
    ("settlemint-token", "sm_pat_" + fake("sm", 16), ""),
    ("intra42-client-secret", "s-s4t2ud-" + fake("42", 64, HEX), ""),
    ("vault-legacy-token", "s." + fake("vault-s", 24), ""),
    (
        "infisical-token",
        "st." + uuid("inf") + "." + fake("inf1", 32, HEX) + "." + fake("inf2", 32, HEX),
        "",
    ),
]

#: Key-named assignments: (detector, secret, template).
NAMED: list[tuple[str, str, str]] = [
    ("named-key-assignment", fake("dd", 40, HEX), 'dd_app_key: "{S}"\n'),
    ("named-key-assignment", fake("seg", 32), "segment_write_key = '{S}'\n"),
    ("named-key-assignment", fake("clar", 32, HEX), "CLARIFAI_PAT={S}\n"),
    ("key-constant-assignment", fake("kag", 32, HEX), "KAGGLE_KEY={S}\n"),
    ("key-constant-assignment", uuid("algolia"), 'ALGOLIA_ADMIN_KEY = "{S}"\n'),
    (
        "wolfram-alpha-appid",
        fake("wa1", 6, UPPER) + "-" + fake("wa2", 10, UPPER),
        'WOLFRAM_APP_ID = "{S}"\n',
    ),
    (
        "wolfram-alpha-appid",
        fake("wa3", 6, UPPER) + "-" + fake("wa4", 10, UPPER),
        "wolframalpha:\n  app_id: {S}\n",
    ),
    ("sumologic-access-id", "su" + fake("sumo", 12), 'SUMO_ACCESS_ID="{S}"\n'),
    (
        "curl-user-password",
        fake("curlpw", 18),
        "!curl -u runner:{S} https://api.qlab.org/v1/jobs\n",
    ),
    (
        "curl-user-password",
        fake("curlpw2", 18),
        "curl --user 'ci:{S}' -X POST https://ci.qlab.org/hook\n",
    ),
    ("netrc-password", fake("netrc", 20), "machine api.qlab.org login runner password {S}\n"),
    # Typed passwords read as words: where they are typed says what they are.
    ("cli-password-flag", "velvetorbit42", "!mysql -h db -u runner --password={S} qlab\n"),
    (
        "cli-password-flag",
        "VMware1!",
        "Connect-VIServer -Server vc.qlab.org -User admin -Password {S}\n",
    ),
    ("credential-pair", "S3cr3tP@ss", "r = requests.get(url, auth=('runner', '{S}'))\n"),
    ("credential-pair", "vzihlaquknriqlht", 'smtp.login("me@qlab.org", "{S}")\n'),
    (
        "credential-pair",
        "Rrhh1234x",
        'var c = new NetworkCredential("svc@qlab.org", "{S}");\n',
    ),
    ("env-file-password", "whiteduke", "%env QLAB_DB_PASSWORD={S}\n"),
    ("env-file-password", "velvetorbit", "!export REACT_APP_AUTH_PASS={S}\n"),
    # A password with digits that generic-keyword would take for a name in code.
    ("env-file-password", "whiteduke42", "%env DB_PASSWORD={S}\n"),
    ("env-file-password", "Xk9pQ2mZ7abc", "!docker run -e MYSQL_ROOT_PASSWORD={S} mysql\n"),
    ("env-file-password", "whiteduke42", "!PGPASSWORD={S} psql -h db qlab\n"),
    ("cli-password-flag", "Tr0ub4dor&3 x", '!mysql -u runner --password "{S}" qlab\n'),
    ("cli-password-flag", "Tr0ub4dor3", 'subprocess.run(["mysql", "--password", "{S}"])\n'),
    ("credential-pair", "s3cr3tP4ss", 'r = requests.get(url, auth=("user", r"{S}"))\n'),
    ("credential-pair", "s3cr3tP4ss", 'r = get(url, auth=(\n    "user",\n    "{S}",\n))\n'),
    ("credential-pair", "s3cr3tP4ss", 'r = get(url, auth=(cfg["user"], "{S}"))\n'),
    ("xml-config-password", "Tr0ub4dor3x", '<add key="ClearTextPassword" value="{S}" />\n'),
    ("xml-config-password", "R$M0EJiemV;bd", '<add key="SmtpPassword" value="{S}"/>\n'),
    (
        "sidekiq-credentials",
        fake("skq3", 8, HEX) + ":" + fake("skq4", 8, HEX),
        "bundle config --local enterprise.contribsys.com {S}\n",
    ),
    (
        "kubernetes-secret-data",
        fake("k8s", 32, B64),
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: qpu\ntype: Opaque\ndata:\n  api-token: {S}\n",
    ),
    (
        "kubernetes-secret-data",
        fake("k8s2", 24),
        'MANIFEST = """\nkind: Secret\nstringData:\n  password: "{S}"\n"""\n',
    ),
]

#: Look-alikes no detector may flag (detector the case is about, payload).
LOOKALIKES: list[tuple[str, str]] = [
    ("vault-legacy-token", "s.getElementsByTagNameNS(ns, tag)\n"),
    ("vault-legacy-token", "print(s.startswithTheLongestPrefix)\n"),
    ("live-test-api-key", "def test_model_fit_returns_expected_shapes_2d():\n"),
    ("live-test-api-key", "pytest -k test_sampler_converges_for_all_backends_v2\n"),
    ("live-test-hex-key", "live_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n"),
    ("fireworks-api-key", "fw_forward_backward_pass_optimised\n"),
    ("posthog-personal-api-key", "from x import phx_handle_form_submission_for_user_profile_pag\n"),
    ("mandrill-api-key", "see md-table-of-contents-section-two for details\n"),
    ("octopus-deploy-api-key", "API-DOCUMENTATIONREFERENCEGUIDE is the page title\n"),
    ("sk-api-key", "sk-learn-style-estimators-and-transformers-guide\n"),
    ("cratesio-token", "ciosomethingthatisjustalongwordtoo\n"),
    ("yandex-static-key", "YCOMBINATORSTARTUPSCHOOLLECTURENOTESAA\n"),
    ("facebook-app-access-token", "| 1234567890123456|aaaaaaaaaaaaaaaaaaaaaaaaaaa |\n"),
    ("scaleway-access-key", "SCWABCDEFGHIJKLMNOPQ\n"),
    ("gcp-oauth-refresh-token", "ratio 1//0aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n"),
    ("asana-pat", "fraction 1/123456789012 of the shots\n"),
    ("azure-sas-token", "https://example.org/?sig=short\n"),
    ("named-key-assignment", 'app_key = "production"\n'),
    ("named-key-assignment", 'write_key = "segment_write_key_name"\n'),
    ("key-constant-assignment", 'SORT_KEY = "timestamp_descending_order"\n'),
    ("key-constant-assignment", 'STRIPE_PUBLISHABLE_KEY = "pk_live_' + fake("pk", 40) + '"\n'),
    ("key-constant-assignment", "PRIMARY_KEY = os.environ['PRIMARY_KEY']\n"),
    ("curl-user-password", "curl -u user:password https://api.example.org/v1/jobs\n"),
    ("curl-user-password", 'curl -u "$API_USER:$API_TOKEN" https://api.qlab.org/v1/jobs\n'),
    ("netrc-password", "machine ftp.qlab.org login anonymous password changeme\n"),
    ("cli-password-flag", "usage: client [--password PASSWORD] [--password-file FILE]\n"),
    ("cli-password-flag", 'parser.add_argument("--password", default=None)\n'),
    ("cli-password-flag", "!mysql -u root --password=$DB_PASSWORD qlab\n"),
    ("cli-password-flag", "see reset-password Kx9fQ2m7pL for the form\n"),
    ("credential-pair", "r = requests.get(url, auth=('user', 'pass'))\n"),
    ("credential-pair", "server.login(user, password)\n"),
    ("env-file-password", "%env POSTGRES_PASSWORD=postgres\n"),
    ("env-file-password", "%env MAILER_PASSWORD=smtp_password\n"),
    ("env-file-password", "QLAB_DB_PASSWORD=get_password()\n"),
    ("env-file-password", "run(ADMIN_PASSWORD=admin_pw, retries=3)\n"),
    ("env-file-password", "export TOX_PWD=workspace\n"),
    ("env-file-password", "export MULTI_PASS=disabled\n"),
    ("env-file-password", "export BUILD_PASS=src/main/resources\n"),
    ("credential-pair", 'allowed_auth = ["basic", "kerberos", "token"]\n'),
    ("credential-pair", 'methods = dict(auth=["password", "publickey"])\n'),
    ("credential-pair", 'ftp.login("anonymous", "anonymous@")\n'),
    ("xml-config-password", '<add key="ClearTextPassword" value="%NUGET_PASSWORD%" />\n'),
    ("stripe-key", "sk_live_YourSecretKeyHere\n"),
    ("wolfram-alpha-appid", 'client = wolframalpha.Client(os.environ["WOLFRAM_APP_ID"])\n'),
    ("kubernetes-secret-data", "kind: Secret\ndata:\n  password: <base64-encoded-password>\n"),
    ("kubernetes-secret-data", "kind: ConfigMap\ndata:\n  region: eu-de-2-zone-a\n"),
]


def found(data: bytes, kind: SegmentKind) -> list[tuple[str, bytes]]:
    findings: list[Finding] = ENGINE.scan_one(data, kind)
    return [(f.detector, data[f.start : f.end]) for f in findings]


def _context(secret: str, context: str) -> str:
    return context.replace("{S}", secret) if context else secret


@pytest.mark.parametrize(("detector", "secret", "context"), TOKENS, ids=[t[0] for t in TOKENS])
def test_flags_in_prose(detector: str, secret: str, context: str) -> None:
    data = f"connecting with {_context(secret, context)} now\n".encode()
    assert found(data, TEXT) == [(detector, secret.encode())]


@pytest.mark.parametrize(("detector", "secret", "context"), TOKENS, ids=[t[0] for t in TOKENS])
def test_flags_in_code(detector: str, secret: str, context: str) -> None:
    data = f'client = connect("{_context(secret, context)}")\n'.encode()
    assert found(data, CODE) == [(detector, secret.encode())]


@pytest.mark.parametrize(("detector", "secret", "context"), TOKENS, ids=[t[0] for t in TOKENS])
def test_truncated_fragment_is_not_flagged(detector: str, secret: str, context: str) -> None:
    prefix = rules.BY_ID[detector].public_prefix
    fragment = secret[: prefix + 8]
    data = f"the log shows {_context(fragment, context)}... (truncated)\n".encode()
    assert found(data, TEXT) == []


@pytest.mark.parametrize(("detector", "secret", "template"), NAMED)
@pytest.mark.parametrize("kind", [TEXT, CODE], ids=["text", "code"])
def test_key_names_flag_generated_values(
    detector: str, secret: str, template: str, kind: SegmentKind
) -> None:
    data = template.replace("{S}", secret).encode()
    assert found(data, kind) == [(detector, secret.encode())]


@pytest.mark.parametrize(("detector", "payload"), LOOKALIKES)
@pytest.mark.parametrize("kind", [TEXT, CODE], ids=["text", "code"])
def test_lookalikes_are_not_flagged(detector: str, payload: str, kind: SegmentKind) -> None:
    assert detector in rules.BY_ID
    assert found(payload.encode(), kind) == []


def test_every_vendor_and_named_detector_has_cases() -> None:
    covered = {t[0] for t in TOKENS} | {t[0] for t in NAMED}
    ids = {d.id for d in (*vendors.DETECTORS, *named.DETECTORS)}
    assert ids - covered == set()
