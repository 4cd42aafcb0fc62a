"""Serve the gateway over HTTP: ``python -m hub_ext.qpu`` (one process, or ``workers``
processes sharing the port), and ``python -m hub_ext.qpu export`` (provenance as JSON
lines). The gateway's operations are in ``app.py``, its REST API in ``handlers.py``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys

from tornado import httpserver, netutil, web

from ..supervisor import Supervisor, hold_port
from . import handlers, metrics
from .app import QpuGateway
from .store import Store, StoreError


def make_app(gateway: QpuGateway) -> web.Application:
    return web.Application(
        handlers.routes(gateway, gateway.base_url), xsrf_cookies=False,
        compress_response=False, log_function=handlers.log_request,
    )


async def serve(gateway: QpuGateway, sockets: list[socket.socket] | None = None) -> None:
    """Run one gateway process until SIGTERM or SIGINT (SIGHUP reloads the policy)."""
    gateway.open()
    server = httpserver.HTTPServer(
        make_app(gateway), max_body_size=gateway.max_payload_bytes, xheaders=False
    )
    if sockets is None:
        server.listen(gateway.port, gateway.ip)
    else:
        server.add_sockets(sockets)
    gateway.runner.start()
    loop = asyncio.get_running_loop()
    if gateway.warm_up == "start":
        gateway.warm()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, gateway.reload_policy, True)
    reload_task = loop.create_task(gateway.reload_loop())
    gateway.log.info(
        "QPU gateway %s listening on http://%s:%d%s (backends: %s; database: %s)",
        gateway.instance_name, gateway.ip, gateway.port, gateway.base_url,
        ", ".join(gateway.drivers) or "none",
        "sqlite" if gateway.store.is_sqlite else "postgresql",
    )
    await stop.wait()
    gateway.log.info("QPU gateway stopping")
    reload_task.cancel()
    server.stop()
    await gateway.close()


def start(gateway: QpuGateway) -> None:
    """Serve in this process, or fork ``QpuGateway.workers`` processes on one port."""
    if gateway.workers > 1 and metrics.multiprocess_dir() is None:
        gateway.log.warning(
            "QPU gateway: %d workers without %s: each scrape of /metrics shows the counts of "
            "the one worker that answers (the hub-managed gateway has it set; see "
            "docs/metrics.md)", gateway.workers, metrics.MULTIPROCESS_ENV)
    if gateway.workers == 1:
        asyncio.run(serve(gateway))
        return
    # Before forking: the schema once (not raced by the workers), then the socket all
    # workers accept on. No thread, engine or event loop exists yet in this process.
    store = Store(gateway.db_url, sqlite_synchronous=gateway.sqlite_synchronous)
    try:
        store.create(gateway.backends)
    except StoreError as e:
        gateway.exit_with(str(e))
    finally:
        store.dispose()
    # Each worker listens on its own SO_REUSEPORT socket, so the kernel spreads new
    # connections evenly (one shared socket goes mostly to whichever worker is idle
    # first), and a worker's crash leaves the others accepting.
    try:
        _holder, port = hold_port(gateway.ip, gateway.port)
    except OSError as e:
        gateway.exit_with(f"cannot listen on {gateway.ip}:{gateway.port}: {e.strerror}")
    base = gateway.instance_name

    def worker(index: int) -> int:
        gateway.instance_name = f"{base}/w{index}"
        asyncio.run(serve(gateway, netutil.bind_sockets(port, gateway.ip, reuse_port=True)))
        return 0

    gateway.log.info("QPU gateway: starting %d workers", gateway.workers)
    sys.exit(Supervisor(gateway.workers, worker, gateway.log, "QPU gateway").run())


def export_main(argv: list[str]) -> int:
    """``python -m hub_ext.qpu export --db-url URL [--since T]``: provenance as JSON lines."""
    import argparse

    from . import provenance

    parser = argparse.ArgumentParser(prog="python -m hub_ext.qpu export")
    parser.add_argument("--db-url", required=True)
    parser.add_argument("--since", type=float, default=0.0)
    args = parser.parse_args(argv)
    store = Store(args.db_url)
    for line in provenance.jsonl(store.export(args.since)):
        sys.stdout.write(line)
    store.dispose()
    return 0


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["export"]:
        sys.exit(export_main(argv[1:]))
    logging.basicConfig(level=logging.INFO)
    gateway = QpuGateway.instance()
    gateway.initialize(argv)
    try:
        start(gateway)
        status: int = 0
    except SystemExit as e:
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
        status = e.code if isinstance(e.code, int) else int(e.code is not None)
    # What must reach disk is closed (the store, the audit log). The interpreter's own
    # teardown of Qiskit, SciPy and SQLAlchemy takes seconds and protects nothing; every
    # hub stop waits for it. Workers end with the gateway (lifeline.py).
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


__all__ = ["main", "make_app", "serve", "start"]
