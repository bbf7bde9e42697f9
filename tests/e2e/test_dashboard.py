"""The operator dashboard (services/api/dashboard) in a real browser: Debian's Chromium, headless, driven by
playwright-core (tests/support/browser.py), against the running system -- gateway, services, the HTTP API process
part -- with simulated charge points. The page uses only the public HTTP API with the key it was given.

Screenshots go to ``DASHBOARD_SCREENSHOTS`` when set (``DASHBOARD_SCREENSHOTS=docs/dashboard python -m pytest
tests/e2e/test_dashboard.py`` makes the README's), else to the test's temporary folder.
"""
from __future__ import annotations

import asyncio
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from ocpp.exceptions import NotSupportedError
from ocpp.v16 import call

from csms.contracts.base import format_utc
from tests.support.browser import Browser
from tests.support.chargepoint import connect
from tests.support.http_api import http_api

ROOT = Path(__file__).resolve().parents[2]


class Dashboard:
    def __init__(self, system, api, client, browser: Browser, shots: Path):
        self.system, self.api, self.client, self.browser, self.shots = system, api, client, browser, shots
        self.url = f"http://127.0.0.1:{api.port}/dashboard/"
        self.expected_errors: tuple[str, ...] = ()  # console errors a test provokes on purpose

    async def login(self, scope: str = "command") -> None:
        await self.browser.goto(self.url)
        await self.browser.fill("#api-key", self.client.keys[scope])
        await self.browser.click("#login-button")
        await self.browser.wait("#view-stations")

    async def open(self, route: str, view: str) -> None:
        await self.browser.evaluate("location.hash = arg", route)
        await self.browser.wait(f"#view-{view}")

    async def screenshot(self, name: str, full_page: bool = False) -> None:
        await self.browser.screenshot(self.shots / f"{name}.png", full_page)


@pytest.fixture
async def dashboard(system, tmp_path):
    shots = Path(os.environ["DASHBOARD_SCREENSHOTS"]) if os.environ.get("DASHBOARD_SCREENSHOTS") else tmp_path
    if not shots.is_absolute():
        shots = ROOT / shots
    async with http_api(system) as (api, client):
        browser = await Browser.launch()
        try:
            dashboard = Dashboard(system, api, client, browser, shots)
            yield dashboard
            errors = [error for error in await browser.errors()
                      if not any(expected in error for expected in dashboard.expected_errors)]
            base = f"http://127.0.0.1:{api.port}/"
            elsewhere = [url for url in await browser.requests() if not url.startswith(base)]
        finally:
            await browser.close()
    # nothing went wrong in the page, and it asked nothing of another origin (no CDN, works offline)
    assert errors == [] and elsewhere == []


async def test_a_bad_api_key_is_refused_and_the_key_never_shows_in_the_page(dashboard):
    browser = dashboard.browser
    dashboard.expected_errors = ("the server responded with a status of 401",)
    await browser.goto(dashboard.url)
    await browser.fill("#api-key", "csms_000000000000_not-a-key-of-this-system")
    await browser.click("#login-button")
    message = await browser.until_text("#login-error", "API key refused")
    assert "unknown or revoked API key" in message
    assert await browser.evaluate("return sessionStorage.length") == 0
    assert await browser.evaluate("return document.querySelector('#api-key').value") == ""
    assert await browser.count("#view-stations") == 0
    assert await browser.evaluate("return document.querySelector('#nav').getClientRects().length") == 0
    await dashboard.screenshot("login-refused")

    key = dashboard.client.keys["read"]
    await browser.fill("#api-key", key)
    await browser.click("#login-button")
    await browser.wait("#view-stations")
    assert "test read (read)" in await browser.text("#who")
    # kept in the tab's sessionStorage and sent as a header, never written into the page
    assert await browser.evaluate("return sessionStorage.getItem('csms.apiKey')") == key
    assert not await browser.evaluate("return document.documentElement.outerHTML.includes(arg)", key)

    # the files hold no secret and forbid inline scripts, framing and other origins
    async with dashboard.client.session.get(dashboard.url) as response:
        page = await response.text()
        policy = response.headers["Content-Security-Policy"]
    assert response.status == 200 and key not in page and "<script type=\"module\" src=\"app.js\">" in page
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy and "unsafe" not in policy

    # a key revoked while the page is open: the next request is refused and the operator is back at the login
    status, me = await dashboard.client.get("/me", key="read")
    assert status == 200
    status, _ = await dashboard.client.delete(f"/api-keys/{me['key_id']}", key="admin")
    assert status == 200
    await browser.evaluate("location.hash = '#/transactions'")
    assert "API key refused" in await browser.until_text("#login-error", "API key refused")
    assert await browser.evaluate("return sessionStorage.length") == 0


