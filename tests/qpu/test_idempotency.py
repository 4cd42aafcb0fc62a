"""Idempotency keys on ``POST api/jobs``: a repeated submission gets its first job back.

Through real gateway processes (SQLite and PostgreSQL), and on the store itself for what a
process cannot be made to do on cue (two tickets with one key in one batch, a replica
holding a key while another waits on it, a key outliving its retention).
"""

from __future__ import annotations

import functools
import http.client
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from conftest import POLICY, bell, launch, qpy_b64

from hub_ext.qpu.errors import GatewayError
from hub_ext.qpu.policyfile import parse
from hub_ext.qpu.store import Admitted, Store, Ticket

pytestmark = pytest.mark.slow  # real hubs and gateways: run early (tests/conftest.py)

QUOTA_1 = POLICY + """
[quotas.project.simulator]
day = { jobs = 1 }
"""


@functools.cache
def circuit(n: int = 2) -> str:
    """One payload per size: each new circuit has a new name, so other QPY bytes."""
    return qpy_b64(bell(n))


def body(user: str = "alice", **fields: Any) -> dict[str, Any]:
    project = {"carol": "astro", "erin": "astro"}.get(user, "qchem")
    return {"backend": "aer_simulator", "circuits": [{"qpy": circuit()}], "shots": 100,
            "tags": {"project": project, "purpose": "testing"}, **fields}


def post(gw, user: str, payload: dict[str, Any], key: str | None = None,
         timeout: float = 120) -> requests.Response:
    headers = {"Authorization": f"token {gw.token(user)}"}
    if key is not None:
        headers["Idempotency-Key"] = key
    return requests.post(gw.url + "api/jobs", json=payload, headers=headers, timeout=timeout)


def jobs_used(gw, user: str = "alice", project: str = "qchem") -> int:
    status, quota = gw.call(user, "GET", "api/quota", project=project,
                            backend_class="simulator")
    assert status == 200, quota
    return int(quota["projects"][project]["quota"]["simulator"]["day"]["jobs"]["used"])


def admit_only(gw) -> None:
    """Pause the backend: jobs are admitted (and counted) but never run, so no run that
    fails on a loaded machine refunds the quota a test counts."""
    status, answer = gw.call("ops", "POST", "api/admin/backends/aer_simulator/pause",
                             {"reason": "test: admit only"})
    assert status == 200, answer


def stats(gw) -> dict[str, int]:
    status, body = gw.call("ops", "GET", "api/admin/stats")
    assert status == 200, body
    return dict(body["jobs"])


def test_a_repeated_key_gets_the_first_job_and_counts_it_once(db_url, start_gateway):
    gw = start_gateway(db_url)
    key = f"run-{uuid.uuid4()}"
    first = post(gw, "alice", body(), key)
    assert first.status_code == 201, first.text
    job = first.json()
    assert job["replayed"] is False and "Idempotent-Replayed" not in first.headers
    # The same request, written differently (key order, what the client reports about
    # itself): still the same request.
    again_body = dict(reversed(list(body(client={"qiskit": "9"}).items())))
    again = post(gw, "alice", again_body, key)
    assert again.status_code == 200, again.text
    assert again.headers["Idempotent-Replayed"] == "true"
    replay = again.json()
    assert replay["replayed"] is True and replay["job_id"] == job["job_id"]
    assert replay["state"] in ("QUEUED", "RUNNING", "DONE")
    assert gw.wait_final("alice", job["job_id"])["state"] == "DONE"
    # Later, the repeat shows the job as it is now.
    late = post(gw, "alice", body(), key).json()
    assert (late["job_id"], late["state"], late["reason"]) == (job["job_id"], "DONE",
                                                                "DONE:COMPLETED")
    assert jobs_used(gw) == 1
    assert stats(gw) == {"DONE": 1}
    _, listed = gw.call("alice", "GET", "api/jobs", mine="1")
    assert [j["job_id"] for j in listed["jobs"]] == [job["job_id"]]
    # A submission without a key is a new job, as always; its answer has no 'replayed'.
    plain = post(gw, "alice", body())
    assert plain.status_code == 201 and "replayed" not in plain.json()
    assert plain.json()["job_id"] != job["job_id"]
    # The audit log has the job's submission once: a repeat writes nothing.
    deadline = time.monotonic() + 30
    while True:
        records = gw.audit_records() if (gw.dir / "audit" / "audit.jsonl").exists() else []
        submitted = [r["data"]["job_id"] for r in records if r["type"] == "qpu-job-submitted"]
        if len(submitted) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert sorted(submitted) == sorted([job["job_id"], plain.json()["job_id"]])


