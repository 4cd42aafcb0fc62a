"""Sandbox and parse workers end when the gateway process that started them ends.

The workers are forked by multiprocessing's fork server, not by the gateway, so a
parent-death signal follows the fork server; and the fork server lives as long as any of
its children (each inherits the write end of its "alive" pipe). After a SIGKILL of the
gateway, that cycle kept the fork server, its workers and their resource tracker running
with parent 1, each holding Qiskit and Aer in memory. So each worker watches the gateway
itself through a pidfd and exits with it; the fork server then sees its last child go and
exits, and the resource tracker after it.
"""

from __future__ import annotations

import os
import select
import threading
import time

#: Fallback when pidfds are unavailable (Linux before 5.3): how often to check the gateway.
POLL_SECONDS = 1.0


def follow(pid: int) -> None:
    """End this process when process ``pid`` ends (at once if it already has)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        os._exit(1)
    except (OSError, AttributeError):  # no pidfd here: poll the pid instead
        threading.Thread(target=_poll, args=(pid,), name="qpu-lifeline", daemon=True).start()
        return
    threading.Thread(target=_wait, args=(fd,), name="qpu-lifeline", daemon=True).start()


def _wait(fd: int) -> None:
    select.select([fd], [], [])  # a pidfd turns readable when its process exits
    os._exit(1)


def _poll(pid: int) -> None:
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            os._exit(1)
        except PermissionError:  # the pid was reused by someone else's process
            os._exit(1)
        time.sleep(POLL_SECONDS)


__all__ = ["follow"]
