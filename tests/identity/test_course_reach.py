"""Who can start, open, stop and choose the profile of whose server: a decision table run
against one real hub with users logged in through the real provider.

Instructors reach the servers of their course's students only (hub group
``course-101:students``), and only with the course profile; a researcher, a student who
is also a researcher, or an admin who takes the same course is out of their reach, as
are other courses' students. A TA (tina, hub role ``assistant``) has the instructor's
reach; an observer (otto) reaches no server and only reads the roster on the instructor
page. Each refusal is the attack tried with the caller's own credentials (an API token
for start and stop, their browser session to open a server).
"""

from __future__ import annotations

import html
import re
import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from hub.hubtest import Hub, launch_hub
from identity.conftest import PASSWORD, USERS
from identity.idp import login, start_idp
from identity.test_login_flow import audit_events

pytestmark = pytest.mark.slow

CONFIG = """
c.SimpleLocalProcessSpawner.home_dir_template = "{home}/{{username}}"
# local servers start slowly on a loaded 2-core machine
c.Spawner.http_timeout = 180
c.Spawner.start_timeout = 180
"""

#: ivan instructs course-101, tina is its TA and otto its observer; sam is its student,
#: tess course-202's; rhea (researcher), remy (student and researcher) and cora (admin)
#: take course-101 too; rita is a researcher, ada an admin, audrey an auditor.
LOGINS = ("ivan", "tina", "otto", "sam", "tess", "rhea", "remy", "cora", "rita", "ada", "audrey",
          "cara", "rex")

#: course-303 exists only as a course file with a CSV roster: cara (an IdP student in no
#: course group) is its student, rex (an IdP researcher) its TA, for this course only.
COURSE_303 = """id = "course-303"
title = "Roster from a CSV"
[term]
start = 2020-01-01T00:00:00Z
end = 2999-01-01T00:00:00Z
[roster]
group = "course-303"
csv = "course-303.roster.csv"
[profile]
name = "student"
"""
ROSTER_303 = "username,role\ncara,student\n# the TA\nrex,assistant\n"

#: Each owner's own profile (what they start), and a profile their roles do not allow.
OWN_PROFILE = {
    "sam": "student",
    "tess": "student",
    "rhea": "researcher",
    "remy": "researcher",
    "cora": "admin",
    "rita": "researcher",
}
NOT_THEIRS = {"sam": "researcher", "remy": "admin", "rita": "student", "tess": "admin"}

#: (caller, owner) pairs allowed to start, open and stop the owner's server; every other
#: pair of a caller and someone else's server is refused all three.
ALLOWED = {("ivan", "sam"), ("tina", "sam")} | {("ada", owner) for owner in OWN_PROFILE}
CALLERS = ("ivan", "tina", "otto", "sam", "tess", "rhea", "remy", "rita", "audrey", "ada")

_FORM_INPUT = re.compile(r'<input type="hidden" name="(_xsrf|scopes)" value="([^"]*)"')


