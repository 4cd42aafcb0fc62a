"""Authentication, scopes, ownership, and every kind of bad input: a clear 4xx, nothing lost."""

from __future__ import annotations

import base64
import json
import socket
import struct
from typing import Any

import pytest
from conftest import bell, qpy_b64

from hub_ext.qpu.parsing import INLINE_QASM3_CHARS, DecodeInPool, prepare


def stats(gateway) -> int:
    """How many jobs the gateway holds, in any state.

    A total, not the per-state counts: an earlier test's job may finish between two
    readings, which moves it from RUNNING to DONE without adding a job."""
    status, body = gateway.call("ops", "GET", "api/admin/stats")
    assert status == 200
    return sum(body["jobs"].values())


@pytest.mark.parametrize(
    ("user", "headers", "status", "code"),
    [
        (None, {}, 401, "NO_TOKEN"),
        (None, {"Authorization": "token not-a-real-token"}, 403, "BAD_TOKEN"),
        (None, {"Authorization": "Basic abc"}, 401, "NO_TOKEN"),
        ("dave", None, 403, "MISSING_SCOPE"),  # a valid hub token without custom:qpu:submit
        ("auditor", None, 403, "MISSING_SCOPE"),  # read-all cannot submit
    ],
)
def test_submit_needs_a_token_with_the_scope(gateway, user, headers, status, code):
    import requests

    body = {"backend": "aer_simulator", "circuits": [{"qpy": qpy_b64(bell())}],
            "tags": {"project": "qchem", "purpose": "testing"}}
    h = headers if headers is not None else {"Authorization": f"token {gateway.token(user)}"}
    r = requests.post(gateway.url + "api/jobs", json=body, headers=h, timeout=30)
    assert r.status_code == status
    assert r.json()["error"] == code
    assert "token" not in r.json()["message"] or code != "BAD_TOKEN" or "not-a-real" not in r.text


def test_admin_actions_need_the_admin_scope(gateway):
    status, body = gateway.call("alice", "POST", "api/admin/backends/aer_simulator/pause",
                                {"reason": "x"})
    assert (status, body["error"]) == (403, "MISSING_SCOPE")
    assert "custom:qpu:admin" in body["message"]
    assert gateway.call("alice", "GET", "api/admin/export")[0] == 403


def test_forged_owner_is_ignored_and_others_jobs_are_invisible(gateway):
    status, body = gateway.submit("bob", owner="alice", tags={
        "project": "qchem", "purpose": "testing", "owner": "alice", "user": "alice"})
    assert status == 201, body
    assert set(body["ignored"]) == {"owner", "tags.owner", "tags.user"}
    job_id = body["job_id"]
    job = gateway.wait_final("bob", job_id)
    assert job["owner"] == "bob"
    # carol (another project) gets the same 404 as for a job that does not exist
    for path in (f"api/jobs/{job_id}", f"api/jobs/{job_id}/result"):
        status, body = gateway.call("carol", "GET", path)
        assert (status, body["error"]) == (404, "NO_SUCH_JOB")
    assert gateway.call("carol", "DELETE", f"api/jobs/{job_id}")[0] == 404
    assert gateway.call("carol", "GET", "api/jobs/" + "0" * 32)[1]["error"] == "NO_SUCH_JOB"
    # alice leads qchem: she sees bob's job and can list it; the auditor reads everything
    assert gateway.call("alice", "GET", f"api/jobs/{job_id}")[0] == 200
    assert job_id in [j["job_id"] for j in gateway.call("alice", "GET", "api/jobs",
                                                        project="qchem")[1]["jobs"]]
    assert gateway.call("bob", "GET", "api/jobs", project="qchem")[0] == 403  # not a lead
    assert gateway.call("auditor", "GET", f"api/jobs/{job_id}")[0] == 200
    assert job_id not in [j["job_id"] for j in gateway.call("carol", "GET", "api/jobs")[1]["jobs"]]
    # provenance: the owner is the token's, whatever the body said
    status, body = gateway.call("bob", "GET", f"api/jobs/{job_id}", include="provenance")
    assert body["provenance"]["owner"] == "bob"
    assert any(d["code"] == "IGNORED:CLIENT_FIELDS" for d in body["decisions"])