def test_the_same_key_with_another_request_is_refused_and_admits_nothing(db_url,
                                                                        start_gateway):
    gw = start_gateway(db_url)
    admit_only(gw)
    first = post(gw, "alice", body(), "k1")
    assert first.status_code == 201, first.text
    for changed in (body(shots=200), body(options={"seed_simulator": 1}),
                    body(circuits=[{"qpy": circuit(3)}]),
                    body(tags={"project": "qchem", "purpose": "research"})):
        r = post(gw, "alice", changed, "k1")
        assert r.status_code == 422, r.text
        assert r.json()["error"] == "IDEMPOTENCY_KEY_REUSED"
        assert "'k1'" in r.json()["message"] and "different request" in r.json()["message"]
        assert "Idempotent-Replayed" not in r.headers
    assert jobs_used(gw) == 1
    assert stats(gw) == {"HELD": 1}


@pytest.mark.parametrize(("key", "says"), [
    ("", "an empty value"),
    ("k" * 129, "129 characters"),
    ("two words", "outside that set"),
    ("a/b", "outside that set"),
    ("semi;colon", "outside that set"),
])
def test_a_bad_key_is_refused_with_400_and_stores_nothing(gateway, key, says):
    before = sum(stats(gateway).values())
    r = post(gateway, "bob", body("bob"), key)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "BAD_IDEMPOTENCY_KEY"
    assert "1-128 characters" in r.json()["message"] and says in r.json()["message"]
    assert sum(stats(gateway).values()) == before


def test_large_submissions_decoded_in_the_parse_pool_repeat_the_same_way(gateway):
    large = body("carol", circuits=[{"qpy": circuit()}] * 150, shots=10)
    assert len(str(large)) > 65536  # over QpuGateway.inline_parse_bytes: a parse process
    first = post(gateway, "carol", large, "large-1")
    assert first.status_code == 201, first.text
    again = post(gateway, "carol", large, "large-1")
    assert again.status_code == 200 and again.json()["job_id"] == first.json()["job_id"]
    assert post(gateway, "carol", {**large, "shots": 11}, "large-1").status_code == 422
    # Refused by the policy (no job row) and malformed for the policy: answered as without
    # a key, and the key stays free.
    foreign = post(gateway, "carol", {**large, "tags": {"project": "qchem",
                                                       "purpose": "testing"}}, "large-2")
    assert (foreign.status_code, foreign.json()["error"]) == (403, "NOT_A_MEMBER")
    untagged = post(gateway, "carol", {**large, "tags": {"project": "astro"}}, "large-3")
    assert (untagged.status_code, untagged.json()["error"]) == (422, "TAG_REQUIRED")
    assert post(gateway, "carol", large, "large-2").status_code == 201


def test_two_key_headers_are_refused(gateway):
    import json

    split = urlsplit(gateway.url)
    conn = http.client.HTTPConnection(split.hostname, split.port, timeout=60)
    data = json.dumps(body("bob")).encode()
    conn.putrequest("POST", split.path + "api/jobs")
    for name, value in (("Authorization", f"token {gateway.token('bob')}"),
                        ("Content-Type", "application/json"),
                        ("Content-Length", str(len(data))),
                        ("Idempotency-Key", "a"), ("Idempotency-Key", "b")):
        conn.putheader(name, value)
    conn.endheaders(data)
    answer = conn.getresponse()
    assert answer.status == 400
    assert b"2 Idempotency-Key headers" in answer.read()
    conn.close()


def test_keys_are_scoped_to_their_owner(db_url, start_gateway):
    gw = start_gateway(db_url)
    admit_only(gw)
    alice = post(gw, "alice", body("alice"), "shared-key")
    bob = post(gw, "bob", body("bob"), "shared-key")
    assert (alice.status_code, bob.status_code) == (201, 201), (alice.text, bob.text)
    assert alice.json()["job_id"] != bob.json()["job_id"]
    # Another owner's request under the same key is not "a different request": it is
    # the other owner's own key.
    carol = post(gw, "carol", body("carol", shots=7), "shared-key")
    assert carol.status_code == 201, carol.text
    for user, first in (("alice", alice), ("bob", bob)):
        again = post(gw, user, body(user), "shared-key")
        assert again.status_code == 200 and again.json()["job_id"] == first.json()["job_id"]
        status, job = gw.call(user, "GET", f"api/jobs/{first.json()['job_id']}")
        assert status == 200 and job["owner"] == user
    assert jobs_used(gw, "alice") == 2  # alice's and bob's, both in qchem
    assert jobs_used(gw, "carol", "astro") == 1


