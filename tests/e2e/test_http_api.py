"""The HTTP API end to end: a simulated charge point on the gateway, the services on the bus, the API process part
in front of them (services/api), requests over real HTTP."""
from __future__ import annotations

import asyncio
import json
import logging

import aiohttp
import pytest
from aiohttp import web

from csms.contracts.events import CommandCompleted
from csms.testing.events import EventRecorder
from services.api import rules
from tests.support.chargepoint import connect
from tests.support.http_api import http_api, read_events


@pytest.mark.ocpp("Reset", "GetConfiguration")
async def test_a_synchronous_command_returns_the_charge_points_answer(system, cp_id):
    async with http_api(system) as (_, api), connect(system.url(cp_id)) as cp:
        await cp.boot()
        status, body = await api.post(f"/charge-points/{cp_id}/commands/Reset", {"type": "Soft"}, key="command")
        assert status == 200, body
        assert (body["status"], body["payload"], body["charge_point_id"]) == ("answered", {"status": "Accepted"}, cp_id)
        assert cp.received["Reset"][0]["type"] == "Soft"
        cp.respond("Reset", {"status": "Rejected"})
        status, body = await api.post(f"/charge-points/{cp_id}/commands/Reset?timeout=5", {"type": "Hard"},
                                      key="command")
        assert (status, body["payload"]) == (200, {"status": "Rejected"})
        status, body = await api.post(f"/charge-points/{cp_id}/commands/GetConfiguration", {}, key="command")
        assert status == 200 and "configurationKey" in body["payload"]
        # the payload is checked against the OCPP schema before anything is sent
        status, body = await api.post(f"/charge-points/{cp_id}/commands/Reset", {"type": "Sideways"}, key="command")
        assert status == 400 and "payload does not fit Reset" in body["error"] and body["status"] == 400
        # rules OCPP sets, checked by the owning service: 400 with its reason
        status, body = await api.post(f"/charge-points/{cp_id}/commands/UnlockConnector", {"connectorId": 0},
                                      key="command")
        assert status == 400 and "connectorId" in body["error"]
    status, body = await api_after_disconnect(system, cp_id)
    assert status == 200 and body["status"] == "offline"


async def api_after_disconnect(system, cp_id):
    async with http_api(system) as (_, api):
        return await api.post(f"/charge-points/{cp_id}/commands/Reset", {"type": "Soft"}, key="command")


class WebhookReceiver:
    """A local HTTP endpoint recording what webhooks POST (answering 500 to the first ``fail`` calls)."""

    def __init__(self, fail: int = 0):
        self.calls: list[tuple[dict, bytes]] = []
        self.fail = fail
        self.arrived = asyncio.Event()

    async def __aenter__(self) -> "WebhookReceiver":
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/hook"
        return self

    async def __aexit__(self, *exc) -> None:
        await self.runner.cleanup()

    async def _hook(self, request: web.Request) -> web.Response:
        self.calls.append((dict(request.headers), await request.read()))
        if len(self.calls) <= self.fail:
            return web.Response(status=500)
        self.arrived.set()
        return web.Response(status=204)


@pytest.mark.ocpp("Reset")
async def test_an_asynchronous_command_has_its_event_poll_result_and_signed_webhook(system, cp_id):
    secret = "webhook-secret-0123456789"
    async with WebhookReceiver(fail=1) as receiver, \
            http_api(system, api_webhook_allow_private=True, api_webhook_backoff=0.1) as (_, api), \
            EventRecorder(system.settings) as events, connect(system.url(cp_id)) as cp:
        await cp.boot()
        status, me = await api.put("/me/webhook", {"url": receiver.url, "secret": secret}, key="command")
        assert status == 200 and me["webhook_url"] == receiver.url and me["has_webhook_secret"] is True
        status, accepted, headers = await api.request(
            "POST", f"/charge-points/{cp_id}/commands/Reset", json_body={"type": "Soft"}, params={"mode": "async"},
            key="command")
        assert status == 202 and accepted["status"] == "pending" and headers["Location"] == accepted["poll_url"]
        command_id = accepted["command_id"]

        completed = await events.wait_for(CommandCompleted, timeout=10, command_id=command_id)
        assert (completed.status, completed.result["payload"], completed.charge_point_id) == (
            "answered", {"status": "Accepted"}, cp_id)

        async with asyncio.timeout(10):
            await receiver.arrived.wait()
        assert len(receiver.calls) == 2  # the first attempt got a 500 and was retried
        headers, body = receiver.calls[-1]
        assert rules.verify_signature(secret, headers["X-CSMS-Timestamp"], body, headers["X-CSMS-Signature"])
        assert not rules.verify_signature("another-secret-0123456", headers["X-CSMS-Timestamp"], body,
                                          headers["X-CSMS-Signature"])
        delivered = json.loads(body)
        assert delivered["command_id"] == command_id and delivered["event"]["result"]["payload"] == {
            "status": "Accepted"}

        for _ in range(50):
            status, record = await api.get(f"/commands/{command_id}", key="command")
            if record.get("webhook_status") == "delivered":
                break
            await asyncio.sleep(0.1)
        assert status == 200 and record["status"] == "answered"
        assert record["result"]["payload"] == {"status": "Accepted"}
        assert (record["webhook_status"], record["webhook_attempts"]) == ("delivered", 2)
        # another key (not admin) cannot read it; an admin can
        assert (await api.get(f"/commands/{command_id}", key="read"))[0] == 404
        assert (await api.get(f"/commands/{command_id}", key="admin"))[0] == 200

        # a per-request callback to a private address is refused at delivery without API_WEBHOOK_ALLOW_PRIVATE
        status, body = await api.post(f"/charge-points/{cp_id}/commands/Reset?mode=async&callback_url=ftp://x",
                                      {"type": "Soft"}, key="command")
        assert status == 400 and "callback_url" in body["error"]


