"""Property-based tests of the HTTP API against its OpenAPI document (schemathesis): the running system (gateway,
every service, the HTTP API) with simulated charge points connected; every operation gets generated requests (and
the documented examples); no answer may be a 5xx, use an undocumented status or content type, or break its
documented schema.

Both generation modes run: positive (valid requests: documented answers) and negative (requests the document
forbids: never a 5xx, only documented statuses; schemathesis' stricter "must be rejected" check is not used: the
API reads repeated query parameters and lax booleans like FastAPI does).

Bounded so it stays fast: ``SCHEMATHESIS_MAX_EXAMPLES`` examples per operation and mode (default 15), derandomized
(the same cases every run: CI is reproducible; raise the count locally to explore more). The event stream (endless by
design) is excluded here; tests/e2e/test_http_api.py covers it.
"""
from __future__ import annotations

import asyncio
import os
import random

import hypothesis
import pytest
import schemathesis
from schemathesis import GenerationMode
from hypothesis import HealthCheck, Phase
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance, response_schema_conformance, status_code_conformance,
)

from tests.support.chargepoint import connect
from tests.support.http_api import http_api

MAX_EXAMPLES = int(os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "15"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
NEGATIVE_CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance]
CONNECTED = "CP-SIM-1"


def run_schemathesis(document: dict, base_url: str, key: str,
                     mode: GenerationMode = GenerationMode.POSITIVE) -> tuple[int, int, list[str]]:
    """Every operation of ``document`` with generated cases; (operations, requests, failures)."""
    schema = schemathesis.openapi.from_dict(document).exclude(path="/api/v1/events")
    headers = {"Authorization": f"Bearer {key}"}
    chooser = random.Random(1)
    failures: list[str] = []
    operations = requests = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @hypothesis.settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, derandomize=True,
                             phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck),
                             report_multiple_bugs=False)
        @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
        def check(case) -> None:
            nonlocal requests
            # commands go to a connected charge point most of the time, so it answers them
            if "/commands/" in operation.path and chooser.random() < 0.7:
                case.path_parameters["charge_point_id"] = CONNECTED
            requests += 1
            checks = CHECKS if mode == GenerationMode.POSITIVE else NEGATIVE_CHECKS
            case.call_and_validate(base_url=base_url, headers=headers, checks=checks, timeout=30)

        try:
            check()
        except Exception as exc:  # noqa: BLE001 - collect every operation's failure, then report them all
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}"[:3000])
    return operations, requests, failures


@pytest.mark.ocpp("Reset")
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["positive", "negative"])
async def test_every_operation_holds_to_the_openapi_document(system, mode):
    overrides = {"api_webhook_max_attempts": 1, "api_webhook_timeout": 1.0, "command_timeout": 3.0}
    async with http_api(system, **overrides) as (api, client), connect(system.url(CONNECTED)) as cp:
        await cp.boot()
        await cp.status(1, "Available")
        status, document, _ = await client.request("GET", "/openapi.json", key=None)
        assert status == 200
        operations, requests, failures = await asyncio.to_thread(
            run_schemathesis, document, f"http://127.0.0.1:{api.port}", client.keys["admin"], mode)
    assert operations >= 60 and requests >= operations
    assert not failures, "\n\n".join(failures)
    if mode == GenerationMode.POSITIVE:
        assert cp.received  # generated commands reached the charge point
