"""``qustody secrets``: values in through stdin or a file, never out; clear errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

VALUE = "cli-secret-value-5f4e3d2c1b"


def run(state: Path, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "server_ext.cli", "secrets", *args],
        input=stdin,
        capture_output=True,
        env={"QUSTODY_STATE_DIR": str(state), "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    return subprocess.CompletedProcess(
        result.args, result.returncode, result.stdout.decode(), result.stderr.decode()
    )


def test_put_list_rotate_revoke_grant_never_print_values(tmp_path: Path) -> None:
    out = run(tmp_path, "put", "user:alice", "TOKEN", "--class", "dev", stdin=VALUE.encode())
    assert out.returncode == 0 and "version 1 stored" in out.stdout
    f = tmp_path / "v.txt"
    f.write_text("second-value-from-a-file\n")
    out = run(tmp_path, "rotate", "user:alice", "TOKEN", "--file", str(f))
    assert out.returncode == 0 and "version 2" in out.stdout
    assert run(tmp_path, "grant", "course:qc101", "alice", "bob").returncode == 0
    listing = run(tmp_path, "list")
    assert "user:alice" in listing.stdout and "TOKEN" in listing.stdout
    assert "grant: course:qc101 -> bob" in listing.stdout
    assert run(tmp_path, "revoke", "user:alice", "TOKEN").returncode == 0
    assert "revoked" in run(tmp_path, "list", "user:alice").stdout
    for text in (out.stdout, out.stderr, listing.stdout):
        assert VALUE not in text and "second-value" not in text


def test_bad_inputs_exit_2_with_a_message(tmp_path: Path) -> None:
    cases = [
        (("put", "alice", "TOKEN", "--class", "dev"), VALUE.encode(), "not a namespace"),
        (
            ("put", "user:alice", "TOKEN", "--class", "dev"),
            b"\xff\xfe\xfd-binary-junk",
            "not UTF-8",
        ),
        (("put", "user:alice", "TOKEN", "--class", "dev"), b"x" * 70000, "at most 65,536 bytes"),
        (
            ("put", "user:alice", "TOKEN", "--class", "dev", "--file", "/nonexistent"),
            b"",
            "cannot read",
        ),
        (("rotate", "user:nobody", "TOKEN"), VALUE.encode(), "no secret TOKEN in user:nobody"),
        (("grant", "user:alice", "bob"), b"", "belong to their user"),
    ]
    for args, stdin, message in cases:
        out = run(tmp_path, *args, stdin=stdin)
        assert out.returncode == 2, (args, out)
        assert message in out.stderr and "Traceback" not in out.stderr
        assert VALUE not in out.stderr