def header_claiming(qubits: int) -> str:
    """A QPY payload whose circuit header claims ``qubits`` qubits."""
    from qiskit.qpy import formats

    data = bytearray(base64.b64decode(qpy_b64(bell())))
    head = formats.FILE_HEADER_V10._make(struct.unpack_from(formats.FILE_HEADER_V10_PACK, data))
    offset = formats.FILE_HEADER_V10_SIZE + 1
    if head.qpy_version >= 16:
        (offset,) = struct.unpack_from(formats.CIRCUIT_TABLE_ENTRY_PACK, data, offset)
    fields = list(struct.unpack_from(formats.CIRCUIT_HEADER_V12_PACK, data, offset))
    fields[3] = qubits
    struct.pack_into(formats.CIRCUIT_HEADER_V12_PACK, data, offset, *fields)
    return base64.b64encode(bytes(data)).decode()


def nested_claiming(qubits: int) -> str:
    """A QPY payload of a 3-qubit circuit whose custom gate's definition (a circuit nested
    in it, which no header check before Qiskit's reader sees) claims ``qubits`` qubits:
    713 bytes that took the reader 51 s and 10 GB on the gateway's event loop."""
    from qiskit import QuantumCircuit
    from qiskit.qpy import formats

    inner = QuantumCircuit(3, name="nestedgate")
    inner.h(0)
    inner.cx(0, 1)
    outer = QuantumCircuit(3, name="outer")
    outer.append(inner.to_gate(), [0, 1, 2])
    data = bytearray(base64.b64decode(qpy_b64(outer)))
    size = struct.calcsize(formats.CIRCUIT_HEADER_V12_PACK)
    for offset in range(len(data) - size):
        fields = list(struct.unpack_from(formats.CIRCUIT_HEADER_V12_PACK, data, offset))
        if fields[3] == 3 and data[offset + size: offset + size + fields[0]] == b"nestedgate":
            fields[3] = qubits
            struct.pack_into(formats.CIRCUIT_HEADER_V12_PACK, data, offset, *fields)
            return base64.b64encode(bytes(data)).decode()
    raise AssertionError("no nested circuit header found")


GOOD = {"project": "qchem", "purpose": "testing"}


