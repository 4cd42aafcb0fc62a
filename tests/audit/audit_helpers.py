"""Helpers for the audit tests (importable: tests/audit is on sys.path for its tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hub_ext.audit import schema

WRITER = Path(__file__).with_name("audit_writer.py")


class Clock:
    """A clock tests move by hand."""

    def __init__(self) -> None:
        self.now = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def example(type_name: str) -> dict:
    """A valid event of this type, from the examples in its schema."""
    return schema.get(type_name).examples[0]


def qustody(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``qustody audit ARGS...`` as an auditor runs it, in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "server_ext.cli", "audit", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def start_writer(
    log: Any, key_file: Any, count: int, *extra: str, tag: str = "w", prefix: tuple = ()
) -> subprocess.Popen[str]:
    """audit_writer.py in its own process (see its docstring for ``extra`` options)."""
    args = [*prefix, sys.executable, str(WRITER), str(log), str(key_file), tag, str(count)]
    return subprocess.Popen(
        [*args, *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def writer_result(proc: subprocess.Popen[str]) -> tuple[int, Any]:
    """Its exit code and its JSON line ({"written": n[, "error": message]}), or stderr."""
    out, err = proc.communicate(timeout=240)
    return proc.returncode, json.loads(out) if out else err


def run_writer(log: Any, key_file: Any, count: int, *extra: str, **kwargs: Any) -> tuple[int, Any]:
    return writer_result(start_writer(log, key_file, count, *extra, **kwargs))
