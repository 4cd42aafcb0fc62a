"""The gateway as a hub-managed service of a real JupyterHub, with real users and scopes.

The hub is the repository's jupyterhub_config.py (tests/hub/hubtest.py ``launch_hub``),
which registers the gateway through hub_ext.qpu.hub: the service on a random loopback
port, the custom scopes, the roles and the server token scopes. Users: alice (student,
member of qc101), bob (researcher, lead of qc101), carol (student, in no project), dave
(no role with a QPU scope), eve (auditor), admin (hub admin: qpu-operator), sam (student
of course-101) and ivan (its instructor; the hub groups the authenticator would make). The module fixture ``hub`` (a real
hub) replaces the stand-in of conftest.py here..
"""

from __future__ import annotations

import ast
import contextlib
import json
import sys
import textwrap
import time
from pathlib import Path

import pytest
import requests
from conftest import audit_records, qpy_b64
from hub.kernelws import run_in_kernel

from hub_ext.demo import QPU_EXAMPLE

sys.path.append(str(Path(__file__).resolve().parents[1] / "hub"))
from hubtest import HubError, failed, free_port, launch_hub

ROOT = Path(__file__).resolve().parents[2]

EXTRA = """
c.Authenticator.allowed_users = {{"alice", "bob", "carol", "dave", "eve", "sam", "ivan"}}
c.SimpleLocalProcessSpawner.home_dir_template = "{home}/{{username}}"
from hub_ext.identity.roles import course_role
c.JupyterHub.load_roles.append({{**course_role("course-101"), "users": ["ivan"]}})
for role in c.JupyterHub.load_roles:
    if role["name"] == "student":
        role["users"] = [*role.get("users", []), "carol", "sam"]
    if role["name"] == "instructor":
        role["users"] = ["ivan"]
    if role["name"] == "auditor":
        role["users"] = ["eve"]
# the audit service's QPU burst floor lowered for the flood test (its default is 200)
import json as _json
from hub_ext.audit.alerts import AlertRules as _AlertRules
for _service in c.JupyterHub.services:
    if _service["name"] == "audit":
        _service["environment"]["QUSTODY_ALERT_RULES"] = _json.dumps(
            _AlertRules(qpu_submissions=30).settings())
"""


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest):
    d = tmp_path_factory.mktemp("qpuhub")
    started: list = []
    try:
        hub = launch_hub(
            d / "hub", extra=EXTRA.format(home=d / "home"),
            env={"QUSTODY_SPAWNER": "local", "QUSTODY_IMAGE_DIGEST": "",
                 "QUSTODY_QPU_PORT": str(free_port())},
            started=started, timeout=240,  # the hub waits for its services one by one
        )
    except HubError as e:
        pytest.fail(str(e))
    try:  # a failed set-up must not leave the hub running
        hub.qpu = f"{hub.url}services/qpu/"
        hub.tokens = {
            u: hub.user_token(u)
            for u in ("alice", "bob", "carol", "dave", "eve", "admin", "sam", "ivan")
        }
        for group, users in (
            ("course-101", ["sam", "ivan", "bob"]),  # bob, a researcher, takes the course
            ("course-101:students", ["sam"]),
            ("course-101:instructors", ["ivan"]),
        ):
            code, body = hub.api("POST", f"/groups/{group}", {"users": users})
            assert code == 201, body
        hub.wait_for(lambda: _health(hub.qpu), timeout=90, what="the gateway behind the proxy")
    except BaseException:
        print(f"\n===== hub log =====\n{hub.log()[-20000:]}")
        hub.stop()
        raise
    yield hub
    hub.stop()
    if failed(request):
        print(f"\n===== hub log =====\n{hub.log()[-20000:]}")
        gw = hub.dir / "qpu"
        print(f"\n===== gateway files: {sorted(p.name for p in gw.iterdir())}")


def _health(url: str) -> bool:
    try:
        return requests.get(url + "api/health", timeout=5).status_code == 200
    except requests.RequestException:
        return False


def call(hub, who, method, path, body=None, token=None, **params):
    token = token or hub.tokens[who]
    r = requests.request(method, hub.qpu + path, json=body, params=params or None,
                         headers={"Authorization": f"token {token}"}, timeout=120)
    return r.status_code, (r.json() if r.content else None)


