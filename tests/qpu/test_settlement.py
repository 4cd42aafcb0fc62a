"""What a run that did not complete costs: a real Store on SQLite, its clock moved on."""

from __future__ import annotations

import pytest

from hub_ext.qpu import store as store_module
from hub_ext.qpu.policyfile import parse
from hub_ext.qpu.store import Store, Ticket

POLICY = """
[projects.qchem]
members = { alice = "member" }
backends = ["*"]
"""


def _ticket(est_seconds: float) -> Ticket:
    return Ticket(owner="alice", project="qchem", backend="aer_simulator",
                  requested_backend="aer_simulator", backend_class="simulator",
                  tier="normal", priority=10, sensitivity="internal", n_circuits=1, shots=10,
                  est_seconds=est_seconds, tags={}, provenance={}, circuits=b"x", options={})


@pytest.mark.parametrize(("reason", "charged"), [
    ("TIME_LIMIT", True),  # an underestimated job ran into the limit: its time is charged
    ("MEMORY_LIMIT", True),
    ("EXECUTION_ERROR", False),  # the backend's failure: refunded whole
    ("SANDBOX_CRASHED", False),
])
def test_a_failed_run_is_charged_the_time_it_ran_only_when_it_overran_its_limits(
    tmp_path, monkeypatch, reason, charged
):
    store = Store(f"sqlite:///{tmp_path / 'qpu.sqlite'}")
    store.create(["aer_simulator"])
    policy = parse(POLICY, backends={"aer_simulator": "simulator"})
    store.admit_many([_ticket(est_seconds=0.002)], policy)
    claimed = store.claim_next("aer_simulator", 1, "i1", 600, policy)
    assert claimed is not None
    started = store_module._now()
    monkeypatch.setattr(store_module, "_now", lambda: started + 60)
    done = store.finish(claimed.job_id, "i1", "FAILED", reason=reason, policy=policy)
    assert done is not None and done["reason"] == reason
    if charged:
        assert done["used_seconds"] == pytest.approx(60, abs=1)  # not the 0.002 s held
    else:
        assert done["used_seconds"] == 0.0
