"""Generated files must match the code they are generated from."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from csms import ocpp16

ROOT = Path(__file__).resolve().parents[2]


def run_check(script: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "tools" / script), "--check"], capture_output=True, text=True)


def test_coverage_json_matches_the_handler_registry():
    result = run_check("gen_coverage.py")
    assert result.returncode == 0, result.stderr


def test_contract_models_match_the_ocpp_schemas():
    result = run_check("gen_contracts.py")
    assert result.returncode == 0, result.stderr


def test_coverage_lists_all_28_operations_with_directions():
    document = json.loads((ROOT / "ocpp" / "coverage.json").read_text())
    operations = {e["operation"]: e for e in document["operations"]}
    assert len(operations) == 28 == document["summary"]["operations"]
    assert set(operations) == set(ocpp16.CP_TO_CSMS) | set(ocpp16.CSMS_TO_CP)
    assert operations["DataTransfer"]["direction"] == "both"
    assert sum(e["direction"] in ("cp_to_csms", "both") for e in operations.values()) == 10
    assert sum(e["direction"] in ("csms_to_cp", "both") for e in operations.values()) == 19
    assert document["summary"]["supported"] == sum(e["supported"] for e in operations.values())


def test_every_supported_operation_is_backed_by_an_end_to_end_test():
    document = json.loads((ROOT / "ocpp" / "coverage.json").read_text())
    untested = [e["operation"] for e in document["operations"] if e["supported"] and not e["tests"]]
    assert untested == []


def test_coverage_reports_the_security_extension_apart_and_every_supported_one_is_tested():
    document = json.loads((ROOT / "ocpp" / "coverage.json").read_text())
    security = {e["operation"]: e for e in document["security_extension"]}
    assert set(security) == set(ocpp16.SECURITY_CP_TO_CSMS) | set(ocpp16.SECURITY_CSMS_TO_CP)
    assert len(security) == 11 == document["summary"]["security_extension_operations"]
    assert document["summary"]["security_extension_supported"] == sum(e["supported"] for e in security.values())
    assert not set(security) & {e["operation"] for e in document["operations"]}
    assert [op for op, e in security.items() if e["supported"] and not e["tests"]] == []