def bell_job(project="qc101", shots=256):
    from qiskit import QuantumCircuit

    qc = QuantumCircuit(2)
    qc.h(0)
    qc.cx(0, 1)
    qc.measure_all()
    return {"backend": "aer_simulator", "circuits": [{"qpy": qpy_b64(qc)}], "shots": shots,
            "tags": {"project": project, "purpose": "testing"}}


def wait_final(hub, who, job_id, timeout=120):
    deadline = time.monotonic() + timeout
    while True:
        status, job = call(hub, who, "GET", f"api/jobs/{job_id}", wait=5)
        assert status == 200, job
        if job["state"] in ("DONE", "FAILED", "CANCELLED", "REJECTED"):
            return job
        assert time.monotonic() < deadline, job


@contextlib.contextmanager
def backend_paused(hub, why: str):
    """The simulator paused by the hub's admin (jobs wait HELD), resumed afterwards."""
    status, body = call(hub, "admin", "POST", "api/admin/backends/aer_simulator/pause",
                        {"reason": f"test: {why}"})
    assert status == 200, body
    try:
        yield
    finally:
        status, body = call(hub, "admin", "POST", "api/admin/backends/aer_simulator/resume",
                            {"reason": "test: done"})
        assert status == 200, body


def test_hub_registers_the_service_scopes_and_roles(hub):
    status, service = hub.api("GET", "/services/qpu")
    assert status == 200, service
    assert service["url"].startswith("http://127.0.0.1:") and service["prefix"] == "/services/qpu/"
    status, alice = hub.api("GET", "/user", token=hub.tokens["alice"])
    assert "custom:qpu:submit" in alice["scopes"]
    status, admin = hub.api("GET", "/user", token=hub.tokens["admin"])
    assert "custom:qpu:admin" in admin["scopes"]
    status, eve = hub.api("GET", "/user", token=hub.tokens["eve"])
    assert "custom:qpu:read-all" in eve["scopes"] and "custom:qpu:submit" not in eve["scopes"]


def test_a_hub_users_token_submits_and_gets_aer_counts(hub):
    status, body = call(hub, "alice", "POST", "api/jobs", bell_job())
    assert status == 201, body
    job = wait_final(hub, "alice", body["job_id"])
    assert job["state"] == "DONE" and job["owner"] == "alice", job
    status, result = call(hub, "alice", "GET", f"api/jobs/{body['job_id']}/result")
    assert status == 200, result
    counts = result["results"][0]["data"]["counts"]
    assert sum(counts.values()) == 256
    assert set(counts) <= {"0x0", "0x3"} and len(counts) == 2  # only |00> and |11>


def test_a_token_without_the_submit_scope_gets_403(hub):
    # dave holds no role with custom:qpu:submit; alice's own token restricted to a read
    # scope lacks it too, although alice herself has it
    status, body = call(hub, "dave", "POST", "api/jobs", bell_job())
    assert (status, body["error"]) == (403, "MISSING_SCOPE"), body
    code, narrow = hub.api("POST", "/users/alice/tokens",
                           {"scopes": ["read:users:name!user"], "expires_in": 600})
    assert code == 201, narrow
    status, body = call(hub, "alice", "POST", "api/jobs", bell_job(), token=narrow["token"])
    assert (status, body["error"]) == (403, "MISSING_SCOPE"), body
    assert "custom:qpu:submit" in body["message"]
    assert call(hub, "eve", "POST", "api/jobs", bell_job())[0] == 403  # read-all cannot submit


def test_another_users_job_is_404_and_readers_and_operators_act(hub):
    with backend_paused(hub, "hold the queue"):
        status, body = call(hub, "alice", "POST", "api/jobs", bell_job())
        assert status == 201 and body["state"] == "HELD", body
        job_id = body["job_id"]
        # carol is in no project: the job does not exist for her
        for method, path in (("GET", f"api/jobs/{job_id}"), ("DELETE", f"api/jobs/{job_id}")):
            status, body = call(hub, "carol", method, path)
            assert (status, body["error"]) == (404, "NO_SUCH_JOB"), body
        # bob leads alice's project; eve reads everything; neither is an operator
        assert call(hub, "bob", "GET", f"api/jobs/{job_id}")[0] == 200
        status, job = call(hub, "eve", "GET", f"api/jobs/{job_id}")
        assert status == 200 and job["reason"] == "HELD:BACKEND_PAUSED", job
        assert call(hub, "eve", "POST", f"api/admin/jobs/{job_id}/cancel",
                    {"reason": "x"})[0] == 403
        status, body = call(hub, "admin", "POST", f"api/admin/jobs/{job_id}/cancel",
                            {"reason": "test: operator cancel"})
        assert status == 200 and body["state"] == "CANCELLED", body
        assert call(hub, "alice", "GET", f"api/jobs/{job_id}")[1]["state"] == "CANCELLED"


