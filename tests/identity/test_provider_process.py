"""The IdP launcher never waits forever for a provider that hangs before it is ready."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hub_ext.demo import provider_process
from hub_ext.demo.provider_process import ProviderError, start_provider

_SILENT = "import time; time.sleep(60)"
_EXITS = "import sys; print('boom', file=sys.stderr); sys.exit(3)"


def _popen(code: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
        text=True,
    )


def test_a_silent_process_is_given_up_on_after_the_timeout() -> None:
    process = _popen(_SILENT)
    try:
        started = time.monotonic()
        assert provider_process._first_line(process, 0.5) == ""
        assert time.monotonic() - started < 10
        assert process.poll() is None  # still running: the caller decides what to do
    finally:
        process.kill()
        process.communicate()


def test_the_first_line_is_read_whole_and_an_exit_ends_the_wait() -> None:
    process = _popen("print('READY http://127.0.0.1:1/ extra'); print('more')")
    assert provider_process._first_line(process, 30) == "READY http://127.0.0.1:1/ extra"
    process.communicate()
    exits = _popen(_EXITS)
    assert provider_process._first_line(exits, 30) == ""
    assert exits.returncode == 3
    exits.communicate()


def _fake_node(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, code: str) -> Path:
    """A stand-in for node that runs ``code`` (a hang or a crash the real provider cannot
    be made to produce on demand); counts its starts in ``starts``."""
    starts = tmp_path / "starts"
    script = tmp_path / "node"
    script.write_text(
        f"#!{sys.executable}\n"
        f"open({str(starts)!r}, 'a').write('x')\n"
        f"{code}\n"
    )
    script.chmod(0o755)
    monkeypatch.setattr(provider_process, "node", lambda: str(script))
    return starts


def test_a_provider_that_hangs_is_stopped_started_again_once_then_reported(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    starts = _fake_node(monkeypatch, tmp_path, _SILENT)
    started = time.monotonic()
    with pytest.raises(ProviderError) as raised:
        start_provider({}, tmp_path / "idp", timeout=2)
    assert time.monotonic() - started < 60
    assert starts.read_text() == "xx"
    message = str(raised.value)
    assert "start 1: it printed nothing for 2 s" in message
    assert "/ then start 2: it printed nothing for 2 s" in message
    # what the process was doing, read from /proc, for whoever reads the error
    assert re.search(r"state [A-Z] \(\w+\), waiting in \S+", message), message


def test_a_provider_that_prints_something_else_is_reported_with_what_it_printed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    starts = _fake_node(monkeypatch, tmp_path, "print('listening soon', flush=True)\n" + _SILENT)
    with pytest.raises(ProviderError, match="printed 'listening soon' instead of its ready line"):
        start_provider({}, tmp_path / "idp", timeout=30)
    assert starts.read_text() == "x"  # a provider that talks is not silent: no second start


def test_a_provider_that_exits_is_reported_with_its_log_and_not_restarted(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    starts = _fake_node(monkeypatch, tmp_path, _EXITS)
    with pytest.raises(ProviderError, match="exited with status 3") as raised:
        start_provider({}, tmp_path / "idp", timeout=30)
    assert starts.read_text() == "x"
    assert "boom" in str(raised.value)


def test_signing_keys_are_made_without_the_node_deadlock_under_heavy_collection() -> None:
    """The hang seen in CI: exporting generateKeyPairSync's own KeyObject as a JWK
    deadlocked Node 20 when a collection ran during the export (gdb: the key job's
    destructor waiting on the mutex the export held). Under a 1 MB young generation the
    old way hung within 2,000 keys, every time; tests/idp/keys.mjs must make 3,000."""
    keys = provider_process.IDP_DIR / "keys.mjs"
    script = (
        f"const {{ newSigningKey }} = await import({json.dumps(keys.as_uri())});\n"
        "const kept = [];\n"
        "for (let i = 0; i < 3000; i++) {\n"
        "  const jwk = newSigningKey(512);\n"
        "  if (!jwk.n || !jwk.d || jwk.alg !== 'RS256' || !jwk.kid) throw new Error('bad key');\n"
        "  kept.push('x'.repeat(100 + (i % 50)));\n"
        "  if (kept.length > 2000) kept.length = 0;\n"
        "}\n"
        "console.log('made 3000');\n"
    )
    out = subprocess.run(
        [provider_process.node(), "--max-semi-space-size=1", "--input-type=module", "-e",
         script],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "made 3000"