async def test_webhooks_to_private_addresses_are_refused_by_default(system, cp_id):
    async with WebhookReceiver() as receiver, http_api(system) as (_, api), connect(system.url(cp_id)) as cp:
        await cp.boot()
        await api.put("/me/webhook", {"url": None, "secret": "s" * 20}, key="command")
        status, accepted = await api.post(
            f"/charge-points/{cp_id}/commands/Reset?mode=async&callback_url={receiver.url}", {"type": "Soft"},
            key="command")
        assert status == 202
        for _ in range(100):
            _, record = await api.get(f"/commands/{accepted['command_id']}", key="command")
            if record["webhook_status"] == "failed":
                break
            await asyncio.sleep(0.05)
        assert record["webhook_status"] == "failed" and "private" in record["webhook_error"]
        assert receiver.calls == [] and record["status"] == "answered"


async def test_server_sent_events_deliver_a_station_going_online(system, cp_id):
    async with http_api(system) as (_, api):
        url = f"{api.base}/events?types=station.*,connector.*&charge_point_id={cp_id}"
        async with api.session.get(url, headers=api.headers("read")) as response:
            assert response.status == 200 and response.headers["Content-Type"].startswith("text/event-stream")
            received, ready = [], asyncio.Event()
            reader = asyncio.create_task(read_events(response, received, ready))
            async with asyncio.timeout(10):
                await ready.wait()
            async with connect(system.url(cp_id)) as cp, connect(system.url(cp_id + "-other")) as other:
                await cp.boot()
                await other.boot()
                await cp.status(1, "Available")
                async with asyncio.timeout(10):
                    while not any(event == "connector.status_changed" for event, _ in received):
                        await asyncio.sleep(0.05)
            reader.cancel()
    types = [event for event, _ in received]
    assert types[0] == "station.connected" and received[0][1]["charge_point_id"] == cp_id
    assert "station.booted" in types and "connector.status_changed" in types
    assert all(data["charge_point_id"] == cp_id for _, data in received)  # the other station is filtered out


async def test_server_sent_events_bad_filters_and_limits(system):
    async with http_api(system, api_sse_max_clients=1) as (_, api):
        status, body = await api.get("/events?types=station.*,DROP%20TABLE", key="read")
        assert status == 400 and "types" in body["error"]
        async with api.session.get(f"{api.base}/events", headers=api.headers("read")) as first:
            assert first.status == 200
            await first.content.readline()
            status, body = await api.get("/events", key="read")
            assert status == 429 and "API_SSE_MAX_CLIENTS" in body["error"]


