"""A separate process that appends audit events (run as a script by the tests).

usage: python audit_writer.py LOG-OR-DB-URL KEY_FILE TAG COUNT [--rotate-bytes N] [--checkpoint-every N]
       [--fsize-limit N] [--start-file PATH] [--batch N] [--pause SECONDS]
With --batch, events go through AuditLog.emit_many N at a time (else one emit each);
--pause sleeps after each write, so that other writers get the lock in between.
Prints one JSON line: {"written": n} or {"written": n, "error": message}; exit 3 on error.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

from hub_ext.audit import AuditLog, AuditWriteError


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("log")
    p.add_argument("key_file")
    p.add_argument("tag")
    p.add_argument("count", type=int)
    p.add_argument("--rotate-bytes", type=int, default=0)
    p.add_argument("--checkpoint-every", type=int, default=0)
    p.add_argument("--fsize-limit", type=int, default=0)
    p.add_argument("--start-file", help="create START.TAG when ready, then wait for START")
    p.add_argument("--batch", type=int, default=0)
    p.add_argument("--pause", type=float, default=0)
    args = p.parse_args()
    where = {"db_url": args.log} if args.log.startswith("postgresql") else {"path": args.log}
    audit = AuditLog(
        **where,
        key_file=args.key_file,
        rotate_bytes=args.rotate_bytes,
        checkpoint_every=args.checkpoint_every,
    )
    if args.fsize_limit:  # a disk that fills up: writes past this size fail with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (args.fsize_limit, args.fsize_limit))
    if args.start_file:  # start together with the other writers
        Path(f"{args.start_file}.{args.tag}").touch()
        deadline = time.monotonic() + 120
        while not os.path.exists(args.start_file) and time.monotonic() < deadline:
            time.sleep(0.001)
    events = [
        (
            "qpu-job-submitted",
            {"user": args.tag, "project": "p", "job_id": f"{args.tag}-{i}", "backend": "aer"},
        )
        for i in range(args.count)
    ]
    size = args.batch or 1
    written = 0
    for start in range(0, args.count, size):
        batch = events[start : start + size]
        try:
            if args.batch:
                audit.emit_many(batch)
            else:
                audit.emit(*batch[0])
        except AuditWriteError as e:
            written += e.written
            print(json.dumps({"written": written, "error": e.message}))
            return 3
        written += len(batch)
        if args.pause:
            time.sleep(args.pause)
    print(json.dumps({"written": written}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
