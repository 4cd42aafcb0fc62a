"""Provider credentials put with ``qustody secrets qpu`` into a real hub's secret store reach
the gateway's driver (tests/qpu/keyed_driver.py refuses to run without its key) and
nothing else: not the job records, results or provenance, not the gateway's log (the hub
log: the gateway is a hub-managed service), the audit log, the generated gateway config,
the gateway's environment or any hub API answer. Rotation is seen by the next job;
deleting the key fails the next job with a message naming the backend.

The gateway holds no key to users' secrets: the hub answers it the ``service:qpu``
entries (to its own token only), and nothing in its config or environment decrypts a
user's row of the store."""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import re
import secrets
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from conftest import BACKENDS, QC101_POLICY, audit_records, qpy_b64

sys.path.append(str(Path(__file__).resolve().parents[1] / "hub"))
from hubtest import HubError, failed, free_port, launch_hub

ROOT = Path(__file__).resolve().parents[2]
KEY = "qk-" + secrets.token_hex(20)
ROTATED = "qk-" + secrets.token_hex(20)
WRONG = "wrong-" + secrets.token_hex(20)  # the keyed provider refuses keys not "qk-..."

OPERATOR_CONFIG = f"""
c = get_config()  # noqa
# these tests watch one gateway process (its instance, its parse pool and the order it
# admits in); the hub's default of two workers is tested in tests/hub/test_service_crash.py
c.QpuGateway.workers = 1
c.QpuGateway.backends = {{**{BACKENDS!r},
    "keyed": {{"driver": "tests.qpu.keyed_driver:KeyedDriver"}}}}
c.QpuGateway.log_level = "DEBUG"
"""



EXTRA = """
c.Authenticator.allowed_users = {"alice", "eve"}
for role in c.JupyterHub.load_roles:
    if role["name"] == "auditor":
        role["users"] = ["eve"]
"""


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest):
    d = tmp_path_factory.mktemp("credhub")
    keyed_target = {"driver": "tests.qpu.keyed_driver:KeyedTargetDriver",
                    "trace": str(d / "decoded_by")}
    (d / "qpu_operator.py").write_text(
        OPERATOR_CONFIG + f"c.QpuGateway.backends['keyed_target'] = {keyed_target!r}\n")
    (d / "policy.toml").write_text(QC101_POLICY)
    started: list = []
    try:
        hub = launch_hub(
            d / "hub", extra=EXTRA,
            env={"QUSTODY_SPAWNER": "local", "QUSTODY_IMAGE_DIGEST": "",
                 "QUSTODY_QPU_PORT": str(free_port()),
                 "QUSTODY_QPU_CONFIG": str(d / "qpu_operator.py"),
                 "QUSTODY_QPU_POLICY": str(d / "policy.toml"),
                 "PYTHONPATH": str(ROOT)},
            started=started, timeout=240,  # the hub waits for its services one by one
        )
    except HubError as e:
        pytest.fail(str(e))
    hub.qpu = f"{hub.url}services/qpu/"
    hub.decoded_by = d / "decoded_by"
    hub.tokens = {u: hub.user_token(u) for u in ("alice", "eve")}
    hub.wait_for(lambda: _health(hub.qpu), timeout=90, what="the gateway behind the proxy")
    yield hub
    hub.stop()
    if failed(request):
        print(f"\n===== hub log =====\n{hub.log()[-20000:]}")


def _health(url: str) -> bool:
    try:
        return requests.get(url + "api/health", timeout=5).status_code == 200
    except requests.RequestException:
        return False


