"""A running gateway reads a changed policy file only whole: never half-written, never
emptied (hub_ext.qpu.config.PolicyHolder, as the reload loop and SIGHUP call it)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from conftest import POLICY

from hub_ext.qpu.config import PolicyHolder

CLASSES = {"aer_simulator": "simulator", "fake_hw": "hardware"}
RESERVED = POLICY + (
    "\n[[reservations]]\nbackend = 'fake_hw'\nproject = 'astro'\n"
    "start = 2020-01-01T00:00:00Z\nend = 2999-01-01T00:00:00Z\n"
)


def _holder(tmp_path: Path, text: str) -> tuple[PolicyHolder, Path]:
    path = tmp_path / "policy.toml"
    path.write_text(text)
    return PolicyHolder(path, CLASSES, logging.getLogger("test")), path


def _touch(path: Path, text: str, tick: int) -> None:
    """Write ``text`` and give it a distinct modification time (a coarse clock could
    otherwise show two writes of the same size as no change)."""
    path.write_text(text)
    stamp = 1_800_000_000_000_000_000 + tick * 1_000_000_000
    os.utime(path, ns=(stamp, stamp))


def test_a_file_caught_between_truncation_and_write_is_never_applied(tmp_path: Path) -> None:
    holder, path = _holder(tmp_path, RESERVED)
    kept = holder.policy.digest
    assert holder.policy.reservations
    _touch(path, "", 1)  # the poll lands between `open(..., "w")` and the write
    assert not holder.maybe_reload() and holder.policy.digest == kept  # seen once: waits
    _touch(path, RESERVED.replace("project = 'astro'", "project = 'qchem'"), 2)  # written
    assert not holder.maybe_reload() and holder.policy.digest == kept  # changed again: waits
    assert holder.maybe_reload() and holder.error is None  # settled: read whole
    assert [r.project for r in holder.policy.reservations] == ["qchem"]


def test_an_emptied_policy_file_is_refused_and_the_policy_kept(tmp_path: Path) -> None:
    holder, path = _holder(tmp_path, RESERVED)
    kept = holder.policy.digest
    _touch(path, "  \n\n", 1)  # a mistaken `> policy.toml`, left so
    assert not holder.maybe_reload()
    assert not holder.maybe_reload() and holder.failed_now
    assert holder.error is not None and "is empty" in holder.error
    assert holder.policy.digest == kept and holder.policy.reservations
    # the operator's explicit reload (POST api/admin/reload, SIGHUP) is refused the same way
    assert not holder.maybe_reload(force=True) and "is empty" in (holder.error or "")
    _touch(path, RESERVED, 2)
    holder.maybe_reload()
    holder.maybe_reload()
    assert holder.error is None and holder.policy.digest == kept


def test_an_explicit_reload_reads_the_file_at_once(tmp_path: Path) -> None:
    holder, path = _holder(tmp_path, RESERVED)
    _touch(path, POLICY, 1)
    assert holder.maybe_reload(force=True) and not holder.policy.reservations
