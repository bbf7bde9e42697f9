"""The OpenAPI document of the HTTP API: generated from the code (drift), valid OpenAPI 3.1, and saying what the
code does (every service read it offers, a command route per CSMS->CP action, security on every route)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
from openapi_spec_validator import validate
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

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


def answer_validator(spec: dict, action: str) -> jsonschema.Draft202012Validator:
    """A validator of the 200 answer of ``action``'s command route, references resolved in the document."""
    operation = spec["paths"][f"/api/v1/charge-points/{{charge_point_id}}/commands/{action}"]["post"]
    ref = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    registry = Registry().with_resource("urn:openapi", Resource(contents=spec, specification=DRAFT202012))
    return jsonschema.Draft202012Validator({"$ref": f"urn:openapi{ref}"}, registry=registry)


def result(status: str, payload, action: str = "Reset") -> dict:
    return {"status": status, "charge_point_id": "CP-1", "action": action, "payload": payload, "error_code": None,
            "error_description": "", "error_details": {}, "server": None, "warnings": [],
            "completed_at": "2026-01-01T00:00:00Z"}


def test_every_command_answer_types_the_charge_points_payload():
    spec = document()
    schemas = spec["components"]["schemas"]
    referenced = json.dumps(spec["paths"])
    for action in ocpp16.ALL_CSMS_TO_CP:
        response = f"{action}Response"
        assert response in schemas and f'"#/components/schemas/{action}Result"' in referenced, action
        assert schemas[f"{action}Result"]["then"]["properties"]["payload"]["$ref"].endswith(f"/{response}")
    reset = answer_validator(spec, "Reset")
    assert reset.is_valid(result("answered", {"status": "Accepted"}))
    assert not reset.is_valid(result("answered", {"status": "Sideways"}))   # not what Reset.conf allows
    assert not reset.is_valid(result("answered", {"fileName": "x.log"}))   # another action's answer
    assert not reset.is_valid(result("answered", None))
    # no answer, or one that broke the OCPP schema (the gateway tells): payload is not Reset.conf
    assert reset.is_valid(result("timeout", None))
    assert reset.is_valid(result("invalid_response", {"status": "Sideways"}))
    configuration = answer_validator(spec, "GetConfiguration")
    answer = {"configurationKey": [{"key": "HeartbeatInterval", "readonly": False, "value": "300"}]}
    assert configuration.is_valid(result("answered", answer, "GetConfiguration"))
    assert not configuration.is_valid(result("answered", {"configurationKey": [{"readonly": False}]},
                                              "GetConfiguration"))


def test_every_route_needs_a_key_and_answers_errors_as_json():
    for path, methods in document()["paths"].items():
        for method, operation in methods.items():
            assert operation.get("security"), f"{method} {path} has no security requirement"
            assert {"bearer", "apiKey"} == {name for item in operation["security"] for name in item}
            for status in ("400", "401", "403", "404"):
                content = operation["responses"][status]["content"]["application/json"]["schema"]
                assert content["$ref"].endswith("/ErrorBody"), (path, status)
            assert "422" not in operation["responses"]  # bad input is a 400 here


# JSON Schema 2020-12 (OpenAPI 3.1's dialect) and the keywords OpenAPI adds; anything else is read by no validator
STANDARD_KEYWORDS = {
    "$schema", "$id", "$ref", "$defs", "$anchor", "$dynamicRef", "$dynamicAnchor", "$comment", "$vocabulary",
    "type", "enum", "const", "multipleOf", "maximum", "exclusiveMaximum", "minimum", "exclusiveMinimum", "maxLength",
    "minLength", "pattern", "maxItems", "minItems", "uniqueItems", "maxContains", "minContains", "maxProperties",
    "minProperties", "required", "dependentRequired", "allOf", "anyOf", "oneOf", "not", "if", "then", "else",
    "dependentSchemas", "prefixItems", "items", "contains", "properties", "patternProperties",
    "additionalProperties", "propertyNames", "unevaluatedItems", "unevaluatedProperties", "format",
    "contentEncoding", "contentMediaType", "contentSchema", "title", "description", "default", "deprecated",
    "readOnly", "writeOnly", "examples", "discriminator", "xml", "externalDocs", "example",
}
_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "dependentSchemas")
_SCHEMA_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems")
_SCHEMA_VALUES = ("items", "additionalProperties", "not", "if", "then", "else", "contains", "propertyNames",
                  "unevaluatedItems", "unevaluatedProperties", "contentSchema")


def subschemas(schema: dict, where: str):
    """(where, schema) for ``schema`` and every schema inside it."""
    yield where, schema
    for key in _SCHEMA_MAPS:
        for name, sub in schema.get(key, {}).items():
            yield from subschemas(sub, f"{where}/{key}/{name}")
    for key in _SCHEMA_LISTS:
        for n, sub in enumerate(schema.get(key, [])):
            yield from subschemas(sub, f"{where}/{key}/{n}")
    for key in _SCHEMA_VALUES:
        if isinstance(schema.get(key), dict):
            yield from subschemas(schema[key], f"{where}/{key}")


def every_schema(spec: dict):
    for name, schema in spec["components"]["schemas"].items():
        yield from subschemas(schema, f"components/{name}")
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            for parameter in operation.get("parameters", []):
                yield from subschemas(parameter["schema"], f"{method} {path} {parameter['name']}")
            for content in operation.get("requestBody", {}).get("content", {}).values():
                yield from subschemas(content.get("schema", {}), f"{method} {path} body")
            for status, response in operation.get("responses", {}).items():
                for content in response.get("content", {}).values():
                    yield from subschemas(content.get("schema", {}), f"{method} {path} {status}")


def test_pages_are_bounded_in_the_document():
    spec = document()
    paths = spec["paths"]
    for path in ("/api/v1/charge-points", "/api/v1/transactions", "/api/v1/meter-values", "/api/v1/diagnostics",
                 "/api/v1/security-events", "/api/v1/transactions/{transaction_id}/meter-values", "/api/v1/id-tags"):
        [limit] = [p for p in paths[path]["get"]["parameters"] if p["name"] == "limit"]
        assert limit["schema"]["minimum"] == 1 and limit["schema"]["maximum"] <= 10_000, path
    # every integer a client may send in a query or path is bounded, by keywords a validator reads
    integers = 0
    for path, methods in paths.items():
        for method, operation in methods.items():
            for parameter in operation.get("parameters", []):
                for where, schema in subschemas(parameter["schema"], f"{method} {path} {parameter['name']}"):
                    if schema.get("type") == "integer":
                        integers += 1
                        assert {"minimum", "exclusiveMinimum"} & set(schema), where
                        assert {"maximum", "exclusiveMaximum"} & set(schema), where
    assert integers >= 15
    unknown = sorted({f"{where}: {key}" for where, schema in every_schema(spec) for key in schema
                      if key not in STANDARD_KEYWORDS and not key.startswith("x-")})
    assert not unknown, unknown[:20]
