"""GET /qustody/api/session: how long this server has left (the labextension polls it)."""

from __future__ import annotations

import json

import pytest

from server_ext import session
from server_ext.session import SessionLimits

ENV = {
    "QUSTODY_PROFILE": "student",
    "QUSTODY_SESSION_ID": "abc123",
    "QUSTODY_STARTED_AT": "1000000",
    "QUSTODY_IDLE_TIMEOUT_SECONDS": "600",
    "QUSTODY_MAX_AGE_SECONDS": "3600",
    "QUSTODY_KERNEL_IDLE_TIMEOUT_SECONDS": "300",
    "QUSTODY_MAX_AGE_GRACE_SECONDS": "120",
    "JUPYTERHUB_ACTIVITY_INTERVAL": "60",
}


def test_limits_from_env_and_remaining_time():
    limits = SessionLimits.from_env(ENV)
    status = limits.status(last_activity=1_000_100, at=1_000_400)
    assert status["enforced"] is True and status["profile"] == "student"
    assert status["idle"] == {
        "timeout_seconds": 600,
        "idle_seconds": 300,
        "remaining_seconds": 300,
        "last_activity": "1970-01-12T13:48:20Z",
    }
    assert status["age"] == {"max_seconds": 3600, "age_seconds": 400, "remaining_seconds": 3200}
    assert status["stops_in_seconds"] == 300 and status["stop_reason"] == "idle"
    late = limits.status(last_activity=1_003_500, at=1_003_550)
    assert late["stop_reason"] == "max-age" and late["stops_in_seconds"] == 50
    assert limits.backstop_delay(at=1_000_000) == 3600 + 120


def test_no_limits_outside_a_qustody_container():
    limits = SessionLimits.from_env({})
    status = limits.status(last_activity=5, at=10)
    assert status["enforced"] is False and status["stops_in_seconds"] is None
    assert limits.backstop_delay(at=10) is None


@pytest.mark.parametrize("bad", ["", "-5", "soon", "0"])
def test_junk_values_mean_no_limit_not_a_crash(bad):
    limits = SessionLimits.from_env({**ENV, "QUSTODY_MAX_AGE_SECONDS": bad})
    assert limits.max_age is None


async def test_session_endpoint_reports_and_does_not_count_as_activity(
    jp_fetch, jp_serverapp, monkeypatch
):
    limits = SessionLimits.from_env({**ENV, "QUSTODY_STARTED_AT": "2000000000"})
    jp_serverapp.web_app.settings["qustody_session"] = limits
    monkeypatch.setattr(session, "now", lambda: 2_000_000_100.0)
    before = jp_serverapp.web_app.settings.get("api_last_activity")
    response = await jp_fetch("qustody", "api", "session")
    assert response.code == 200
    assert response.headers["Cache-Control"] == "no-store"
    body = json.loads(response.body)
    assert body["profile"] == "student" and body["session_id"] == "abc123"
    assert body["age"]["remaining_seconds"] == 3500
    assert body["kernel_idle_timeout_seconds"] == 300
    assert jp_serverapp.web_app.settings.get("api_last_activity") == before


async def test_keep_working_counts_as_activity_and_resets_the_idle_time(jp_fetch, jp_serverapp):
    """The clock's "keep working": the idle time starts again; the maximum age does not."""
    import time
    from datetime import UTC, datetime

    started = int(time.time()) - 100
    limits = SessionLimits.from_env({**ENV, "QUSTODY_STARTED_AT": str(started)})
    jp_serverapp.web_app.settings["qustody_session"] = limits
    # idle for 590 of its 600 seconds: the culler is due in 10 s
    idle_since = datetime.fromtimestamp(time.time() - 590, UTC)
    settings = jp_serverapp.web_app.settings  # every source web_app.last_activity() reads
    for key in [k for k in settings if k.endswith("_last_activity")] + ["started"]:
        settings[key] = idle_since
    settings["last_activity_times"] = {}
    settings["kernel_manager"].last_kernel_activity = idle_since
    before = json.loads((await jp_fetch("qustody", "api", "session")).body)
    assert before["stop_reason"] == "idle" and 5 <= before["stops_in_seconds"] <= 10

    response = await jp_fetch("qustody", "api", "session", "keepalive", method="POST", body=b"")
    assert response.code == 200
    after = json.loads(response.body)
    assert after["hub_notified"] is False  # no hub here: nothing to tell
    assert after["idle"]["idle_seconds"] <= 1 and after["idle"]["remaining_seconds"] >= 599
    assert jp_serverapp.web_app.settings["api_last_activity"] > idle_since
    # the maximum age is a hard limit: keep-alive does not move it
    assert abs(after["age"]["remaining_seconds"] - (3600 - 100)) <= 5
    assert after["stop_reason"] == "idle" and after["stops_in_seconds"] >= 599


async def test_keep_alive_needs_a_login(jp_fetch):
    from tornado.httpclient import HTTPClientError

    with pytest.raises(HTTPClientError) as e:
        await jp_fetch(
            "qustody", "api", "session", "keepalive", method="POST", body=b"",
            headers={"Authorization": "token wrong"},
        )  # fmt: skip
    assert e.value.code == 403
