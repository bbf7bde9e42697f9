"""Recent activity per charge point (services/api/activity.py, rules.is_problem / compact_event) and the
dashboard's files (services/api/dashboard): pure, no I/O."""
from __future__ import annotations

import json
import re

import pytest

from services.api import rules
from services.api.activity import ActivityLog
from services.api.dashboard.routes import FILES, HEADERS, STATIC


@pytest.mark.parametrize("event_type, event, problem", [
    ("connector.status_changed", {"status": "Available", "error_code": "NoError"}, False),
    ("connector.status_changed", {"status": "Faulted", "error_code": "NoError"}, True),
    ("connector.status_changed", {"status": "Available", "error_code": "HighTemperature"}, True),
    ("station.connected", {}, False),
    ("station.flapping", {}, True),
    ("station.protocol_error", {"direction": "cp_to_csms", "error_code": "FormationViolation"}, True),
    ("station.protocol_error", {"direction": "csms_to_cp", "error_code": "NotSupported"}, True),
    ("station.booted", {"status": "Accepted"}, False),
    ("station.booted", {"status": "Rejected"}, True),
    ("charging.schedule_mismatch", {}, True),
    ("charging.site_rebalanced", {"failed": []}, False),
    ("charging.site_rebalanced", {"failed": ["CP-2"]}, True),
    ("security.event_received", {"critical": False}, False),
    ("security.event_received", {"critical": True}, True),
    ("security.certificate_changed", {"status": "accepted"}, False),
    ("security.certificate_changed", {"status": "rejected"}, True),
    ("command.completed", {"status": "answered"}, False),
    ("command.completed", {"status": "timeout"}, True),
    ("diagnostics.status_changed", {"status": "Uploaded"}, False),
    ("diagnostics.status_changed", {"status": "UploadFailed"}, True),
    ("diagnostics.log_status_changed", {"status": "PermissionDenied"}, True),
    ("firmware.status_changed", {"status": "Installing"}, False),
    ("firmware.status_changed", {"status": "InstallationFailed"}, True),
    ("firmware.update_changed", {"status": "DownloadFailed"}, True),
    ("firmware.update_changed", {"status": "InvalidSignature"}, True),
    ("transaction.started", {"authorization_status": "Accepted"}, False),
    ("transaction.started", {"authorization_status": "Invalid"}, True),
    ("transaction.stopped", {"closed_by": "charge_point"}, False),
    ("transaction.stopped", {"closed_by": "reconciled"}, True),
    ("transaction.stopped", {"orphan": True, "closed_by": "charge_point"}, True),
    ("datatransfer.received", {"status": "Accepted"}, False),
    ("datatransfer.received", {"status": "UnknownVendorId"}, True),
    ("meter.values", {}, False),
    ("something.new", {"status": "Failed"}, False),
])
def test_what_counts_as_a_problem(event_type, event, problem):
    assert rules.is_problem(event_type, event) is problem


def test_a_large_event_keeps_its_top_level_scalars_with_long_texts_cut():
    event = {"event_id": "e1", "charge_point_id": "CP-1", "connector_id": 1, "critical": True, "tech_info": "x" * 500,
             "meter_value": [{"sampledValue": []}], "nested": {"a": 1}, "nothing": None, "ratio": 0.5}
    kept = rules.compact_event(event)
    assert kept == {"event_id": "e1", "charge_point_id": "CP-1", "connector_id": 1, "critical": True,
                    "tech_info": "x" * 200 + "...", "nothing": None, "ratio": 0.5}


def add(log: ActivityLog, charge_point_id: str, n: int, event_type: str = "meter.values", **fields) -> dict:
    event = {"event_id": f"{charge_point_id}-{n}", "occurred_at": f"2025-05-01T12:00:{n:02d}Z",
             "charge_point_id": charge_point_id, **fields}
    log.add(event_type, event, json.dumps(event).encode())
    return event


def test_recent_events_come_newest_first_within_the_limit_and_only_for_that_station():
    log = ActivityLog(per_charge_point=10, max_charge_points=10)
    for n in range(5):
        add(log, "CP-1", n)
    add(log, "CP-2", 9, "connector.status_changed", status="Faulted", error_code="NoError")
    recent = log.recent("CP-1", limit=3)
    assert [entry.event_id for entry in recent] == ["CP-1-4", "CP-1-3", "CP-1-2"]
    assert recent[0].type == "meter.values" and recent[0].occurred_at == "2025-05-01T12:00:04Z"
    assert recent[0].event["charge_point_id"] == "CP-1" and not recent[0].problem and not recent[0].truncated
    (fault,) = log.recent("CP-2", limit=10)
    assert fault.problem
    assert log.recent("CP-2", limit=10, problems_only=True) == [fault]
    assert log.recent("CP-1", limit=10, problems_only=True) == []
    assert log.recent("CP-unknown", limit=10) == []


def test_every_bound_holds():
    log = ActivityLog(per_charge_point=3, max_charge_points=2, max_event_bytes=300)
    for n in range(10):
        add(log, "CP-1", n)
    assert [entry.event_id for entry in log.recent("CP-1", 100)] == ["CP-1-9", "CP-1-8", "CP-1-7"]
    add(log, "CP-2", 0)
    add(log, "CP-1", 10)           # CP-1 is the most recently active now
    add(log, "CP-3", 0)            # a third station: the least recently active (CP-2) is forgotten
    assert log.charge_points == 2 and log.recent("CP-2", 10) == [] and len(log) == 4
    big = add(log, "CP-3", 1, "datatransfer.received", data="y" * 1000, status="Accepted", meter_value=[{}])
    (entry, *_) = log.recent("CP-3", 1)
    assert entry.truncated and entry.event["data"] == "y" * 200 + "..." and "meter_value" not in entry.event
    assert entry.event_id == big["event_id"]


def test_events_without_a_charge_point_or_with_nothing_to_keep_are_ignored():
    log = ActivityLog(per_charge_point=0, max_charge_points=10)
    add(log, "CP-1", 1)
    assert len(log) == 0
    log = ActivityLog(per_charge_point=5, max_charge_points=10)
    log.add("charging.site_rebalanced", {"charge_point_id": "", "site_id": "s"}, b"{}")
    log.add("station.connected", ["not", "an", "object"], b"[]")
    log.add("station.connected", {"charge_point_id": 42}, b"{}")
    assert len(log) == 0


def test_the_dashboard_serves_every_file_its_pages_load_and_nothing_from_elsewhere():
    assert {"index.html", "app.js", "api.js", "charts.js", "dom.js", "style.css"} <= set(FILES)
    wanted: set[str] = set()
    for name, (body, _) in FILES.items():
        text = body.decode()
        if name.endswith(".js"):
            imports = re.findall(r'^import .* from "\./([^"]+)";$', text, re.M)
            assert imports or name in ("api.js", "charts.js", "dom.js", "summary.js"), name
            wanted.update(imports)
            assert "innerHTML" not in text and "eval(" not in text and "document.write" not in text, name
        if name == "index.html":
            wanted.update(re.findall(r'(?:src|href)="([^"#:]+)"', text))
        assert "http://" not in text.replace("http://www.w3.org/2000/svg", "") and "https://" not in text, name
    assert wanted <= set(FILES), wanted - set(FILES)
    assert sorted(path.name for path in STATIC.iterdir()) == sorted(FILES)
    assert "'unsafe-inline'" not in HEADERS["Content-Security-Policy"]
