"""Release and collect buttons on the instructor page (hub_ext.courses.jobs), on a real hub
and real Docker volumes: an instructor presses them in Chromium and watches the progress,
the files land in the student's home and in the archive the page links, each run is
audited with the instructor as its actor; observers, other courses' staff and forged or
repeated requests are refused."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import secrets
import tarfile
import time
from collections.abc import Iterator

import pytest
import requests
from audit_hub import LOCAL_ENV, PASSWORD, login, records
from hubtest import Hub, docker, failed, free_port, launch_hub

from hub_ext.courses.model import DAY, stamp
from hub_ext.identity.roles import COURSE_SCOPES, OBSERVER_SCOPES
from hub_ext.spawner import SpawnPolicy

pytestmark = pytest.mark.docker

HOME = "/home/jovyan"
COURSE = "course-777"


def role(name: str, scopes: tuple[str, ...], user: str, course: str = COURSE) -> dict[str, object]:
    group = f"{course}:students"
    return {"name": name, "users": [user],
            "scopes": [*(s.format(g=group) for s in scopes), "access:services!service=courses"]}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest,
          singleuser_image: str) -> Iterator[tuple[Hub, dict[str, str]]]:
    base = tmp_path_factory.mktemp("course-jobs")
    prefix = f"qtest{secrets.token_hex(3)}"
    names = {"template": f"{prefix}-home-{{username}}", "materials": f"qustody-materials-{prefix}",
             "prefix": prefix, "image": singleuser_image}
    names["sam"] = SpawnPolicy(home_volume_template=names["template"]).volume_name("sam")
    docker("volume", "create", names["materials"])
    docker("run", "--rm", "--network", "none", "--user", "0", "--entrypoint", "sh", "-v",
           f"{names['materials']}:{HOME}", singleuser_image, "-c",
           f"mkdir -p {HOME}/assignments/hw1 && echo 'Prepare a Bell state.' > "
           f"{HOME}/assignments/hw1/README.md")
    spec = {"image": singleuser_image, "home_volume_template": names["template"],
            "home_mount": HOME, "run_as": "1000:1000"}
    extra = f"""
c.Authenticator.allow_all = True
for service in c.JupyterHub.services:
    if service["name"] == "courses":  # homes on Docker volumes, as a Docker hub has them
        service["environment"]["QUSTODY_TERM_VOLUMES"] = {json.dumps(spec)!r}
        service["environment"]["DOCKER_HOST"] = {os.environ["DOCKER_HOST"]!r}
c.JupyterHub.load_roles += {[role(f"instructor-{COURSE}", COURSE_SCOPES, "ivan"),
                             role(f"observer-{COURSE}", OBSERVER_SCOPES, "otto"),
                             role("instructor-course-888", COURSE_SCOPES, "ina", "course-888")]!r}
"""
    hub = launch_hub(base / "hub", extra=extra, timeout=240,
                     # the keeper on (nothing is due for a day): the service's role
                     env={**LOCAL_ENV, "QUSTODY_AUDIT_PAGE_PORT": str(free_port()),
                          "QUSTODY_TERM_INTERVAL": "3600"})
    try:
        now = time.time()
        (hub.dir / "courses" / f"{COURSE}.toml").write_text(
            f'id = "{COURSE}"\ntitle = "Quantum Lab"\n[term]\nstart = {stamp(now - DAY)}\n'
            f'end = {stamp(now + 30 * DAY)}\n[roster]\ngroup = "{COURSE}"\n'
            f'[materials]\nvolume = "{names["materials"]}"\n[[assignments]]\nname = "hw1"\n'
            f"release = {stamp(now + DAY)}\ndue = {stamp(now + 7 * DAY)}\n")
        for user in ("sam", "ivan", "otto", "ina"):
            assert hub.api("POST", f"/users/{user}")[0] in (201, 409)
        assert hub.api("POST", f"/groups/{COURSE}:students")[0] in (201, 409)
        assert hub.api("POST", f"/groups/{COURSE}:students/users", {"users": ["sam"]})[0] == 200
        yield hub, names
    finally:
        hub.stop()
        if failed(request):
            print(hub.log()[-20000:])
        for vol in docker("volume", "ls", "-q", "--filter", f"name={prefix}").split():
            docker("volume", "rm", "-f", vol, check=False)
        docker("volume", "rm", "-f", names["materials"], check=False)


def post(session: requests.Session, hub: Hub, **form: str) -> requests.Response:
    """Post the page's form with its XSRF token (an observer's page has no form: the
    token from the page's cookie, as a forger in their browser would use)."""
    page = session.get(f"{hub.url}services/courses/", timeout=60)
    assert page.status_code == 200, page.text[:500]
    found = re.search(r'name="_xsrf" value="([^"]+)"', page.text)
    xsrf = found.group(1) if found else next(
        c.value for c in session.cookies if c.name == "_xsrf" and "courses" in c.path)
    return session.post(f"{hub.url}services/courses/assignments", data={**form, "_xsrf": xsrf},
                        timeout=60, allow_redirects=False)


