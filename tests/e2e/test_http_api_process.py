"""``python -m services.api`` as its own process: built like the others (settings checked, ops endpoint, JSON
logs, drain on SIGTERM), serving the HTTP API over the bus to the rest of the system, never logging a key."""
from __future__ import annotations

import json

import aiohttp

from tests.support.chargepoint import connect
from tests.support.process import CsmsProcess, eventually_status


async def test_the_api_process_serves_drains_and_never_logs_a_key(system, cp_id):
    key = "bootstrap-admin-key-" + "x" * 24
    process = await CsmsProcess("services.api", system.settings.replace(api_bootstrap_admin_key=key)).start()
    try:
        ops = await process.ops_port()
        match = await process.wait_for_message(r"HTTP API on http://[^:]+:(\d+)/api/v1")
        base = f"http://127.0.0.1:{match.group(1)}/api/v1"
        await eventually_status(ops, "/readyz", 200)
        async with connect(system.url(cp_id)) as cp, aiohttp.ClientSession() as http:
            await cp.boot()
            headers = {"Authorization": f"Bearer {key}"}
            async with http.post(f"{base}/charge-points/{cp_id}/commands/Reset", json={"type": "Soft"},
                                 headers=headers) as response:
                assert response.status == 200 and (await response.json())["payload"] == {"status": "Accepted"}
            async with http.get(f"{base}/charge-points/{cp_id}", headers={"Authorization": "Bearer wrong"}) as r:
                assert r.status == 401
            async with http.get(f"http://127.0.0.1:{ops}/metrics") as response:
                metrics = await response.text()
            assert 'csms_http_requests_total{method="POST",route="/charge-points/{charge_point_id}/commands/Reset",' \
                   'service="http_api",status="200"} 1.0' in metrics
        process.signal()
        assert await process.wait() == 0
    finally:
        await process.stop()
    logged = json.dumps(process.lines)
    assert key not in logged and "Bearer wrong" not in logged
    assert any("API_BOOTSTRAP_ADMIN_KEY: admin key 'bootstrap' created" in m for m in process.messages())
    assert any(f"POST /api/v1/charge-points/{cp_id}/commands/Reset 200" in m and "key=bootstrap" in m
               for m in process.messages())
    assert any("http_api drained" in m for m in process.messages())
