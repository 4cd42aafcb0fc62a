"""Nothing the gateway starts outlives it: fork servers, sandbox and parse workers, trackers.

The gateway runs in its own session (``start_new_session``); every process it starts,
directly or through multiprocessing's fork server, stays in that session. After the
gateway (or its supervisor) is stopped or killed, the session must empty: an orphaned
fork server holds Qiskit and Aer (hundreds of MB) for as long as the host runs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import pytest
import requests
from conftest import launch
from waiting import wait_for

from hub_ext.qpu.handlers import SCOPE_METRICS

FORKSERVER = "multiprocessing.forkserver import main"


def session(sid: int) -> dict[int, tuple[int, str]]:
    """Live (not zombie) processes of session ``sid``: pid -> (parent pid, command line)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:  # exited meanwhile
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            found[int(entry.name)] = (int(fields[1]), cmdline)
    return found


def fork_servers_with_workers(sid: int, count: int) -> bool:
    """``count`` fork servers in the session, each with its sandbox and parse workers."""
    procs = session(sid)
    forked = {pid for pid, (_, cmd) in procs.items() if FORKSERVER in cmd}
    servers = [pid for pid in forked if procs[pid][0] not in forked]
    workers = [pid for pid in forked if procs[pid][0] in forked]
    # 2 lanes of aer_simulator, 1 of aer_mps, 1 of fake_hw (all sandboxed), 1 parse worker
    return len(servers) == count and len(workers) >= 5 * count


@pytest.mark.parametrize(("workers", "sig"), [
    (1, signal.SIGKILL), (2, signal.SIGKILL), (2, signal.SIGTERM),
], ids=["gateway-killed", "supervisor-killed", "supervisor-stopped"])
def test_no_process_outlives_the_gateway(hub, tmp_path, workers, sig):
    gw = launch(hub, tmp_path / "gw", f"sqlite:///{tmp_path / 'qpu.sqlite'}",
                workers=workers, warm_up="start").start()
    assert gw.process is not None
    sid = gw.process.pid
    try:
        wait_for(lambda: fork_servers_with_workers(sid, workers), 120, 0.2,
                 "every gateway process's fork server and workers")
        os.kill(sid, sig)  # the gateway (or supervisor) only, not its process group
        gw.process.wait(60)
        wait_for(lambda: not session(sid), 60, 0.2, "the gateway's processes to exit")
    finally:
        for pid in session(sid):  # whatever the test found left over: not for the next one
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_the_workers_start_at_the_first_request_and_not_before(hub, tmp_path):
    """By default (``warm_up = "first-request"``) a gateway nobody uses starts no fork
    server: not when it starts, not for the health check or a metrics scrape. The first
    API request starts the sandbox and parse workers, and a job then runs on them."""
    gw = launch(hub, tmp_path / "gw", f"sqlite:///{tmp_path / 'qpu.sqlite'}").start()
    assert gw.process is not None
    sid = gw.process.pid
    try:
        assert requests.get(gw.url + "api/health", timeout=30).status_code == 200
        scraper = hub.add(f"scraper-{sid}", [SCOPE_METRICS])
        scrape = requests.get(gw.url + "metrics", headers={"Authorization": f"token {scraper}"},
                              timeout=30)
        assert scrape.status_code == 200, scrape.text[:300]
        time.sleep(2)  # what a warm-up at start would have started by now
        assert not [cmd for _, cmd in session(sid).values() if FORKSERVER in cmd]

        status, backends = gw.call("alice", "GET", "api/backends")
        assert status == 200, backends
        wait_for(lambda: fork_servers_with_workers(sid, 1), 120, 0.2,
                 "the fork server and workers after the first request")
        status, job = gw.submit("alice")
        assert status == 201, job
        assert gw.wait_final("alice", job["job_id"])["state"] == "DONE"
    finally:
        gw.stop()