async def test_a_station_turning_online_appears_without_a_reload(dashboard, cp_id):
    browser = dashboard.browser
    await dashboard.login("read")
    await browser.wait("#stations-table")
    await browser.until("return document.querySelector('#live').textContent === 'live'")
    await browser.evaluate("window.notReloaded = true")
    row = f'#stations-body tr[data-cp="{cp_id}"]'
    odd_id = 'CP-<img src=x onerror="window.pwned=1">'
    async with connect(dashboard.system.url(cp_id)) as cp:
        await browser.wait(f'{row}[data-connected="true"]')
        await cp.boot(vendor="Acme", model="Wallbox 22")
        await cp.status(1, "Available")
        await cp.status(2, "Available")
        await browser.wait(f'{row} .connector[data-connector="2"][data-status="Available"]')
        assert "Acme Wallbox 22" in await browser.text(row)
        await cp.status(1, "Charging")
        await browser.wait(f'{row} .connector[data-connector="1"][data-status="Charging"]')
        await cp.status(2, "Faulted", error_code="GroundFailure")
        await browser.wait(f'{row} .connector[data-connector="2"][data-status="Faulted"]')
        # an id that looks like markup is shown as text
        async with connect(dashboard.system.url(odd_id.replace('"', "%22").replace(" ", "%20")), odd_id) as odd:
            await odd.boot()
            cell = await browser.until("const a = [...document.querySelectorAll('#stations-body a.cp-link')]"
                                       ".find((a) => a.textContent === arg); return a && a.textContent;", odd_id)
            assert cell == odd_id
            assert await browser.evaluate("return window.pwned === undefined && "
                                          "!document.querySelector('#stations-body img')")
            await dashboard.screenshot("stations")
    await browser.wait(f'{row}[data-connected="false"]')
    assert "offline" in await browser.text(f"{row} .connection")
    assert await browser.evaluate("return window.notReloaded === true")


async def test_a_remote_start_shows_accepted_then_a_transaction_with_a_growing_chart(dashboard, cp_id):
    browser, client = dashboard.browser, dashboard.client
    assert (await client.put("/id-tags/TAG-42", {"status": "Accepted"}))[0] == 200
    async with connect(dashboard.system.url(cp_id)) as cp:
        await cp.boot(vendor="Acme", model="Wallbox 22")
        await cp.status(1, "Available")
        await dashboard.login("command")
        await dashboard.open(f"#/station/{cp_id}", "stations")
        await browser.wait('#connectors .connector[data-status="Available"]')
        await browser.fill("#cmd-remote-start input[name=idTag]", "TAG-42")
        await browser.click("#cmd-remote-start button")
        await browser.wait('#command-result [data-action="RemoteStartTransaction"][data-answer="Accepted"]')
        (request,) = await cp.wait_for("RemoteStartTransaction")
        assert (request["connector_id"], request["id_tag"]) == (1, "TAG-42")

        # the charge point starts it: the station page shows it without a reload
        await cp.status(1, "Preparing")
        started = datetime.now(timezone.utc).replace(microsecond=0)
        tx = await cp.start_transaction(1, "TAG-42", meter_start=1000, timestamp=format_utc(started))
        await cp.status(1, "Charging")
        await browser.wait(f'#station-transactions tr[data-transaction="{tx}"]')
        await browser.wait('#connectors .connector[data-status="Charging"]')
        await browser.until_text("#activity", f"transaction {tx} started on connector 1 by TAG-42")
        await dashboard.screenshot("station", full_page=True)

        await browser.click(f'#station-transactions tr[data-transaction="{tx}"] a.tx-link')
        await browser.wait("#meter-chart svg.chart")
        # before any meter value: the register at the start (meterStart at the transaction's start time)
        assert await browser.evaluate("return document.querySelector('#meter-chart svg').dataset.points") == "1"
        assert await browser.attributes("#meter-chart circle.point", "data-v", "data-t", "data-label") == [
            {"data-v": "1000", "data-t": iso(started), "data-label": "meter start"}]
        for step in range(1, 5):
            await cp.meter_values(1, 1000 + 1500 * step, transaction_id=tx, power_w=7200 + 100 * step,
                                  timestamp=format_utc(started + timedelta(seconds=30 * step)))
            await browser.until("return document.querySelector('#meter-chart svg').dataset.points === arg",
                                str(1 + step))
        points = await browser.attributes("#meter-chart circle.point.energy", "data-v", "data-t", "cy")
        assert [float(p["data-v"]) for p in points] == [1000, 2500, 4000, 5500, 7000]
        assert [p["data-t"] for p in points] == [iso(started + timedelta(seconds=30 * step)) for step in range(5)]
        heights = [float(p["cy"]) for p in points]
        assert heights == sorted(heights, reverse=True)  # a growing register is drawn rising
        assert await browser.count("#power-chart circle.point") == 4
        await dashboard.screenshot("transaction", full_page=True)

        # stopped: the page says so
        await cp.stop_transaction(tx, meter_stop=7600, reason="Local")
        await browser.until_text("#transaction-status", "stopped")
        assert "6600 Wh" in await browser.text("#transaction-head")