def test_an_instructor_releases_and_collects_from_the_page_in_chromium(setup, tmp_path) -> None:
    from chromium import drive

    hub, names = setup
    out = drive("course_assignments.mjs", {
        "hub": hub.url, "user": "ivan", "password": PASSWORD, "assignment": "hw1",
        "screenshot": str(tmp_path / "jobs.png"), "userDataDir": str(tmp_path / "profile"),
    }, timeout=600)
    assert out["status"] == 200 and out["buttons"] == ["Release now", "Collect now"], out
    release = out["release"]
    assert release["done"].startswith("release of hw1 started"), release
    assert release["state"] == "done", out["seen"]
    assert release["text"].startswith("released to 1 student(s): 1 file(s) written, 0 kept"), release
    assert "(ivan, " in release["text"]
    home = docker("run", "--rm", "--network", "none", "--user", "1000", "--entrypoint", "sh",
                  "-v", f"{names['sam']}:{HOME}", names["image"], "-c",
                  f"cat {HOME}/{COURSE}/hw1/README.md")
    assert "Bell" in home
    collect = out["collect"]
    assert collect["state"] == "done" and collect["text"].startswith(
        "collected from 1 student(s): 0 submitted, 0 late, 0 credential finding(s)"), collect
    assert out["download_status"] == 200 and out["link"] == f"/services/courses/archive/{COURSE}/hw1.tar"
    with tarfile.open(fileobj=io.BytesIO(base64.b64decode(out["archive"]))) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
    assert manifest["students"]["sam"]["status"] == "untouched"  # still what was released
    audited = [(r["type"], r["data"]["actor"], r["data"]["course"])
               for r in records(hub) if r["type"].startswith("assignment-")]
    assert audited[-2:] == [("assignment-released", "ivan", COURSE),
                            ("assignment-collected", "ivan", COURSE)], audited


def test_observers_other_staff_and_forged_requests_are_refused(setup) -> None:
    hub, _ = setup
    otto = login(hub, "otto")
    r = post(otto, hub, course=COURSE, assignment="hw1", action="release")
    assert r.status_code == 403 and "observer" in r.text, r.text[-500:]
    assert "Release now" not in otto.get(f"{hub.url}services/courses/", timeout=60).text
    ina = login(hub, "ina")  # teaches course-888, not this one
    r = post(ina, hub, course=COURSE, assignment="hw1", action="collect")
    assert r.status_code == 403 and "You do not teach" in r.text
    ivan = login(hub, "ivan")
    for form, status, words in (
        ({"course": COURSE, "assignment": "hw1", "action": "delete"}, 400, "action=release"),
        ({"course": COURSE, "assignment": "../x", "action": "release"}, 400, "assignment"),
        ({"course": COURSE, "assignment": "hw9", "action": "release"}, 404, "no assignment"),
    ):
        r = post(ivan, hub, **form)
        assert r.status_code == status and words in r.text, (form, r.status_code, r.text[-400:])
    # without the page's XSRF token (a cross-site form): refused before anything runs
    r = ivan.post(f"{hub.url}services/courses/assignments", timeout=60, allow_redirects=False,
                  data={"course": COURSE, "assignment": "hw1", "action": "release"})
    assert r.status_code == 403, r.status_code
    # a collect, then the page's API: staff see the job, an observer does not
    assert post(ivan, hub, course=COURSE, assignment="hw1", action="collect").status_code == 303
    page = hub.wait_for(lambda: "collected from" in (t := ivan.get(
        f"{hub.url}services/courses/api/courses", timeout=60).text) and t, timeout=120,
        what="the collect to finish")
    assert "Release now" not in page  # the API is JSON; the page alone has buttons
    seen = otto.get(f"{hub.url}services/courses/api/courses", timeout=60).json()
    assert [a["job"] for a in seen["courses"][0]["assignments"]] == [None], seen
    steps = json.loads(page)["courses"][0]["steps"]
    assert [(s["name"], s["state"]) for s in steps] == [
        ("release:hw1", "pending"), ("collect:hw1", "pending"), ("stop-servers", "pending"),
        ("archive-homes", "pending"), ("revoke-access", "pending"), ("delete-files", "pending")]
