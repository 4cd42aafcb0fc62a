"""Claim tickets (signed by the hub, single use, bound, short-lived) and the class policy."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from traitlets.config import Config

from hub_ext.secrets import tickets
from hub_ext.secrets.policy import SecretClassPolicy
from hub_ext.secrets.tickets import TicketBook, TicketRefused, TicketSigner, load_ticket_key

TOKEN = "server-token-of-alice"
KEY = b"k" * 32


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    t = [1000.0]
    monkeypatch.setattr(tickets, "now", lambda: t[0])
    return t


def refused(book: TicketBook, text: str, user: str, server: str, token: str) -> str:
    with pytest.raises(TicketRefused) as e:
        book.redeem(text, user, server, token)
    return e.value.reason


def test_ticket_is_single_use_and_holds_no_token(clock: list[float]) -> None:
    book = TicketBook(KEY)
    text, ticket = TicketSigner(KEY, 30).issue("alice", "", TOKEN, "student", ("student",))
    assert TOKEN not in text and text.startswith("qtk_") and len(text) < tickets.MAX_TICKET
    assert book.ticket_id(text) == ticket.id
    assert book.redeem(text, "alice", "", TOKEN).profile == "student"
    assert refused(book, text, "alice", "", TOKEN) == "already-redeemed"


@pytest.mark.parametrize(
    ("user", "server", "token", "reason"),
    [
        ("bob", "", TOKEN, "wrong-user"),
        ("alice", "other", TOKEN, "wrong-server"),
        # tokens are per start: another token of the same server is a later start's
        ("alice", "", "another-spawn-token", "server-stopped"),
    ],
)
def test_a_ticket_works_only_for_its_server_and_is_burned_when_misused(
    clock: list[float], user: str, server: str, token: str, reason: str
) -> None:
    book = TicketBook(KEY)
    text, _ = TicketSigner(KEY, 30).issue("alice", "", TOKEN, "student", ("student",))
    assert refused(book, text, user, server, token) == reason
    # the rightful server cannot use it any more either
    assert refused(book, text, "alice", "", TOKEN) == "already-redeemed"


def test_expiry_and_tickets_older_than_the_service(clock: list[float]) -> None:
    signer = TicketSigner(KEY, 30)
    text, _ = signer.issue("alice", "", TOKEN, "student", ("student",))
    book = TicketBook(KEY)
    clock[0] += 30.5
    assert refused(book, text, "alice", "", TOKEN) == "expired"
    # issued before the service (re)started: it outlives no restart
    text, _ = signer.issue("alice", "", TOKEN, "student", ("student",))
    clock[0] += 5
    assert refused(TicketBook(KEY), text, "alice", "", TOKEN) == "unknown"


@pytest.mark.parametrize(
    "text", ["", "qtk_zz_abc", "nonsense", "qtk_" + "a" * 300, "qtk_0123456789ab_x" * 200]
)
def test_malformed_and_unknown_tickets(clock: list[float], text: str) -> None:
    book = TicketBook(KEY)
    assert refused(book, text, "alice", "", TOKEN) == "malformed"
    assert refused(book, "qtk_0123456789ab_notissued", "alice", "", TOKEN) == "unknown"
    assert refused(book, "qtk_0123456789ab_eyJ9.bm90YW1hYw", "alice", "", TOKEN) == "unknown"


def test_the_ticket_key_file_is_private_and_whole(tmp_path: Path) -> None:
    path = tmp_path / "state" / "ticket.key"
    key = load_ticket_key(path, create=True)
    assert len(key) == 32 and oct(path.stat().st_mode & 0o777) == "0o600"
    assert load_ticket_key(path) == key
    os.chmod(path, 0o644)
    with pytest.raises(ValueError, match="readable by others"):
        load_ticket_key(path)
    path.write_text("tooshort\n")
    os.chmod(path, 0o600)
    with pytest.raises(ValueError, match="32-byte hex key"):
        load_ticket_key(path)
    with pytest.raises(ValueError, match="cannot be read"):
        load_ticket_key(tmp_path / "missing.key")


def policy(**traits: Any) -> SecretClassPolicy:
    c = Config()
    for k, v in traits.items():
        setattr(c.SecretClassPolicy, k, v)
    return SecretClassPolicy(config=c)


TABLE = {
    "profile_classes": {"student": ["sandbox", "simulator"], "researcher": ["*"]},
    "role_classes": {
        "student": ["sandbox", "simulator"],
        "researcher": ["sandbox", "prod", "hardware"],
    },
}


@pytest.mark.parametrize(
    ("cls", "profile", "roles", "allowed"),
    [
        ("sandbox", "student", ["student"], True),
        ("prod", "student", ["student"], False),
        ("prod", "student", ["researcher"], False),  # a researcher on a student profile
        ("hardware", "student", ["researcher", "student"], False),
        ("prod", "researcher", ["researcher"], True),
        ("dev", "researcher", ["researcher"], False),  # no role allows dev
        ("sandbox", "admin", ["researcher"], False),  # profile not listed: nothing
        ("sandbox", "researcher", [], False),  # no role: nothing
    ],
)
def test_class_policy_decision_table(
    cls: str, profile: str, roles: list[str], allowed: bool
) -> None:
    assert policy(**TABLE).allows(cls, profile, roles) is allowed


def test_empty_policy_delivers_nothing() -> None:
    assert not policy().allows("sandbox", "student", ["student"])


def test_restricted_profile_with_restricted_class_stops_start_up() -> None:
    p = policy(profile_classes={"student": ["sandbox", "prod"]})
    with pytest.raises(ValueError, match="restricted profile"):
        p.check(["student"])
    # '*' on a restricted profile still never yields a restricted class
    assert not policy(profile_classes={"student": ["*"]}, role_classes={"student": ["*"]}).allows(
        "hardware", "student", ["student"]
    )


@pytest.mark.parametrize(
    ("traits", "message"),
    [
        ({"profile_classes": {"student": "sandbox"}}, "must be a list"),
        ({"role_classes": {"x": ["Bad Class"]}}, "not a class name"),
    ],
)
def test_bad_tables_are_refused(traits: dict[str, Any], message: str) -> None:
    with pytest.raises(Exception, match=message):
        policy(**traits)


def test_unknown_profile_names_are_refused_at_start_up() -> None:
    with pytest.raises(ValueError, match=r"not in SpawnPolicy\.profiles"):
        policy(profile_classes={"studnet": ["sandbox"]}).check(["student", "researcher"])


@pytest.mark.parametrize("text", ["qtk_0123456789ab_é.x", "qtk_0123456789ab_eyJ9.é"])
def test_non_ascii_tickets_are_malformed_not_an_error(clock: list[float], text: str) -> None:
    assert refused(TicketBook(KEY), text, "alice", "", TOKEN) == "malformed"