class Reach:
    """The hub and each user's credentials: a browser session and an API token."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.browsers: dict[str, requests.Session] = {}
        self.tokens: dict[str, str] = {}

    def start(self, caller: str, owner: str, profile: str | None = None) -> tuple[int, Any]:
        options = {} if profile is None else {"profile": profile}
        return self.hub.api(
            "POST", f"/users/{owner}/server", {"user_options": options}, token=self.tokens[caller]
        )

    def stop(self, caller: str, owner: str) -> int:
        return int(self.hub.api("DELETE", f"/users/{owner}/server", token=self.tokens[caller])[0])

    def open(self, caller: str, owner: str) -> bool:
        """Open the owner's server in the caller's browser: the server sends the browser
        to the hub's OAuth authorization, which asks to confirm access to another user's
        server (confirmed here) or refuses (then the hub itself said 403). True: the
        server's API answers the browser afterwards."""
        browser = self.browsers[caller]
        page = browser.get(f"{self.hub.url}user/{owner}/", timeout=60)
        if page.status_code == 200 and "oauth2/authorize" in page.url:
            fields = _FORM_INPUT.findall(page.text)
            assert fields, page.text[:500]
            page = browser.post(page.url, data=fields, timeout=60)
        api = browser.get(f"{self.hub.url}user/{owner}/api/status", timeout=60)
        if api.status_code == 200:
            assert page.status_code == 200 and "started" in api.json()
            return True
        # refused by the hub's authorization (the attack path), not merely unauthenticated
        assert page.status_code == 403 and "oauth2/authorize" in page.url, (caller, owner, page.url)
        return False

    def servers(self, owner: str) -> dict[str, Any]:
        return dict(self.hub.api("GET", f"/users/{owner}")[1]["servers"])

    def wait_ready(self, *owners: str) -> None:
        for owner in owners:
            self.hub.wait_for(
                lambda o=owner: self.servers(o).get("", {}).get("ready"),
                timeout=240,
                what=f"{owner}'s server",
            )

    def wait_stopped(self, *owners: str) -> None:
        for owner in owners:
            self.hub.wait_for(
                lambda o=owner: not self.servers(o), timeout=120, what=f"{owner}'s server stopped"
            )

    def round_trip(self, caller: str, owner: str, profile: str, stopper: str = "") -> None:
        """``caller`` starts the owner's server without choosing; it runs ``profile``; then
        ``stopper`` (default: the caller) stops it."""
        status, body = self.start(caller, owner)
        assert status in (201, 202), body
        self.wait_ready(owner)
        assert self.profile_of(owner) == profile
        assert self.stop(stopper or caller, owner) in (202, 204)
        self.wait_stopped(owner)

    def profile_of(self, owner: str) -> str:
        started = [e for e in audit_events(self.hub, "server-started") if e["user"] == owner]
        return str(started[-1]["profile"])


@pytest.fixture(scope="module")
def reach(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reach]:
    base = tmp_path_factory.mktemp("reach")
    courses = base / "courses"
    courses.mkdir()
    (courses / "course-303.toml").write_text(COURSE_303)
    (courses / "course-303.roster.csv").write_text(ROSTER_303)
    idp = start_idp(USERS, workdir=base / "idp", ttl={"AccessToken": 60, "IdToken": 60})
    client_id, client_secret = "hub-reach", secrets.token_hex(24)
    hub = launch_hub(
        base / "hub",
        extra=CONFIG.format(home=base / "home"),
        env={
            "QUSTODY_OIDC_ISSUER": idp.issuer,
            "QUSTODY_OIDC_CLIENT_ID": client_id,
            "QUSTODY_OIDC_CLIENT_SECRET": client_secret,
            "JUPYTERHUB_CRYPT_KEY": secrets.token_hex(32),
            "QUSTODY_SPAWNER": "local",
            "QUSTODY_COURSES_DIR": str(courses),
        },
        timeout=180,
    )
    try:
        idp.add_client(client_id, client_secret, f"{hub.url}hub/oauth_callback")
        r = Reach(hub)
        for name in LOGINS:
            r.browsers[name] = requests.Session()
            page = login(r.browsers[name], hub.url, name, PASSWORD)
            assert page.status_code == 200, (name, page.text[:300])
            r.tokens[name] = hub.user_token(name)
        yield r
    except BaseException:
        print(
            f"---- hub log ----\n{hub.log()[-8000:]}\n---- provider log ----\n{idp.log()[-3000:]}"
        )
        raise
    finally:
        hub.stop()
        idp.stop()


def test_only_student_only_members_join_the_students_group_and_instructors_theirs(reach: Reach) -> None:
    status, group = reach.hub.api("GET", "/groups/course-101:students")
    assert status == 200 and set(group["users"]) == {"sam"}
    status, group = reach.hub.api("GET", "/groups/course-101")
    assert status == 200 and set(group["users"]) == {
        "ivan", "tina", "otto", "sam", "rhea", "remy", "cora"
    }
    status, group = reach.hub.api("GET", "/groups/course-101:instructors")
    assert status == 200 and set(group["users"]) == {"ivan"}