async def test_keys_and_scopes_are_enforced(system, cp_id, caplog):
    caplog.set_level(logging.INFO)
    async with http_api(system) as (_, api):
        status, body, headers = await api.request("GET", "/charge-points", key=None)
        assert status == 401 and "API key" in body["error"] and headers["WWW-Authenticate"] == "Bearer"
        assert (await api.get("/charge-points", key="csms_nope_not-a-key"))[0] == 401
        status, body, _ = await api.request("GET", "/charge-points", key=None, headers={"X-API-Key": api.keys["read"]})
        assert status == 200 and body == []
        status, body = await api.post(f"/charge-points/{cp_id}/commands/Reset", {"type": "Soft"}, key="read")
        assert status == 403 and "needs command" in body["error"]
        assert (await api.put("/id-tags/TAG-1", {"status": "Accepted"}, key="command"))[0] == 403
        assert (await api.get("/api-keys", key="command"))[0] == 403

        status, created = await api.post("/api-keys", {"name": "ci", "scopes": ["read"]})
        assert status == 201 and created["key"].startswith("csms_") and created["scopes"] == ["read"]
        assert (await api.get("/me", key=created["key"]))[1]["key_id"] == created["key_id"]
        status, listed = await api.get("/api-keys")
        assert created["key_id"] in {k["key_id"] for k in listed} and all("key" not in k for k in listed)
        assert (await api.delete(f"/api-keys/{created['key_id']}"))[0] == 200
        assert (await api.get("/me", key=created["key"]))[0] == 401
        assert (await api.delete("/api-keys/unknown"))[0] == 404
        # admin writes through to the owning service
        status, tag = await api.put("/id-tags/TAG-1", {"status": "Blocked"})
        assert status == 200 and tag["id_tag_info"]["status"] == "Blocked"
        assert (await api.get("/id-tags/TAG-1", key="read"))[1]["status"] == "Blocked"
        assert (await api.delete("/id-tags/TAG-1"))[1]["deleted"] is True
        assert (await api.get("/id-tags/TAG-1", key="read"))[0] == 404
    text = caplog.text
    assert "GET /api/v1/charge-points 401" in text and "GET /api/v1/charge-points 200" in text
    for key in (*api.keys.values(), created["key"]):
        assert key not in text  # keys never reach the logs


async def test_the_bootstrap_admin_key_works_and_is_never_logged(system, caplog):
    caplog.set_level(logging.DEBUG)
    key = "bootstrap-" + "k" * 30
    async with http_api(system, api_bootstrap_admin_key=key) as (_, api):
        status, me = await api.get("/me", key=key)
        assert status == 200 and me["key_id"] == "bootstrap" and me["scopes"] == ["admin"]
    assert "admin key 'bootstrap' created" in caplog.text
    rotated = "bootstrap-" + "r" * 30
    async with http_api(system, api_bootstrap_admin_key=rotated) as (_, api):
        assert (await api.get("/me", key=rotated))[0] == 200
        assert (await api.get("/me", key=key))[0] == 401  # the old value no longer works
        assert (await api.delete("/api-keys/bootstrap", key=rotated))[0] == 200
    async with http_api(system, api_bootstrap_admin_key=rotated) as (_, api):
        assert (await api.get("/me", key=rotated))[0] == 401  # revoking it is final
    assert "changed to the new value" in caplog.text and "revoking it is final" in caplog.text
    assert key not in caplog.text and rotated not in caplog.text


async def test_pages_are_bounded_and_continue_with_after(system):
    for n in range(3):
        await system.api("stations", "register", charge_point_id=f"PAGE-{n}")
    async with http_api(system) as (_, api):
        status, first, headers = await api.request("GET", "/charge-points", params={"limit": 2}, key="read")
        assert status == 200 and [s["charge_point_id"] for s in first] == ["PAGE-0", "PAGE-1"]
        assert headers["Link"] == '</api/v1/charge-points?limit=2&after=PAGE-1>; rel="next"'
        status, second, headers = await api.request("GET", "/charge-points", params={"limit": 2, "after": "PAGE-1"},
                                                    key="read")
        assert [s["charge_point_id"] for s in second] == ["PAGE-2"] and "Link" not in headers
        for path, limit in (("/charge-points", 5001), ("/transactions", 1001), ("/diagnostics", 1001),
                            ("/security-events", 0), ("/transactions/1/meter-values", 10001)):
            status, body = await api.get(path, params={"limit": limit}, key="read")
            assert status == 400 and "limit" in body["error"], (path, body)
        status, body = await api.get("/transactions", params={"since": "yesterday"}, key="read")
        assert status == 400 and "since" in body["error"]


