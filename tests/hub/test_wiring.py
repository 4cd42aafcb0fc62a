"""Declarative wiring: components return fragments, ``apply`` merges them into a config
once, whatever their order, and stops on a conflict naming both sides."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from traitlets.config import Config

from hub_ext.wiring import Fragment, WiringConflict, apply

ROOT = Path(__file__).resolve().parents[2]

GATEWAY = Fragment(
    "gateway",
    services=[{"name": "qpu", "url": "http://127.0.0.1:8765"}],
    roles=[{"name": "student", "scopes": ["custom:qpu:submit"]},
           {"name": "qpu-operator", "scopes": ["custom:qpu:admin"], "users": ["admin"]}],
    custom_scopes={"custom:qpu:submit": {"description": "submit"}},
    server_token_scopes=["custom:qpu:submit"],
    environment={"QUSTODY_QPU_URL": "http://127.0.0.1:8000/services/qpu/"},
)
PAGE = Fragment(
    "page",
    services=[{"name": "courses", "url": "http://127.0.0.1:8083"}],
    roles=[{"name": "student", "scopes": ["access:services!service=courses"]},
           {"name": "qpu-operator", "scopes": ["custom:qpu:admin"], "users": ["ada"]}],
    settings={"SpawnPolicy.courses_dir": "/srv/courses"},
)


def config() -> Config:
    c = Config()
    c.JupyterHub.load_roles = [{"name": "student", "description": "students",
                                "scopes": ["self"], "users": ["sam"]}]
    return c


def merged(*fragments: Fragment) -> Config:
    c = config()
    apply(c, *fragments)
    return c


def test_fragments_merge_into_the_config_whatever_their_order():
    results = []
    for order in itertools.permutations([GATEWAY, PAGE]):
        c = merged(*order)
        results.append((
            sorted(s["name"] for s in c.JupyterHub.services),
            sorted((r["name"], tuple(r["scopes"]), tuple(r.get("users", [])))
                   for r in c.JupyterHub.load_roles),
        ))
    assert results[0] == results[1]
    c = merged(GATEWAY, PAGE)
    roles = {r["name"]: r for r in c.JupyterHub.load_roles}
    # the config's role keeps its members and description; components add scopes
    assert roles["student"]["scopes"] == ["access:services!service=courses",
                                          "custom:qpu:submit", "self"]
    assert roles["student"]["users"] == ["sam"] and roles["student"]["description"] == "students"
    assert roles["qpu-operator"]["users"] == ["ada", "admin"]
    assert c.SpawnPolicy.courses_dir == "/srv/courses"
    assert c.Spawner.environment["QUSTODY_QPU_URL"].endswith("/services/qpu/")
    # a server token keeps JupyterHub's server-role scopes and gets the component's
    assert "users:activity!user" in c.Spawner.server_token_scopes
    assert "custom:qpu:submit" in c.Spawner.server_token_scopes


@pytest.mark.parametrize(("other", "what"), [
    (Fragment("other", services=[{"name": "qpu", "url": "http://127.0.0.1:9999"}]),
     "service 'qpu'"),
    (Fragment("other", custom_scopes={"custom:qpu:submit": {"description": "else"}}),
     "custom scope 'custom:qpu:submit'"),
    (Fragment("other", environment={"QUSTODY_QPU_URL": "http://elsewhere/"}),
     "Spawner.environment['QUSTODY_QPU_URL']"),
])
def test_two_components_that_disagree_stop_the_hub_naming_both(other, what):
    with pytest.raises(WiringConflict) as e:
        merged(GATEWAY, other)
    assert what in str(e.value) and "gateway" in str(e.value) and "other" in str(e.value)


def test_a_setting_the_config_made_differently_is_a_conflict_not_overwritten():
    c = config()
    c.SpawnPolicy.courses_dir = "/elsewhere"
    with pytest.raises(WiringConflict, match=r"SpawnPolicy\.courses_dir .*jupyterhub_config\.py"):
        apply(c, PAGE)
    assert c.SpawnPolicy.courses_dir == "/elsewhere"
    c.SpawnPolicy.courses_dir = "/srv/courses"  # the same value is no conflict
    apply(c, PAGE)


def test_the_same_fragment_twice_is_one_and_files_are_written_private(tmp_path):
    path = tmp_path / "qpu" / "config.py"
    f = Fragment("gateway", services=GATEWAY.services, files={path: "c = 1\n"})
    c = merged(f, f)
    assert len(c.JupyterHub.services) == 1 and "extra_handlers" not in c.JupyterHub
    assert path.read_text() == "c = 1\n" and path.stat().st_mode & 0o777 == 0o600


LOAD = """
import json, sys
from traitlets.config.loader import PyFileConfigLoader
c = PyFileConfigLoader("jupyterhub_config.py", path=sys.argv[1]).load_config()
print(json.dumps({"roles": c.JupyterHub.load_roles, "services": c.JupyterHub.services,
                  "token_scopes": c.Spawner.server_token_scopes,
                  "user_scopes": sorted(c.JupyterHub.extra_user_scopes),
                  "homes": c.SpawnPolicy.get("home_volume_template"),
                  "hub": sorted(c.JupyterHub.keys())}, default=str))