def test_decision_table_start_open_stop(reach: Reach) -> None:
    wrong: list[str] = []

    def expect(case: str, ok: bool, allowed: bool) -> None:
        if ok is not allowed:
            wrong.append(f"{case}: {'allowed' if ok else 'refused'}, expected the opposite")

    # start, while every server is down: nobody but ALLOWED may start another's server
    for caller in CALLERS:
        for owner in OWN_PROFILE:
            if caller == owner or (caller, owner) in ALLOWED:
                continue
            for profile in (None, "student", OWN_PROFILE[owner]):
                status, body = reach.start(caller, owner, profile)
                expect(f"{caller} starts {owner} ({profile})", status in (201, 202), False)
                assert status in (403, 404), (caller, owner, profile, status, body)
    assert not [o for o in OWN_PROFILE if reach.servers(o)], "a refused start left a server"

    # open and stop the owners' own servers
    for owner, profile in OWN_PROFILE.items():
        status, body = reach.start(owner, owner, profile)
        assert status in (201, 202), (owner, body)
    reach.wait_ready(*OWN_PROFILE)
    for caller in CALLERS:
        for owner in OWN_PROFILE:
            if caller == owner or (caller, owner) in ALLOWED:
                continue
            expect(f"{caller} opens {owner}", reach.open(caller, owner), False)
            expect(f"{caller} stops {owner}", reach.stop(caller, owner) in (202, 204), False)
    still = [o for o in OWN_PROFILE if not reach.servers(o).get("", {}).get("ready")]
    assert not still, f"refused stops stopped {still}"
    expect("ivan opens sam", reach.open("ivan", "sam"), True)
    expect("tina opens sam", reach.open("tina", "sam"), True)
    expect("ada opens rhea", reach.open("ada", "rhea"), True)
    expect("ivan stops sam", reach.stop("ivan", "sam") in (202, 204), True)
    for owner in OWN_PROFILE:
        if owner != "sam":
            expect(f"ada stops {owner}", reach.stop("ada", owner) in (202, 204), True)
    reach.wait_stopped(*OWN_PROFILE)
    assert not wrong, "\n".join(wrong)


def test_instructor_starts_a_student_with_the_course_profile_only(reach: Reach) -> None:
    for profile in ("researcher", "admin"):
        status, body = reach.start("ivan", "sam", profile)
        assert status == 403 and "course profile" in str(body), (profile, status, body)
        assert not reach.servers("sam")
    status, body = reach.start("ivan", "sam")  # no choice: the course profile
    assert status in (201, 202), body
    reach.wait_ready("sam")
    assert reach.profile_of("sam") == "student"
    assert reach.open("ivan", "sam")
    assert reach.stop("ivan", "sam") in (202, 204)
    reach.wait_stopped("sam")
    refused = [
        e
        for e in audit_events(reach.hub, "server-spawn-failed")
        if e["user"] == "sam" and "course profile" in e["detail"]
    ]
    assert [e["reason"] for e in refused] == ["profile-not-allowed"] * 2
    requested = [e for e in audit_events(reach.hub, "server-spawn-requested") if e["user"] == "sam"]
    assert requested[-1].get("actor") == "ivan"

    # the instructor's own server is the course's environment (the demo's ivan had none)
    reach.round_trip("ivan", "ivan", "student")


def test_choosing_a_profile_follows_the_owners_roles(reach: Reach) -> None:
    # the owner, and an admin on the owner's behalf, choose only what the owner's roles allow
    for caller in ("owner", "ada"):
        for owner, profile in NOT_THEIRS.items():
            who = owner if caller == "owner" else caller
            status, body = reach.start(who, owner, profile)
            assert status in (400, 403), (who, owner, profile, status, body)
            assert not reach.servers(owner)
    reach.round_trip("ada", "sam", "student", stopper="sam")


# -- the instructor page ------------------------------------------------------------------


def page(reach: Reach, who: str, path: str = "") -> requests.Response:
    """``who``'s browser session on the instructor page (signing in through the hub)."""
    return reach.browsers[who].get(f"{reach.hub.url}services/courses/{path}", timeout=60)