def cli(hub, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """``qustody secrets`` on the hub's store and master key (as an admin would)."""
    return subprocess.run(
        [sys.executable, "-m", "server_ext.cli", "secrets", "--db",
         str(hub.dir / "secrets.sqlite"), "--key-file", str(hub.dir / "secrets.key"), *args],
        input=stdin, capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )


def job(shots: int = 200) -> dict:
    from qiskit import QuantumCircuit

    qc = QuantumCircuit(2)
    qc.h(0)
    qc.cx(0, 1)
    qc.measure_all()
    return {"backend": "keyed", "circuits": [{"qpy": qpy_b64(qc)}], "shots": shots,
            "tags": {"project": "qc101", "purpose": "research"}}


class Seen:
    """Every response body the test read, so it can check none holds a key."""

    def __init__(self, hub) -> None:
        self.hub, self.texts = hub, []

    def qpu(self, who, method, path, body=None, **params):
        r = requests.request(method, self.hub.qpu + path, json=body, params=params or None,
                             headers={"Authorization": f"token {self.hub.tokens[who]}"},
                             timeout=120)
        self.texts.append(r.text)
        return r.status_code, (r.json() if r.content else None)

    def hub_api(self, path):
        status, body = self.hub.api("GET", path)
        assert status == 200, body
        self.texts.append(json.dumps(body))

    def run(self, who="alice", shots=200):
        status, body = self.qpu(who, "POST", "api/jobs", job(shots))
        assert status == 201, body
        deadline = time.monotonic() + 120
        while True:
            status, got = self.qpu(who, "GET", f"api/jobs/{body['job_id']}", wait=5)
            assert status == 200, got
            if got["state"] in ("DONE", "FAILED", "CANCELLED", "REJECTED"):
                return got
            assert time.monotonic() < deadline, got


def gateway_pid(hub) -> int:
    config = str(hub.dir / "qpu" / "qpu_config.py")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"hub_ext.qpu" in cmd and f"--config={config}".encode() in cmd:
            return int(proc.name)
    raise AssertionError("the gateway process was not found")


def test_the_stored_key_runs_the_job_rotates_and_leaks_nowhere(hub):
    seen = Seen(hub)
    put = cli(hub, "qpu", "put", "keyed", stdin=f"api_key={KEY}\nregion=eu-west-1\n")
    assert put.returncode == 0, put.stderr
    assert "service:qpu/keyed: version 1 stored (fields: api_key, region)" in put.stdout
    listing = cli(hub, "qpu", "list")
    assert "keyed" in listing.stdout and "api_key, region" in listing.stdout

    done = seen.run()
    assert done["state"] == "DONE", done  # the driver got the key from the hub's store
    job_id = done["job_id"]
    status, result = seen.qpu("alice", "GET", f"api/jobs/{job_id}/result")
    assert status == 200 and sum(result["results"][0]["data"]["counts"].values()) == 200
    assert "[REDACTED:provider-credential]" in json.dumps(result)  # the driver's echo
    seen.qpu("alice", "GET", f"api/jobs/{job_id}", include="provenance")
    seen.qpu("alice", "GET", "api/jobs")
    assert seen.qpu("eve", "GET", "api/admin/export")[0] == 200
    assert seen.qpu("alice", "GET", "api/backends")[0] == 200

    # rotation without a restart: a key the provider refuses, then a good one again
    assert cli(hub, "qpu", "put", "keyed", "--field", "api_key", stdin=WRONG).returncode == 0
    refused = seen.run()
    assert refused["state"] == "FAILED" and "no valid API key" in str(refused), refused
    assert cli(hub, "qpu", "put", "keyed", "--field", "api_key", stdin=ROTATED).returncode == 0
    assert seen.run()["state"] == "DONE"
    # the provider quotes the key in its error: the gateway scrubs it
    quoted = seen.run(shots=13)
    assert quoted["state"] == "FAILED", quoted
    assert "provider error 401 for key [REDACTED:provider-credential]" in str(quoted), quoted

    for path in ("/users", "/users/alice", "/services", "/services/qpu", "/info"):
        seen.hub_api(path)
    env = Path(f"/proc/{gateway_pid(hub)}/environ").read_bytes()
    for value in (KEY, ROTATED, WRONG):
        assert all(value not in text for text in seen.texts), value
        assert value.encode() not in env
        assert value not in (hub.dir / "qpu" / "qpu_config.py").read_text()
        for f in (hub.dir / "qpu").glob("qpu.sqlite*"):
            assert value.encode() not in f.read_bytes(), f
        for f in (hub.dir / "audit").iterdir():
            assert value.encode() not in f.read_bytes(), f
        for text in (put.stdout, put.stderr, listing.stdout):
            assert value not in text
    assert "SecretStoreCredentials" in (hub.dir / "qpu" / "qpu_config.py").read_text()
    assert any(job_id in text for text in seen.texts)

    records = audit_records(hub.dir / "audit" / "audit.jsonl", hub.dir / "audit.key")
    assert any(r["type"] == "qpu-job-finished" and r["data"].get("job_id") == job_id
               for r in records), [r["type"] for r in records]

    log = hub.log()
    assert "QPU event qpu.job.finished" in log  # the gateway's DEBUG lines are in this log
    for value in (KEY, ROTATED, WRONG):
        assert value not in log


def test_deleting_the_key_fails_the_next_job_naming_the_backend(hub):
    seen = Seen(hub)
    assert cli(hub, "qpu", "put", "keyed", stdin=f"api_key={KEY}\n").returncode == 0
    assert seen.run()["state"] == "DONE"
    gone = cli(hub, "qpu", "delete", "keyed")
    assert gone.returncode == 0 and "deleted" in gone.stdout, gone
    failed_job = seen.run()
    assert failed_job["state"] == "FAILED", failed_job
    message = json.dumps(failed_job)
    assert "backend 'keyed' has no provider credentials" in message, message
    assert "service:qpu/keyed" in message and "qustody secrets qpu put keyed" in message
    assert "deleted" in cli(hub, "qpu", "list", "keyed").stdout
    assert all(KEY not in text for text in seen.texts)
    assert KEY not in hub.log()
    for f in (hub.dir / "audit").iterdir():
        assert KEY.encode() not in f.read_bytes(), f


ALICE_OWN = "alice-own-" + secrets.token_hex(20)


def gateway_env(hub) -> dict[str, str]:
    raw = Path(f"/proc/{gateway_pid(hub)}/environ").read_bytes().decode()
    return dict(item.split("=", 1) for item in raw.split("\0") if "=" in item)


def opens(key: bytes, row: tuple) -> bool:
    """Whether ``key`` decrypts alice's row as the store seals it."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from hub_ext.secrets.embedded import _aad
    from hub_ext.secrets.model import Namespace

    cls, version, nonce, sealed = row
    try:
        AESGCM(key).decrypt(nonce, sealed, _aad(Namespace("user", "alice"), "ALICE_KEY",
                                                int(version), cls))
    except (InvalidTag, ValueError):
        return False
    return True


def keys_in(texts: list[str]) -> set[bytes]:
    """Every AES key a value the gateway holds could be: raw, base64, hashed."""
    found: set[bytes] = set()
    for text in texts:
        for word in re.findall(r"[A-Za-z0-9+/=_\-]{16,}", text):
            raw = word.encode()
            found |= {raw[:16], raw[:24], raw[:32], hashlib.sha256(raw).digest()}
            with contextlib.suppress(binascii.Error, ValueError):
                found.add(base64.b64decode(word, validate=True))
    return {k for k in found if len(k) in (16, 24, 32)}


def test_the_gateway_holds_no_key_that_opens_a_users_secret(hub):
    out = cli(hub, "put", "user:alice", "ALICE_KEY", "--class", "dev", stdin=ALICE_OWN)
    assert out.returncode == 0, out.stderr
    master = (hub.dir / "secrets.key").read_text().strip()
    config = (hub.dir / "qpu" / "qpu_config.py").read_text()
    env = gateway_env(hub)
    held = [config, *env.values(), *env]
    for path in re.findall(r"'(/[^']+)'", config):  # files it reads: audit key, policy
        f = Path(path)
        if f.is_file() and f.stat().st_size < 65536:
            held.append(f.read_text(errors="replace"))
    assert any("audit.key" in p for p in re.findall(r"'(/[^']+)'", config))
    assert "QUSTODY_SECRETS_MASTER_KEY" not in env
    assert "secrets.key" not in config and "master_key" not in config
    assert all(master not in text for text in held)

    # try it: alice's sealed row, opened with every key the gateway's values could be
    db = sqlite3.connect(f"file:{hub.dir / 'secrets.sqlite'}?mode=ro", uri=True)
    row = db.execute(
        "SELECT s.class, s.current, v.nonce, v.sealed FROM secrets s JOIN versions v ON "
        "v.secret_id=s.id AND v.version=s.current WHERE s.ns_kind='user' AND "
        "s.ns_name='alice' AND s.name='ALICE_KEY'").fetchone()
    db.close()
    assert opens(base64.b64decode(master), row)  # the attempt works with the right key
    candidates = keys_in(held)
    assert len(candidates) > 10
    assert not any(opens(key, row) for key in candidates)

    # the gateway's hub token reaches service:qpu entries and nothing of alice's (from the
    # hub's qustody service, hub_ext/server_api)
    api, token = env["JUPYTERHUB_API_URL"].rstrip("/"), env["JUPYTERHUB_API_TOKEN"]
    svc = hub.url + "services/qustody/"
    as_gateway = {"Authorization": f"token {token}"}
    answers = []
    for name in ("ALICE_KEY", "..%2Fuser%3Aalice%2FALICE_KEY", "user:alice",
                 "user%3Aalice%2FALICE_KEY", "..", "ALICE_KEY%00"):
        r = requests.get(f"{svc}api/qpu/credentials/{name}", headers=as_gateway,
                         timeout=30)
        answers.append(r.text)
        assert r.status_code in (200, 400, 404), (name, r.status_code, r.text)
        assert r.status_code != 200 or r.json() == {"fields": None}, (name, r.text)
    for method, url in (("POST", svc + "api/secrets/refresh"),
                        ("POST", svc + "api/secrets/redeem"), ("GET", api + "/users/alice"),
                        ("GET", api + "/users")):
        r = requests.request(method, url, headers=as_gateway, json={}, timeout=30)
        answers.append(r.text)
        assert r.status_code in (403, 404), (url, r.status_code, r.text)
    assert all(ALICE_OWN not in text for text in answers)

    # and only the gateway's token is answered: not a user's, not an admin service's
    assert cli(hub, "qpu", "put", "keyed", stdin=f"api_key={KEY}\n").returncode == 0
    r = requests.get(f"{svc}api/qpu/credentials/keyed", headers=as_gateway, timeout=30)
    assert r.status_code == 200 and r.json() == {"fields": {"api_key": KEY}}, r.status_code
    for who, tok in (("alice", hub.tokens["alice"]), ("eve", hub.tokens["eve"]),
                     ("the admin service", hub.token)):
        r = requests.get(f"{svc}api/qpu/credentials/keyed",
                         headers={"Authorization": f"token {tok}"}, timeout=30)
        assert r.status_code == 403 and KEY not in r.text, (who, r.status_code)
    assert ALICE_OWN not in hub.log() and KEY not in hub.log()


def ancestors(pid: int) -> list[int]:
    found = []
    while pid > 1:
        status = Path(f"/proc/{pid}/status").read_text()
        pid = int(re.search(r"^PPid:\s*(\d+)", status, re.M).group(1))
        found.append(pid)
    return found


def test_a_large_submission_to_a_credentialed_backend_is_decoded_in_a_parse_worker(hub):
    """keyed_target's driver needs its key to build, so parse workers (no credentials)
    cannot build it: they get the gateway's credential-free stand-in of it, and a body
    holding QPY, small or large, is decoded and checked there, not on the gateway's event
    loop (a small one in the small bodies' own parse process)."""
    from qiskit import QuantumCircuit

    gateway, seen = gateway_pid(hub), Seen(hub)
    small = {**job(), "backend": "keyed_target"}
    status, body = seen.qpu("alice", "POST", "api/jobs", small)
    assert status == 201, body
    pids = [int(x) for x in hub.decoded_by.read_text().split()]
    small_worker = pids[-1]
    assert small_worker != gateway, "a small QPY body was decoded on the gateway's event loop"
    assert gateway in ancestors(small_worker)

    qc = QuantumCircuit(2)
    for i in range(4000):
        qc.rz(0.001 * i, i % 2)
    qc.measure_all()
    large = {**small, "circuits": [{"qpy": qpy_b64(qc)}]}
    assert len(json.dumps(large)) > 65536  # over QpuGateway.inline_parse_bytes
    status, body = seen.qpu("alice", "POST", "api/jobs", large)
    assert status == 201, body
    worker = int(hub.decoded_by.read_text().split()[-1])
    assert worker != gateway, "the large body was decoded on the gateway's event loop"
    assert gateway in ancestors(worker)  # one of the gateway's parse workers
    assert worker != small_worker  # large bodies have their own pool
    assert "decoded on the event loop" not in hub.log()

    wide = QuantumCircuit(40)  # the stand-in's Target refuses what the driver refuses
    for i in range(4000):
        wide.rz(0.001 * i, i % 40)
    checked = len(hub.decoded_by.read_text().split())
    status, body = seen.qpu("alice", "POST", "api/jobs",
                            {**small, "circuits": [{"qpy": qpy_b64(wide)}]})
    assert (status, body["error"]) == (422, "TOO_MANY_QUBITS"), body
    assert "backend 'keyed_target' has 30" in body["message"], body
    pids = [int(x) for x in hub.decoded_by.read_text().split()]
    assert len(pids) == checked + 1 and pids[-1] != gateway
