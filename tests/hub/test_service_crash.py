"""A crashed process of a hub-managed service costs the requests it held, not an outage.

JupyterHub polls its managed services every 30 s; a service that runs as one process
refuses everything from its crash until then. The QPU gateway runs two workers and the
auditor page one, each behind a supervisor (hub_ext/supervisor.py) that replaces a dead
worker at once. Here a real hub's workers are killed with SIGKILL.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from audit_hub import LOCAL_EXTRA, local_env, login
from hubtest import Hub, failed, free_port, launch_hub
from service_procs import bell_qpy, children, gone, service_process

pytestmark = pytest.mark.slow  # real hubs and gateways: run early (tests/conftest.py)


def _hub(base: Path) -> Iterator[Hub]:
    hub = launch_hub(
        base / "hub",
        extra=LOCAL_EXTRA.format(home=base / "home"),
        # the product's default: two gateway workers (the harness runs one)
        env={**local_env(), "QUSTODY_QPU_PORT": str(free_port()), "QUSTODY_QPU_WORKERS": "2"},
        timeout=240,  # the hub waits for its services, slow to start on a loaded machine
    )
    yield hub
    hub.stop()


# Two tests per hub: the supervisor restarts a service's workers at most 5 times a
# minute, and each of these hubs loses at most 4 workers of one service.
@pytest.fixture(scope="module")
def first_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    yield from _hub(tmp_path_factory.mktemp("crash-1"))


@pytest.fixture(scope="module")
def second_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    yield from _hub(tmp_path_factory.mktemp("crash-2"))


def _print_log_if_failed(hub: Hub, request: pytest.FixtureRequest) -> Iterator[Hub]:
    start = len(hub.log())
    yield hub
    if failed(request):
        print(hub.log()[start:][-20000:])


@pytest.fixture
def hub_one(first_hub: Hub, request: pytest.FixtureRequest) -> Iterator[Hub]:
    yield from _print_log_if_failed(first_hub, request)


@pytest.fixture
def hub_two(second_hub: Hub, request: pytest.FixtureRequest) -> Iterator[Hub]:
    yield from _print_log_if_failed(second_hub, request)


def test_a_killed_gateway_worker_refuses_nothing_and_loses_no_job(hub_one: Hub) -> None:
    hub = hub_one
    token = hub.user_token("alice")
    url = f"{hub.url}services/qpu/api/jobs"
    job = {"backend": "aer_simulator", "circuits": [{"qpy": bell_qpy()}], "shots": 64,
           "tags": {"purpose": "testing"}}

    def submit() -> requests.Response:
        # a new connection each time, as the proxy opens them: any worker may answer
        return requests.post(url, json=job, headers={"Authorization": f"token {token}"},
                             timeout=60)

    hub.wait_for(lambda: submit().status_code == 201, timeout=120, what="the gateway")
    supervisor = service_process(hub, "hub_ext.qpu")
    workers = children(supervisor)
    assert len(workers) == 2, workers
    os.kill(workers[0], signal.SIGKILL)
    hub.wait_for(lambda: gone(workers[0]), timeout=10, what="the killed worker's exit")
    # The proxy keeps connections to the workers open between requests; the first
    # requests after the crash may go out on ones the dead worker held (the proxy's own
    # 503 page, "read ECONNRESET": one per connection it held, a few at most). Every
    # request after them must be accepted: the other worker serves while the supervisor
    # replaces the dead one.
    statuses = [(r.status_code, r.json() if r.status_code == 201 else r.text[:200])
                for r in (submit() for _ in range(20))]
    held = 0
    while held < len(statuses) and statuses[held][0] == 503 and "<html" in statuses[held][1]:
        held += 1
    assert held <= 3, statuses[:held]
    rest = statuses[held:]
    assert [code for code, _ in rest] == [201] * len(rest), rest
    accepted = [body["job_id"] for code, body in statuses if code == 201]
    hub.wait_for(lambda: len(children(supervisor)) == 2, timeout=30, what="a new worker")
    assert workers[0] not in children(supervisor) and workers[1] in children(supervisor)
    assert service_process(hub, "hub_ext.qpu") == supervisor, "the hub restarted the service"

    def state(job_id: str) -> str:
        r = requests.get(f"{url}/{job_id}", headers={"Authorization": f"token {token}"},
                         timeout=60)
        assert r.status_code == 200, r.text[:300]
        return str(r.json()["state"])

    for job_id in accepted:
        hub.wait_for(lambda j=job_id: state(j) in ("DONE", "FAILED"), timeout=180,
                     what=f"job {job_id}")
        assert state(job_id) == "DONE"
    assert f"(pid {workers[0]}) died (signal SIGKILL); starting it again" in hub.log()


def test_a_killed_audit_page_worker_is_replaced_and_keeps_auditors_signed_in(hub_one: Hub) -> None:
    hub = hub_one
    page = f"{hub.url}services/audit/"
    session = login(hub, "auditor")
    hub.wait_for(lambda: session.get(page, timeout=30).status_code == 200, timeout=120,
                 what="the auditor page")
    supervisor = service_process(hub, "hub_ext.audit.web")
    (worker,) = children(supervisor)
    os.kill(worker, signal.SIGKILL)
    hub.wait_for(lambda: gone(worker), timeout=10, what="the killed worker's exit")
    hub.wait_for(lambda: len(children(supervisor)) == 1 and worker not in children(supervisor),
                 timeout=30, what="a new audit page worker")
    # the page's own session cookie still opens it: no new sign-in through the hub
    r = session.get(page, timeout=30, allow_redirects=False)
    if r.status_code == 503:  # sent on a connection the dead worker held (see above)
        r = session.get(page, timeout=30, allow_redirects=False)
    assert r.status_code == 200, (r.status_code, r.headers.get("Location"))
    assert "audit" in r.text.lower()
    assert service_process(hub, "hub_ext.audit.web") == supervisor


def scrape(hub: Hub) -> dict[str, float]:
    """The gateway's metrics (the harness token holds ``read:metrics``): sample -> value."""
    r = requests.get(f"{hub.url}services/qpu/metrics", timeout=60,
                     headers={"Authorization": f"token {hub.token}"})
    assert r.status_code == 200, r.text[:300]
    samples = {}
    for line in r.text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def test_the_gateway_metrics_sum_every_worker_even_one_that_died(hub_two: Hub) -> None:
    hub = hub_two
    submitted = 'qustody_audit_records_total{reason="",type="qpu-job-submitted"}'
    token = hub.user_token("alice")
    job = {"backend": "aer_simulator", "circuits": [{"qpy": bell_qpy()}], "shots": 8,
           "tags": {"purpose": "testing"}}
    before = scrape(hub).get(submitted, 0.0)
    for _ in range(12):
        r = requests.post(f"{hub.url}services/qpu/api/jobs", json=job, timeout=60,
                          headers={"Authorization": f"token {token}"})
        assert r.status_code == 201, r.text[:300]
    # the gateway records a job after answering 201: wait until all 12 are counted, then
    # whichever worker answers a scrape (the proxy's pooled connections go to one or the
    # other) counts every worker's submissions
    hub.wait_for(lambda: scrape(hub).get(submitted) == before + 12, timeout=30,
                 what="the 12 submissions counted")
    assert {scrape(hub).get(submitted) for _ in range(10)} == {before + 12}
    supervisor = service_process(hub, "hub_ext.qpu")
    workers = children(supervisor)
    for pid in workers:  # each dies in turn; what it counted stays counted
        os.kill(pid, signal.SIGKILL)
        hub.wait_for(lambda p=pid: gone(p) and len(children(supervisor)) == 2
                     and p not in children(supervisor), timeout=30, what="a new worker")
    hub.wait_for(lambda: scrape_or_none(hub) is not None, timeout=30, what="the metrics")
    assert {scrape(hub).get(submitted) for _ in range(10)} == {before + 12}


