"""The qustody service forgets stopped servers and releases what they held, and never
what a running (or newly started) server holds.

The hub's server listing is a stand-in here (``Listing``): a real hub cannot be made to
list a running server as gone for one round, or to restart a server between two
questions, on cue. The delivery, tickets and store are real."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from traitlets.config import Config

from hub_ext.secrets.delivery import RoleLost, SecretDelivery
from hub_ext.secrets.tickets import TicketSigner
from hub_ext.server_api.app import Reconcile

KEY = b"k" * 32


class Listing:
    """What the hub's ``GET users?state=active`` says, as HubRest.running returns it."""

    def __init__(self) -> None:
        self.servers: dict[tuple[str, str], str] = {}

    async def running(self) -> dict[tuple[str, str], str]:
        return dict(self.servers)


class Released:
    """The store, counting what is released (the embedded store holds no leases)."""

    def __init__(self, broker: object) -> None:
        self._broker = broker
        self.released: list[tuple[str, str]] = []
        self.held: list[tuple[str, str]] = []

    def release(self, user: str, server: str) -> None:
        self.released.append((user, server))

    def outstanding(self) -> list[tuple[str, str]]:
        return list(self.held)

    def __getattr__(self, name: str) -> object:
        return getattr(self._broker, name)


def delivery(tmp_path: Path) -> tuple[SecretDelivery, Released]:
    c = Config()
    c.SecretBroker.db_path = str(tmp_path / "s.sqlite")
    c.SecretBroker.master_key_file = str(tmp_path / "s.key")
    c.SecretBroker.create_master_key = True
    c.SecretClassPolicy.profile_classes = {"student": ["sandbox"]}
    c.SecretClassPolicy.role_classes = {"student": ["sandbox"]}
    d = SecretDelivery(c, ["student"], ticket_key=KEY)
    spy = Released(d.broker)
    d.broker = spy  # type: ignore[assignment]
    return d, spy


def redeem(d: SecretDelivery, user: str, token: str, started: str) -> None:
    text, _ = TicketSigner(KEY).issue(user, "", token, "student", ("student",))
    d.redeem(text, user, "", token, None, ("student",))
    d.note_started(user, "", started)


def test_a_server_gone_from_two_listings_is_forgotten_and_released(tmp_path: Path) -> None:
    d, spy = delivery(tmp_path)
    hub = Listing()
    watch = Reconcile(d, hub)  # type: ignore[arg-type]
    redeem(d, "alice", "tok", "t1")
    hub.servers[("alice", "")] = "t1"
    asyncio.run(watch())
    assert d.session("alice", "", "tok") is not None and spy.released == []
    del hub.servers[("alice", "")]
    asyncio.run(watch())  # one listing without it: maybe a listing gone wrong
    assert d.session("alice", "", "tok") is not None and spy.released == []
    asyncio.run(watch())
    assert d.session("alice", "", "tok") is None and spy.released == [("alice", "")]


def test_a_restarted_server_loses_the_old_session_at_once(tmp_path: Path) -> None:
    d, spy = delivery(tmp_path)
    hub = Listing()
    watch = Reconcile(d, hub)  # type: ignore[arg-type]
    redeem(d, "alice", "tok-1", "t1")
    hub.servers[("alice", "")] = "t2"  # stopped and started again, not yet redeemed
    asyncio.run(watch())
    assert d.session("alice", "", "tok-1") is None and spy.released == [("alice", "")]


def test_a_new_start_that_redeemed_keeps_its_session_and_leases(tmp_path: Path) -> None:
    """The watch read the old session, then the server started anew and redeemed before
    the watch got to it: the new start's session and leases stay."""
    d, spy = delivery(tmp_path)
    redeem(d, "alice", "tok-1", "t1")
    old = d.sessions()[("alice", "")]
    redeem(d, "alice", "tok-2", "t2")
    spy.released.clear()
    d.server_stopped("alice", "", old)
    assert d.session("alice", "", "tok-2") is not None and spy.released == []


def test_what_an_earlier_run_obtained_for_a_gone_server_is_released(tmp_path: Path) -> None:
    d, spy = delivery(tmp_path)
    hub = Listing()
    watch = Reconcile(d, hub)  # type: ignore[arg-type]
    spy.held = [("bob", "lab"), ("carol", "")]  # from the release file of an earlier run
    hub.servers[("carol", "")] = "t1"  # still running: hers stay until she stops
    asyncio.run(watch())
    asyncio.run(watch())
    assert spy.released == [("bob", "lab")]


def test_a_demoted_users_leases_are_released_with_the_session(tmp_path: Path) -> None:
    d, spy = delivery(tmp_path)
    redeem(d, "alice", "tok", "t1")
    spy.released.clear()
    with pytest.raises(RoleLost):
        d.refresh("alice", "", "tok", None, ("user",))
    assert d.session("alice", "", "tok") is None and spy.released == [("alice", "")]
