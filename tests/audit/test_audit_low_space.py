"""The log on a real, nearly full filesystem (an 8 MiB tmpfs this test mounts as root):
what is refused, what is still recorded, and the audited refusal.

The hub-level behaviour (login refused with its page, stops still working) is tested in
tests/hub/test_audit_disk_full.py."""

from __future__ import annotations

import os
import subprocess

import pytest

from hub_ext.audit import AuditLog, AuditSpaceLow, schema, space

MiB = 1024 * 1024


@pytest.fixture
def small_fs(tmp_path):
    mount = tmp_path / "fs"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


def fill(mount, leave):
    st = os.statvfs(mount)
    filler = mount / "filler.bin"
    filler.write_bytes(b"\0" * (st.f_bavail * st.f_frsize - leave))
    return filler


def example(name):
    return schema.get(name).examples[0]


def test_below_the_threshold_only_low_space_types_are_recorded(small_fs, key_file):
    path = small_fs / "log" / "audit.jsonl"
    audit = AuditLog(path=str(path), key_file=str(key_file), min_free_bytes=4 * MiB)
    now = [0.0]
    assert audit.space is not None
    audit.space.now = lambda: now[0]
    try:
        audit.emit("login", example("login"))
        filler = fill(small_fs, 2 * MiB)
        size = path.stat().st_size
        with pytest.raises(AuditSpaceLow) as e:
            audit.emit("login", {**example("login"), "user": "remy"})
        message = e.value.message
        assert "disk is nearly full" in message and "Admin: free space" in message
        assert str(small_fs) not in message  # users see it: no paths
        # stops and refusals still go in; so does the one audited refusal
        audit.emit("server-stopped", example("server-stopped"))
        audit.emit("login-refused", example("login-refused"))
        with pytest.raises(AuditSpaceLow):
            audit.emit("secret-delivered", example("secret-delivered"))
        from hub_ext.audit.query import Filter, query

        def of(type_name):
            return [h.record for h in query(path, Filter(types=frozenset({type_name})))]

        assert [r["data"]["user"] for r in of("login")] == [example("login")["user"]]
        (low,) = of("audit-space-low")  # the second refusal came within the minute
        assert low["data"]["refused"] == [{"type": "login", "count": 1}]
        assert low["data"]["users"] == ["remy"] and low["data"]["free_bytes"] < 4 * MiB
        assert len(of("server-stopped")) == 1 and len(of("login-refused")) == 1
        assert path.stat().st_size > size
        # a minute later the next refusal records what was refused since
        now[0] += 61
        with pytest.raises(AuditSpaceLow):
            audit.emit("token-issued", example("token-issued"))
        refused = of("audit-space-low")[-1]["data"]["refused"]
        assert {r["type"] for r in refused} == {"secret-delivered", "token-issued"}
        # room again: recorded as resolved, and logins go in
        filler.unlink()
        audit.emit("login", example("login"))
        assert of("audit-space-low")[-1]["data"]["resolved"] is True
        assert len(of("login")) == 2
    finally:
        audit.close()


def test_the_defaults_and_bad_settings(key_file, tmp_path):
    audit = AuditLog(path=str(tmp_path / "a.jsonl"), key_file=str(key_file))
    try:
        assert audit.min_free_bytes == 64 * MiB
        assert set(audit.low_space_types) == set(space.LOW_SPACE_TYPES)
        assert not {"login", "server-spawn-requested", "secret-delivered"} & set(
            audit.low_space_types
        )
    finally:
        audit.close()
    with pytest.raises(Exception, match="min_free_bytes must be 0"):
        AuditLog(path=str(tmp_path / "b.jsonl"), key_file=str(key_file), min_free_bytes=-1)
    with pytest.raises(Exception, match="low_space_types: unknown event types"):
        AuditLog(path=str(tmp_path / "c.jsonl"), key_file=str(key_file), low_space_types=["logout"])