@pytest.mark.parametrize(
    ("fields", "status", "code", "says"),
    [
        ({"circuits": [{"qpy": base64.b64encode(b"QISKIT garbage").decode()}]}, 422,
         "MALFORMED_QPY", "malformed QPY"),
        ({"circuits": [{"qpy": base64.b64encode(b"not qpy at all, really").decode()}]}, 422,
         "MALFORMED_QPY", "QISKIT"),
        ({"circuits": [{"qpy": "%%%not base64"}]}, 422, "MALFORMED_QPY", "base64"),
        ({"circuits": [{"qpy": header_claiming(10**9)}]}, 422, "TOO_MANY_QUBITS",
         "1000000000 qubits; the limit is 127"),
        ({"circuits": [{"qasm3": "OPENQASM 3.0; qubit[2] q; h q[0]; nonsense;"}]}, 422,
         "MALFORMED_QASM3", "OpenQASM 3"),
        # a register whatever its name's letters, its initialiser or its direction
        ({"circuits": [{"qasm3": "OPENQASM 3.0;\nqubit[100000000] \u03b1;\n"}]}, 422,
         "TOO_MANY_QUBITS", "declares more than 127 qubits"),
        ({"circuits": [{"qasm3": 'OPENQASM 3.0;\nbit[100000000] c = "0";\n'}]}, 422,
         "TOO_MANY_INSTRUCTIONS", "bits"),
        ({"circuits": [{"qasm3": "OPENQASM 3.0;\ninput bit[100000000] c;\n"}]}, 422,
         "TOO_MANY_INSTRUCTIONS", "bits"),
        # 30 bytes that would make the importer allocate 10^8 qubits (gigabytes) before
        # the circuit's qubit limit is checked; the same behind a comment, as OpenQASM 2
        ({"circuits": [{"qasm3": "OPENQASM 3.0;\nqubit[100000000] q;\n"}]}, 422,
         "TOO_MANY_QUBITS", "declares more than 127 qubits"),
        ({"circuits": [{"qasm3": "OPENQASM 3.0;\nqubit/**/[ 100_000_000 ] q;\n"}]}, 422,
         "TOO_MANY_QUBITS", "declares more than 127 qubits"),
        ({"circuits": [{"qasm3": "OPENQASM 2.0;\nqreg q[100000000];\n"}]}, 422,
         "TOO_MANY_QUBITS", "declares more than 127 qubits"),
        ({"circuits": [{"qasm3": "OPENQASM 3.0;\n" + "".join(
            f"qubit q{i};\n" for i in range(128))}]}, 422, "TOO_MANY_QUBITS", "127"),
        ({"circuits": [{"qasm3": "OPENQASM 3.0;\nbit[100000000] c;\n"}]}, 422,
         "TOO_MANY_INSTRUCTIONS", "bits"),
        # an expression where the importer wants a number made it panic (a BaseException
        # out of Rust), which killed the request and stalled the gateway
        ({"circuits": [{"qasm3": "OPENQASM 3.0;\nqubit[2*2] q;\n"}]}, 422,
         "MALFORMED_QASM3", "decimal number"),
        ({"circuits": [{"qasm3": "OPENQASM 3.0;\nint[2*2] x;\n"}]}, 422,
         "MALFORMED_QASM3", "designator"),
        # 9,600 gates on 24 qubits: minutes of statevector work, estimated as such and
        # refused at admission, not run until the time limit kills it (and refunded)
        ({"circuits": [{"qasm3": 'OPENQASM 3.0; include "stdgates.inc"; qubit[24] q; '
                        + "h q; " * 400}]}, 422, "TIME_LIMIT", "gates per job"),
        # a gate after a measurement makes the simulator run the circuit once per shot
        ({"circuits": [{"qasm3": 'OPENQASM 3.0; include "stdgates.inc"; qubit[20] q; '
                        'bit[1] c; h q; c[0] = measure q[0]; ' + "x q; " * 5}],
          "shots": 100000}, 422, "TIME_LIMIT", "gates per job"),
        ({"circuits": []}, 400, "BAD_FIELD", "non-empty"),
        ({"circuits": [{"qpy": qpy_b64(bell())}] * 301}, 422, "TOO_MANY_CIRCUITS",
         "the limit is 300"),
        ({"shots": 10**9}, 422, "TOO_MANY_SHOTS", "1..100000"),
        ({"shots": 0}, 422, "TOO_MANY_SHOTS", "1..100000"),
        ({"shots": "many"}, 400, "BAD_FIELD", "integer"),
        ({"backend": "ibm_brisbane"}, 422, "UNKNOWN_BACKEND", "aer_simulator, fake_hw"),
        ({"backend": "fake_hw", "shots": 50000}, 422, "TOO_MANY_SHOTS", "1..20000"),
        ({"tags": {"project": "warp-drive", "purpose": "testing"}}, 403, "NOT_A_MEMBER",
         "not one of your projects (qchem)"),
        ({"tags": {"project": "astro", "purpose": "testing"}}, 403, "NOT_A_MEMBER",
         "ask the project lead"),
        ({"tags": {"project": "qchem"}}, 422, "TAG_REQUIRED", "research, teaching, testing"),
        ({"tags": {**GOOD, "purpose": "fun"}}, 422, "BAD_TAG", "must be one of"),
        ({"tags": {**GOOD, "colour": "red"}}, 400, "BAD_TAG", "put anything else in labels"),
        ({"tags": {**GOOD, "labels": {"k": "v" * 300}}}, 400, "BAD_TAG", "at most 256"),
        # a newline after a key slipped through "^...$"; in a value it reached audit lines
        ({"tags": {**GOOD, "labels": {"run\n": "x"}}}, 400, "BAD_TAG", "label key"),
        ({"tags": {**GOOD, "labels": {"run": "a\nfake: line"}}}, 400, "BAD_TAG",
         "control characters"),
        ({"tags": {**GOOD, "priority": "urgent"}}, 422, "UNKNOWN_TIER", "high, low, normal"),
        ({"tags": {**GOOD, "sensitivity": "public"}}, 422, "SENSITIVITY_TOO_LOW", "internal"),
        ({"options": {"noise_model": "x"}}, 400, "BAD_OPTION", "seed_simulator"),
        ({"surprise": 1}, 400, "BAD_FIELD", "unknown fields"),
    ],
)
def test_bad_submissions_get_a_clear_4xx_and_store_nothing(gateway, fields, status, code, says):
    before = stats(gateway)
    got, body = gateway.submit("alice", **fields)
    assert got == status, body
    assert body["error"] == code
    assert says in body["message"]
    if got != 403:  # policy refusals by membership are not jobs either
        assert stats(gateway) == before