def iso(at: datetime) -> str:
    """An instant as the page's data-t writes it (JavaScript's toISOString)."""
    return at.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def test_protocol_errors_show_on_the_station_page_without_a_reload(dashboard, cp_id):
    browser = dashboard.browser
    async with connect(dashboard.system.url(cp_id)) as cp:
        await cp.boot()
        await dashboard.login("command")
        await dashboard.open(f"#/station/{cp_id}", "stations")
        await browser.until_text("#activity", "BootNotification")
        await browser.evaluate("window.notReloaded = true")
        # a frame that is not OCPP-J: the gateway answers FormationViolation
        await cp._connection.send("[2, \"m-1\", \"Heartbeat\"]")
        item = '#activity li.problem[data-type="station.protocol_error"]'
        text = await browser.until_text(item, "FormationViolation")
        assert "CALLERROR FormationViolation sent for Heartbeat (m-1): CALL must be [2, UniqueId, Action, Payload]" \
            in text

        # a command the charge point answers with a CALLERROR: the answer, and the error in the activity
        def refuse(_):
            raise NotSupportedError("no soft reset on this model")
        cp.respond("Reset", refuse)
        await browser.click("#cmd-reset button")
        await browser.wait('#command-result [data-action="Reset"][data-status="call_error"]')
        assert "no soft reset on this model" in await browser.text("#command-result")
        await browser.until("return document.querySelectorAll(arg).length === 2", item)
        newest = await browser.text(f"{item}:first-child")
        assert "its answer to Reset" in newest and "NotSupported: no soft reset on this model" in newest
        # they count as problems
        await browser.click("#problems-only")
        await browser.until("return [...document.querySelectorAll('#activity li')].every("
                            "(li) => li.classList.contains('problem')) && document.querySelectorAll(arg).length === 2",
                            item)
        assert await browser.evaluate("return window.notReloaded === true")
        await dashboard.screenshot("protocol-errors")


async def test_a_remote_stop_sends_the_transaction_and_shows_the_charge_points_answer(dashboard, cp_id):
    browser = dashboard.browser
    async with connect(dashboard.system.url(cp_id)) as cp:
        await cp.boot()
        await cp.status(1, "Charging")
        tx = await cp.start_transaction(1, "TAG-7", meter_start=0)
        await dashboard.login("command")
        await dashboard.open(f"#/station/{cp_id}", "stations")
        await browser.wait(f'#station-transactions tr[data-transaction="{tx}"]')
        # the form holds the transaction in progress
        assert await browser.evaluate(
            "return document.querySelector('#cmd-remote-stop input[name=transactionId]').value") == str(tx)
        cp.respond("RemoteStopTransaction", {"status": "Rejected"})
        await browser.click("#cmd-remote-stop button")
        await browser.wait('#command-result [data-action="RemoteStopTransaction"][data-status="answered"]'
                           '[data-answer="Rejected"]')
        cp.respond("RemoteStopTransaction", {"status": "Accepted"})
        await browser.click("#cmd-remote-stop button")
        await browser.wait('#command-result [data-action="RemoteStopTransaction"][data-answer="Accepted"]')
        assert cp.received["RemoteStopTransaction"] == [{"transaction_id": tx}, {"transaction_id": tx}]
        # the charge point stops it: gone from the transactions in progress without a reload
        await cp.stop_transaction(tx, meter_stop=1200, reason="Remote")
        await browser.until_text("#station-transactions", "no transaction in progress")