"""


def test_the_reference_config_is_wired_without_conflict(tmp_path):
    """The reference configuration's components apply cleanly and give what the hub's
    users rely on: the gateway's scope on the student role and on server tokens, the
    instructor page for course staff. (Loaded in its own process: it starts the secret
    delivery and the audit log.)"""
    env = {**os.environ, "QUSTODY_STATE_DIR": str(tmp_path), "QUSTODY_SPAWNER": "local",
           "QUSTODY_DEMO_PASSWORD": "a-test-password", "QUSTODY_IMAGE_DIGEST": ""}
    env = {k: v for k, v in env.items()
           if not k.startswith("QUSTODY_OIDC") and k != "QUSTODY_HOME_VOLUME_TEMPLATE"}
    out = subprocess.run([sys.executable, "-c", LOAD, str(ROOT)], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=120, check=True)
    c = json.loads(out.stdout.splitlines()[-1])
    roles = {r["name"]: r for r in c["roles"]}
    assert "custom:qpu:submit" in roles["student"]["scopes"]
    assert "access:services!service=courses" in roles["instructor"]["scopes"]
    assert "custom:qpu:submit" in c["token_scopes"]
    assert {s["name"] for s in c["services"]} == {
        "qustody-culler", "audit", "qpu", "courses", "qustody"}
    assert (tmp_path / "qpu" / "qpu_config.py").stat().st_mode & 0o777 == 0o600
    # the hub's own routes are untouched: what servers call is the qustody service, which
    # knows a server by the scope every server token carries for its own server only
    assert "extra_handlers" not in c["hub"]
    assert "custom:qustody:server!server" in c["token_scopes"]
    assert "custom:qustody:server!user" in c["user_scopes"]
    assert roles["qustody-service"]["services"] == ["qustody"]
    for key in ("ticket.key", "config.py"):
        assert (tmp_path / "server_api" / key).stat().st_mode & 0o777 == 0o600
    assert c["homes"] is None  # SpawnPolicy's default, qustody-home-{username}


def test_the_home_volumes_are_named_by_the_environment_for_servers_and_courses(tmp_path):
    """QUSTODY_HOME_VOLUME_TEMPLATE names the homes (two hubs on one engine, each demo
    state): the spawner's policy and the courses service's term steps get the same."""
    env = {**os.environ, "QUSTODY_STATE_DIR": str(tmp_path), "QUSTODY_SPAWNER": "docker",
           "QUSTODY_DEMO_PASSWORD": "a-test-password", "QUSTODY_IMAGE_DIGEST": "sha256:" + "a" * 64,
           "QUSTODY_HOME_VOLUME_TEMPLATE": "lab2-home-{username}"}
    env = {k: v for k, v in env.items() if not k.startswith("QUSTODY_OIDC")}
    out = subprocess.run([sys.executable, "-c", LOAD, str(ROOT)], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=120, check=True)
    c = json.loads(out.stdout.splitlines()[-1])
    assert c["homes"] == "lab2-home-{username}"
    courses = next(s for s in c["services"] if s["name"] == "courses")
    volumes = json.loads(courses["environment"]["QUSTODY_TERM_VOLUMES"])
    assert volumes["home_volume_template"] == "lab2-home-{username}"


def test_settings_that_are_sets_are_joined_not_conflicting():
    """extra_user_scopes: a site's own scopes for every user and the audit page's are kept."""
    c = Config()
    c.JupyterHub.extra_user_scopes = {"read:metrics"}
    apply(c, Fragment("audit page", settings={"JupyterHub.extra_user_scopes":
                                              {"access:services!service=audit"}}))
    assert c.JupyterHub.extra_user_scopes == {"read:metrics", "access:services!service=audit"}


def test_settings_that_are_dicts_of_lists_are_joined_not_conflicting():
    """role_extra_scopes: the config's own entries and a component's are both kept."""
    c = config()
    c.QustodyAuthenticator.role_extra_scopes = {"student": ["read:metrics"]}
    page = Fragment("page", settings={"QustodyAuthenticator.role_extra_scopes":
                                      {"course-staff": ["access:services!service=courses"]}})
    other = Fragment("other", settings={"QustodyAuthenticator.role_extra_scopes":
                                        {"course-staff": ["custom:qpu:read"]}})
    apply(c, page, other)
    assert c.QustodyAuthenticator.role_extra_scopes == {
        "student": ["read:metrics"],
        "course-staff": ["access:services!service=courses", "custom:qpu:read"],
    }


def test_the_gateway_fragment_runs_two_workers_unless_told_otherwise(tmp_path, monkeypatch):
    from hub_ext.qpu.hub import qpu_gateway

    c = Config()
    c.AuditLog.path = str(tmp_path / "audit.jsonl")
    c.AuditLog.key_file = str(tmp_path / "audit.key")
    monkeypatch.delenv("QUSTODY_QPU_WORKERS", raising=False)

    def written(fragment: Fragment) -> str:
        (text,) = [t for p, t in fragment.files.items() if p.name == "qpu_config.py"]
        return text

    fragment = qpu_gateway(c, tmp_path, courses_dir="")
    assert "c.QpuGateway.workers = 2\n" in written(fragment)
    (service,) = fragment.services
    assert service["environment"]["PROMETHEUS_MULTIPROC_DIR"] == str(tmp_path / "qpu" / "metrics")
    monkeypatch.setenv("QUSTODY_QPU_WORKERS", "1")
    assert "c.QpuGateway.workers = 1\n" in written(qpu_gateway(c, tmp_path, courses_dir=""))
    monkeypatch.setenv("QUSTODY_QPU_WORKERS", "two")
    with pytest.raises(ValueError, match="QUSTODY_QPU_WORKERS='two': give the number"):
        qpu_gateway(c, tmp_path, courses_dir="")
    with pytest.raises(ValueError, match="1 to 64"):
        qpu_gateway(c, tmp_path, courses_dir="", workers=0)


def test_a_bad_home_volume_template_stops_the_hub_with_one_line(tmp_path):
    env = {**os.environ, "QUSTODY_STATE_DIR": str(tmp_path), "QUSTODY_SPAWNER": "local",
           "QUSTODY_DEMO_PASSWORD": "a-test-password", "QUSTODY_IMAGE_DIGEST": "",
           "QUSTODY_HOME_VOLUME_TEMPLATE": "/srv/home/{username}"}
    env = {k: v for k, v in env.items() if not k.startswith("QUSTODY_OIDC")}
    out = subprocess.run([sys.executable, "-c", LOAD, str(ROOT)], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "QUSTODY_HOME_VOLUME_TEMPLATE='/srv/home/{username}' must be a volume name" \
        in out.stderr