def start_student_server(hub, user: str) -> None:
    code, body = hub.api("POST", f"/users/{user}/server", {"user_options": {"profile": "student"}})
    assert code in (201, 202), body
    hub.wait_for(lambda: hub.api("GET", f"/users/{user}")[1]["servers"].get("", {}).get("ready"),
                 timeout=120, what=f"{user}'s local server")


def _server_env(hub, user: str) -> dict[str, str]:
    """The environment of the user's running local-process server (its pid from the
    spawner state the hub keeps, read with the harness's admin token)."""
    status, model = hub.api("GET", f"/users/{user}")
    assert status == 200, model
    pid = int(model["servers"][""]["state"]["pid"])
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


KERNEL_CODE = """
import json
from qiskit import QuantumCircuit, transpile
from qiskit.primitives import BackendSamplerV2
from server_ext.qpu import gateway_backend

backend = gateway_backend("aer_simulator")
qc = QuantumCircuit(3)
qc.h(0); qc.cx(0, 1); qc.cx(1, 2); qc.measure_all()
isa = transpile(qc, backend, seed_transpiler=1)
counts = backend.run(isa, shots=512, seed_simulator=7, project="qc101",
                     purpose="research").result(timeout=120).get_counts()
sampled = BackendSamplerV2(backend=backend, options={"default_shots": 300})
with __import__("server_ext.qpu", fromlist=["tags"]).tags(project="qc101", purpose="teaching"):
    pub = sampled.run([isa]).result()[0]
print(json.dumps({"counts": counts, "sampler": pub.data.meas.get_counts()}))
"""


def test_a_servers_own_token_submits_through_the_proxy_class(hub):
    start_student_server(hub, "alice")
    try:
        env = _server_env(hub, "alice")
        token = env["JUPYTERHUB_API_TOKEN"]
        assert env["QUSTODY_QPU_URL"] == hub.qpu
        status, me = hub.api("GET", "/user", token=token)
        assert status == 200 and me["name"] == "alice"
        assert {"custom:qpu:submit", "access:services!service=qpu"} <= set(me["scopes"]), me["scopes"]
        # ordinary Qiskit in a kernel of that server (which holds the server's token)
        out = run_in_kernel(f"{hub.url}user/alice/", hub.tokens["alice"], KERNEL_CODE)
        got = json.loads(out.strip().splitlines()[-1])
        assert set(got["counts"]) == {"000", "111"} and sum(got["counts"].values()) == 512
        assert set(got["sampler"]) == {"000", "111"} and sum(got["sampler"].values()) == 300
        status, listing = call(hub, "alice", "GET", "api/jobs")
        assert status == 200
        mine = [j for j in listing["jobs"] if j["tags"].get("purpose") == "teaching"]
        assert mine and all(j["owner"] == "alice" for j in mine)
    finally:
        hub.api("DELETE", "/users/alice/server")


def test_gateway_and_hub_share_one_verified_audit_chain(hub):
    state = hub.dir
    path, key = state / "audit" / "audit.jsonl", state / "audit.key"

    def done():
        types = {r["type"] for r in audit_records(path, key)}
        return {"qpu-job-submitted", "qpu-job-finished", "break-glass"} <= types

    hub.wait_for(done, timeout=60, what="gateway records in the hub's audit log")
    records = audit_records(path, key)
    glass = [r["data"] for r in records if r["type"] == "break-glass"]
    assert any(g["actor"] == "admin" and g["action"] == "qpu-backend-pause"
               and g["justification"] == "test: hold the queue" for g in glass)
    assert any(r["data"].get("user") == "alice" for r in records
               if r["type"] == "qpu-job-submitted")


