"""A full disk or an unwritable log fails the emitting action closed, with a clear error —
or, for types configured to fail open, is logged and counted — and never damages the chain."""

from __future__ import annotations

import os
import shutil

import pytest
from audit_helpers import example
from audit_helpers import run_writer as writer

from hub_ext.audit import AuditWriteError
from hub_ext.audit.verify import verify


def test_disk_full_fails_closed_with_a_clear_error(make_log, log_path):
    log_path.parent.mkdir()
    log_path.symlink_to("/dev/full")  # every write: ENOSPC
    audit = make_log()
    with pytest.raises(AuditWriteError) as info:
        audit.emit("login", example("login"))
    assert info.value.message == (
        f"audit log {log_path}: cannot write the log (ENOSPC: No space left on device). "
        "The event was not recorded."
    )


def test_fail_open_types_go_on_when_the_disk_is_full(make_log, log_path, caplog):
    log_path.parent.mkdir()
    log_path.symlink_to("/dev/full")
    audit = make_log(fail_closed_types=["login", "break-glass"])
    assert audit.emit("server-culled", example("server-culled")) is None
    assert audit.dropped == 1
    assert "audit event server-culled was not recorded" in caplog.text and "ENOSPC" in caplog.text
    with pytest.raises(AuditWriteError):
        audit.emit("break-glass", example("break-glass"))


def test_filling_disk_leaves_a_valid_log_and_writing_resumes(log_path, key_file, key, records):
    code, result = writer(log_path, key_file, 10_000, "--fsize-limit", "50000")
    assert code == 3, result
    # the last write either stops short (a partial record) or fails outright (EFBIG)
    assert "cannot write the log (" in result["error"]
    assert "EFBIG" in result["error"] or "bytes written" in result["error"]
    assert result["error"].endswith("The event was not recorded.")
    written = result["written"]
    assert 50 < written < 10_000
    # the record that did not fit was removed: what is there is whole and verifies
    report = verify(log_path, [key])
    assert report.ok, report.summary()
    assert report.records == written
    assert log_path.read_bytes().endswith(b"\n")
    # space again: the chain continues from where it stopped
    code, result = writer(log_path, key_file, 5)
    assert code == 0 and result == {"written": 5}
    assert verify(log_path, [key]).ok
    assert len(records()) == written + 5


def _unprivileged():
    """Run as root without the power to ignore file permissions (as a real service would)."""
    if os.geteuid() != 0:
        return ()
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root and setpriv (util-linux) is not installed")
    return (setpriv, "--bounding-set=-dac_override,-dac_read_search,-fowner")


def test_unwritable_log_directory_fails_closed(log_path, key_file):
    log_path.parent.mkdir(mode=0o500)
    code, result = writer(log_path, key_file, 1, prefix=_unprivileged())
    assert code == 3, result
    assert result["written"] == 0
    assert "cannot open or lock the log (EACCES: Permission denied)" in result["error"]


def test_read_only_log_files_fail_closed(log_path, key_file, key):
    code, result = writer(log_path, key_file, 3)
    assert code == 0
    for p in log_path.parent.iterdir():
        p.chmod(0o400)
    log_path.parent.chmod(0o500)
    code, result = writer(log_path, key_file, 1, prefix=_unprivileged())
    assert code == 3 and "EACCES" in result["error"]
    assert verify(log_path, [key]).records == 3
