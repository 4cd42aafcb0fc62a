"""The hub's delivery: configuration checked at start-up, policy applied to what the
broker returns, sessions for refresh, clean-up when a server stops."""

from __future__ import annotations

from pathlib import Path

import pytest
from traitlets.config import Config

from hub_ext.secrets.delivery import SecretDelivery
from hub_ext.secrets.model import SecretError
from hub_ext.secrets.tickets import TicketRefused


def config(tmp_path: Path, **broker: object) -> Config:
    c = Config()
    c.SecretBroker.db_path = str(tmp_path / "s.sqlite")
    c.SecretBroker.master_key_file = str(tmp_path / "s.key")
    c.SecretBroker.create_master_key = True
    c.SecretClassPolicy.profile_classes = {"student": ["sandbox"], "researcher": ["*"]}
    c.SecretClassPolicy.role_classes = {"student": ["sandbox"], "researcher": ["*"]}
    for k, v in broker.items():
        setattr(c.SecretBroker, k, v)
    return c


def test_redeem_filters_by_class_and_refresh_follows_the_store(tmp_path: Path) -> None:
    d = SecretDelivery(config(tmp_path), ["student", "researcher"])
    store = d.broker
    store.put("user:alice", "SANDBOX", "sandbox", b"sandbox-value-1")  # type: ignore[attr-defined]
    store.put("user:alice", "PROD", "prod", b"prod-value-0001")  # type: ignore[attr-defined]
    text = d.issue_ticket("alice", "", "tok-a", "student", ("researcher", "student"))
    _, got = d.redeem(text, "alice", "", "tok-a", None)
    assert [s.name for s in got] == ["SANDBOX"]  # a student profile never gets prod
    store.rotate("user:alice", "SANDBOX", b"sandbox-value-2")  # type: ignore[attr-defined]
    result = d.refresh("alice", "", "tok-a", None)
    assert result is not None and [s.value for s in result[1]] == ["sandbox-value-2"]
    assert d.refresh("alice", "", "another-token", None) is None
    d.server_stopped("alice", "")
    assert d.refresh("alice", "", "tok-a", None) is None


def test_a_new_spawn_burns_the_previous_ticket(tmp_path: Path) -> None:
    d = SecretDelivery(config(tmp_path), ["student", "researcher"])
    old = d.issue_ticket("alice", "", "tok-1", "student", ("student",))
    d.issue_ticket("alice", "", "tok-2", "student", ("student",))
    with pytest.raises(TicketRefused) as e:
        d.redeem(old, "alice", "", "tok-1", None)
    assert e.value.reason == "server-stopped"


@pytest.mark.parametrize(
    ("broker", "message"),
    [
        ({"ticket_ttl": 61.0}, "between 1 and 60 seconds"),
        ({"ticket_ttl": 0.0}, "between 1 and 60 seconds"),
        ({"backend": "redis"}, "'embedded' or 'vault'"),
        ({"backend": "vault"}, r"VaultBroker\.url is not set"),
        ({"create_master_key": False, "master_key_file": "/nonexistent/k"}, "does not exist"),
    ],
)
def test_bad_settings_stop_the_hub(tmp_path: Path, broker: dict[str, object], message: str) -> None:
    with pytest.raises((ValueError, SecretError), match=message):
        SecretDelivery(config(tmp_path, **broker), ["student", "researcher"])


def test_restricted_class_for_student_profile_stops_the_hub(tmp_path: Path) -> None:
    c = config(tmp_path)
    c.SecretClassPolicy.profile_classes = {"student": ["sandbox", "hardware"]}
    with pytest.raises(ValueError, match="restricted profile"):
        SecretDelivery(c, ["student"])
