"""Metrics counted from the records an AuditLog writes (hub_ext/audit/metrics.py)."""

from __future__ import annotations

from prometheus_client import REGISTRY


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_records_are_counted_by_type_and_enum_reason(make_log):
    before_refused = _value("qustody_audit_records_total", type="login-refused",
                            reason="not-allowed")
    before_verified = _value("qustody_audit_records_total", type="audit-verified", reason="")
    before_writes = _value("qustody_audit_write_seconds_count")
    audit = make_log()
    audit.emit("login-refused", {"user": "mallory", "reason": "not-allowed"})
    # audit-verified's reason is free text: it must not become a label value
    audit.emit("audit-verified", {"actor": "auditor", "result": "failed", "mode": "full",
                                  "records": 9, "reason": "record 7 of mallory was changed"})
    audit.close()
    assert _value("qustody_audit_records_total", type="login-refused",
                  reason="not-allowed") == before_refused + 1
    assert _value("qustody_audit_records_total", type="audit-verified",
                  reason="") == before_verified + 1
    assert _value("qustody_audit_write_seconds_count") >= before_writes + 2
    names = [
        s.labels for m in REGISTRY.collect() if m.name.startswith("qustody_")
        for s in m.samples
    ]
    assert not [labels for labels in names if "mallory" in str(labels)]


def test_guard_reports_count_each_detector(make_log):
    before = _value("qustody_guard_detections_total", event="outputs-redacted",
                    detector="ibm-quantum-token")
    audit = make_log()
    audit.record_user_event("alice", "", {"type": "outputs-redacted", "data": {
        "path": "run.ipynb", "detectors": ["ibm-quantum-token"], "redacted": 2}})
    audit.close()
    assert _value("qustody_guard_detections_total", event="outputs-redacted",
                  detector="ibm-quantum-token") == before + 1


def test_a_failure_to_count_never_stops_the_record(make_log, monkeypatch, caplog):
    from hub_ext.audit import metrics

    def broken(*labels: str) -> None:
        raise RuntimeError("registry broken")

    monkeypatch.setattr(metrics.RECORDS, "labels", broken)
    audit = make_log()
    recorded = audit.emit("login-refused", {"user": "mallory", "reason": "not-allowed"})
    audit.close()
    assert recorded is not None and recorded.type == "login-refused"
    assert "audit metrics: not counted (RuntimeError)" in caplog.text


def test_made_up_detector_names_count_as_other_once_per_report(make_log):
    before = _value("qustody_guard_detections_total", event="save-refused", detector="other")
    audit = make_log()
    audit.record_user_event("alice", "", {"type": "save-refused", "data": {
        "path": "a.py", "detectors": ["alice-home-dir", "ghp-made-up", "github-token"],
        "findings": 3}})
    audit.close()
    assert _value("qustody_guard_detections_total", event="save-refused",
                  detector="other") == before + 1
    assert REGISTRY.get_sample_value("qustody_guard_detections_total",
                                     {"event": "save-refused", "detector": "alice-home-dir"}) is None
