"""The courses API (hub_ext/courses/admin_api.py) on a real hub: an admin's token applies a
course file over HTTP as ``qustody course apply`` does, with a dry run; each change is
audited; everyone else, and every bad input, gets a clear refusal and changes nothing."""

from __future__ import annotations

import hashlib
import json
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import requests

sys.path.append(str(Path(__file__).resolve().parents[1] / "hub"))
from audit_hub import LOCAL_EXTRA, local_env, records
from hubtest import Hub, failed, launch_hub

from hub_ext.courses.admin_api import MAX_BODY
from hub_ext.courses.apply import Change, plan, undo, write
from hub_ext.courses.model import parse_course
from hub_ext.courses.web import MAX_REQUEST_BODY

COURSE = """\
id = "{id}"
title = "Quantum Algorithms"

[term]
start = 2026-09-01T00:00:00Z
end = 2027-06-30T00:00:00Z

[roster]
group = "{id}"
{csv}
[profile]
name = "student"
"""
ROSTER = "username,role\nsam,student\nivan,instructor\n"


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Hub]:
    base = tmp_path_factory.mktemp("courses-api")
    hub = launch_hub(base / "hub", extra=LOCAL_EXTRA.format(home=base / "home"),
                     env=local_env(), timeout=240)
    hub.admin_token = hub.user_token("admin")  # type: ignore[attr-defined]
    yield hub
    hub.stop()
    if failed(request):
        print(hub.log()[-20000:])


def courses_dir(hub: Hub) -> Path:
    return hub.dir / "courses"


def put(hub: Hub, course_id: str, body: Any, token: str | None = None, raw: bytes | None = None,
        content_type: str = "application/json", **params: str) -> requests.Response:
    token = token if token is not None else hub.admin_token  # type: ignore[attr-defined]
    headers = {"Content-Type": content_type}
    if token:
        headers["Authorization"] = f"token {token}"
    return requests.put(f"{hub.url}services/courses/api/admin/courses/{course_id}",
                        data=raw if raw is not None else json.dumps(body), headers=headers,
                        params=params, timeout=60)


def policy_records(hub: Hub, course_id: str) -> list[dict[str, Any]]:
    return [r for r in records(hub, "policy-changed")
            if r["data"]["policy"] == f"courses.{course_id}"]


def test_a_dry_run_says_what_would_change_and_writes_nothing(hub: Hub) -> None:
    r = put(hub, "course-202", {"course": COURSE.format(id="course-202", csv="")}, dry_run="1")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["applied"] is False and body["dry_run"] is True
    assert body["changes"][0] == "new course"
    assert "title = 'Quantum Algorithms'" in body["changes"]
    assert not (courses_dir(hub) / "course-202.toml").exists()
    assert policy_records(hub, "course-202") == []


def test_an_admin_applies_a_course_and_the_change_is_audited(hub: Hub) -> None:
    text = COURSE.format(id="course-202", csv="")
    r = put(hub, "course-202", {"course": text})
    assert r.status_code == 200, r.text
    assert r.json()["applied"] is True
    path = courses_dir(hub) / "course-202.toml"
    assert path.read_text() == text
    (record,) = policy_records(hub, "course-202")
    data = record["data"]
    assert data["actor"] == "admin" and "previous_digest" not in data
    assert data["new_digest"] == "sha256:" + hashlib.sha256(text.encode()).hexdigest()
    assert "new-course" in data["changed_keys"] and "title" in data["changed_keys"]
    # the same file again changes nothing and records nothing
    again = put(hub, "course-202", {"course": text})
    assert again.json() == {"course": "course-202", "changes": [], "applied": False,
                            "dry_run": False}
    assert len(policy_records(hub, "course-202")) == 1
    # a change names what changed, and the digests before and after
    changed = text.replace("Quantum Algorithms", "Quantum Algorithms II")
    r = put(hub, "course-202", {"course": changed})
    assert r.json()["changes"] == ["title: 'Quantum Algorithms' -> 'Quantum Algorithms II'"]
    last = policy_records(hub, "course-202")[-1]["data"]
    assert last["changed_keys"] == ["title"] and last["previous_digest"] == data["new_digest"]
    listing = requests.get(f"{hub.url}services/courses/api/admin/courses", timeout=60,
                           headers={"Authorization": f"token {hub.admin_token}"})  # type: ignore[attr-defined]
    assert listing.status_code == 200, listing.text
    (entry,) = [c for c in listing.json()["courses"] if c.get("id") == "course-202"]
    assert entry["title"] == "Quantum Algorithms II" and entry["file"] == "course-202.toml"
    assert entry["term"]["start"].startswith("2026-09-01")


def test_the_audited_address_is_not_the_one_a_caller_claims(hub: Hub) -> None:
    """X-Real-Ip is anyone's to write (the hub's proxy passes it on): the record keeps the
    address the proxy saw."""
    text = COURSE.format(id="course-212", csv="")
    r = requests.put(f"{hub.url}services/courses/api/admin/courses/course-212",
                     data=json.dumps({"course": text}), timeout=60,
                     headers={"Content-Type": "application/json", "X-Real-Ip": "203.0.113.9",
                              "Authorization": f"token {hub.admin_token}"})  # type: ignore[attr-defined]
    assert r.status_code == 200, r.text
    (record,) = policy_records(hub, "course-212")
    assert record["data"]["ip"] == "127.0.0.1"