def banner_example() -> str:
    """The QPU example ``make demo`` prints, as a user pastes it (its last line printed)."""
    *lines, last = textwrap.dedent(QPU_EXAMPLE).strip().splitlines()
    return "\n".join([*lines, f"print({last.replace('.result()', '.result(timeout=120)')})"])


def test_a_user_in_no_project_runs_the_banners_example_in_a_personal_sandbox(hub):
    # The demo policy's projects follow identity: carol, in no project, gets her own
    # sandbox on the simulator; nobody names a project or a purpose.
    start_student_server(hub, "carol")
    try:
        out = run_in_kernel(f"{hub.url}user/carol/", hub.tokens["carol"], banner_example())
        counts = ast.literal_eval(out.strip().splitlines()[-1])  # the dict the kernel printed
        assert set(counts) == {"00", "11"} and sum(counts.values()) == 100
        status, listing = call(hub, "carol", "GET", "api/jobs")
        assert status == 200
        assert {(j["project"], j["tags"]["purpose"]) for j in listing["jobs"]} == {
            ("personal:carol", "research")
        }
        # the sandbox is carol's alone, and only on the simulator
        for other in ("alice", "sam"):
            status, body = call(hub, other, "POST", "api/jobs", bell_job("personal:carol"))
            assert (status, body["error"]) == (403, "NOT_A_MEMBER"), body
    finally:
        hub.api("DELETE", "/users/carol/server")


def test_a_course_is_a_project_its_students_use_and_its_instructor_leads(hub):
    status, projects = call(hub, "sam", "GET", "api/projects")
    assert status == 200 and list(projects["projects"]) == ["course-101"], projects
    assert projects["projects"]["course-101"]["role"] == "member"
    job = bell_job()
    del job["tags"]  # no project, no purpose: the course's
    status, body = call(hub, "sam", "POST", "api/jobs", job)
    assert status == 201, body
    done = wait_final(hub, "sam", body["job_id"])
    assert done["state"] == "DONE" and done["project"] == "course-101", done
    assert done["tags"]["purpose"] == "teaching"
    # the instructor leads it, also with the narrow scopes of his server's token (a
    # kernel's): sees sam's job and the course's jobs; others do not
    code, narrow = hub.api("POST", "/users/ivan/tokens", {
        "scopes": ["users:activity!user", "access:servers!server=ivan/", "custom:qpu:submit",
                   "access:services!service=qpu"],
        "expires_in": 600,
    })
    assert code == 201, narrow
    status, ivan = call(hub, "ivan", "GET", "api/projects", token=narrow["token"])
    assert status == 200 and ivan["projects"] == {"course-101": ivan["projects"]["course-101"]}
    assert ivan["projects"]["course-101"]["role"] == "lead", ivan
    assert call(hub, "ivan", "GET", f"api/jobs/{body['job_id']}", token=narrow["token"])[0] == 200
    status, listing = call(hub, "ivan", "GET", "api/jobs", project="course-101")
    assert status == 200 and [j["owner"] for j in listing["jobs"]] == ["sam"]
    assert call(hub, "carol", "GET", f"api/jobs/{body['job_id']}")[0] == 404
    # bob takes the course as a researcher: not in its project, his jobs not the course's
    status, bob = call(hub, "bob", "GET", "api/projects")
    assert status == 200 and "course-101" not in bob["projects"], bob
    assert call(hub, "bob", "GET", f"api/jobs/{body['job_id']}")[0] == 404