def post_action(reach: Reach, who: str, course: str, user: str, action: str) -> tuple[int, str]:
    """Post the page's form (with its XSRF token) as ``who``: (status, the page's text)."""
    form = page(reach, who)
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', form.text)
    assert xsrf, form.text[:500]
    r = reach.browsers[who].post(
        f"{reach.hub.url}services/courses/servers",
        data={"_xsrf": xsrf.group(1), "course": course, "user": user, "action": action},
        timeout=60,
    )
    return r.status_code, html.unescape(r.text)


def test_the_instructor_page_lists_only_the_courses_students(reach: Reach) -> None:
    assert page(reach, "ivan").status_code == 200  # signs in: the API then takes the cookie
    r = page(reach, "ivan", "api/courses")
    assert r.status_code == 200, r.text[:500]
    courses = r.json()["courses"]
    assert [c["id"] for c in courses] == ["course-101"], courses
    # rhea, remy and cora take course-101 but are not only students: not on the roster
    assert [s["name"] for s in courses[0]["students"]] == ["sam"], courses
    assert courses[0]["students"][0]["server"] == "stopped"
    html = page(reach, "ivan")
    assert html.status_code == 200 and 'data-user="sam"' in html.text
    for other in ("rhea", "remy", "cora", "tess"):
        assert f'data-user="{other}"' not in html.text
    # students, researchers and auditors are refused by the hub itself: only the
    # instructor role may use the service (deny by default)
    for who in ("sam", "rita", "audrey"):
        refused = page(reach, who)
        assert refused.status_code == 403, (who, refused.status_code)
        assert "You do not have permission to access JupyterHub service courses" in refused.text
    # an admin reaches every service, but teaches no course: the page says so
    refused = page(reach, "ada")
    assert refused.status_code == 403 and "ada teaches no course here" in refused.text


def test_a_burst_of_overview_requests_builds_one_overview_at_a_time(reach: Reach) -> None:
    """Each overview asks the hub about every student: requests arriving while one is
    being built share it, so a loop of requests cannot multiply those calls."""
    assert page(reach, "ivan").status_code == 200
    cookies = reach.browsers["ivan"].cookies
    lookups = "GET /hub/api/users/sam "
    before = reach.hub.log().count(lookups)

    def one(_: int) -> Any:
        with requests.Session() as s:
            s.cookies.update(cookies)
            r = s.get(f"{reach.hub.url}services/courses/api/courses", timeout=120)
            assert r.status_code == 200, r.text[:300]
            return r.json()["courses"]

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(one, range(20)))
    assert all([c["id"] for c in a] == ["course-101"] for a in answers)
    assert all(a[0]["students"] == answers[0][0]["students"] for a in answers)
    made = reach.hub.log().count(lookups) - before
    assert 1 <= made < 10, made  # one lookup per overview built, not one per request


def test_the_instructor_page_refuses_forged_actions(reach: Reach) -> None:
    # a course ivan does not teach, a member out of his reach, a form without its token
    status, text = post_action(reach, "ivan", "course-202", "tess", "start")
    assert status == 403 and "You do not teach 'course-202'" in text
    status, text = post_action(reach, "ivan", "course-101", "rhea", "start")
    assert status == 403 and "The hub refused to start rhea's server" in text, text
    assert not reach.servers("rhea")
    r = reach.browsers["ivan"].post(
        f"{reach.hub.url}services/courses/servers",
        data={"course": "course-101", "user": "sam", "action": "start"},
        timeout=60,
    )
    assert r.status_code == 403 and "XSRF" in r.text
    assert not reach.servers("sam")
    status, text = post_action(reach, "ivan", "course-101", "sam", "reboot")
    assert status == 400 and "action=start or action=stop" in text


def test_the_instructor_page_in_chromium_starts_and_stops_a_students_server(
    reach: Reach, tmp_path: Any
) -> None:
    from chromium import drive

    out = drive(
        "instructor_page.mjs",
        {
            "hub": reach.hub.url,
            "user": "ivan",
            "password": PASSWORD,
            "student": "sam",
            "screenshot": str(tmp_path / "instructor.png"),
            "userDataDir": str(tmp_path / "chromium-profile"),
        },
        timeout=420,
    )
    assert out["status"] == 200 and out["who"] == "ivan", out
    assert [s["user"] for s in out["before"][0]["students"]] == ["sam"], out
    assert out["before"][0]["students"][0]["button"] == "Start"
    assert out["done"].startswith("start requested for sam"), out
    sam = out["running"][0]["students"][0]
    assert sam["server"] == "running" and sam["button"] == "Stop", out
    assert re.fullmatch(r"3 h \d\d min", sam["left"]), sam  # the student profile: 4 h
    assert sam["jobs"] == "0", sam  # the gateway answers ivan as the course's lead
    assert out["after"][0]["students"][0]["server"] == "stopped", out
    started = [e for e in audit_events(reach.hub, "server-spawn-requested") if e["user"] == "sam"]
    assert started[-1].get("actor") == "ivan", started[-1]


