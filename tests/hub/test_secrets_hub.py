"""Secret delivery through a real hub and real servers (local-process spawner).

The hub runs the reference configuration with an embedded store prepared by the admin
CLI; servers redeem their claim tickets at start, kernels read secrets through the
documented API, and every refusal is checked at the hub endpoint and in the audit log.
"""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from hubtest import BIN, Hub
from kernelws import Kernel
from qtest import code_cell, notebook, stream

pytestmark = pytest.mark.slow  # real hubs and gateways: run early (tests/conftest.py)

TTL = 20


def put(state: Path, namespace: str, name: str, cls: str, value: str, verb: str = "put") -> None:
    args = [verb, namespace, name] + (["--class", cls] if verb == "put" else [])
    result = subprocess.run(
        [str(BIN / "qustody"), "secrets", *args],
        input=value.encode(),
        capture_output=True,
        env={"QUSTODY_STATE_DIR": str(state), "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert value.encode() not in result.stdout + result.stderr


def cli(state: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [str(BIN / "qustody"), "secrets", *args],
        capture_output=True,
        env={"QUSTODY_STATE_DIR": str(state), "PATH": "/usr/bin:/bin"},
        timeout=60,
    )


@pytest.fixture
def values() -> dict[str, str]:
    return {
        k: f"qv-{k.lower()}-{secrets.token_hex(12)}"
        for k in ("ALICE_SANDBOX", "ALICE_PROD", "BOB_PROD", "SHARED_DEV", "BOB_NEW")
    }


@pytest.fixture
def state(tmp_path: Path, values: dict[str, str]) -> Path:
    state = tmp_path / "state"
    state.mkdir()
    put(state, "user:alice", "ALICE_SANDBOX", "sandbox", values["ALICE_SANDBOX"])
    put(state, "user:alice", "ALICE_PROD", "prod", values["ALICE_PROD"])
    put(state, "user:bob", "BOB_PROD", "prod", values["BOB_PROD"])
    put(state, "project:qaoa", "SHARED_DEV", "dev", values["SHARED_DEV"])
    assert cli(state, "grant", "project:qaoa", "bob", "alice").returncode == 0
    return state


def config(tmp_path: Path, courses: Path | None = None) -> str:
    """The hub's extra config: alice a student, bob a researcher, secret delivery (with
    the course files of ``courses``, if given)."""
    return f"""
import os
from hub_ext.server_api.hub import server_api
from hub_ext.wiring import apply
c.Authenticator.allow_all = True
c.SimpleLocalProcessSpawner.home_dir_template = "{tmp_path}/home/{{username}}"
c.JupyterHub.services = []
c.JupyterHub.load_roles = [
    {{"name": "student", "scopes": ["self"], "users": ["alice"]}},
    {{"name": "researcher", "scopes": ["self"], "users": ["bob"]}},
]
c.SecretBroker.ticket_ttl = {TTL}

def no_claim_for_flagged_users(spawner):
    # the browser tests drive JupyterLab through window.jupyterapp
    spawner.args = ["--LabApp.expose_app_in_browser=True"]
    # a flag file makes this user's next server leave its ticket unredeemed
    if os.path.exists(os.path.join({str(tmp_path)!r}, "noclaim-" + spawner.user.name)):
        spawner.args.append("--SecretClient.claim_at_start=False")

c.Spawner.pre_spawn_hook = no_claim_for_flagged_users
apply(c, server_api(c, os.environ["QUSTODY_STATE_DIR"], profiles=list(c.SpawnPolicy.profiles),
                    courses_dir={str(courses) if courses else ""!r}))
"""


ENV = {"QUSTODY_SPAWNER": "local", "QUSTODY_IMAGE_DIGEST": ""}


@pytest.fixture
def hub(start_hub: Any, tmp_path: Path, state: Path) -> Hub:
    return start_hub(extra=config(tmp_path), env={**ENV, "QUSTODY_STATE_DIR": str(state)})


def start(hub: Hub, user: str) -> str:
    return hub.start_server(user, body={"user_options": {}}, timeout=90)


def stop(hub: Hub, user: str) -> None:
    code, _ = hub.api("DELETE", f"/users/{user}/server")
    assert code in (202, 204)
    hub.wait_for(
        lambda: not hub.api("GET", f"/users/{user}")[1]["servers"], timeout=60, what="stop"
    )


def audit(state: Path) -> list[dict[str, Any]]:
    path = state / "audit" / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def all_text(hub: Hub, state: Path) -> str:
    return hub.log() + (state / "audit" / "audit.jsonl").read_text()


REDEEM = """
import json, os, urllib.request, urllib.error
def redeem(ticket):
    req = urllib.request.Request(
        os.environ["QUSTODY_API_URL"] + "api/secrets/redeem",
        data=json.dumps({"ticket": ticket}).encode(),
        headers={"Authorization": "token " + os.environ["JUPYTERHUB_API_TOKEN"]},
        method="POST")
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, sorted(s["name"] for s in json.loads(r.read())["secrets"])
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())["message"]
"""

# The ticket the hub handed this server, read from the server process's initial
# environment (what an attacker inside the workspace could read too).
READ_TICKET = """
import os
raw = open(f"/proc/{os.getppid()}/environ", "rb").read().split(b"\\0")
print([v.split(b"=", 1)[1].decode() for v in raw if v.startswith(b"QUSTODY_SECRETS_TICKET=")][0])
"""


def test_kernel_reads_policy_filtered_secrets_and_refresh_follows_rotation(
    hub: Hub, state: Path, values: dict[str, str], tmp_path: Path
) -> None:
    url = start(hub, "bob")
    token = hub.user_token("bob")
    r = requests.get(
        url + "qustody/api/secrets", headers={"Authorization": f"token {token}"}, timeout=30
    )
    assert r.status_code == 200, r.text
    listed = r.json()
    assert sorted(s["name"] for s in listed["secrets"]) == ["BOB_PROD", "SHARED_DEV"]
    assert {s["class"] for s in listed["secrets"]} == {"prod", "dev"}
    assert values["BOB_PROD"] not in r.text  # the server's API never returns a value

    kernel = Kernel(url, token)
    out = kernel.run(
        "from server_ext.secrets import get_secret, list_secrets\n"
        "import os, stat\n"
        "print(list_secrets())\n"
        "v = get_secret('BOB_PROD')\n"
        f"print(v == {values['BOB_PROD']!r})\n"
        "d = os.environ['QUSTODY_SECRETS_DIR']\n"
        "print(oct(stat.S_IMODE(os.stat(d).st_mode)), oct(stat.S_IMODE(os.stat(d + '/BOB_PROD').st_mode)))\n"
        "print('QUSTODY_SECRETS_TICKET' in os.environ, any(v in x for x in os.environ.values()))\n"
        "try:\n    get_secret('ALICE_SANDBOX')\nexcept KeyError as e:\n    print('KeyError', e)\n"
    )
    lines = out.splitlines()
    assert lines[0] == "['BOB_PROD', 'SHARED_DEV']"
    assert lines[1] == "True"
    assert lines[2] == "0o700 0o600"
    assert lines[3] == "False False"  # no ticket and no value in the kernel's environment
    assert lines[4].startswith("KeyError") and "available: BOB_PROD, SHARED_DEV" in lines[4]

    # rotation and revocation reach the running server on refresh()
    put(state, "user:bob", "BOB_PROD", "", values["BOB_NEW"], verb="rotate")
    assert cli(state, "revoke", "project:qaoa", "SHARED_DEV").returncode == 0
    out = kernel.run(
        "from server_ext.secrets import get_secret, refresh\n"
        "print(refresh())\n"
        f"print(get_secret('BOB_PROD') == {values['BOB_NEW']!r})\n"
        "try:\n    get_secret('SHARED_DEV')\nexcept KeyError:\n    print('revoked')\n"
    )
    assert out.splitlines() == ["['BOB_PROD']", "True", "revoked"]

    # a value printed in an output (as is, base64, hex) never reaches the saved notebook
    new = values["BOB_NEW"]
    printed = kernel.run(
        "import base64, binascii\n"
        "v = get_secret('BOB_PROD')\n"
        "print(v)\nprint(base64.b64encode(v.encode()).decode())\nprint(v.encode().hex())\n"
        "print(base64.urlsafe_b64encode(v.encode()).decode().rstrip('='))\n"
        "import urllib.parse, json; print(urllib.parse.quote(v)); print(json.dumps(v))\n"
    )
    assert new in printed
    old_forms = [values["BOB_PROD"], base64.b64encode(values["BOB_PROD"].encode()).decode()]
    nb = notebook(
        code_cell("print(get_secret('BOB_PROD'))", [stream(printed + "\n".join(old_forms))])
    )
    headers = {"Authorization": f"token {token}"}
    r = requests.put(
        url + "api/contents/leak.ipynb",
        headers=headers,
        timeout=60,
        json={"type": "notebook", "content": nb},
    )
    assert r.status_code in (200, 201), r.text
    saved = (tmp_path / "home" / "bob" / "leak.ipynb").read_text()
    for form in (new, base64.b64encode(new.encode()).decode(), new.encode().hex(), *old_forms):
        assert form not in saved
    assert saved.count("[REDACTED:known-secret]") >= 7

    # a source cell holding the value is refused like a key, and nothing is written
    nb["cells"][0]["source"] = f"token = {new!r}"
    nb["cells"][0]["outputs"] = []
    r = requests.put(
        url + "api/contents/src.ipynb",
        headers=headers,
        timeout=60,
        json={"type": "notebook", "content": nb},
    )
    assert r.status_code == 422, r.text
    assert new not in r.text and "known-secret" in r.text
    assert not (tmp_path / "home" / "bob" / "src.ipynb").exists()
    kernel.shutdown()

    delivered = [e for e in audit(state) if e["type"] == "secret-delivered"]
    assert delivered and delivered[0]["data"]["user"] == "bob"
    assert {s["name"] for s in delivered[0]["data"]["secrets"]} == {"BOB_PROD", "SHARED_DEV"}
    text = all_text(hub, state)
    for value in values.values():
        assert value not in text


def test_prod_secret_never_reaches_a_student_profile(
    hub: Hub, state: Path, values: dict[str, str]
) -> None:
    url = start(hub, "alice")
    token = hub.user_token("alice")
    r = requests.get(
        url + "qustody/api/secrets", headers={"Authorization": f"token {token}"}, timeout=30
    )
    assert r.status_code == 200, r.text
    # alice holds a prod secret and a project dev secret; her student profile gets sandbox only
    assert [s["name"] for s in r.json()["secrets"]] == ["ALICE_SANDBOX"]
    out = Kernel(url, token).run(
        "from server_ext.secrets import list_secrets; print(list_secrets())"
    )
    assert out.strip() == "['ALICE_SANDBOX']"
    assert values["ALICE_PROD"] not in all_text(hub, state)


def test_replayed_foreign_expired_and_stopped_tickets_are_refused_and_audited(
    hub: Hub, state: Path, tmp_path: Path, values: dict[str, str]
) -> None:
    (tmp_path / "noclaim-alice").touch()
    bob_url = start(hub, "bob")
    bob = Kernel(bob_url, hub.user_token("bob"))
    bob.run(REDEEM)
    alice_token = hub.user_token("alice")

    # another user's ticket: bob's server presents alice's unredeemed ticket
    alice = Kernel(start(hub, "alice"), alice_token)
    ticket = alice.run(READ_TICKET).strip()
    assert ticket.startswith("qtk_")
    out = bob.run(f"print(redeem({ticket!r}))")
    assert "403" in out and "wrong-user" in out
    # ... which burned it: alice's own server cannot use it afterwards
    alice.run(REDEEM)
    out = alice.run(f"print(redeem({ticket!r}))")
    assert "403" in out and "already-redeemed" in out

    # replay: alice's server redeems a fresh ticket once, then again
    stop(hub, "alice")
    alice = Kernel(start(hub, "alice"), alice_token)
    ticket = alice.run(READ_TICKET).strip()
    alice.run(REDEEM)
    assert alice.run(f"print(redeem({ticket!r}))").strip() == "(200, ['ALICE_SANDBOX'])"
    out = alice.run(f"print(redeem({ticket!r}))")
    assert "403" in out and "already-redeemed" in out

    # a stopped server's ticket, presented by the user's next server
    stop(hub, "alice")
    alice = Kernel(start(hub, "alice"), alice_token)
    old = alice.run(READ_TICKET).strip()
    stop(hub, "alice")
    alice = Kernel(start(hub, "alice"), alice_token)
    alice.run(REDEEM)
    out = alice.run(f"print(redeem({old!r}))")
    assert "403" in out and "server-stopped" in out

    # expired: the current server's own ticket, after the TTL
    ticket = alice.run(READ_TICKET).strip()
    time.sleep(TTL + 1)
    out = alice.run(f"print(redeem({ticket!r}))")
    assert "403" in out and "expired" in out

    # bad inputs get clear errors
    out = alice.run(
        "import urllib.request, urllib.error, os, json\n"
        "def post(data):\n"
        "    req = urllib.request.Request(os.environ['QUSTODY_API_URL'] + 'api/secrets/redeem',"
        " data=data, headers={'Authorization': 'token ' + os.environ['JUPYTERHUB_API_TOKEN']}, method='POST')\n"
        "    try:\n        urllib.request.urlopen(req)\n    except urllib.error.HTTPError as e:\n"
        "        print(e.code, json.loads(e.read())['message'])\n"
        "post(b'{not json')\npost(b'\\xff\\xfe')\npost(b'[1]')\npost(b'{}')\npost(b'{\"ticket\": \"x\" }')\n"
        "post(b'x' * 5000)\n"
    )
    lines = out.splitlines()
    assert lines[0].startswith("400") and "not JSON" in lines[0]
    assert lines[1].startswith("400") and "not UTF-8" in lines[1]
    assert lines[2].startswith("400") and "JSON object" in lines[2]
    assert lines[3].startswith("400") and "missing" in lines[3]
    assert lines[4].startswith("403") and "malformed" in lines[4]
    assert lines[5].startswith("413")

    # a user's own API token (not a server's) cannot claim anything
    r = requests.post(
        hub.url + "services/qustody/api/secrets/redeem",
        json={"ticket": ticket},
        headers={"Authorization": f"token {alice_token}"},
        timeout=30,
    )
    assert r.status_code == 403 and "not the API token of one of your running servers" in r.text
    # an unknown token (no such user or server) gets a clear 403 too
    r = requests.post(
        hub.url + "services/qustody/api/secrets/redeem",
        json={"ticket": ticket},
        headers={"Authorization": "token not-a-hub-token"},
        timeout=30,
    )
    assert r.status_code == 403 and "Only a user's server can claim secrets" in r.text

    reasons = [
        (e["data"].get("user"), e["data"]["reason"])
        for e in audit(state)
        if e["type"] == "ticket-refused"
    ]
    for expected in [
        ("bob", "wrong-user"),
        ("alice", "already-redeemed"),
        ("alice", "server-stopped"),
        ("alice", "expired"),
        ("alice", "malformed"),
    ]:
        assert expected in reasons, reasons
    text = all_text(hub, state)
    assert ticket not in text
    for value in values.values():
        assert value not in text
    assert sys.executable  # the harness python ran the CLI above


def test_the_lab_secrets_panel_lists_names_and_inserts_the_call(
    hub: Hub, state: Path, values: dict[str, str], tmp_path: Path
) -> None:
    """JupyterLab's secrets panel, in Chromium on alice's server: the names her profile
    gets (never a value), and "Insert" writes the import and the call into the cell."""
    import chromium

    url = start(hub, "alice")
    token = hub.user_token("alice")
    nb = notebook(code_cell("token = "))
    r = requests.put(url + "api/contents/secrets.ipynb", timeout=30,
                     json={"type": "notebook", "format": "json", "content": nb},
                     headers={"Authorization": f"token {token}"})
    assert r.status_code == 201, r.text
    out = chromium.drive("secrets_panel.mjs", {
        "server": url, "token": token, "userDataDir": str(tmp_path / "chromium-profile"),
        "screenshot": str(tmp_path / "secrets-panel.png"),
    })
    assert [item["name"] for item in out["listed"]] == ["ALICE_SANDBOX"]
    assert "sandbox" in out["listed"][0]["text"]
    assert out["cellText"] == (
        'from server_ext.secrets import get_secret\ntoken = get_secret("ALICE_SANDBOX")'
    )
    assert out["refreshStatus"] == 200
    answers = "".join(out["secretsResponses"])
    assert len(out["secretsResponses"]) >= 2 and "ALICE_SANDBOX" in answers  # list, refresh
    seen = answers + out["pageText"]
    assert not [name for name, value in values.items() if value in seen]
    assert out["errors"] == []
    # Shut down the kernel the notebook started: a server stopped while its kernel process
    # is still starting waits out the hub's SIGINT and SIGTERM (a minute) before it is
    # killed. The API's shutdown waits for the kernel, within the server's own bound.
    headers = {"Authorization": f"token {token}"}
    for kernel in requests.get(url + "api/kernels", headers=headers, timeout=30).json():
        r = requests.delete(url + f"api/kernels/{kernel['id']}", headers=headers, timeout=120)
        assert r.status_code in (204, 404), r.text


def test_a_user_stores_a_secret_of_their_own_from_their_server(
    hub: Hub, state: Path, values: dict[str, str]
) -> None:
    """What JupyterLab's "move to a secret" calls: the server's ``POST
    /qustody/api/secrets`` hands the value to the hub, which stores it in the user's own
    namespace (class ``personal``), records ``secret-stored`` without the value, and
    delivers it back at once: the kernel reads it and the guard refuses it in a source."""
    url = start(hub, "bob")
    headers = {"Authorization": f"token {hub.user_token('bob')}"}
    listed = requests.get(url + "qustody/api/secrets", headers=headers, timeout=30).json()
    assert listed["self_service_class"] == "personal"
    mine = f"bobs-moved-key-{secrets.token_hex(12)}"

    def store(body: Any, raw: bytes | None = None) -> requests.Response:
        return requests.post(
            url + "qustody/api/secrets",
            headers=headers,
            timeout=60,
            **({"data": raw} if raw is not None else {"json": body}),
        )

    r = store({"name": "MOVED_KEY", "value": mine})
    assert r.status_code == 201, r.text
    answer = r.json()
    assert (answer["name"], answer["class"], answer["version"]) == ("MOVED_KEY", "personal", 1)
    assert "MOVED_KEY" in [s["name"] for s in answer["secrets"]] and mine not in r.text
    kernel = Kernel(url, hub.user_token("bob"))
    out = kernel.run(
        f"from server_ext.secrets import get_secret\nprint(get_secret('MOVED_KEY') == {mine!r})"
    )
    assert out.strip() == "True"
    kernel.shutdown()
    r = requests.put(
        url + "api/contents/moved.ipynb",
        headers=headers,
        timeout=60,
        json={"type": "notebook", "content": notebook(code_cell(f"key = {mine!r}"))},
    )
    assert r.status_code == 422 and "known-secret" in r.text and mine not in r.text

    # refusals, each with its reason, none holding the value; nothing overwritten
    for body, raw, status, words in [
        ({"name": "MOVED_KEY", "value": "another-value-1234"}, None, 409, "already have"),
        ({"name": "SHARED_DEV", "value": "another-value-1234"}, None, 409, "project:qaoa"),
        ({"name": "COPY", "value": values["BOB_PROD"]}, None, 409, "already your secret BOB_PROD"),
        ({"name": "1BAD", "value": "another-value-1234"}, None, 400, "not a secret name"),
        ({"name": "SHORTY", "value": "k3y!"}, None, 400, "shorter than 8 bytes"),
        ({"name": "BIG", "value": "v" * 90_000}, None, 413, "larger than"),
        ({"name": "NOVAL"}, None, 400, "both text"),
        (None, b"{not json", 400, "Send JSON"),
        (None, b"\xff\xfe", 400, "Send JSON"),
        ([1, 2], None, 400, "JSON object"),
    ]:
        r = store(body, raw)
        assert r.status_code == status and words in r.json()["message"], (words, r.text)
        assert values["BOB_PROD"] not in r.text
    # the hub endpoint takes only the server's own token, not the user's
    r = requests.post(
        hub.url + "services/qustody/api/secrets/store",
        json={"name": "VIA_USER_TOKEN", "value": "another-value-1234"},
        headers=headers,
        timeout=30,
    )
    assert r.status_code == 403 and "not the API token of one of your running servers" in r.text

    listing = cli(state, "list").stdout.decode()
    assert "user:bob" in listing and "MOVED_KEY" in listing and "personal" in listing
    assert "VIA_USER_TOKEN" not in listing and "COPY" not in listing
    stored = [e["data"] for e in audit(state) if e["type"] == "secret-stored"]
    assert stored == [
        {
            "user": "bob",
            "server": "",
            "broker": "embedded",
            "namespace": "user:bob",
            "name": "MOVED_KEY",
            "class": "personal",
            "version": 1,
        }
    ]
    text = all_text(hub, state)
    assert mine not in text and values["BOB_PROD"] not in text


def test_move_to_a_secret_in_the_lab_turns_a_refused_notebook_into_one_that_saves(
    hub: Hub, state: Path, values: dict[str, str], tmp_path: Path
) -> None:
    """JupyterLab's findings dialog, in Chromium on bob's server: "Move to a secret"
    stores each key as bob's own secret and puts get_secret() in its place; a name the
    hub refuses says why; the notebook then saves and the kernel reads both secrets."""
    import chromium

    url = start(hub, "bob")
    token = hub.user_token("bob")
    keys = ["ghp_" + secrets.token_hex(18), "ghp_" + secrets.token_hex(18)]
    r = requests.put(url + "api/contents/move.ipynb", timeout=30,
                     json={"type": "notebook", "content": notebook(code_cell(""), code_cell(""))},
                     headers={"Authorization": f"token {token}"})
    assert r.status_code == 201, r.text
    out = chromium.drive("move_to_secret.mjs", {
        "server": url, "token": token, "keys": keys,
        "userDataDir": str(tmp_path / "chromium-profile"),
        "screenshot": str(tmp_path / "move-to-secret.png"),
    })
    assert out["moveButtons"] == 2
    assert out["suggested"] == ["GITHUB_TOKEN", "GITHUB_TOKEN_2"]
    assert "SHARED_DEV already reaches this server (project:qaoa)" in out["refusedNote"]
    assert out["stores"] == [409, 201, 201]
    assert out["notes"][0].startswith('Stored as GITHUB_TOKEN; the cell now calls get_secret(')
    imp = "from server_ext.secrets import get_secret\n"
    assert out["sources"] == [
        f'{imp}token = get_secret("GITHUB_TOKEN")',
        f'{imp}headers = {{"Authorization": ("Bearer " + get_secret("GITHUB_TOKEN_2"))}}',
    ]
    assert out["saved"] is True and out["dialogsAtEnd"] == 0 and out["errors"] == []
    saved = (tmp_path / "home" / "bob" / "move.ipynb").read_text()
    assert 'get_secret(\\"GITHUB_TOKEN_2\\")' in saved
    kernel = Kernel(url, token)
    got = kernel.run(
        "from server_ext.secrets import get_secret\n"
        f"print(get_secret('GITHUB_TOKEN') == {keys[0]!r}, get_secret('GITHUB_TOKEN_2') == {keys[1]!r})"
    )
    kernel.shutdown()
    assert got.strip() == "True True"
    assert [e["data"]["name"] for e in audit(state) if e["type"] == "secret-stored"] == [
        "GITHUB_TOKEN",
        "GITHUB_TOKEN_2",
    ]
    seen = all_text(hub, state) + saved + out["pageText"] + out["dialogText"]
    assert not [k for k in keys if k in seen]


def test_a_courses_shared_secret_reaches_its_students_until_the_term_closes(
    start_hub: Any, tmp_path: Path, state: Path
) -> None:
    """course-303's file names COURSE_KEY in ``[secrets]``: alice, its student (hub group
    course-303:students), gets it without a grant; bob, in no course, does not; once the
    term closes her next refresh drops it."""
    from hub_ext.courses.model import DAY, stamp

    courses = tmp_path / "courses"
    courses.mkdir()
    now = time.time()
    course = (f'id = "course-303"\ntitle = "Lab"\n[term]\nstart = {stamp(now - DAY)}\n'
              f'end = {stamp(now + DAY)}\ngrace_days = 0\n[roster]\ngroup = "course-303"\n'
              '[secrets]\nnames = ["COURSE_KEY"]\nto = ["students"]\n')
    (courses / "course-303.toml").write_text(course)
    value = f"qv-course-{secrets.token_hex(12)}"
    put(state, "course:course-303", "COURSE_KEY", "sandbox", value)
    hub = start_hub(extra=config(tmp_path, courses),
                    env={**ENV, "QUSTODY_STATE_DIR": str(state)})
    assert hub.api("POST", "/groups/course-303:students")[0] == 201
    assert hub.api("POST", "/groups/course-303:students/users", {"users": ["alice"]})[0] == 200
    kernels = {}
    for user in ("alice", "bob"):
        kernels[user] = Kernel(start(hub, user), hub.user_token(user))
    listed = kernels["alice"].run(
        "from server_ext.secrets import get_secret, list_secrets\n"
        f"print(list_secrets(), get_secret('COURSE_KEY') == {value!r})")
    assert listed.strip() == "['ALICE_SANDBOX', 'COURSE_KEY'] True", listed
    assert "COURSE_KEY" not in kernels["bob"].run(
        "from server_ext.secrets import list_secrets\nprint(list_secrets())")
    (courses / "course-303.toml").write_text(course.replace(
        f"end = {stamp(now + DAY)}", f"end = {stamp(now - 60)}"))
    after = hub.wait_for(  # the hub re-reads the courses directory at most every 2 s
        lambda: (out := kernels["alice"].run(
            "from server_ext.secrets import refresh\nprint(refresh())").strip())
        == "['ALICE_SANDBOX']" and out, timeout=30, interval=1, what="the close to apply")
    assert after == "['ALICE_SANDBOX']"
    delivered = [e["data"] for e in audit(state) if e["type"] == "secret-delivered"
                 and e["data"]["user"] == "alice"]
    # the record says where it came from: the course, with no grant of hers
    assert {"name": "COURSE_KEY", "class": "sandbox",
            "namespace": "course:course-303"} in delivered[0]["secrets"]
    assert value not in all_text(hub, state)