def test_the_lab_qpu_panel_shows_holds_cancels_and_finishes_jobs(hub, tmp_path):
    """JupyterLab's QPU panel in Chromium on alice's server: a held job with its reason in
    words, cancelled from the panel; then a job followed to DONE; the backends and quota.
    The page talks only to alice's server, which asks the gateway with its own token."""
    import chromium

    models = hub.api("GET", "/users/alice")[1]["servers"]
    if not models.get("", {}).get("ready"):
        start_student_server(hub, "alice")
    with backend_paused(hub, "hold for the panel"):  # the script resumes it half-way
        status, held = call(hub, "alice", "POST", "api/jobs", bell_job())
        assert status == 201 and held["state"] == "HELD", held
        status, foreign = call(hub, "carol", "POST", "api/jobs", bell_job("personal:carol"))
        assert status == 201, foreign
        out = chromium.drive("qpu_panel.mjs", {
            "server": f"{hub.url}user/alice/", "token": hub.tokens["alice"], "qpu": hub.qpu,
            "adminToken": hub.tokens["admin"], "heldJob": held["job_id"], "job": bell_job(),
            "foreignJob": foreign["job_id"],
            # 51 circuits of 100,000 shots: more than alice's 5,000,000 shots a day
            "overQuotaJob": {**bell_job(shots=100_000),
                             "circuits": bell_job()["circuits"] * 51},
            "userDataDir": str(tmp_path / "chromium-profile"),
            "screenshot": str(tmp_path / "qpu-panel.png"),
        }, timeout=300)
    assert "HELD" in out["held"] and "an operator paused the backend" in out["held"]
    assert any(b.startswith("aer_simulator") and "paused" in b for b in out["backends"])
    # the demo policy limits users (not qc101): alice's own simulator quota, as used
    assert any(q.startswith("you, simulator: today:") and "of 500 jobs" in q
               for q in out["quota"]), out["quota"]
    assert "CANCELLED" in out["cancelled"] and "quota refunded" in out["cancelled"]
    assert call(hub, "alice", "GET", f"api/jobs/{held['job_id']}")[1]["state"] == "CANCELLED"
    assert (out["resume"], out["submitted"]) == (200, 201)
    assert "DONE" in out["done"] and "results available" in out["done"]
    # the job's provenance, as the gateway recorded it, on a click on its id
    recorded = call(hub, "alice", "GET", f"api/jobs/{out['newJob']}", include="provenance")[1]
    prov = out["provenance"]
    assert prov["owner"] == "alice" and prov["backend"] == "aer_simulator", prov
    assert prov["circuit (SHA-256)"] == recorded["provenance"]["circuit_hashes"][0][:16] + "…"
    assert prov["shots"] == str(recorded["shots"]) and "qiskit" in prov["gateway"]
    codes = [d["code"] for d in recorded["decisions"]]
    assert [d.split(" ")[1] for d in out["decisions"]] == codes and "STARTED" in codes, codes
    assert out["openAfterPoll"] == 1  # a poll re-draws the list, the view stays open
    # over quota: refused by the gateway, and the panel lists it with the reason in words
    assert out["overQuota"]["status"] == 429, out["overQuota"]
    assert out["overQuota"]["reason"] == "REJECTED:USER_QUOTA"
    assert "REJECTED" in out["rejected"] and "refused: your quota is used up" in out["rejected"]
    # carol's job, asked for through alice's server: the gateway's "no such job"
    assert out["foreign"]["status"] == 404 and out["foreign"]["body"]["error"] == "NO_SUCH_JOB"
    call(hub, "carol", "DELETE", f"api/jobs/{foreign['job_id']}")
    # bob leads qc101: the gateway lists alice's job to him, but not among his own (mine=1),
    # which is what his panel shows
    status, led = call(hub, "bob", "GET", "api/jobs")
    assert status == 200 and held["job_id"] in {j["job_id"] for j in led["jobs"]}
    status, own = call(hub, "bob", "GET", "api/jobs", mine=1)
    assert status == 200 and {j["owner"] for j in own["jobs"]} <= {"bob"}
    # the page never talked to the gateway itself: only to alice's server
    assert not [u for u in out["pageRequests"] if "/services/qpu/" in u]
    assert out["errors"] == []


def test_the_gateways_metrics_need_read_metrics_and_show_the_queue(hub):
    """``/services/qpu/metrics`` as Prometheus scrapes it: the queue by backend and state,
    jobs by outcome from the gateway's audit records; ``read:metrics`` only (the hub's
    admin has it, a student does not); no user or job in any label."""
    with backend_paused(hub, "metrics"):
        status, held = call(hub, "alice", "POST", "api/jobs", bell_job())
        assert status == 201 and held["state"] == "HELD", held
        r = requests.get(hub.qpu + "metrics", timeout=30,
                         headers={"Authorization": f"token {hub.tokens['admin']}"})
        assert call(hub, "alice", "DELETE", f"api/jobs/{held['job_id']}")[0] == 200
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("text/plain")
    samples = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
               for line in r.text.splitlines() if line.startswith("qustody_")}
    assert samples['qustody_qpu_jobs{backend="aer_simulator",state="HELD"}'] >= 1
    assert samples['qustody_audit_records_total{reason="",type="qpu-job-submitted"}'] >= 1
    assert any(k.startswith('qustody_qpu_job_backend_seconds_count{backend="aer_simulator"')
               for k in samples), sorted(samples)
    for word in ("alice", held["job_id"], "qc101"):
        assert not [k for k in samples if word in k], word
    status, body = call(hub, "alice", "GET", "metrics")
    assert (status, body["error"]) == (403, "MISSING_SCOPE"), body