def test_a_rejected_submission_replays_its_rejection(db_url, start_gateway):
    gw = start_gateway(db_url, policy=QUOTA_1)
    admit_only(gw)
    assert post(gw, "alice", body(), "first").status_code == 201
    refused = post(gw, "alice", body(), "second")
    assert refused.status_code == 429, refused.text
    rejection = refused.json()
    assert (rejection["error"], rejection["state"]) == ("PROJECT_QUOTA", "REJECTED")
    assert rejection["job_id"] and rejection["replayed"] is False
    again = post(gw, "alice", body(), "second")
    assert again.status_code == 429 and again.headers["Idempotent-Replayed"] == "true"
    replay = again.json()
    assert replay["replayed"] is True
    for field in ("job_id", "error", "message", "state", "reason", "detail"):
        assert replay[field] == rejection[field], field
    assert stats(gw) == {"HELD": 1, "REJECTED": 1}
    assert jobs_used(gw) == 1


def test_a_repeat_the_policy_would_refuse_now_still_gets_its_job(db_url, start_gateway):
    """The key is looked up before the policy's verdict counts: a member removed from the
    project after the first attempt still learns that the job was admitted."""
    gw = start_gateway(db_url)
    first = post(gw, "bob", body("bob"), "before-removal")
    assert first.status_code == 201
    gw.policy_path.write_text(POLICY.replace(', bob = "member"', ""))
    deadline = time.monotonic() + 30
    while post(gw, "bob", body("bob")).status_code != 403:  # the reload took effect
        assert time.monotonic() < deadline
        time.sleep(0.2)
    again = post(gw, "bob", body("bob"), "before-removal")
    assert again.status_code == 200, again.text
    assert again.json()["job_id"] == first.json()["job_id"]
    assert post(gw, "bob", body("bob", shots=5), "before-removal").status_code == 422
    assert post(gw, "bob", body("bob"), "new-key").json()["error"] == "NOT_A_MEMBER"


def test_20_concurrent_submits_with_one_key_on_two_replicas_make_one_job(db_url,
                                                                        start_gateway):
    first = start_gateway(db_url)
    second = start_gateway(db_url)
    admit_only(first)
    payload = body()
    key = str(uuid.uuid4())
    start = threading.Barrier(20)

    def submit(i: int) -> requests.Response:
        start.wait()
        return post(first if i % 2 else second, "alice", payload, key)

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(submit, range(20)))
    codes = sorted(r.status_code for r in answers)
    assert codes == [200] * 19 + [201], [r.text for r in answers]
    assert len({r.json()["job_id"] for r in answers}) == 1
    assert sum(r.headers.get("Idempotent-Replayed") == "true" for r in answers) == 19
    assert jobs_used(first) == 1
    assert stats(second) == {"HELD": 1}


def test_after_a_kill_9_every_key_sent_again_has_exactly_one_job(db_url, hub, tmp_path):
    """The key's record and its job are written in one transaction: whatever the crash
    interrupted, sending every key again yields one job per key, the acknowledged ones
    with the job id they were acknowledged with."""
    gw = launch(hub, tmp_path / "gw", db_url)
    gw.start()
    admit_only(gw)  # (and stays paused after the restart: the control is in the database)
    payloads = {f"key-{i}": body(shots=10 + i) for i in range(120)}
    acked: dict[str, str] = {}
    lock = threading.Lock()
    killed = threading.Event()

    def submit(key: str) -> None:
        if killed.is_set():
            return
        try:
            r = post(gw, "alice", payloads[key], key, timeout=30)
        except requests.RequestException:
            return  # the process died mid-request: not acknowledged
        if r.status_code == 201:
            with lock:
                acked[key] = r.json()["job_id"]
                if len(acked) == 30:
                    gw.kill()
                    killed.set()

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(submit, payloads))
    assert killed.is_set()
    gw.start()
    try:
        again = {key: post(gw, "alice", payloads[key], key) for key in payloads}
        for key, job_id in acked.items():
            assert again[key].status_code == 200, again[key].text
            assert again[key].json()["job_id"] == job_id
        assert {r.status_code for r in again.values()} <= {200, 201}
        job_ids = {r.json()["job_id"] for r in again.values()}
        assert len(job_ids) == len(payloads)
        assert stats(gw) == {"HELD": len(payloads)}
        assert jobs_used(gw) == len(payloads)
    finally:
        gw.stop()


