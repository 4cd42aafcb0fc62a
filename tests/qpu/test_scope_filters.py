"""Scopes as JupyterHub 6.1 reports them: filtered forms (``!user=``, ``!group=``,
``!server=``) of the submit scope count for their own caller only; operator and
read-all powers count only unfiltered."""

from __future__ import annotations

import pytest
import requests
from conftest import bell, qpy_b64

BODY = {"backend": "aer_simulator", "circuits": [{"qpy": qpy_b64(bell())}], "shots": 10,
        "tags": {"project": "astro", "purpose": "testing"}}


@pytest.mark.parametrize(
    ("user", "scopes", "groups", "status"),
    [
        ("carol", ["custom:qpu:submit!user=carol"], [], 201),
        ("carol", ["custom:qpu:submit!server=carol/"], [], 201),
        ("erin", ["custom:qpu:submit!group=stargazers"], ["stargazers"], 201),
        ("carol", ["custom:qpu:submit!user=alice"], [], 403),  # someone else's filter
        ("carol", ["custom:qpu:submit!server=alice/"], [], 403),
        ("erin", ["custom:qpu:submit!group=chemists"], ["stargazers"], 403),
        ("carol", ["custom:qpu:submit!service=carol"], [], 403),  # a user is no service
    ],
)
def test_filtered_submit_counts_only_for_the_caller(gateway, hub, user, scopes, groups, status):
    token = hub.add(user, scopes, groups=groups)
    r = requests.post(gateway.url + "api/jobs", json=BODY, timeout=60,
                      headers={"Authorization": f"token {token}"})
    assert r.status_code == status, r.text
    if status == 403:
        assert r.json()["error"] == "MISSING_SCOPE"


def test_filtered_operator_and_reader_scopes_are_refused(gateway, hub):
    ops = hub.add("ops", ["custom:qpu:admin!user=ops"])
    r = requests.post(gateway.url + "api/admin/backends/aer_simulator/pause", timeout=60,
                      json={"reason": "x"}, headers={"Authorization": f"token {ops}"})
    assert (r.status_code, r.json()["error"]) == (403, "MISSING_SCOPE")
    reader = hub.add("auditor", ["custom:qpu:read-all!group=security"], groups=["security"])
    r = requests.get(gateway.url + "api/admin/export", timeout=60,
                     headers={"Authorization": f"token {reader}"})
    assert r.status_code == 403
