"""Culling decisions per profile, with the clock patched."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest

from hub_ext import culling
from hub_ext.culling import CULLER_SCOPES, CullArbiter, culler, decide

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def server(started_ago: int, idle_for: int, limits: dict | None = None) -> dict:
    model = {
        "name": "",
        "full_name": "alice/",
        "started": (T0 - timedelta(seconds=started_ago)).isoformat(),
        "last_activity": (T0 - timedelta(seconds=idle_for)).isoformat(),
        "state": {},
    }
    if limits is not None:
        model["state"] = {"qustody": limits}
    return model


STUDENT = {"profile": "student", "idle_timeout": 600, "max_age": 3600}
RESEARCHER = {"profile": "researcher", "idle_timeout": 7200, "max_age": 43200}


@pytest.mark.parametrize(
    ("model", "reason"),
    [
        (server(100, 10, STUDENT), None),
        (server(700, 650, STUDENT), "idle"),
        (server(700, 650, RESEARCHER), None),  # a researcher may idle longer
        (server(3600, 0, STUDENT), "max-age"),  # busy, but too old
        (server(3599, 0, STUDENT), None),
        (server(50000, 0, RESEARCHER), "max-age"),
        (server(4000, 4000, STUDENT), "max-age"),  # both: age is reported
        (server(100, 100, None), None),  # no recorded limits: defaults apply
        (server(100, 1000, None), "idle"),
        (server(90000, 0, None), "max-age"),
        (server(100, 1000, {"profile": "x", "idle_timeout": "soon"}), "idle"),  # junk -> default
        # a student's server stops, busy or not, once their courses have closed
        (server(100, 0, {**STUDENT, "course_closes": int(T0.timestamp())}), "course-closed"),
        (server(100, 0, {**STUDENT, "course_closes": int(T0.timestamp()) + 1}), None),
        (server(100, 0, {**STUDENT, "course_closes": "never"}), None),  # junk: no deadline
    ],
)
def test_cull_decision_table(model, reason):
    decision = decide(model, default_idle=900, default_max_age=86400, at=T0)
    assert (decision.reason if decision else None) == reason


def test_arbiter_logs_every_cull_with_its_reason(monkeypatch, caplog):
    monkeypatch.setattr(culling, "now", lambda: T0)
    log = logging.getLogger("test-culler")
    arbiter = CullArbiter(log, default_max_age=86400)
    with caplog.at_level(logging.INFO, "test-culler"):
        assert arbiter(inactive=timedelta(0), inactive_limit=900, server=server(3700, 1, STUDENT))
        assert not arbiter(inactive=timedelta(0), inactive_limit=900, server=server(10, 1, STUDENT))
    [line] = [r.getMessage() for r in caplog.records if r.name == "test-culler"]
    assert line.startswith("qustody-cull server=alice/ profile=student reason=max-age")
    assert "age=1:01:40" in line and "limit=1:00:00" in line


def test_arbiter_does_not_cull_on_bad_input(caplog):
    arbiter = CullArbiter(logging.getLogger("test-culler"), 86400)
    assert not arbiter(inactive=None, inactive_limit=900, server={"started": "not a date"})


def test_culler_service_is_least_privilege():
    fragment = culler(cull_every=30, default_idle_timeout=1200)
    [service], [role] = fragment.services, fragment.roles
    assert service["command"][1:3] == ["-m", "hub_ext.culling"]
    assert "--cull-every=30" in service["command"] and "--timeout=1200" in service["command"]
    assert role["services"] == [service["name"]]
    assert set(role["scopes"]) == set(CULLER_SCOPES)
    assert not any(s == "admin-ui" or s.startswith(("admin:users", "admin:servers")) for s in role["scopes"])
    assert "delete:servers" in role["scopes"] and "list:users" in role["scopes"]
    # the scopes exist in this JupyterHub, and none of them is the admin role
    from jupyterhub.scopes import scope_definitions

    assert all(s in scope_definitions for s in role["scopes"])