async def test_the_station_list_is_paged(dashboard, cp_id):
    """More stations than one page (a page of 2 here: #/stations?limit=2), each page from the API's Link header."""
    browser = dashboard.browser
    ids = [f"{cp_id}-{n}" for n in range(1, 6)]
    for charge_point_id in ids:
        async with connect(dashboard.system.url(charge_point_id)) as cp:
            await cp.boot()
    shown = "return [...document.querySelectorAll('#stations-body tr')].map((tr) => tr.dataset.cp).join(' ')"

    async def page(expected: list[str]) -> None:
        await browser.until(f"{shown} === arg", " ".join(expected))

    await dashboard.login("read")
    await dashboard.open("#/stations?limit=2", "stations")
    await page(ids[0:2])
    assert await browser.count("#first-page") == 0
    await browser.click("#next-page")
    await page(ids[2:4])
    await browser.click("#next-page")
    await page(ids[4:5])
    assert await browser.count("#next-page") == 0  # the last page has no Link rel="next"
    await browser.click("#previous-page")
    await page(ids[2:4])
    await browser.click("#first-page")
    await page(ids[0:2])
    assert "2 on this page" in await browser.text("#stations-count")

    # a station that comes online takes its place in the API's order, and the page keeps its size
    async with connect(dashboard.system.url(f"{cp_id}-0")) as cp:
        await cp.boot()
        await page([f"{cp_id}-0", ids[0]])
        await browser.wait(f'#stations-body tr[data-cp="{cp_id}-0"][data-connected="true"]')
    await browser.click("#next-page")
    await page(ids[1:3])