def test_a_course_with_a_csv_roster_needs_it_and_gets_both_files(hub: Hub) -> None:
    text = COURSE.format(id="course-303", csv='csv = "course-303.roster.csv"')
    missing = put(hub, "course-303", {"course": text})
    assert missing.status_code == 400
    assert "roster.csv" in missing.json()["message"] and '"roster"' in missing.json()["message"]
    bad = put(hub, "course-303", {"course": text, "roster": "username,role\nsam,professor\n"})
    assert bad.status_code == 400 and "line 2" in bad.json()["message"], bad.text
    r = put(hub, "course-303", {"course": text, "roster": ROSTER})
    assert r.status_code == 200, r.text
    assert "roster.members: 2 from course-303.roster.csv" in r.json()["changes"]
    assert (courses_dir(hub) / "course-303.roster.csv").read_text() == ROSTER
    assert (courses_dir(hub) / "course-303.toml").read_text() == text


@pytest.mark.parametrize(("course_id", "raw", "content_type", "status", "words"), [
    ("course-404", b"{not json", "application/json", 400, "not JSON"),
    ("course-404", b'{"course": "\xff\xfe"}', "application/json", 400, "not UTF-8"),
    ("course-404", b"x" * (MAX_BODY + 1), "application/json", 413, "at most"),
    ("course-404", b'id = "course-404"', "application/toml", 415, "application/json"),
    ("course-404", b'["course"]', "application/json", 400, '"course"'),
    ("course-404", b'{"course": "title = "}', "application/json", 400, "course course-404"),
    ("course-404", json.dumps({"course": COURSE.format(id="course-202", csv="")}).encode(), "application/json",
     400, "PUT it at api/admin/courses/course-202"),
    ("course-404", b'{"course": "", "owner": "x"}', "application/json", 400, "Unknown field"),
    ("Course..", b'{"course": ""}', "application/json", 400, "lowercase"),
])
def test_bad_input_gets_a_clear_error_and_changes_nothing(
    hub: Hub, course_id: str, raw: bytes, content_type: str, status: int, words: str,
) -> None:
    before = sorted(p.name for p in courses_dir(hub).iterdir())
    r = put(hub, course_id, None, raw=raw, content_type=content_type)
    assert r.status_code == status, r.text
    assert words in r.json()["message"], r.json()
    assert str(hub.dir) not in r.text  # no server path in the answer
    assert sorted(p.name for p in courses_dir(hub).iterdir()) == before


def test_a_body_past_the_services_limit_is_refused_before_any_handler_runs(hub: Hub) -> None:
    """tornado's default would buffer 100 MB of each request before the handler (and its
    authentication) runs: past MAX_REQUEST_BODY the service answers at the headers, with
    no token and not a byte of the body sent."""
    code, service = hub.api("GET", "/services/courses")
    assert code == 200, service
    url = urlparse(service["url"])
    head = (f"PUT {service['prefix']}api/admin/courses/course-808 HTTP/1.1\r\n"
            f"Host: {url.netloc}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {MAX_REQUEST_BODY + 1}\r\n\r\n")
    with socket.create_connection((url.hostname, url.port), timeout=20) as conn:
        conn.sendall(head.encode())
        reply = conn.recv(4096)
    assert reply.startswith(b"HTTP/1.1 400 "), reply
    assert not (courses_dir(hub) / "course-808.toml").exists()


def test_only_a_token_with_the_admin_scope_changes_courses(hub: Hub) -> None:
    body = {"course": COURSE.format(id="course-505", csv="")}
    alice = put(hub, "course-505", body, token=hub.user_token("alice"))
    assert alice.status_code == 403 and "custom:courses:admin" in alice.json()["message"]
    nobody = put(hub, "course-505", body, token="")
    assert nobody.status_code == 403 and "Authorization: token" in nobody.json()["message"]
    listing = requests.get(f"{hub.url}services/courses/api/admin/courses", timeout=60,
                           headers={"Authorization": f"token {hub.user_token('alice')}"})
    assert listing.status_code == 403
    assert not (courses_dir(hub) / "course-505.toml").exists()


def test_undo_puts_back_the_course_and_its_roster(tmp_path: Path) -> None:
    """What the API does when the audit record cannot be written after the files were."""
    old = COURSE.format(id="course-606", csv='csv = "course-606.roster.csv"')
    (tmp_path / "course-606.toml").write_text(old)
    (tmp_path / "course-606.roster.csv").write_text(ROSTER)
    new = old.replace("Quantum Algorithms", "Renamed")
    course = parse_course(new, "course-606")
    from dataclasses import replace

    from hub_ext.courses.roster import parse_roster

    course = replace(course, members=parse_roster(b"username,role\nsam,student\n", "r"))
    (change,) = plan(tmp_path, [(course, new.encode(), b"username,role\nsam,student\n")])
    assert isinstance(change, Change) and change.lines
    write(tmp_path, change)
    assert (tmp_path / "course-606.toml").read_text() == new
    undo(tmp_path, change)
    assert (tmp_path / "course-606.toml").read_text() == old
    assert (tmp_path / "course-606.roster.csv").read_text() == ROSTER
    fresh = parse_course(COURSE.format(id="course-707", csv=""), "course-707")
    (added,) = plan(tmp_path, [(fresh, b"x", b"")])
    write(tmp_path, added)
    undo(tmp_path, added)
    assert not (tmp_path / "course-707.toml").exists()
