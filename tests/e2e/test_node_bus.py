"""Proof from another language: a Node.js client (amqplib) that knows only asyncapi/asyncapi.json and its JSON
Schemas commands a charge point connected to the gateway, calls a service API, sees an event and gets the
error reply to a malformed request (tests/node/bus-proof.mjs)."""
from __future__ import annotations

import asyncio
import json
import os

import pytest

from tests.support.chargepoint import connect
from tests.support.node import NODE_DIR, node_or_skip


@pytest.mark.ocpp("ChangeConfiguration", "DataTransfer")
async def test_a_node_client_uses_the_bus_from_the_asyncapi_document(system, cp_id):
    node = node_or_skip()
    async with connect(system.url(cp_id)) as cp:
        await cp.boot()
        cp.responses["DataTransfer"] = {"status": "Accepted", "data": "hello from the charge point"}
        env = {**os.environ, "AMQP_URL": system.settings.amqp_url, "CSMS_NAMESPACE": system.settings.namespace,
               "CHARGE_POINT_ID": cp_id}
        process = await asyncio.create_subprocess_exec(
            node, str(NODE_DIR / "bus-proof.mjs"), env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        output = stdout.decode().strip()
        assert process.returncode == 0, output + stderr.decode()
        seen = json.loads(output.splitlines()[-1])
        # what the charge point received is what the Node client sent
        assert cp.received["ChangeConfiguration"] == [{"key": "HeartbeatInterval", "value": "120"}]
        assert cp.received["DataTransfer"] == [{"vendor_id": "org.example.node", "message_id": "ping",
                                                "data": "hello from node"}]
    assert seen["change_configuration"] == {"status": "Accepted"}
    assert seen["data_transfer"] == {"status": "Accepted", "data": "hello from the charge point"}
    assert seen["station"] == {"connected": True, "charge_point_id": cp_id}
    assert seen["event"] == {"key": "HeartbeatInterval", "value": "120", "status": "Accepted"}
    assert seen["malformed"]["status"] == "invalid" and seen["malformed"]["error_code"] == "FormationViolation"
    assert "chargePointId: unknown field (envelope fields are snake_case: charge_point_id)" in \
        seen["malformed"]["error_description"]
    assert seen["malformed_api"]["ok"] is False and seen["malformed_api"]["status"] == 400
    assert "params" in seen["malformed_api"]["error"]
    assert seen["schemas_checked"] >= 8
