"""Qustody's metrics on the hub's own /hub/metrics and on its qustody service's
/services/qustody/metrics (which records the servers' guard reports), scraped by a real
Prometheus (Debian's ``prometheus``) with a token that holds only ``read:metrics``.

What an operator relies on: the guard's reports from user servers and the hub's audit
records show up as counters by event type, reason and detector rule; no label carries a
user name, path or value; a user's server that invents detector names cannot grow the
metrics without bound.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import textwrap
from collections.abc import Iterator

import pytest
import requests
from audit_hub import LOCAL_EXTRA, local_env, server_token, spawn
from hubtest import Hub, failed, free_port, launch_hub
from waiting import wait_for

from hub_ext.audit.metrics import KNOWN_DETECTORS

SCRAPER_TOKEN = secrets.token_hex(32)
METRICS_EXTRA = f"""
c.JupyterHub.services.append({{"name": "prometheus", "api_token": "{SCRAPER_TOKEN}"}})
c.JupyterHub.load_roles.append(
    {{"name": "metrics-reader", "scopes": ["read:metrics"], "services": ["prometheus"]}}
)
"""


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest):
    base = tmp_path_factory.mktemp("metrics")
    hub = launch_hub(
        base / "hub",
        extra=LOCAL_EXTRA.format(home=base / "home") + METRICS_EXTRA,
        env=local_env(),
        timeout=180,
    )
    spawn(hub, "alice")
    yield hub
    hub.stop()
    if failed(request):
        print(hub.log()[-20000:])


@pytest.fixture(scope="module")
def prometheus(hub: Hub, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Prometheus scraping the hub every second; yields its API URL."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is not installed: run `make system-deps` (as root)")
    base = tmp_path_factory.mktemp("prometheus")
    (base / "token").write_text(SCRAPER_TOKEN)
    hub_host = hub.url.split("//", 1)[1].rstrip("/")
    (base / "prometheus.yml").write_text(textwrap.dedent(f"""
        global:
          scrape_interval: 1s
        scrape_configs:
          - job_name: jupyterhub
            metrics_path: /hub/metrics
            authorization:
              credentials_file: {base / "token"}
            static_configs:
              - targets: ["{hub_host}"]
          - job_name: qustody
            metrics_path: /services/qustody/metrics
            authorization:
              credentials_file: {base / "token"}
            static_configs:
              - targets: ["{hub_host}"]
    """))
    port = free_port()
    log = (base / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [binary, f"--config.file={base / 'prometheus.yml'}",
         f"--storage.tsdb.path={base / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/api/v1/"
    try:
        wait_for(lambda: _up(url), timeout=60, what="Prometheus scraping the hub")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def _up(url: str) -> bool:
    try:
        return (_query(url, 'up{job="jupyterhub"}') == [1.0]
                and _query(url, 'up{job="qustody"}') == [1.0])
    except requests.RequestException:
        return False


def _query(url: str, promql: str) -> list[float]:
    r = requests.get(url + "query", params={"query": promql}, timeout=10)
    r.raise_for_status()
    return sorted(float(s["value"][1]) for s in r.json()["data"]["result"])


def _report(hub: Hub, token: str, detectors: list[str]) -> None:
    event = {"type": "save-refused",
             "data": {"path": "work/a.ipynb", "detectors": detectors, "findings": 1}}
    r = requests.post(f"{hub.url}services/qustody/api/audit/events", data=json.dumps(event),
                      headers={"Authorization": f"token {token}",
                               "Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 201, r.text


def test_guard_reports_and_audit_records_reach_prometheus(hub, prometheus):
    token = server_token(hub, "alice")
    _report(hub, token, ["github-token", "aws-access-key-id"])
    _report(hub, token, ["github-token"])
    wait_for(
        lambda: _query(prometheus, 'qustody_guard_detections_total{event="save-refused",'
                                   'detector="github-token"}') == [2.0],
        timeout=30, what="the guard's detections in Prometheus",
    )
    assert _query(prometheus, 'qustody_guard_detections_total{event="save-refused",'
                              'detector="aws-access-key-id"}') == [1.0]
    assert _query(prometheus, 'qustody_audit_records_total{type="save-refused"}') == [2.0]
    # the hub's own records: alice's spawn (the reports are the qustody service's)
    assert _query(prometheus, 'qustody_audit_records_total{job="jupyterhub",'
                              'type="server-started"}') == [1.0]
    assert _query(prometheus, "qustody_audit_write_seconds_count") != []


def test_metrics_need_the_scope_and_name_no_person(hub, prometheus):
    # the scope, as for JupyterHub's own metrics: alice's token cannot read them
    r = requests.get(f"{hub.url}hub/metrics", timeout=30,
                     headers={"Authorization": f"token {hub.user_token('alice')}"})
    assert r.status_code == 403
    r = requests.get(f"{hub.url}hub/metrics", timeout=30,
                     headers={"Authorization": f"Bearer {SCRAPER_TOKEN}"})
    assert r.status_code == 200
    ours = [line for line in r.text.splitlines() if line.startswith("qustody_")]
    assert ours
    for word in ("alice", "work/a.ipynb", "harness"):
        assert not [line for line in ours if word in line], word
    r = requests.get(f"{hub.url}services/qustody/metrics", timeout=30,
                     headers={"Authorization": f"token {hub.user_token('alice')}"})
    assert r.status_code == 403
    r = requests.get(f"{hub.url}services/qustody/metrics", timeout=30,
                     headers={"Authorization": f"Bearer {SCRAPER_TOKEN}"})
    assert r.status_code == 200 and "qustody_guard_detections_total" in r.text
    assert "alice" not in r.text and "work/a.ipynb" not in r.text


def test_invented_detector_names_cannot_grow_the_hubs_metrics(hub, prometheus):
    """A hostile server reports 320 made-up rules (names it could fill with anything):
    they count once per report as ``other``; only the guard's own rule ids are labels."""
    token = server_token(hub, "alice")
    before = _query(prometheus, 'sum(qustody_guard_detections_total{detector="other"})')
    for batch in range(5):
        _report(hub, token, [f"made-up-{batch}-{i}" for i in range(64)])
    wait_for(
        lambda: _query(prometheus, 'sum(qustody_guard_detections_total{detector="other"})')
        == [(before or [0.0])[0] + 5],
        timeout=30, what="the overflow label, once per report",
    )
    r = requests.get(prometheus + "label/detector/values", timeout=10)
    labels = set(r.json()["data"])
    assert labels <= KNOWN_DETECTORS | {"other"}, labels - KNOWN_DETECTORS