async def test_the_composite_schedule_plot_matches_the_apis_numbers(dashboard, cp_id):
    browser, client = dashboard.browser, dashboard.client
    begin = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(seconds=60)
    profile = {"chargingProfileId": 7, "stackLevel": 0, "chargingProfilePurpose": "TxDefaultProfile",
               "chargingProfileKind": "Absolute", "chargingSchedule": {
                   "startSchedule": format_utc(begin), "chargingRateUnit": "A", "chargingSchedulePeriod": [
                       {"startPeriod": 0, "limit": 32}, {"startPeriod": 1800, "limit": 16},
                       {"startPeriod": 3600, "limit": 10}]}}
    async with connect(dashboard.system.url(cp_id)) as cp:
        await cp.boot()
        await cp.status(1, "Available")
        status, result = await client.post(f"/charge-points/{cp_id}/commands/SetChargingProfile",
                                           {"connectorId": 1, "csChargingProfiles": profile}, key="command")
        assert status == 200 and result["payload"] == {"status": "Accepted"}, result
        await dashboard.login("command")
        await dashboard.open(f"#/station/{cp_id}", "stations")
        await browser.wait("#schedule-chart line.step.predicted", state="attached")
        await browser.until_text("#profiles", "1800 s: 16 A")

        svg = (await browser.attributes("#schedule-chart svg", "data-schedule-start", "data-y-max", "data-x-min",
                                        "data-x-max", "data-plot-left", "data-plot-right", "data-plot-top",
                                        "data-plot-bottom"))[0]
        # the API's numbers for the same start
        status, predicted = await client.get(f"/charge-points/{cp_id}/composite-schedule", key="read", params={
            "connector_id": 1, "duration": 7200, "charging_rate_unit": "A", "start": svg["data-schedule-start"]})
        assert status == 200, predicted
        periods = predicted["chargingSchedule"]["chargingSchedulePeriod"]
        assert [p["limit"] for p in periods] == [32, 16, 10]
        drawn = await steps(browser, "predicted")
        assert [(s["start"], s["limit"]) for s in drawn] == [(p["startPeriod"], p["limit"]) for p in periods]
        check_geometry(svg, drawn, predicted["scheduleStart"])

        # the charge point's own answer, drawn next to the prediction
        reported = {"status": "Accepted", "connector_id": 1, "schedule_start": svg["data-schedule-start"],
                    "charging_schedule": {"duration": 7200, "charging_rate_unit": "A", "charging_schedule_period": [
                        {"start_period": 0, "limit": 32}, {"start_period": 1500, "limit": 13}]}}
        cp.respond("GetCompositeSchedule", reported)
        await browser.click("#ask-composite")
        await browser.wait('#command-result [data-action="GetCompositeSchedule"][data-answer="Accepted"]')
        await browser.wait("#schedule-chart line.step.reported", state="attached")
        drawn_reported = await steps(browser, "reported")
        assert [(s["start"], s["limit"]) for s in drawn_reported] == [(0, 32), (1500, 13)]
        status, reports = await client.get(f"/charge-points/{cp_id}/composite-reports", key="read")
        assert status == 200 and reports[0]["mismatch"] is True
        report_periods = reports[0]["predicted"]["chargingSchedule"]["chargingSchedulePeriod"]
        assert [(s["start"], s["limit"]) for s in await steps(browser, "predicted")] == [
            (p["startPeriod"], p["limit"]) for p in report_periods]
        svg = (await browser.attributes("#schedule-chart svg", "data-reported-start", "data-y-max", "data-x-min",
                                        "data-x-max", "data-plot-left", "data-plot-right", "data-plot-top",
                                        "data-plot-bottom"))[0]
        check_geometry(svg, drawn_reported, svg["data-reported-start"])
        await browser.until_text("#activity", "differs from the prediction")
        # the stored report, after a reload: drawn again from GET composite-reports
        await browser.call("reload")
        await browser.until_text("#last-report", "differs from the prediction (")
        await browser.click("#show-last-report")
        await browser.until("return document.querySelectorAll('#schedule-chart line.step.reported').length === 2")
        assert [(s["start"], s["limit"]) for s in await steps(browser, "reported")] == [(0, 32), (1500, 13)]
        await browser.evaluate("document.querySelector('#schedule').scrollIntoView()")
        await dashboard.screenshot("composite-schedule")


async def steps(browser: Browser, series: str) -> list[dict]:
    lines = await browser.attributes(f"#schedule-chart line.step.{series}", "data-start-period", "data-limit",
                                     "data-from", "data-to", "x1", "x2", "y1")
    return [{"start": int(line["data-start-period"]), "limit": float(line["data-limit"]), "from": line["data-from"],
             "to": line["data-to"], "x1": float(line["x1"]), "x2": float(line["x2"]), "y": float(line["y1"])}
            for line in lines]


def check_geometry(svg: dict, drawn: list[dict], schedule_start: str) -> None:
    """Each step sits where the chart's own scale puts its limit and its time."""
    top, bottom = float(svg["data-plot-top"]), float(svg["data-plot-bottom"])
    left, right = float(svg["data-plot-left"]), float(svg["data-plot-right"])
    y_max, x_min, x_max = float(svg["data-y-max"]), float(svg["data-x-min"]), float(svg["data-x-max"])
    start_ms = datetime.fromisoformat(schedule_start.replace("Z", "+00:00")).timestamp() * 1000
    assert y_max >= max(s["limit"] for s in drawn)
    for step in drawn:
        assert step["y"] == pytest.approx(bottom - step["limit"] / y_max * (bottom - top), abs=0.01)
        at = start_ms + step["start"] * 1000
        assert step["x1"] == pytest.approx(left + (at - x_min) / (x_max - x_min) * (right - left), abs=0.01)


