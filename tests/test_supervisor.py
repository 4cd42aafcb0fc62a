"""hub_ext/supervisor.py ``hold_port``: the port a supervised service keeps while its
workers come and go."""

from __future__ import annotations

import socket

import pytest
from ports import free_port

from hub_ext.supervisor import hold_port


def test_a_port_another_copy_listens_on_is_refused() -> None:
    port = free_port()
    with socket.socket() as other:  # an earlier copy's worker: SO_REUSEPORT, listening
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", port))
        other.listen()
        with pytest.raises(OSError):
            hold_port("127.0.0.1", port)


def test_connections_of_an_earlier_run_in_time_wait_do_not_hold_the_port() -> None:
    port = free_port()
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", port))
        server.listen()
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = server.accept()
        accepted.close()  # the server side closes first: its end waits in TIME_WAIT
        client.close()
    # what a bind without SO_REUSEADDR meets
    with socket.socket() as plain, pytest.raises(OSError):
        plain.bind(("127.0.0.1", port))
    holder, bound = hold_port("127.0.0.1", port)
    assert bound == port
    holder.close()