def test_the_instructor_page_lists_assignments_and_serves_collected_work_to_its_course(
    reach: Reach,
) -> None:
    import io as io_
    import tarfile

    courses = reach.hub.dir.parent / "courses"  # QUSTODY_COURSES_DIR
    (courses / "course-101.toml").write_text(
        'id = "course-101"\ntitle = "Intro QC"\n[term]\nstart = 2026-01-01T00:00:00Z\n'
        'end = 2036-01-01T00:00:00Z\n[roster]\ngroup = "course-101"\n'
        '[materials]\nvolume = "qustody-materials-course-101"\n'
        '[[assignments]]\nname = "hw1"\nrelease = 2026-01-05T00:00:00Z\n'
        'due = 2026-01-12T00:00:00Z\n'
        '[[assignments]]\nname = "hw2"\nrelease = 2035-01-05T00:00:00Z\n'
        'due = 2035-01-12T00:00:00Z\n'
    )
    archive = courses / "archive" / "course-101" / "hw1" / "hw1-2026-01-12T010000Z.tar"
    archive.parent.mkdir(parents=True)
    body = io_.BytesIO()
    with tarfile.open(fileobj=body, mode="w") as tar:  # what `qustody course collect` writes
        info = tarfile.TarInfo("sam/README.md")
        info.size = 10
        tar.addfile(info, io_.BytesIO(b"my answer\n"))
    archive.write_bytes(body.getvalue())
    try:
        listed = reach.hub.wait_for(
            lambda: (r := page(reach, "ivan", "api/courses")).status_code == 200
            and r.json()["courses"][0].get("assignments"),
            timeout=30, what="the page to read the course file",
        )
        assert [(a["name"], a["state"], a["collected"]) for a in listed] == [
            ("hw1", "due", True), ("hw2", "upcoming", False)]
        html = page(reach, "ivan").text
        assert 'href="/services/courses/archive/course-101/hw1.tar"' in html
        got = page(reach, "ivan", "archive/course-101/hw1.tar")
        assert got.status_code == 200 and got.content == body.getvalue()
        assert "course-101-hw1.tar" in got.headers["Content-Disposition"]
        assert page(reach, "ivan", "archive/course-101/hw2.tar").status_code == 404
        assert page(reach, "ivan", "archive/course-202/hw1.tar").status_code == 403
        assert page(reach, "ivan", "archive/course-101/..%2F..%2Fx.tar").status_code == 404
        assert page(reach, "sam", "archive/course-101/hw1.tar").status_code == 403
    finally:
        (courses / "course-101.toml").unlink()


