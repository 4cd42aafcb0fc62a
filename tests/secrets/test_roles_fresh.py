"""The secrets service delivers only on roles re-checked with the IdP lately
(``ServerApi.roles_max_age``): a user whose auth state holds no re-check record is
treated as one whose last re-check is old, not as one who needs none."""

from __future__ import annotations

import pytest

from hub_ext.server_api.secrets_routes import roles_fresh

NOW = 1_800_000_000.0


@pytest.mark.parametrize(("auth_state", "fresh"), [
    ({"qustody": {"refreshed_at": NOW - 60}}, True),
    ({"qustody": {"refreshed_at": NOW - 3600}}, False),  # older than the 600 s allowed
    ({"qustody": {"refreshed_at": "yesterday"}}, False),
    ({"qustody": None}, False),  # a login from before the record was kept
    ({"access_token": "..."}, False),  # another authenticator's auth state
    (None, False),
])
def test_only_a_recent_re_check_counts(auth_state, fresh):
    assert roles_fresh({"auth_state": auth_state}, 600, NOW) is fresh