def test_group_membership_and_backend_allow_list(gateway):
    # erin is in astro through the hub group "stargazers"
    status, body = gateway.submit("erin", tags={"project": "astro", "purpose": "research"})
    assert status == 201, body
    status, body = gateway.submit("erin", backend="aer_mps",
                                  tags={"project": "astro", "purpose": "research"})
    assert (status, body["error"]) == (403, "BACKEND_NOT_ALLOWED")
    assert "may use aer_simulator, fake_hw" in body["message"]
    assert "projects.astro.backends" in body["message"]


def _raw_request(gateway, head: bytes, body: bytes = b"") -> tuple[int, str]:
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=30) as s:
        s.sendall(head + body)
        data = b""
        while b"\r\n\r\n" not in data or len(data) < data.find(b"\r\n\r\n") + 4 + int(
            ([line for line in data.split(b"\r\n") if line.lower().startswith(b"content-length")]
             or [b"x: 0"])[0].split(b":")[1]
        ):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data.split(b"\r\n\r\n", 1)[1].decode(errors="replace")


def test_a_claimed_10_gb_body_is_refused_before_it_is_sent(gateway):
    path = gateway.url.split("127.0.0.1:")[1].split("/", 1)[1]
    head = (
        f"POST /{path}api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: token {gateway.token('alice')}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {10 * 1024**3}\r\n\r\n"
    ).encode()
    status, text = _raw_request(gateway, head)
    assert status == 413
    assert "10737418240 bytes; the limit is 8388608 bytes" in text


def test_bad_json_and_content_type(gateway):
    import requests

    h = {"Authorization": f"token {gateway.token('alice')}"}
    r = requests.post(gateway.url + "api/jobs", data=b"{nope", timeout=30,
                      headers={**h, "Content-Type": "application/json"})
    assert (r.status_code, r.json()["error"]) == (400, "BAD_JSON")
    r = requests.post(gateway.url + "api/jobs", data=b"{}", timeout=30,
                      headers={**h, "Content-Type": "text/plain"})
    assert (r.status_code, r.json()["error"]) == (415, "BAD_CONTENT_TYPE")


def test_long_openqasm3_is_decoded_off_the_event_loop_and_runs(gateway):
    """A small body may still hold long OpenQASM 3 (broadcast gates expand to many
    instructions): it goes to the parse pool, not the gateway's event loop, and runs."""
    text = ('OPENQASM 3.0; include "stdgates.inc"; qubit[2] q; bit[2] c; ' + "x q; " * 2000
            + "c = measure q;")
    assert INLINE_QASM3_CHARS < len(text) < 65536
    with pytest.raises(DecodeInPool):
        prepare(None, None, json.dumps({"backend": "aer_simulator", "circuits": [
            {"qasm3": text}]}).encode(), None, inline=True)  # type: ignore[arg-type]
    status, body = gateway.submit("alice", circuits=[{"qasm3": text}], shots=50,
                                  options={"seed_simulator": 1})
    assert status == 201, body
    assert gateway.wait_final("alice", body["job_id"])["state"] == "DONE"
    _status, result = gateway.call("alice", "GET", f"api/jobs/{body['job_id']}/result")
    assert result["results"][0]["data"]["counts"] == {"0x0": 50}  # 2,000 flips of each qubit


