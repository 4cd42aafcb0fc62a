"""docs/prometheus/qustody-rules.yml: valid for Prometheus (`promtool check rules`), each
alert fires on a scripted attack and stays silent on a normal day (`promtool test rules`,
tests/prometheus/qustody_rules_test.yml), and names only metrics Qustody exports."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "docs" / "prometheus" / "qustody-rules.yml"
TESTS = ROOT / "tests" / "prometheus" / "qustody_rules_test.yml"


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is not installed: run `make system-deps` (as root)")
    return found


def test_the_rule_file_is_valid_for_prometheus():
    done = subprocess.run([_promtool(), "check", "rules", str(RULES)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 8 rules found" in done.stdout


def test_each_alert_fires_on_its_attack_and_not_on_a_normal_day():
    done = subprocess.run([_promtool(), "test", "rules", str(TESTS)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    tested = {
        case["alertname"]
        for test in yaml.safe_load(TESTS.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
    }
    alerts = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    # every alert but the scrape check is exercised (that one is Prometheus' own `up`)
    assert alerts - tested == {"QustodyMetricsDown"}


def test_rules_name_only_metrics_qustody_exports():
    exported = "".join(
        (ROOT / p).read_text() for p in ("hub_ext/audit/metrics.py", "hub_ext/qpu/metrics.py")
    )
    used = set(re.findall(r"qustody_[a-z_]+", RULES.read_text()))
    assert used
    for name in used:
        base = name.removesuffix("_total")
        assert f'"{base}"' in exported, f"{name} is not a metric Qustody exports"