async def test_diagnostics_firmware_and_security_events_show_with_their_progress(dashboard, cp_id):
    browser, client = dashboard.browser, dashboard.client
    async with connect(dashboard.system.url(cp_id)) as cp:
        await cp.boot()
        await dashboard.login("command")
        await dashboard.open(f"#/station/{cp_id}", "stations")
        # each command button shows the charge point's answer
        cp.respond("Reset", {"status": "Rejected"})
        for form, action, answer in (("reset", "Reset", "Rejected"), ("unlock", "UnlockConnector", "Unlocked"),
                                     ("trigger", "TriggerMessage", "Accepted"),
                                     ("config", "GetConfiguration", "")):
            await browser.click(f"#cmd-{form} button")
            await browser.wait(f'#command-result [data-action="{action}"][data-status="answered"]'
                               f'[data-answer="{answer}"]')
        assert cp.received["Reset"] == [{"type": "Soft"}] and cp.received["UnlockConnector"] == [{"connector_id": 1}]
        assert cp.received["TriggerMessage"] == [{"requested_message": "BootNotification"}]
        await browser.until_text("#configuration", "HeartbeatInterval")
        await browser.click("#cmd-diagnostics button")
        await browser.wait('#command-result [data-action="GetDiagnostics"][data-status="answered"]')
        assert "diagnostics.log" in await browser.text("#command-result")
        await browser.until_text("#station-files", "diagnostics.log")

        status, result = await client.post(f"/charge-points/{cp_id}/commands/UpdateFirmware", {
            "location": "https://firmware.example.com/fw-2.1.bin", "retrieveDate": format_utc(
                datetime.now(timezone.utc))}, key="command")
        assert status == 200 and result["status"] == "answered", result
        await cp.call_ok(call.FirmwareStatusNotification(status="Downloading"))
        await cp.call_ok(call.FirmwareStatusNotification(status="Downloaded"))
        await browser.wait('#station-files .progress[data-status="Downloaded"]')
        await cp.call_ok(call.SecurityEventNotification(type="TamperDetectionActivated",
                                                        timestamp=format_utc(datetime.now(timezone.utc)),
                                                        tech_info="lid opened"))
        await browser.until_text("#station-security", "TamperDetectionActivated")
        await browser.wait('#activity li.problem[data-type="security.event_received"]')

        await dashboard.open("#/files", "files")
        await browser.wait('#files .progress[data-status="Downloaded"]')
        assert await browser.attributes("#files .progress", "data-done", "data-steps") == [
            {"data-done": "3", "data-steps": "5"}]
        await cp.call_ok(call.FirmwareStatusNotification(status="InstallationFailed"))
        await browser.wait('#files .progress[data-status="InstallationFailed"] .fill.failed')
        assert "diagnostics.log" in await browser.text("#files")
        await dashboard.screenshot("files", full_page=True)

        await dashboard.open("#/security", "security")
        await browser.until_text("#security-events", "lid opened")
        assert await browser.count("#security-events tr.problem") == 1
        await dashboard.screenshot("security")

        await dashboard.open(f"#/transactions?charge_point_id={cp_id}", "transactions")
        await browser.until_text("#transactions", "no transaction")


async def test_recent_activity_of_a_station_through_the_http_api(system, cp_id):
    """The endpoint the dashboard's "recent messages and errors" reads, and the dashboard switched off."""
    async with http_api(system) as (_, client), connect(system.url(cp_id)) as cp:
        await cp.boot()
        await cp.status(1, "Faulted", error_code="GroundFailure")
        for _ in range(100):
            status, entries = await client.get(f"/charge-points/{cp_id}/activity", key="read")
            if len(entries) >= 3:
                break
            await asyncio.sleep(0.05)
        assert status == 200
        assert [e["type"] for e in entries] == ["connector.status_changed", "station.booted", "station.connected"]
        assert [e["problem"] for e in entries] == [True, False, False]
        assert entries[0]["event"]["error_code"] == "GroundFailure" and entries[0]["event"]["charge_point_id"] == cp_id
        status, problems = await client.get(f"/charge-points/{cp_id}/activity", key="read",
                                            params={"problems_only": "true", "limit": 1})
        assert status == 200 and [e["type"] for e in problems] == ["connector.status_changed"]
        assert (await client.get("/charge-points/CP-nobody/activity", key="read")) == (200, [])
        status, body = await client.get(f"/charge-points/{cp_id}/activity", key="read", params={"limit": 0})
        assert status == 400 and "limit" in body["error"]
        assert (await client.get(f"/charge-points/{cp_id}/activity", key=None))[0] == 401
    async with http_api(system, api_dashboard=False) as (api, client):
        async with client.session.get(f"http://127.0.0.1:{api.port}/dashboard/") as response:
            assert response.status == 404
