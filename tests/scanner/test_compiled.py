"""Stored hyperscan databases: loaded only for the very expressions they were compiled
from, and compiled again whenever a stored one cannot be trusted."""

from __future__ import annotations

import hashlib
from pathlib import Path

import hyperscan
import pytest

from server_ext.guard import SaveGuard, SaveRefused
from server_ext.scanner import compiled

EXPRESSIONS = [rb"\bghp_[A-Za-z0-9]{36}", rb"AKIA[0-9A-Z]{16}"]
FLAGS = [hyperscan.HS_FLAG_SOM_LEFTMOST, 0]
TEXT = b"x ghp_Zq8kP3vT9xLm2RwY7nB4cJ6hF1sD5gA0eKuW y AKIAZ3MEXAMPLEKEY7QX"


def matches(db: hyperscan.Database) -> list[tuple[int, int]]:
    found: list[tuple[int, int]] = []
    db.scan(TEXT, match_event_handler=lambda i, s, e, _f, _c: found.append((i, e)),
            scratch=hyperscan.Scratch(db))  # as the engine scans: a loaded one has none
    return found


@pytest.fixture
def compiles(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts compiles (they still happen)."""
    calls: list[int] = []
    original = compiled._compile

    def counting(expressions: list[bytes], flags: list[int]) -> hyperscan.Database:
        calls.append(len(expressions))
        return original(expressions, flags)

    monkeypatch.setattr(compiled, "_compile", counting)
    return calls


def test_a_stored_database_is_loaded_instead_of_compiled(tmp_path: Path, compiles: list[int]):
    fresh = compiled.database(EXPRESSIONS, FLAGS, tmp_path)
    assert compiles == [2]  # nothing stored yet
    compiled.store(EXPRESSIONS, FLAGS, tmp_path)
    compiles.clear()
    loaded = compiled.database(EXPRESSIONS, FLAGS, tmp_path)
    assert compiles == []
    assert matches(loaded) == matches(fresh) == [(0, 42), (1, 65)]


@pytest.mark.parametrize(
    "changed",
    [
        (EXPRESSIONS[:1], FLAGS[:1]),  # fewer expressions
        (EXPRESSIONS, [0, 0]),  # other flags
        (list(reversed(EXPRESSIONS)), list(reversed(FLAGS))),  # other ids
    ],
)
def test_a_stored_database_serves_only_its_own_expressions(
    tmp_path: Path, compiles: list[int], changed: tuple[list[bytes], list[int]]
):
    compiled.store(EXPRESSIONS, FLAGS, tmp_path)
    compiles.clear()
    compiled.database(*changed, tmp_path)
    assert compiles == [len(changed[0])]


def test_a_damaged_stored_database_is_compiled_again_and_said_so(
    tmp_path: Path, compiles: list[int], caplog: pytest.LogCaptureFixture
):
    path = compiled.store(EXPRESSIONS, FLAGS, tmp_path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    compiles.clear()
    db = compiled.database(EXPRESSIONS, FLAGS, tmp_path)
    assert compiles == [2] and matches(db) == [(0, 42), (1, 65)]
    assert "not usable (ValueError: its checksum does not match)" in caplog.text
    path.write_bytes(b"")  # empty, as a failed copy would leave it
    assert matches(compiled.database(EXPRESSIONS, FLAGS, tmp_path)) == [(0, 42), (1, 65)]


def test_the_guard_with_stored_databases_finds_what_it_finds_compiling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, compiles: list[int]
):
    source = "token = 'ghp_Zq8kP3vT9xLm2RwY7nB4cJ6hF1sD5gA0eKuW'\n"
    nb = {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [
        {"cell_type": "code", "id": "c", "metadata": {}, "source": source, "outputs": []}]}

    def refused(guard: SaveGuard) -> list[str]:
        with pytest.raises(SaveRefused) as e:
            guard.check({"type": "notebook", "content": nb}, "a.ipynb")
        return [loc.finding.detector for loc in e.value.findings]

    monkeypatch.setattr(compiled, "STORE", tmp_path)
    assert SaveGuard().engine.store_databases(tmp_path)
    compiles.clear()
    guard = SaveGuard()
    assert refused(guard) == ["github-token"] and compiles == []
    # Settings that change the expressions (a disabled detector) compile their own: the
    # databases of text, of binary payloads and of drawings.
    other = SaveGuard(disabled_detectors=["aws-access-key-id"])
    assert refused(other) == ["github-token"] and len(compiles) == 3


def test_a_database_hyperscan_refuses_is_compiled_again_and_said_so(
    tmp_path: Path, compiles: list[int], caplog: pytest.LogCaptureFixture
):
    """Bytes that pass the checksum but are no database hyperscan can load (one built for
    another CPU is refused the same way): compiled, with a warning, never loaded."""
    junk = b"not a hyperscan database" * 100
    path = tmp_path / f"{compiled.key(EXPRESSIONS, FLAGS)}.hsdb"
    path.write_bytes(hashlib.sha256(junk).digest() + junk)
    db = compiled.database(EXPRESSIONS, FLAGS, tmp_path)
    assert compiles == [2] and matches(db) == [(0, 42), (1, 65)]
    assert "not usable (InvalidError" in caplog.text


def test_a_small_fixed_database_is_compiled_at_its_first_scan_only(compiles: list[int]):
    """A small fixed database (the HTML table probe) is compiled when first used, not
    when its module is imported (a server's start would wait for it)."""
    fixed = compiled.matcher([b"abc", b"de"], [0, 0])
    assert compiles == []
    assert fixed.matches(b"xabcde") == [(0, 0, 4), (1, 0, 6)]
    assert fixed.matches(b"de") == [(1, 0, 2)]
    assert compiles == [2]