def test_a_ta_starts_a_student_with_the_course_profile_and_an_observer_only_reads(
    reach: Reach,
) -> None:
    """The TA's reach is the instructor's (course profile only); the observer's page lists
    the same roster without a button, and a forged start, stop or download is refused."""
    status, body = reach.start("tina", "sam", "researcher")
    assert status == 403 and "course profile" in str(body), (status, body)
    reach.round_trip("tina", "sam", "student")
    requested = [e for e in audit_events(reach.hub, "server-spawn-requested") if e["user"] == "sam"]
    assert requested[-1].get("actor") == "tina"

    assert page(reach, "otto").status_code == 200
    courses = page(reach, "otto", "api/courses").json()["courses"]
    assert [(c["id"], c["manage"]) for c in courses] == [("course-101", False)], courses
    assert [s["name"] for s in courses[0]["students"]] == ["sam"]
    html_page = page(reach, "otto").text
    assert 'data-user="sam"' in html_page and "You observe this course" in html_page
    assert 'name="action"' not in html_page  # no start or stop button
    # his page has no form to take a token from: he forges one with his API token
    r = requests.post(
        f"{reach.hub.url}services/courses/servers",
        data={"course": "course-101", "user": "sam", "action": "start"},
        headers={"Authorization": f"token {reach.tokens['otto']}"},
        timeout=60,
    )
    assert r.status_code == 403 and "an observer reads the roster" in html.unescape(r.text), (
        r.status_code, r.text[-600:])
    assert not reach.servers("sam")
    # with otto's own token the hub refuses too: observers hold no servers scope
    status, _ = reach.start("otto", "sam")
    assert status in (403, 404) and not reach.servers("sam")
    r = page(reach, "otto", "archive/course-101/hw1.tar")
    assert r.status_code == 403 and "observer reads the roster" in html.unescape(r.text)
    assert page(reach, "tina").status_code == 200  # signs in: the API then takes the cookie
    tina = page(reach, "tina", "api/courses").json()["courses"]
    assert [(c["id"], c["manage"]) for c in tina] == [("course-101", True)]


def test_a_csv_roster_adds_members_and_staff_for_its_course_only(reach: Reach) -> None:
    """course-303's CSV roster: cara joins it as a student without an IdP course group,
    rex is its TA (he starts her server with the course profile) but reaches no one in
    course-101; the roster gives no one a way in that the IdP did not."""
    status, group = reach.hub.api("GET", "/groups/course-303:students")
    assert status == 200 and set(group["users"]) == {"cara"}, group
    status, rex = reach.hub.api("GET", "/users/rex")
    assert "assistant-course-303" in rex["roles"] and "assistant" not in rex["roles"], rex
    assert "course-303" in rex["groups"] and "course-303:students" not in rex["groups"]
    status, body = reach.start("rex", "cara", "researcher")
    assert status == 403 and "course profile" in str(body), (status, body)
    reach.round_trip("rex", "cara", "student")
    status, body = reach.start("rex", "sam")
    assert status in (403, 404) and not reach.servers("sam"), (status, body)
    assert page(reach, "rex").status_code == 200
    courses = page(reach, "rex", "api/courses").json()["courses"]
    assert [(c["id"], [s["name"] for s in c["students"]]) for c in courses] == [
        ("course-303", ["cara"])
    ]


def test_staff_of_a_closed_course_lose_its_role_at_their_next_login(reach: Reach) -> None:
    """Once course-303's term has closed, rex (its TA by the CSV roster) signs in again and
    holds no role for it, and is out of its groups; cara stays its student (the spawner
    tells her the term is over)."""
    courses = reach.hub.dir.parent / "courses"
    path = courses / "course-303.toml"
    path.write_text(COURSE_303.replace("end = 2999-01-01T00:00:00Z",
                                       "end = 2021-01-01T00:00:00Z\ngrace_days = 1"))
    try:
        def roles_after_login() -> dict[str, Any]:
            page_ = login(requests.Session(), reach.hub.url, "rex", PASSWORD)
            assert page_.status_code == 200, page_.text[:300]
            return reach.hub.api("GET", "/users/rex")[1]

        rex = reach.hub.wait_for(
            lambda: "assistant-course-303" not in (u := roles_after_login())["roles"] and u,
            timeout=30, interval=2.5, what="the closed course to reach the authenticator")
        assert not {"course-303", "course-303:assistants"} & set(rex["groups"]), rex
        assert "researcher" in rex["roles"], rex  # his own role stays
        status, body = reach.start("rex", "cara")
        assert status in (403, 404) and not reach.servers("cara"), (status, body)
        status, group = reach.hub.api("GET", "/groups/course-303:students")
        assert set(group["users"]) == {"cara"}, group
    finally:
        path.write_text(COURSE_303)
        time.sleep(2.5)  # the hub re-reads the courses directory at most every 2 s
        login(requests.Session(), reach.hub.url, "rex", PASSWORD)
    status, rex = reach.hub.api("GET", "/users/rex")
    assert "assistant-course-303" in rex["roles"], rex