# -- the store ---------------------------------------------------------------------------

STORE_POLICY = """
[projects.qchem]
members = { alice = "member", bob = "member" }
backends = ["*"]
"""


def ticket(key: str | None, fingerprint: str = "f1", owner: str = "alice") -> Ticket:
    return Ticket(owner=owner, project="qchem", backend="aer_simulator",
                  requested_backend="aer_simulator", backend_class="simulator",
                  tier="normal", priority=10, sensitivity="internal", n_circuits=1, shots=10,
                  est_seconds=0.1, tags={}, provenance={}, circuits=b"x", options={},
                  idempotency_key=key, fingerprint=fingerprint)


@pytest.fixture
def store_policy():
    return parse(STORE_POLICY, backends={"aer_simulator": "simulator"})


def new_store(db_url: str, **kwargs: Any) -> Store:
    store = Store(db_url, **kwargs)
    store.create(["aer_simulator"])
    return store


def test_a_database_made_before_keys_gets_their_table_at_start(db_url, store_policy):
    from hub_ext.qpu import models

    old = new_store(db_url)
    old.admit_many([ticket(None)], store_policy)
    models.idempotency.drop(old.engine)  # as a database of the previous release
    old.dispose()
    store = new_store(db_url)  # the same schema version: create() adds the table
    try:
        out = store.admit_many([ticket("k"), ticket("k")], store_policy)
        assert isinstance(out[1], Admitted) and out[1].replayed
        assert store.counts() == {"QUEUED": 2}
    finally:
        store.dispose()


def test_one_key_twice_in_one_batch_is_one_job(db_url, store_policy):
    store = new_store(db_url)
    try:
        out = store.admit_many([ticket("k"), ticket("k"), ticket("k", "other"), ticket(None),
                                ticket("k", owner="bob")], store_policy)
        first, repeat, reused, plain, bobs = out
        assert isinstance(first, Admitted) and not first.replayed
        assert isinstance(repeat, Admitted) and repeat.replayed
        assert repeat.job_id == first.job_id and repeat.state == first.state
        assert isinstance(reused, GatewayError) and reused.code == "IDEMPOTENCY_KEY_REUSED"
        assert isinstance(plain, Admitted) and isinstance(bobs, Admitted)
        assert len({first.job_id, plain.job_id, bobs.job_id}) == 3
        assert store.counts() == {"QUEUED": 3}
        earlier = store.replay("alice", "k", "f1")
        assert isinstance(earlier, Admitted) and earlier.job_id == first.job_id
    finally:
        store.dispose()


def test_a_replica_waiting_on_a_key_replays_the_winner_once_it_commits(db_url, store_policy):
    """Two replicas on one database: the first holds the key in an open transaction; the
    second waits on it (PostgreSQL: the unique index; SQLite: the write lock), then gets
    the first one's job rather than a second job or an error."""
    winner, waiter = new_store(db_url), new_store(db_url)
    try:
        holding = winner.engine.begin()
        conn = holding.__enter__()
        won = winner._admit_batch(conn, [ticket("race")], store_policy, time.time())[0]
        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(waiter.admit_many, [ticket("race")], store_policy)
            time.sleep(0.5)
            assert not waiting.done()
            holding.__exit__(None, None, None)  # commit
            replay = waiting.result(30)[0]
        assert isinstance(won, Admitted) and isinstance(replay, Admitted)
        assert replay.replayed and replay.job_id == won.job_id
        assert waiter.counts() == {"QUEUED": 1}
    finally:
        winner.dispose()
        waiter.dispose()


def test_a_rolled_back_claim_leaves_the_key_free(db_url, store_policy):
    store = new_store(db_url)
    try:
        with pytest.raises(RuntimeError), store.engine.begin() as conn:
            store._admit_batch(conn, [ticket("crash")], store_policy, time.time())
            raise RuntimeError("the process died before the commit")
        assert store.replay("alice", "crash", "f1") is None
        out = store.admit_many([ticket("crash")], store_policy)[0]
        assert isinstance(out, Admitted) and not out.replayed
    finally:
        store.dispose()


