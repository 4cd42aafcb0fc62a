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
from pathlib import Path

import pytest
from conftest import launch
from waiting import wait_for

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
                workers=workers).start()
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
