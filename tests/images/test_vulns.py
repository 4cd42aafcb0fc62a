"""The vulnerability report of the image's hash lock (images/build.py vulns): pip-audit's
findings summarised, and an advisory service it cannot use reported, never raised.

pip-audit runs for real against an OSV API served on loopback by the test (its
``--osv-url``): no traffic leaves the machine, and no test depends on today's advisories.
"""

from __future__ import annotations

import importlib.util
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("qustody_image_build", ROOT / "images" / "build.py")
assert _spec is not None and _spec.loader is not None
build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build)

LOCKED = build.locked_wheels()
VICTIM = "urllib3" if "urllib3" in LOCKED else sorted(LOCKED)[0]


def test_summary_of_findings_and_of_packages_not_checked():
    data = {"dependencies": [
        {"name": "a", "version": "1.0", "vulns": [
            {"id": "PYSEC-1", "fix_versions": ["1.1", "2.0"], "aliases": ["CVE-1"],
             "description": "Bad\nthing."},
            {"id": "GHSA-2", "fix_versions": [], "aliases": [], "description": ""},
        ]},
        {"name": "b", "version": "2.0", "vulns": []},
        {"name": "c", "skip_reason": "Dependency not found on PyPI and could not be audited"},
    ]}
    summary, lines = build.summarize_audit(data, "pypi")
    assert summary == ("2 of 3 locked packages checked: 2 known vulnerabilities in 1 packages "
                       "(1 could not be checked, listed in the report)")
    assert lines == [
        "VULNERABLE a==1.0 PYSEC-1 (CVE-1); fixed in: 1.1, 2.0",
        "    Bad thing.",
        "VULNERABLE a==1.0 GHSA-2; fixed in: no fixed version",
        "NOT CHECKED c: Dependency not found on PyPI and could not be audited",
    ]
    clean = {"dependencies": [{"name": "b", "version": "2.0", "vulns": []}]}
    assert build.summarize_audit(clean, "pypi")[0] == (
        "1 of 1 locked packages checked: no known vulnerabilities"
    )


def test_an_index_without_per_version_json_is_could_not_check():
    """What this machine's PyPI proxy gives: every per-version JSON 404s."""
    data = {"dependencies": [
        {"name": n, "skip_reason": f"Dependency not found on PyPI and could not be audited: {n}"}
        for n in ("a", "b")
    ]}
    summary, lines = build.summarize_audit(data, "pypi")
    assert summary.startswith("could not check: PyPI answered 'not found' for all 2 locked")
    assert len(lines) == 2


class OSV(BaseHTTPRequestHandler):
    """POST /v1/query: one advisory for VICTIM at its locked version, none for the rest."""

    queries: list[dict[str, Any]] = []  # noqa: RUF012

    def do_POST(self) -> None:
        query = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.queries.append(query)
        body: dict[str, Any] = {}
        if query["package"]["name"] == VICTIM and query["version"] == LOCKED[VICTIM][0]:
            body = {"vulns": [{
                "id": "PYSEC-0000-1", "aliases": ["CVE-0000-0001"],
                "summary": "A made-up advisory for the test",
                "affected": [{"package": {"name": VICTIM, "ecosystem": "PyPI"}, "ranges": [
                    {"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "999.0"}]},
                ]}],
            }]}
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def report_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(build, "BUILD", tmp_path)
    monkeypatch.setattr(build, "VULN_REPORT", tmp_path / "vulnerabilities.txt")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    return tmp_path


@pytest.fixture
def osv() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), OSV)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    OSV.queries = []
    yield f"http://127.0.0.1:{server.server_address[1]}/v1/query"
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.mark.timeout(300)
def test_pip_audit_reads_the_lock_and_the_report_names_what_it_found(report_dir, osv):
    summary = build.vulnerability_report(service="osv", osv_url=osv)
    n = len(LOCKED)
    assert summary == (f"{n} of {n} locked packages checked: "
                       "1 known vulnerabilities in 1 packages")
    assert {q["package"]["name"] for q in OSV.queries} == set(LOCKED)  # the lock, no more
    text = (report_dir / "vulnerabilities.txt").read_text()
    assert f"summary: {summary}\n" in text
    assert (f"VULNERABLE {VICTIM}=={LOCKED[VICTIM][0]} PYSEC-0000-1 (CVE-0000-0001); "
            "fixed in: 999.0") in text
    assert "A made-up advisory for the test" in text


@pytest.mark.timeout(300)
def test_an_unreachable_advisory_service_is_reported_not_raised(report_dir):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    summary = build.vulnerability_report(service="osv", osv_url=f"http://127.0.0.1:{port}/v1/query")
    assert summary.startswith("could not check: pip-audit failed (exit 1): ")
    assert "Connection refused" in summary or "ConnectionError" in summary
    assert f"summary: {summary}" in (report_dir / "vulnerabilities.txt").read_text()
