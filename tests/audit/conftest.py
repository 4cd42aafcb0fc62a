"""Fixtures for the audit log: a key file, a log factory, a controllable clock."""

from __future__ import annotations

import os
import secrets

import pytest
from audit_helpers import Clock

from hub_ext.audit import AuditLog, clock


@pytest.fixture
def key_file(tmp_path):
    path = tmp_path / "keys" / "audit.key"
    path.parent.mkdir(mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32) + "\n")
    return path


@pytest.fixture
def key(key_file):
    return key_file.read_bytes().rstrip()


@pytest.fixture
def log_path(tmp_path):
    return tmp_path / "log" / "audit.jsonl"


@pytest.fixture
def make_log(log_path, key_file):
    """AuditLog factory on the test's log path and key; closes what it made."""
    made: list[AuditLog] = []

    def make(**config):
        config.setdefault("path", str(log_path))
        config.setdefault("key_file", str(key_file))
        audit = AuditLog(**config)
        made.append(audit)
        return audit

    yield make
    for audit in made:
        audit.close()


@pytest.fixture
def audit(make_log):
    return make_log()


@pytest.fixture
def fake_clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr(clock, "now", c)
    return c


@pytest.fixture
def records(log_path):
    """The records in the log's files, oldest first, parsed."""
    import json

    from hub_ext.audit.layout import Layout

    def read():
        out = []
        for p in Layout(log_path).data_files():
            out.extend(json.loads(line) for line in p.read_bytes().splitlines())
        return out

    return read
