"""The OpenAPI document of the HTTP API: generated from the code (drift), valid OpenAPI 3.1, and saying what the
code does (every service read it offers, a command route per CSMS->CP action, security on every route)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from openapi_spec_validator import validate

from csms import ocpp16

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT = ROOT / "openapi" / "openapi.json"


def document() -> dict:
    return json.loads(DOCUMENT.read_text(encoding="utf-8"))


def test_openapi_matches_the_code():
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "gen_openapi.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_openapi_is_valid_openapi_3_1():
    spec = document()
    assert spec["openapi"] == "3.1.0"
    validate(spec)


def test_every_command_has_its_route_with_the_ocpp_request_schema():
    paths = document()["paths"]
    schemas = document()["components"]["schemas"]
    for action in ocpp16.ALL_CSMS_TO_CP:
        operation = paths[f"/api/v1/charge-points/{{charge_point_id}}/commands/{action}"]["post"]
        ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        assert ref.rsplit("/", 1)[-1] in schemas
        assert {"200", "202", "400", "401", "403", "429"} <= set(operation["responses"])
        assert {p["name"] for p in operation["parameters"]} == {"charge_point_id", "mode", "timeout", "callback_url"}


def test_every_route_needs_a_key_and_answers_errors_as_json():
    for path, methods in document()["paths"].items():
        for method, operation in methods.items():
            assert operation.get("security"), f"{method} {path} has no security requirement"
            assert {"bearer", "apiKey"} == {name for item in operation["security"] for name in item}
            for status in ("400", "401", "403", "404"):
                content = operation["responses"][status]["content"]["application/json"]["schema"]
                assert content["$ref"].endswith("/ErrorBody"), (path, status)
            assert "422" not in operation["responses"]  # bad input is a 400 here


def test_pages_are_bounded_in_the_document():
    paths = document()["paths"]
    for path in ("/api/v1/charge-points", "/api/v1/transactions", "/api/v1/meter-values", "/api/v1/diagnostics",
                 "/api/v1/security-events", "/api/v1/transactions/{transaction_id}/meter-values"):
        [limit] = [p for p in paths[path]["get"]["parameters"] if p["name"] == "limit"]
        assert limit["schema"]["minimum"] == 1 and limit["schema"]["maximum"] <= 10_000, path