async def test_bad_input_is_a_400_with_a_json_body(system, cp_id):
    async with http_api(system) as (_, api):
        url = f"/charge-points/{cp_id}/commands/Reset"
        cases = [
            ("POST", url, b"{not json", {"Content-Type": "application/json"}, "not JSON"),
            ("POST", url, b"[" * 100_000 + b"]" * 100_000, {"Content-Type": "application/json"}, "nested too deeply"),
            ("POST", url, b'{"type": "\\ud800"}', {"Content-Type": "application/json"}, "surrogates"),
            ("POST", url, b'{"type": "So\\u0000ft"}', {"Content-Type": "application/json"}, "NUL"),
            ("POST", url, b"type=Soft", {"Content-Type": "application/x-www-form-urlencoded"}, "must be JSON"),
            ("POST", url, b"", {}, "JSON object"),
            ("PUT", "/id-tags/T1", b'{"status": "Maybe"}', {"Content-Type": "application/json"}, "status"),
            ("PUT", "/id-tags/T1", b'{"colour": "red"}', {"Content-Type": "application/json"},
             "colour: unknown parameter"),
            ("GET", "/charge-points?colour=red", None, {}, "colour: unknown parameter"),
            ("PUT", "/id-tags/T1", b'{"expiry_date": 12}', {"Content-Type": "application/json"}, "expiry_date: "),
            ("GET", "/transactions?since=1700000000", None, {}, "since: "),
            ("GET", "/security-events?until=-1.5", None, {}, "until: "),
            ("GET", "/transactions/abc", None, {}, "transaction_id"),
            ("POST", url + "?timeout=100000", b'{"type": "Soft"}', {"Content-Type": "application/json"}, "timeout"),
            ("POST", url + "?mode=later", b'{"type": "Soft"}', {"Content-Type": "application/json"}, "mode"),
        ]
        for method, path, data, headers, message in cases:
            status, body, _ = await api.request(method, path, data=data, headers=headers)
            assert status == 400 and message in body["error"], (path, data[:40] if data else None, body)
        status, body, _ = await api.request("POST", url, data=b"{}" + b" " * (1024 * 1024),
                                            headers={"Content-Type": "application/json"})
        assert status == 413 and "larger" in body["error"]
        status, body = await api.get("/no-such-route")
        assert status == 404 and "no such route" in body["error"]
        status, body = await api.get(f"/charge-points/{cp_id}")
        assert status == 404 and cp_id in body["error"]


async def test_read_routes_reach_every_service(system, cp_id):
    async with http_api(system) as (_, api), connect(system.url(cp_id)) as cp:
        await cp.boot()
        await system.api("transactions", "set_id_tag", id_tag="TAG-R", status="Accepted")
        transaction_id = await cp.start_transaction(1, "TAG-R", meter_start=100)
        await cp.meter_values(1, 150, transaction_id=transaction_id)
        status, view = await api.get(f"/charge-points/{cp_id}/connectivity", key="read")
        assert status == 200 and view["connected"] is True and view["charge_point_id"] == cp_id
        status, transactions = await api.get("/transactions", params={"charge_point_id": cp_id}, key="read")
        assert [t["transaction_id"] for t in transactions] == [transaction_id]
        status, values = await api.get(f"/transactions/{transaction_id}/meter-values", key="read")
        assert status == 200 and len(values) == 1 and values[0]["timestamp"].endswith("Z")
        status, values = await api.get("/meter-values", params={"charge_point_id": cp_id, "connector_id": 1},
                                       key="read")
        assert status == 200 and len(values) == 1
        assert (await api.get(f"/charge-points/{cp_id}/active-transactions", key="read"))[1][0]["transaction_id"] \
            == transaction_id
        for path in (f"/charge-points/{cp_id}/charging-profiles", f"/charge-points/{cp_id}/composite-reports",
                     f"/charge-points/{cp_id}/reservations", f"/charge-points/{cp_id}/installed-certificates",
                     "/sites", "/diagnostics", "/files", "/logs", "/firmware", "/firmware-updates", "/certificates",
                     "/security-events", "/ca-certificate", f"/charge-points/{cp_id}/local-list", "/id-tags",
                     f"/charge-points/{cp_id}/connectors"):
            status, body = await api.get(path, key="read")
            assert status == 200, (path, body)
        status, schedule = await api.get(f"/charge-points/{cp_id}/composite-schedule",
                                         params={"connector_id": 1, "duration": 600}, key="read")
        assert status == 200 and "status" in schedule
        status, closed = await api.post(f"/transactions/{transaction_id}/close", {"reason": "EVDisconnected"},
                                        key="command")
        assert status == 200 and closed["closed_by"] == "operator"
        status, site = await api.put("/sites/s1", {"unit": "A", "limit": 32})
        assert status == 200 and site["site_id"] == "s1"
        status, site = await api.put(f"/sites/s1/members/{cp_id}", {"priority": 1})
        assert status == 200 and [m["charge_point_id"] for m in site["members"]] == [cp_id]
        assert (await api.delete("/sites/s1/members/CP-not-there"))[0] == 404
        assert (await api.delete(f"/sites/s1/members/{cp_id}"))[0] == 200
        assert (await api.delete("/sites/s1"))[0] == 200


async def test_the_openapi_document_is_served_without_a_key(system):
    async with http_api(system) as (_, api):
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{api.base}/openapi.json") as response:
                document = await response.json()
        assert response.status == 200 and document["openapi"] == "3.1.0"
        assert "/api/v1/charge-points/{charge_point_id}/commands/Reset" in document["paths"]