def course_file(per_student_jobs: int, ended_days_ago: float | None = None) -> str:
    from hub_ext.courses.model import stamp

    end = time.time() + (30 if ended_days_ago is None else -ended_days_ago) * 86400
    return (
        f'id = "course-101"\ntitle = "Intro QC"\n[term]\nstart = {stamp(end - 90 * 86400)}\n'
        f'end = {stamp(end)}\ngrace_days = 7\n[roster]\ngroup = "course-101"\n'
        f'[qpu]\nbackends = ["aer_simulator"]\nper_student = {{ day = {{ jobs = '
        f"{per_student_jobs} }} }}\n"
    )


def test_the_hubs_course_file_sets_the_budget_and_closes_the_term(hub):
    """A course file dropped into the hub's courses directory binds sam's jobs and, once
    the term closes, his server: no restart of the hub or the gateway."""
    path = hub.dir / "courses" / "course-101.toml"
    job = bell_job()
    del job["tags"]

    def refused(reason: str):
        def check():
            status, body = call(hub, "sam", "POST", "api/jobs", job)
            return body if status >= 400 and body.get("reason") == reason else None
        return check

    try:
        path.write_text(course_file(per_student_jobs=0))
        body = hub.wait_for(refused("REJECTED:MEMBER_QUOTA"), timeout=60,
                            what="the gateway to load the course file")
        assert "qpu.per_student.day.jobs in course-101.toml" in body["message"], body
        path.write_text(course_file(per_student_jobs=50, ended_days_ago=8))
        body = hub.wait_for(refused("REJECTED:COURSE_CLOSED"), timeout=60,
                            what="the closed term to reach the gateway")
        status, reply = hub.api("POST", "/users/sam/server", {}, token=hub.tokens["sam"])
        assert status == 403, (status, reply)
        assert "The term of course-101 (Intro QC) has ended" in str(reply), reply
        failed_spawns = [
            r["data"] for r in audit_records(hub.dir / "audit" / "audit.jsonl",
                                             hub.dir / "audit.key")
            if r["type"] == "server-spawn-failed" and r["data"]["user"] == "sam"
        ]
        assert failed_spawns and failed_spawns[-1]["reason"] == "course-closed", failed_spawns
    finally:
        path.unlink(missing_ok=True)
    status, body = hub.wait_for(
        lambda: (r := call(hub, "sam", "POST", "api/jobs", job))[0] == 201 and r,
        timeout=60, what="the course to follow identity again without its file",
    )
    assert status == 201, body


def test_a_qpu_flood_raises_an_alert_citing_the_submissions(hub):
    """A scripted attack: one user's token submits far more than their usual in minutes.
    The gateway's records reach the hub's audit log; its audit service raises one alert
    for the user (floor lowered to 30 for this hub), citing the submissions."""
    codes = [call(hub, "bob", "POST", "api/jobs", bell_job(shots=16))[0] for _ in range(35)]
    assert codes.count(201) >= 30, codes

    log, key = hub.dir / "audit" / "audit.jsonl", hub.dir / "audit.key"

    def burst():
        return [r for r in audit_records(log, key) if r["type"] == "alert-raised"
                and r["data"]["rule"] == "qpu-submissions-burst"]

    hub.wait_for(burst, timeout=90, what="the QPU burst alert")
    [alert] = burst()
    assert alert["data"]["subject"] == "user:bob" and alert["data"]["count"] == 30
    cited = {r["seq"]: r for r in audit_records(log, key)
             if r["seq"] in set(alert["data"]["evidence"])}
    assert {r["type"] for r in cited.values()} == {"qpu-job-submitted"}
    assert {r["data"]["user"] for r in cited.values()} == {"bob"}

