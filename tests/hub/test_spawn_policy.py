"""The spawn policy as decision tables: images, profiles, roles, the container check,
and start-up validation (Kubernetes: test_kube_spawner.py). No Docker needed."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from traitlets import TraitError
from traitlets.config import Config

from hub_ext.images import ImageRefused, parse_pinned, resolve_requested
from hub_ext.spawner import (
    Requester,
    SpawnPolicy,
    SpawnRefused,
    parse_bytes,
    validate_config,
)

IMG = "sha256:" + "a" * 64
OTHER = "registry.example/qustody/singleuser@sha256:" + "b" * 64
BASE = {"images": ["main"], "mem_limit": "1G", "cpu_limit": 1, "idle_timeout": 600, "max_age": 3600}
PROFILES = {
    "student": {**BASE, "roles": ["student"], "pids_limit": 128},
    "researcher": {**BASE, "roles": ["researcher", "admin"], "images": ["main", "gpu"], "mem_limit": "4G"},
    "admin": {**BASE, "roles": ["admin"]},
}


def policy(**overrides) -> SpawnPolicy:
    c = Config()
    c.SpawnPolicy.allowed_images = {"main": IMG, "gpu": OTHER}
    c.SpawnPolicy.profiles = copy.deepcopy(PROFILES)
    for key, value in overrides.items():
        setattr(c.SpawnPolicy, key, value)
    return SpawnPolicy(config=c)


@pytest.mark.parametrize(
    ("ref", "ok"),
    [
        (IMG, True),
        (OTHER, True),
        ("quay.io/jupyter/base-notebook@sha256:" + "c" * 64, True),
        ("qustody/singleuser:latest", False),
        ("qustody/singleuser", False),
        ("python:3.11", False),
        ("sha256:abc", False),
        ("qustody/singleuser:1@sha256:" + "c" * 63, False),
    ],
)
def test_only_digest_pinned_images_are_accepted(ref, ok):
    if ok:
        assert parse_pinned("x", ref).digest.startswith("sha256:")
    else:
        with pytest.raises(ValueError, match="not pinned by digest"):
            parse_pinned("x", ref)


def test_tag_in_allow_list_stops_the_hub_with_a_fix():
    c = Config()
    c.SpawnPolicy.allowed_images = {"main": "qustody/singleuser:latest"}
    with pytest.raises((TraitError, ValueError), match=r"not pinned by digest.*docker image inspect"):
        validate_config(c)


def test_image_matches_by_id_or_repo_digest():
    local = parse_pinned("main", IMG)
    assert local.matches({"Id": IMG, "RepoDigests": []})
    assert not local.matches({"Id": "sha256:" + "f" * 64, "RepoDigests": []})
    remote = parse_pinned("gpu", OTHER)
    assert remote.matches({"Id": "sha256:" + "f" * 64, "RepoDigests": [OTHER]})
    assert not remote.matches({"Id": "x", "RepoDigests": ["evil/other@sha256:" + "b" * 64]})


def test_requested_image_refusals_name_the_allowed_images():
    allowed = {"main": parse_pinned("main", IMG), "gpu": parse_pinned("gpu", OTHER)}
    assert resolve_requested("main", allowed, ["main"]).name == "main"
    assert resolve_requested(IMG, allowed, ["main"]).name == "main"
    for requested, words in [
        ("python:3.11", "not pinned by digest"),
        ("sha256:" + "0" * 64, "not on the allow-list"),
        ("gpu", "not allowed for this profile"),
    ]:
        with pytest.raises(ImageRefused, match=words) as e:
            resolve_requested(requested, allowed, ["main"])
        assert f"main ({IMG})" in str(e.value)


@pytest.mark.parametrize(
    ("roles", "options", "expected"),
    [
        ({"user", "student"}, {}, "student"),
        ({"user", "researcher"}, {}, "researcher"),
        ({"user", "admin"}, {}, "researcher"),  # first allowed profile, in config order
        ({"user", "admin"}, {"profile": "admin"}, "admin"),
        ({"user", "researcher"}, {"profile": "researcher", "image": "gpu"}, "researcher"),
        ({"user", "student"}, {"profile": "researcher"}, 403),
        ({"user", "student"}, {"profile": "student", "image": "gpu"}, 400),
        ({"user", "student"}, {"image": "python:3.11"}, 400),
        ({"user", "student"}, {"profile": "nope"}, 400),
        ({"user", "student"}, {"mem_limit": "64G"}, 400),
        ({"user"}, {}, 403),
        (set(), {}, 403),
    ],
)
def test_profile_decision_table(roles, options, expected):
    p = policy()
    if isinstance(expected, str):
        assert p.decide(roles, options).profile.name == expected
    else:
        with pytest.raises(SpawnRefused) as e:
            p.decide(roles, options)
        assert e.value.status_code == expected
        assert e.value.message


def test_empty_policy_denies_everyone():
    with pytest.raises(SpawnRefused, match="No server profile"):
        SpawnPolicy().decide({"admin", "user"}, {})


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"student": {**BASE, "roles": ["student"], "memory": "1G"}}, "unknown keys"),
        ({"student": {**BASE, "roles": []}}, "non-empty list of hub role"),
        ({"student": {**BASE, "roles": ["student"], "images": ["nope"]}}, "not in SpawnPolicy.allowed_images"),
        ({"student": {**BASE, "roles": ["student"], "mem_limit": "lots"}}, "not a size"),
        ({"student": {**BASE, "roles": ["student"], "idle_timeout": 0}}, "whole number >= 1"),
        ({"Bad Name": {**BASE, "roles": ["student"]}}, "profile names"),
    ],
)
def test_invalid_profiles_stop_the_hub(change, words):
    c = Config()
    c.SpawnPolicy.allowed_images = {"main": IMG}
    c.SpawnPolicy.profiles = change
    with pytest.raises(ValueError, match=words):
        validate_config(c)


@pytest.mark.parametrize(
    ("trait", "value", "words"),
    [
        ("run_as", "0:0", "must not be root"),
        ("run_as", "root", "numeric"),
        ("network_mode", "none", "internal user network"),
        ("network_mode", "bridge", "internal user network"),
        ("network_mode", "container:abc", "internal user network"),
        ("network_subnet", "10.0.0.0/8", "between /16 and /28"),
        ("network_subnet", "127.0.0.0/24", "loopback"),
        ("network_subnet", "198.18.7.1/24", "host bits zero"),
        ("network_proxy_port", 0, "TCP port"),
        ("seccomp_profile", "unconfined", "must not be 'unconfined'"),
        ("home_volume_template", "/srv/home/{username}", "not a host path"),
        ("home_volume_template", "Home {username}", "lower-case letters"),
        ("home_volume_template", "Lab_Home-{username}", "lower-case letters"),  # no claim name
        ("home_volume_template", "h" * 79 + "-{username}", "at most 128"),
        ("home_volume_template", "h-{username}-{extra}", "no other"),
        ("home_volume_template", "{username}", "prefix of its own"),
        ("tmpfs", {"/tmp": "rw"}, "size="),
    ],
)
def test_insecure_settings_are_refused(trait, value, words):
    with pytest.raises((TraitError, ValueError), match=words):
        policy(**{trait: value})


@pytest.mark.parametrize("key", ["volumes", "extra_host_config", "image", "allowed_images", "mem_limit"])
def test_settings_the_policy_owns_are_refused(key):
    c = Config()
    setattr(c.DockerSpawner, key, {"/var/run/docker.sock": "/var/run/docker.sock"})
    with pytest.raises(ValueError, match=f"c.DockerSpawner.{key} is set"):
        validate_config(c)


def test_sizes():
    assert parse_bytes("512M") == 512 * 1024**2
    assert parse_bytes("2G") == 2 * 1024**3
    assert parse_bytes(1000) == 1000


def _inspected(p: SpawnPolicy, decision, volume: str) -> dict:
    prof = decision.profile
    return {
        "Image": IMG,
        "Config": {"User": "1000:1000", "Env": ["PATH=/usr/bin", "QUSTODY_TOKEN_ON_STDIN=1"]},
        "HostConfig": {
            "ReadonlyRootfs": True,
            "CapDrop": ["ALL"],
            "CapAdd": None,
            "Privileged": False,
            "SecurityOpt": ["no-new-privileges:true"],
            "PidsLimit": prof.pids_limit,
            "Memory": prof.mem_limit,
            "MemorySwap": prof.mem_limit,
            "CpuQuota": int(prof.cpu_limit * 100_000),
            "CpuPeriod": 100_000,
            "NetworkMode": p.network_mode,
            "PidMode": "",
            "IpcMode": "private",
            "UsernsMode": "",
            "Devices": [],
            "Tmpfs": dict.fromkeys(p.tmpfs, ""),
            "Binds": [f"{volume}:/home/jovyan:rw"],
            "Mounts": None,
            "Sysctls": {"net.ipv6.conf.all.disable_ipv6": "1",
                        "net.ipv6.conf.default.disable_ipv6": "1"},
        },
        "Mounts": [{"Type": "volume", "Name": volume, "Destination": "/home/jovyan"}],
        "NetworkSettings": {"Networks": {p.network_mode: {"IPAddress": "198.18.7.2"}}},
    }


@pytest.mark.parametrize(
    ("path", "value", "problem"),
    [
        (None, None, None),
        (("HostConfig", "ReadonlyRootfs"), False, "read-only"),
        (("HostConfig", "CapAdd"), ["NET_ADMIN"], "capabilities added"),
        (("HostConfig", "Privileged"), True, "privileged"),
        (("HostConfig", "SecurityOpt"), ["no-new-privileges:true", "seccomp=unconfined"], "confinement"),
        (("HostConfig", "SecurityOpt"), [], "no-new-privileges"),
        (("HostConfig", "PidsLimit"), 0, "pids"),
        (("HostConfig", "MemorySwap"), -1, "swap"),
        (("HostConfig", "PidMode"), "host", "PID namespace"),
        (("HostConfig", "Sysctls"), None, "IPv6 is not disabled"),
        (("HostConfig", "Binds"), ["/var/run/docker.sock:/var/run/docker.sock:rw"], "binds"),
        (("Config", "User"), "0:0", "runs as"),
        (("Config", "Env"), ["JUPYTERHUB_API_TOKEN=x"], "API token"),
        (("Image",), "sha256:" + "e" * 64, "image differs"),
        (("HostConfig", "NetworkMode"), "host", "network differs"),
        (("NetworkSettings", "Networks"), {"qustody-users": {}, "other": {}}, "attached to"),
        (("HostConfig", "PortBindings"), {"8888/tcp": [{"HostIp": "0.0.0.0"}]}, "published"),
    ],
)
def test_created_container_is_checked_against_the_policy(path, value, problem):
    p = policy()
    decision = p.decide({"student"}, {})
    volume = p.volume_name("alice")
    info = _inspected(p, decision, volume)
    if path:
        target = info
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    problems = p.verify(info, decision, IMG, volume)
    if problem is None:
        assert problems == []
    else:
        assert any(problem in x for x in problems), problems


def test_course_materials_are_checked_read_only_and_nothing_else_is_mounted():
    p = policy()
    decision = p.decide({"student"}, {})
    volume = p.volume_name("alice")
    materials = {"qustody-materials-101": "/srv/qustody/materials/course-101"}
    info = _inspected(p, decision, volume)
    info["HostConfig"]["Binds"].append(
        "qustody-materials-101:/srv/qustody/materials/course-101:ro")
    info["Mounts"].append({"Type": "volume", "Name": "qustody-materials-101", "RW": False,
                           "Destination": "/srv/qustody/materials/course-101"})
    assert p.verify(info, decision, IMG, volume, materials) == []
    # without the course, the same mount is one too many
    assert any("unexpected binds" in x for x in p.verify(info, decision, IMG, volume))
    info["Mounts"][-1]["RW"] = True
    assert any("materials writable" in x for x in p.verify(info, decision, IMG, volume, materials))


def test_volume_names_are_per_user_and_safe():
    p = policy()
    a, b = p.volume_name("alice"), p.volume_name("Alice")
    assert a != b and a.startswith("qustody-home-alice-")
    assert "/" not in p.volume_name("../../etc")


def test_host_config_is_the_hardening():
    p = policy()
    hc = p.host_config(p.decide({"student"}, {}).profile)
    assert hc["read_only"] and hc["cap_drop"] == ["ALL"] and not hc["privileged"]
    assert hc["security_opt"] == ["no-new-privileges:true"]
    assert hc["pids_limit"] == 128 and hc["mem_limit"] == hc["memswap_limit"] == 1024**3
    assert hc["cpu_quota"] == 100_000 and hc["auto_remove"] is False


# -- spawns requested by someone other than the owner (instructors) --------------------------

OWNER = Requester("sam", is_owner=True, admin=False)
ADMIN = Requester("ada", is_owner=False, admin=True)
IVAN = Requester("ivan", is_owner=False, admin=False, instructs=frozenset({"course-101"}))
IVAN_202 = Requester("ivan", is_owner=False, admin=False, instructs=frozenset({"course-202"}))
PEER = Requester("tess", is_owner=False, admin=False)
SERVICE = Requester("some-service", is_owner=False, admin=False)
STUDENT_OF_101 = {"course-101", "course-101:students"}
MEMBER_OF_101 = {"course-101"}  # a researcher (or anyone beyond student) taking the course


@pytest.mark.parametrize(
    ("requester", "groups", "options", "expected"),
    [
        (OWNER, set(), {"profile": "researcher"}, "researcher"),  # decide() checks the roles
        (ADMIN, MEMBER_OF_101, {"profile": "researcher"}, "researcher"),
        (IVAN, STUDENT_OF_101, {}, "student"),
        (IVAN, STUDENT_OF_101, {"profile": "student"}, "student"),
        (IVAN, STUDENT_OF_101, {"profile": "researcher"}, "course profile"),
        (IVAN, STUDENT_OF_101, {"profile": "admin"}, "course profile"),
        (IVAN, MEMBER_OF_101, {}, "not a student of a course you instruct"),
        (IVAN, MEMBER_OF_101, {"profile": "student"}, "not a student of a course you instruct"),
        (IVAN_202, STUDENT_OF_101, {}, "not a student of a course you instruct"),
        (PEER, STUDENT_OF_101, {}, "not a student of a course you instruct"),
        (SERVICE, STUDENT_OF_101, {}, "not a student of a course you instruct"),
        (IVAN, STUDENT_OF_101, ["student"], "must be an object"),
    ],
)
def test_who_may_start_a_server_for_its_owner(requester, groups, options, expected):
    p = policy(course_profiles={"*": "student"})
    if expected in PROFILES:
        chosen = p.on_behalf(requester, groups, options)
        assert chosen.get("profile") == expected
    else:
        with pytest.raises(SpawnRefused, match=expected) as e:
            p.on_behalf(requester, groups, options)
        assert e.value.status_code in (400, 403)


def test_course_profiles_per_course_and_deny_by_default():
    p = policy(course_profiles={"course-101": "student"})
    assert p.on_behalf(IVAN, STUDENT_OF_101, {})["profile"] == "student"
    with pytest.raises(SpawnRefused, match="No course profile is configured for course-202"):
        p.on_behalf(IVAN_202, {"course-202", "course-202:students"}, {})
    with pytest.raises(SpawnRefused, match=r"SpawnPolicy\.course_profiles"):
        policy().on_behalf(IVAN, STUDENT_OF_101, {})  # empty: only owners and admins


@pytest.mark.parametrize(
    ("table", "words"),
    [
        ({"*": "nope"}, "is not in SpawnPolicy.profiles"),
        ({"course-101": "researcher"}, "does not allow the 'student' role"),
    ],
)
def test_bad_course_profiles_stop_the_hub(table, words):
    with pytest.raises(ValueError, match=words):
        policy(course_profiles=table).check()


def course_dir(tmp_path, profile: str = "lab", ended_days_ago: float | None = None):
    """A courses directory with course-101 (hub_ext.courses); its term ended some days ago
    (grace: 7 days) or runs for another month."""
    import time

    from hub_ext.courses.model import stamp

    end = time.time() + (30 if ended_days_ago is None else -ended_days_ago) * 86400
    d = tmp_path / f"courses-{profile}-{ended_days_ago}"
    d.mkdir()
    (d / "course-101.toml").write_text(
        f'id = "course-101"\ntitle = "Intro QC"\n[term]\nstart = {stamp(end - 90 * 86400)}\n'
        f'end = {stamp(end)}\ngrace_days = 7\n[roster]\ngroup = "course-101"\n'
        f'[profile]\nname = "{profile}"\n'
    )
    return str(d)


LAB = {**PROFILES, "lab": {**BASE, "roles": ["student"], "mem_limit": "2G"}}


def test_a_course_file_names_the_profile_its_instructors_may_start(tmp_path):
    p = policy(profiles=LAB, course_profiles={"*": "student"}, courses_dir=course_dir(tmp_path))
    p.check()
    assert p.on_behalf(IVAN, STUDENT_OF_101, {})["profile"] == "lab"
    with pytest.raises(SpawnRefused, match=r"only with the course profile \(lab\)"):
        p.on_behalf(IVAN, STUDENT_OF_101, {"profile": "student"})
    # without the file, the hub's table applies
    assert policy(course_profiles={"*": "student"}).on_behalf(IVAN, STUDENT_OF_101, {})[
        "profile"] == "student"


def test_materials_go_to_the_courses_students_and_instructors_only(tmp_path):
    d = course_dir(tmp_path)
    with open(f"{d}/course-101.toml", "a") as f:
        f.write('[materials]\nvolume = "qustody-materials-course-101"\n')
    p = policy(profiles=LAB, courses_dir=d)
    p.check()
    mounts = {"qustody-materials-course-101": "/srv/qustody/materials/course-101"}
    assert p.materials_mounts(STUDENT_OF_101) == mounts
    assert p.materials_mounts({"course-101", "course-101:instructors"}) == mounts
    assert p.materials_mounts({"course-101", "course-101:assistants"}) == mounts  # a TA
    assert p.materials_mounts(MEMBER_OF_101) == {}  # a researcher who sits in
    assert p.materials_mounts({"course-202:students"}) == {}
    # a course file cannot mount another volume (a user's home) into its servers
    bad = course_dir(tmp_path, "student")
    with open(f"{bad}/course-101.toml", "a") as f:
        f.write('[materials]\nvolume = "qustody-home-bob-1a2b"\n')
    with pytest.raises(ValueError, match=r"materials\.volume: 'qustody-home-bob-1a2b' does not "):
        policy(profiles=LAB, courses_dir=bad).check()


def with_materials(d: str, course_id: str = "course-101", staff: str = "",
                   assignment: bool = True) -> str:
    """Give ``course_id``'s file in ``d`` its materials (and an assignment), and
    ``staff`` as its assignments volume."""
    import time

    from hub_ext.courses.model import stamp

    extra = f'assignments_volume = "{staff}"\n' if staff else ""
    if assignment:
        extra += (f'[[assignments]]\nname = "hw1"\nrelease = {stamp(time.time() + 86400)}\n'
                  f"due = {stamp(time.time() + 2 * 86400)}\n")
    with open(f"{d}/{course_id}.toml", "a") as f:
        f.write(f'[materials]\nvolume = "qustody-materials-{course_id}"\n{extra}')
    return d


def test_the_assignments_volume_is_mounted_for_the_courses_staff_only(tmp_path, caplog):
    """Unreleased assignments (and their solutions) live in the staff's volume: students
    get the shared materials only, instructors and TAs both; and the hub starts without
    warning that students can read them."""
    staff = "qustody-materials-course-101-staff"
    p = policy(profiles=LAB, courses_dir=with_materials(course_dir(tmp_path), staff=staff))
    with caplog.at_level("WARNING"):
        p.check()
    assert "readable" not in caplog.text and "can read" not in caplog.text, caplog.text
    shared = {"qustody-materials-course-101": "/srv/qustody/materials/course-101"}
    both = {**shared, staff: "/srv/qustody/materials-staff/course-101"}
    assert p.materials_mounts(STUDENT_OF_101) == shared
    assert p.materials_mounts({"course-101", "course-101:instructors"}) == both
    assert p.materials_mounts({"course-101", "course-101:assistants"}) == both  # a TA
    assert p.materials_mounts(MEMBER_OF_101) == {}  # a researcher who sits in
    assert p.materials_mounts({"course-101:observers"}) == {}


def test_an_assignments_volume_is_named_like_materials_and_never_a_students_volume(tmp_path):
    bad = with_materials(course_dir(tmp_path, "student"), staff="qustody-home-bob-1a2b")
    with pytest.raises(ValueError, match=r"materials\.assignments_volume: 'qustody-home-bob-1a2b' "
                       r"does not start with 'qustody-materials-' \(SpawnPolicy\."
                       r"materials_volume_prefix\); name the course's assignments volume"):
        policy(profiles=LAB, courses_dir=bad).check()
    # course-202's students would read course-101's unreleased assignments
    d = course_dir(tmp_path)
    text = Path(d, "course-101.toml").read_text()
    Path(d, "course-202.toml").write_text(text.replace("course-101", "course-202"))
    with_materials(d, staff="qustody-materials-course-202")
    with_materials(d, "course-202", assignment=False)
    with pytest.raises(ValueError, match=r"course-202\.toml: materials\.volume: "
                       r"'qustody-materials-course-202' is the assignments_volume of course-101"):
        policy(profiles=LAB, courses_dir=d).check()
    # the same edit made while the hub runs: logged, and that volume reaches no student
    Path(d, "course-101.toml").write_text(text)
    with_materials(d, staff="qustody-materials-course-101-staff")
    p = policy(profiles=LAB, courses_dir=d)
    p.courses().recheck_seconds = 0
    p.courses().load_now()
    assert p.materials_mounts({"course-202:students"}) == {
        "qustody-materials-course-202": "/srv/qustody/materials/course-202"}
    Path(d, "course-101.toml").write_text(text)
    with_materials(d, staff="qustody-materials-course-202")
    assert p.materials_mounts({"course-202:students"}) == {}
    assert p.materials_mounts({"course-101:assistants"}) == {
        "qustody-materials-course-101": "/srv/qustody/materials/course-101",
        "qustody-materials-course-202": "/srv/qustody/materials-staff/course-101"}


def test_a_course_that_releases_from_its_materials_is_warned_about_at_start_up(tmp_path,
                                                                              caplog):
    p = policy(profiles=LAB, courses_dir=with_materials(course_dir(tmp_path)))
    with caplog.at_level("WARNING"):
        p.check()
    assert caplog.text.count("course-101: its assignments are released from its materials "
                             "volume qustody-materials-course-101, which its students can "
                             "read before each release time") == 1, caplog.text
    assert "assignments_volume" in caplog.text
    # without a staff volume, staff and students see the same materials (as before)
    shared = {"qustody-materials-course-101": "/srv/qustody/materials/course-101"}
    assert p.materials_mounts({"course-101:instructors"}) == shared


def test_a_course_file_that_names_a_non_student_profile_stops_the_hub(tmp_path):
    with pytest.raises(ValueError, match=r"profile\.name: 'researcher' is not a hub profile that "
                       r"allows the 'student' role; student profiles: student, lab"):
        policy(profiles=LAB, courses_dir=course_dir(tmp_path, "researcher")).check()
    missing = str(tmp_path / "nowhere")
    with pytest.raises(ValueError, match=r"SpawnPolicy\.courses_dir: .* does not exist"):
        policy(courses_dir=missing).check()


@pytest.mark.parametrize(
    ("ended_days_ago", "roles", "groups", "refused"),
    [
        (8, {"user", "student"}, STUDENT_OF_101, True),  # closed: past end + 7 days' grace
        (6, {"user", "student"}, STUDENT_OF_101, False),  # in its grace week
        (None, {"user", "student"}, STUDENT_OF_101, False),  # running
        (8, {"user", "researcher"}, STUDENT_OF_101, False),  # a researcher keeps their server
        (8, {"user", "student", "instructor"}, STUDENT_OF_101, False),
        (8, {"user", "student"}, {*STUDENT_OF_101, "course-202:students"}, False),  # 202 runs
        (8, {"user", "student"}, set(), False),  # no course at all
    ],
)
def test_a_closed_course_keeps_only_its_students_out(tmp_path, ended_days_ago, roles, groups,
                                                     refused):
    p = policy(profiles=LAB, courses_dir=course_dir(tmp_path, ended_days_ago=ended_days_ago))
    p.check()
    if not refused:
        deadline = p.check_term(roles, groups)
        course = p.course_catalog().get("course-101")
        # a student of course-101 only: the server must stop when its term closes
        binds = groups == STUDENT_OF_101 and "student" in roles and len(roles) == 2
        assert deadline == (course.term.closes if binds else None), (roles, groups)
        return
    with pytest.raises(SpawnRefused) as e:
        p.check_term(roles, groups)
    assert e.value.status_code == 403
    assert "The term of course-101 (Intro QC) has ended" in e.value.log_message
    assert "Your files are kept until" in e.value.log_message


# -- the network ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "demo", "words"),
    [
        ({}, False, None),  # the internal network, the default
        ({"network_mode": "host"}, True, "allow_host_network = True"),
        ({"network_mode": "host", "allow_host_network": True}, False, "for demos only"),
        ({"network_mode": "host", "allow_host_network": True}, True, None),
        ({"allow_host_network": True}, False, None),  # the opt-in alone changes nothing
    ],
)
def test_host_network_only_by_opt_in_in_demo_mode(settings, demo, words):
    c = Config()
    for key, value in settings.items():
        setattr(c.SpawnPolicy, key, value)
    if words is None:
        p = validate_config(c, demo=demo)
        assert p.host_network == (settings.get("network_mode") == "host")
    else:
        with pytest.raises(ValueError, match=words):
            validate_config(c, demo=demo)


def test_default_network_is_internal_with_the_proxy_on_its_bridge():
    p = SpawnPolicy()
    assert p.network_mode == "qustody-users" and not p.host_network
    assert p.network_proxy_url == "http://198.18.7.1:8000"
    assert p.host_config(policy().decide({"student"}, {}).profile)["network_mode"] == "qustody-users"


GOOD_NETWORK = {
    "Name": "qustody-users",
    "Driver": "bridge",
    "Internal": True,
    "EnableIPv6": False,
    "IPAM": {"Config": [{"Subnet": "198.18.7.0/24", "Gateway": "198.18.7.1"}]},
}


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({}, None),
        ({"IPAM": {"Config": [{"Subnet": "198.18.7.0/24"}]}}, None),  # gateway implied
        ({"Internal": False}, "not internal"),
        ({"Driver": "macvlan"}, "driver"),
        ({"EnableIPv6": True}, "IPv6"),
        ({"IPAM": {"Config": [{"Subnet": "198.18.8.0/24"}]}}, "subnets"),
        ({"IPAM": {"Config": [{"Subnet": "198.18.7.0/24"}, {"Subnet": "10.9.0.0/24"}]}}, "subnets"),
        ({"IPAM": {"Config": [{"Subnet": "198.18.7.0/24", "Gateway": "198.18.7.9"}]}}, "gateway"),
    ],
)
def test_an_existing_network_must_be_qustodys_internal_one(change, problem):
    from hub_ext.network import network_problems

    problems = network_problems({**GOOD_NETWORK, **change}, "198.18.7.0/24")
    if problem is None:
        assert problems == []
    else:
        assert any(problem in x for x in problems), problems


@pytest.mark.parametrize(("value", "demo", "warned"), [
    ("nftables", False, False), ("off", True, False), ("off", False, True),
])
def test_host_firewall_off_is_reported_outside_demo_mode(value, demo, warned, caplog):
    c = Config()
    c.SpawnPolicy.host_firewall = value
    with caplog.at_level("WARNING"):
        assert validate_config(c, demo=demo).host_firewall == value
    assert ("SECURITY: SpawnPolicy.host_firewall = 'off'" in caplog.text) == warned, caplog.text


@pytest.mark.parametrize("value", ["iptables", "", "OFF", "none"])
def test_host_firewall_accepts_only_nftables_or_off(value):
    with pytest.raises(ValueError, match=r"use 'nftables' .* or 'off'"):
        policy(host_firewall=value)


def test_the_spawn_form_without_a_profile_says_where_the_user_goes_instead() -> None:
    """An observer or auditor lands on the spawn page after login: it says their role
    reads through the hub's pages and where they are, not only that nothing is allowed."""
    from hub_ext.spawner import profile_form

    text = profile_form([])
    assert "No server profile is available for your roles" in text
    assert "instructor page" in text and "audit page" in text and "<em>Services</em>" in text