def test_an_expired_key_is_free_again_and_purged(db_url, store_policy):
    store = new_store(db_url, key_seconds=0.3)
    try:
        first = store.admit_many([ticket("old")], store_policy)[0]
        assert isinstance(store.admit_many([ticket("old", "new")], store_policy)[0],
                          GatewayError)
        time.sleep(0.4)
        # Expired but not yet purged: the key counts as unused (the record is replaced).
        second = store.admit_many([ticket("old", "new")], store_policy)[0]
        assert isinstance(first, Admitted) and isinstance(second, Admitted)
        assert not second.replayed and second.job_id != first.job_id
        for i in range(5):
            store.admit_many([ticket(f"purge-{i}")], store_policy)
        time.sleep(0.4)
        assert store.replay("alice", "purge-0", "f1") is None  # expired: not answered
        purged = [store.purge_keys(2) for _ in range(4)]
        assert purged == [2, 2, 2, 0]  # six keys, two per transaction
        assert store.counts() == {"QUEUED": 7}  # the jobs stay
    finally:
        store.dispose()


# -- the kernel's client -------------------------------------------------------------------


class LossyProxy:
    """Stand-in for the hub's proxy in front of a real gateway that loses the answer to the
    first submission, after the gateway has admitted it: ``drop`` closes the connection
    with no answer (a crash, a cut connection), ``proxy-504`` answers 504 as the hub's
    proxy does when the gateway process it was talking to died, ``timeout`` answers
    nothing until the client has given up. Everything else passes through.

    Why a stand-in: a real gateway killed mid-request loses the answer too, but the kill
    falls before or after the commit only by chance, and a new gateway takes longer to
    start than the client's retries wait. This loses it after the commit every time, so
    the client's retry must be answered with the job the lost attempt made."""

    def __init__(self, gateway_url: str, mode: str, hold: float = 4.0) -> None:
        split = urlsplit(gateway_url)
        origin = f"{split.scheme}://{split.netloc}"
        #: (method, Idempotency-Key, the gateway's status) of each request passed on
        self.seen: list[tuple[str, str | None, int]] = []
        self.lost = False
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() in ("authorization", "content-type", "idempotency-key")}
                upstream = requests.request(self.command, origin + self.path, data=data or None,
                                            headers=headers, timeout=120)
                with lock:
                    outer.seen.append((self.command, self.headers.get("Idempotency-Key"),
                                       upstream.status_code))
                    lose = self.command == "POST" and not outer.lost
                    outer.lost = outer.lost or lose
                if lose and mode == "proxy-504":
                    self._answer(504, "text/html", b"<html><title>504</title></html>")
                    return
                if lose:
                    if mode == "timeout":
                        time.sleep(hold)
                    self.close_connection = True  # no answer at all
                    return
                self._answer(upstream.status_code, upstream.headers["Content-Type"],
                             upstream.content, upstream.headers.get("Idempotent-Replayed"))

            def _answer(self, status: int, kind: str, content: bytes,
                        replayed: str | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(content)))
                if replayed:
                    self.send_header("Idempotent-Replayed", replayed)
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = _forward

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{split.path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("mode", ["drop", "proxy-504", "timeout"])
def test_the_kernel_client_sends_a_lost_submission_again_with_its_key(gateway, mode,
                                                                      monkeypatch):
    from qiskit import transpile

    from server_ext import qpu

    monkeypatch.setattr(qpu, "SUBMIT_RETRY_DELAYS", (0.05, 0.05))

    def erins_jobs() -> set[str]:
        _, listed = gateway.call("erin", "GET", "api/jobs", mine="1", limit="1000")
        return {j["job_id"] for j in listed["jobs"]}

    before = erins_jobs()
    proxy = LossyProxy(gateway.url, mode)
    try:
        backend = qpu.gateway_backend("aer_simulator", url=proxy.url,
                                      token=gateway.token("erin"), project="astro",
                                      purpose="testing")
        backend.client.timeout = 2.0
        isa = transpile(bell(2), backend, seed_transpiler=1)
        job = backend.run(isa, shots=50)
        second = backend.run(isa, shots=50)  # the same circuit again: a new job, a new key
    finally:
        proxy.close()
    posts = [(key, status) for method, key, status in proxy.seen if method == "POST"]
    assert [status for _, status in posts] == [201, 200, 201]
    assert posts[0][0] == posts[1][0] != posts[2][0]
    assert posts[0][0] is not None and len(posts[0][0]) == 32
    assert erins_jobs() - before == {job.job_id(), second.job_id()}
    assert sum(job.result(timeout=120).get_counts().values()) == 50