def test_a_qpy_body_is_never_decoded_on_the_event_loop_however_its_key_is_spelled():
    # the gateway sends a body naming "qpy" to the pool unparsed; one that writes the key
    # with an escape is parsed inline, and prepare's own check sends it on
    circuit = json.dumps(qpy_b64(bell()))
    escaped = ('{"backend": "aer_simulator", "circuits": [{"\\u0071py": ' + circuit
               + "}]}").encode()
    assert b'"qpy"' not in escaped and json.loads(escaped)["circuits"][0].keys() == {"qpy"}
    with pytest.raises(DecodeInPool):
        prepare(None, None, escaped, None, inline=True)  # type: ignore[arg-type]


def test_a_good_job_still_runs_after_all_that(gateway):
    status, body = gateway.submit("alice", circuits=[{"qasm3": (
        'OPENQASM 3.0; include "stdgates.inc"; qubit[2] q; bit[2] c; h q[0]; cx q[0], q[1]; '
        "c = measure q;")}], shots=200, options={"seed_simulator": 1})
    assert status == 201, body
    assert gateway.wait_final("alice", body["job_id"])["state"] == "DONE"
    status, result = gateway.call("alice", "GET", f"api/jobs/{body['job_id']}/result")
    counts = result["results"][0]["data"]["counts"]
    assert set(counts) <= {"0x0", "0x3"} and sum(counts.values()) == 200


def test_no_secret_or_host_detail_in_results(gateway):
    _, body = gateway.submit("alice")
    gateway.wait_final("alice", body["job_id"])
    _status, result = gateway.call("alice", "GET", f"api/jobs/{body['job_id']}/result")
    assert "max_memory_mb" not in str(result)
    assert gateway.token("alice") not in gateway.log()


def test_a_chunked_body_growing_past_the_limit_gets_413_with_the_limit(gateway):
    import threading

    path = gateway.url.split("127.0.0.1:")[1].split("/", 1)[1]
    head = (
        f"POST /{path}api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: token {gateway.token('alice')}\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    before = stats(gateway)
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=30) as s:
        s.sendall(head)

        def send() -> None:
            chunk = b"x" * 65536
            try:
                for _ in range(200):  # 12.5 MiB, over the 8 MiB limit
                    s.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
            except OSError:
                pass  # the gateway closed the connection after answering

        sender = threading.Thread(target=send)
        sender.start()
        data = b""
        while b"}" not in data:
            part = s.recv(65536)
            if not part:
                break
            data += part
        sender.join()
    assert data.startswith(b"HTTP/1.1 413 ")
    assert b"exceeds the limit of 8388608 bytes" in data
    assert stats(gateway) == before


def test_a_circuit_nested_in_a_small_qpy_payload_is_decoded_under_the_memory_cap(
        start_gateway, tmp_path):
    """Every QPY payload, however small, is decoded in a parse process with its memory
    cap: a nested circuit claiming 50,000,000 qubits is refused there (Qiskit's reader
    aborts the process when an allocation fails: the pool starts a new one), and the
    gateway goes on answering meanwhile and afterwards."""
    import threading
    import time

    gw = start_gateway(f"sqlite:///{tmp_path / 'qpu.sqlite'}")  # small_parse_memory_mb 256
    assert gw.submit("alice")[0] == 201  # the parse pool is up
    answer: list[tuple[int, Any]] = []
    bomb = threading.Thread(target=lambda: answer.append(gw.submit(
        "alice", circuits=[{"qpy": nested_claiming(50_000_000)}], tags=GOOD)))
    started = time.monotonic()
    bomb.start()
    status, _ = gw.call("bob", "GET", "api/backends")  # the event loop is free
    assert status == 200 and time.monotonic() - started < 5
    bomb.join(120)
    [(status, body)] = answer
    assert (status, body["error"]) in ((413, "PAYLOAD_TOO_COMPLEX"), (422, "MALFORMED_QPY"))
    status, body = gw.submit("alice", tags=GOOD)
    assert status == 201, body