def scrape_or_none(hub: Hub) -> dict[str, float] | None:
    try:
        return scrape(hub)
    except AssertionError:  # the proxy's 503 on a connection a dead worker held
        return None


def test_a_result_being_waited_for_survives_the_crash_of_the_worker_holding_it(
    hub_two: Hub,
) -> None:
    """``job.result()`` long-polls the gateway (30 s per request): the worker holding that
    request dies, and the kernel's client asks again instead of failing the notebook."""
    hub = hub_two
    from qiskit import QuantumCircuit

    from server_ext.qpu import GatewayClient, GatewayError, gateway_backend

    url = f"{hub.url}services/qpu/"
    admin = GatewayClient(url, hub.user_token("admin"))
    pause = {"reason": "test: hold the job while workers die"}
    admin.call("POST", "api/admin/backends/aer_simulator/pause", json_body=pause)
    try:
        backend = gateway_backend("aer_simulator", url=url, token=hub.user_token("alice"))
        qc = QuantumCircuit(2)
        qc.h(0)
        qc.cx(0, 1)
        qc.measure_all()
        job = backend.run(qc, shots=100, purpose="testing")
        assert job.gateway_status()["state"] == "HELD"
        outcome: list[object] = []
        waiter = threading.Thread(target=lambda: outcome.append(_result_or_error(job)))
        waiter.start()
        supervisor = service_process(hub, "hub_ext.qpu")
        for pid in children(supervisor):  # one of them holds the long poll
            time.sleep(1)  # the poll has reached a worker
            os.kill(pid, signal.SIGKILL)
            hub.wait_for(lambda p=pid: gone(p) and len(children(supervisor)) == 2
                         and p not in children(supervisor), timeout=30, what="a new worker")
        assert waiter.is_alive() and not outcome, outcome  # still waiting, not failed
    finally:
        admin.call("POST", "api/admin/backends/aer_simulator/resume",
                   json_body={"reason": "test: done"})
    waiter.join(timeout=120)
    (result,) = outcome
    assert not isinstance(result, GatewayError), result
    assert sum(result.get_counts().values()) == 100  # type: ignore[attr-defined]


def _result_or_error(job: Any) -> object:
    from server_ext.qpu import GatewayError

    try:
        return job.result(timeout=120)
    except GatewayError as e:
        return e