@pytest.mark.parametrize("homes", ["qustody-materials-{username}", "qustody-{username}"])
def test_homes_and_course_materials_never_share_a_prefix(homes):
    """A home volume whose name could start with the materials prefix could be named by a
    course file as its materials: mounted into the course's servers, and deleted with the
    course's files at the end of its retention."""
    with pytest.raises(ValueError, match="course materials prefix 'qustody-materials-': a course file"):
        policy(home_volume_template=homes).check()
    policy(home_volume_template="lab2-home-{username}").check()
    policy(home_volume_template="h" * 78 + "-{username}").check()  # 128 characters at most
    # no materials prefix: no course may have materials, so nothing can overlap
    policy(home_volume_template=homes, materials_volume_prefix="").check()


def test_a_host_without_ipv6_gets_no_ipv6_setting(monkeypatch, tmp_path):
    """A host booted with ipv6.disable=1 has no /proc/sys/net/ipv6: the engine could not
    write the setting (every start would fail), and there is no IPv6 to switch off."""
    import hub_ext.spawner.policy as policy_module

    p = policy()
    decision = p.decide({"student"}, {})
    assert p.host_config(decision.profile)["sysctls"] == policy_module.NO_IPV6
    monkeypatch.setattr(policy_module, "IPV6_SYSCTLS", str(tmp_path / "none"))
    assert "sysctls" not in p.host_config(decision.profile)
    volume = p.volume_name("alice")
    info = _inspected(p, decision, volume)
    info["HostConfig"]["Sysctls"] = None
    assert p.verify(info, decision, IMG, volume) == []
