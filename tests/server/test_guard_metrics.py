"""The guard's metrics on jupyter-server's own /metrics: each save counted by kind and
outcome, with its check time; no path or value in any label."""

from __future__ import annotations

from prometheus_client import REGISTRY
from qtest import AWS_KEY_ID, GITHUB_TOKEN, code_cell, notebook, stream


def _count(kind: str, outcome: str) -> float:
    return REGISTRY.get_sample_value(
        "qustody_guard_checks_total", {"kind": kind, "outcome": outcome}
    ) or 0.0


async def test_saves_are_counted_by_kind_and_outcome(api, jp_fetch):
    before = {
        (k, o): _count(k, o)
        for k in ("file", "notebook") for o in ("saved", "refused", "redacted")
    }
    code, _ = await api.save_text("clean.py", "x = 1\n")
    assert code in (200, 201)
    code, _ = await api.save_text("secret-keys.py", f'token = "{GITHUB_TOKEN}"\n')
    assert code == 422
    nb = notebook(code_cell("print(k)", outputs=[stream(f"{AWS_KEY_ID}\n")]))
    code, _ = await api.save_notebook("run.ipynb", nb)
    assert code in (200, 201)
    assert _count("file", "saved") == before[("file", "saved")] + 1
    assert _count("file", "refused") == before[("file", "refused")] + 1
    assert _count("notebook", "redacted") == before[("notebook", "redacted")] + 1

    page = (await jp_fetch("metrics")).body.decode()
    ours = [line for line in page.splitlines() if line.startswith("qustody_guard_")]
    assert any(line.startswith('qustody_guard_check_seconds_count{kind="notebook"}')
               for line in ours)
    for word in ("secret-keys.py", "run.ipynb", GITHUB_TOKEN, AWS_KEY_ID):
        assert not [line for line in ours if word in line]
