"""The routes of the HTTP API (``/api/v1``): each one checks the key's scope, then asks the owning service over the
bus (``CsmsClient.api`` / ``CsmsClient.send``) and answers what it said. Query parameters and bodies are the
services' own parameter models where those read from a query (``csms.contracts.api``), so the OpenAPI document
(``/api/v1/openapi.json``, ``tools/gen_openapi.py`` -> ``openapi/openapi.json``) has the same bounds the services
enforce; a bad one is a 400 naming it, never a 500.

    GET  /api/v1/charge-points                             read     stations, a page at a time
    POST /api/v1/charge-points/{id}/commands/{Action}      command  ?mode=sync|async&timeout=&callback_url=
    GET  /api/v1/commands/{command_id}                     read     an asynchronous command's result
    GET  /api/v1/events?types=station.*&charge_point_id=   read     server-sent events
    GET  /api/v1/charge-points/{id}/activity               read     recent events of a station (activity.py)
    POST /api/v1/api-keys                                  admin
    GET  /dashboard/                                       none     the operator dashboard's files (dashboard/)
"""
from __future__ import annotations

import copy
import logging
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field
from pydantic.json_schema import models_json_schema
from starlette.exceptions import HTTPException as StarletteHTTPException

from csms import ocpp16
from csms.client import ApiCallFailed
from csms.contracts.api import diagnostics as diag
from csms.contracts.api import security as sec
from csms.contracts.api import stations as st
from csms.contracts.api import transactions as tx
from csms.contracts.api.api import (
    ActivityEntry, CloseTransactionBody, CommandAccepted, CommandRecord, Connectivity, CreatedKey, CreateKeyBody, CreateKeyParams,
    ErrorBody, IdTagBody, IsoTime, KeyView, WebhookBody, WhoAmI, check_webhook_url,
)
from csms.contracts.api import smart_charging as sc
from csms.contracts.api.smart_charging import PutSiteParams
from csms.contracts.base import format_utc
from csms.contracts.bus import CommandResult, server_views
from csms.contracts.ocpp16 import REQUESTS, RESPONSES
from csms.contracts.schema import ANSWERED, standardise
from csms.ops.logs import outage_of
from csms.service import ApiError
from services.api import auth, dashboard, rules
from services.api.auth import Caller, Problem
from services.api.handlers import create_key
from services.api.stream import TooManyClients

log = logging.getLogger(__name__)

API_VERSION = "1.0.0"
PREFIX = "/api/v1"
BUS_TIMEOUT = 10.0  # seconds a service may take to answer an API operation
TITLE = "OCPP 1.6J CSMS HTTP API"
DESCRIPTION = """The HTTP API of the central system: stations, transactions and meter values, id tags, reservations,
charging profiles and composite schedules, sites, diagnostics, logs and firmware, certificates and security
events; commands to charge points (synchronous, or asynchronous with polling, a `command.completed` event and
webhooks); server-sent events for live status.

Every request needs an API key (`Authorization: Bearer <key>` or `X-API-Key`) with a scope: `read` (GET),
`command` (also commands, closing transactions, the key's own webhook), `admin` (also keys, id tags, sites,
reservations). Errors are JSON `{"error", "status", "details"}`. Times are UTC ISO-8601. Lists are paged where the
service pages them: `limit` (bounded) and `after` (the last id of the previous page; a full page has a `Link`
header with `rel="next"`)."""

# id of a charge point in a path: printable, no slash (as the gateway takes them)
CHARGE_POINT_PATTERN = r"^[^\x00-\x1f\x7f/]+$"
CpId = Annotated[str, Path(min_length=1, max_length=255, pattern=CHARGE_POINT_PATTERN,
                           description="the charge point id (OCPP chargePointId)", examples=["CP-1"])]
IdTagPath = Annotated[str, Path(min_length=1, max_length=20, pattern=r"^[^\x00-\x1f\x7f/]+$",
                                description="the OCPP idTag (case-insensitive)", examples=["TAG-1"])]
TransactionId = Annotated[int, Path(ge=-2 ** 31, le=2 ** 31 - 1, description="the OCPP transactionId")]
Limit = Query(100, ge=1, le=diag.MAX_LIMIT, description="at most this many, newest first")
Since = Query(None, description="at or after this instant (UTC ISO-8601)")
Until = Query(None, description="before this instant")
OptionalCp = Query(None, min_length=1, max_length=255, pattern=CHARGE_POINT_PATTERN, description="one charge point")
RecordId = Annotated[str, Path(min_length=1, max_length=255, pattern=r"^[^\x00-\x1f\x7f/]+$")]

_ERROR = {"model": ErrorBody}
COMMON_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {**_ERROR, "description": "bad input: the error names it"},
    401: {**_ERROR, "description": "no API key, or an unknown or revoked one"},
    403: {**_ERROR, "description": "the key lacks the scope this needs"},
    404: {**_ERROR, "description": "no such record or route"},
    405: {**_ERROR, "description": "method not allowed here"},
    413: {**_ERROR, "description": "request body too large"},
    502: {**_ERROR, "description": "the owning service failed"},
    503: {**_ERROR, "description": "the owning service is not running, or the central system is unreachable"},
    504: {**_ERROR, "description": "the owning service did not answer in time"},
}
CONFLICT = {409: {**_ERROR, "description": "conflicts with the records (e.g. in use)"}}
BUSY = {429: {**_ERROR, "description": "too many asynchronous commands or event streams at once"}}


class Json(JSONResponse):
    media_type = "application/json"


def runtime_of(request: Request):
    return request.app.state.runtime


async def call(request: Request, service: str, operation: str, **params: Any) -> Any:
    """A service API operation over the bus; its error replies become the same HTTP statuses."""
    runtime = runtime_of(request)
    try:
        return await runtime.client.api(service, operation, timeout=BUS_TIMEOUT, **params)
    except ApiCallFailed as exc:
        status = exc.status if exc.status in (400, 404, 409, 503, 504) else 502
        raise Problem(status, exc.error or f"{service}.{operation} failed") from None


def page(request: Request, items: list, limit: int, cursor: str | None) -> JSONResponse:
    """A list answer; a full page carries ``Link: <...after=cursor>; rel="next"``."""
    headers = {}
    if cursor is not None and len(items) >= limit:
        query = [(k, v) for k, v in request.query_params.multi_items() if k != "after"] + [("after", cursor)]
        headers["Link"] = f'<{request.url.path}?{urlencode(query)}>; rel="next"'
    return Json(items, headers=headers)


class TransactionsQuery(tx.ListTransactionsParams):
    __doc__ = tx.ListTransactionsParams.__doc__
    since: IsoTime | None = None   # started at or after
    until: IsoTime | None = None   # started before


class MeterValuesQuery(tx.QueryMeterValuesParams):
    __doc__ = tx.QueryMeterValuesParams.__doc__
    since: IsoTime | None = None
    until: IsoTime | None = None


def dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json", exclude_none=True)


# ---- stations -------------------------------------------------------------------------------------------
stations = APIRouter(tags=["stations"])


@stations.get("/charge-points", response_model=list[st.StationSummary], summary="List stations")
async def list_stations(request: Request, query: Annotated[st.ListStationsParams, Query()],
                        _: Caller = Depends(auth.read)) -> Any:
    """Every station the system knows, by id; ``after`` = the last id of the previous page."""
    items = await call(request, "stations", "list_stations", **dump(query))
    return page(request, items, query.limit, items[-1]["charge_point_id"] if items else None)


@stations.get("/charge-points/{charge_point_id}", response_model=st.StationView, summary="Get a station")
async def get_station(request: Request, charge_point_id: CpId, _: Caller = Depends(auth.read)) -> Any:
    """Boot information, registration, connectivity, connectors and the configuration last reported."""
    return Json(await call(request, "stations", "get_station", charge_point_id=charge_point_id))


@stations.get("/charge-points/{charge_point_id}/connectivity", response_model=Connectivity,
              summary="Whether a station is connected now")
async def connectivity(request: Request, charge_point_id: CpId, _: Caller = Depends(auth.read)) -> Any:
    view = await call(request, "stations", "get_station", charge_point_id=charge_point_id)
    return Json(dump(Connectivity.model_validate(view)))


@stations.get("/charge-points/{charge_point_id}/connectors", response_model=dict[str, st.ConnectorView],
              summary="Connector status")
async def connectors(request: Request, charge_point_id: CpId, _: Caller = Depends(auth.read)) -> Any:
    """The last status of each connector (0 = the whole station), as the charge point reported it."""
    view = await call(request, "stations", "get_station", charge_point_id=charge_point_id)
    return Json(view.get("connectors") or {})


@stations.get("/charge-points/{charge_point_id}/activity", response_model=list[ActivityEntry],
              summary="Recent events of a station")
async def activity(request: Request, charge_point_id: CpId,
                   limit: int = Query(50, ge=1, le=10_000, description="at most this many, newest first"),
                   problems_only: bool = Query(False, description="only faults, refusals, failures and the like"),
                   _: Caller = Depends(auth.read)) -> Any:
    """The events about the station this API process saw on the bus since it started, newest first: connection,
    boots, connector status, transactions, meter values, files, firmware, security events, results of
    asynchronous commands; ``problem`` marks what deserves a look. A window kept in memory (at most
    ``API_ACTIVITY_EVENTS`` per station, ``API_ACTIVITY_CHARGE_POINTS`` stations), not a record: an unknown or
    quiet station has none."""
    log = runtime_of(request).activity
    items = log.recent(charge_point_id, limit, problems_only) if log is not None else []
    return Json([item.model_dump(mode="json") for item in items])


# ---- transactions, meter values, id tags, reservations ---------------------------------------------------
transactions = APIRouter(tags=["transactions"])


@transactions.get("/transactions", response_model=list[tx.TransactionView], summary="List transactions")
async def list_transactions(request: Request, query: Annotated[TransactionsQuery, Query()],
                            _: Caller = Depends(auth.read)) -> Any:
    """By charge point and/or id tag, started in [since, until), oldest first; ``after`` = the last
    transaction_id of the previous page."""
    items = await call(request, "transactions", "list_transactions", **dump(query))
    return page(request, items, query.limit, str(items[-1]["transaction_id"]) if items else None)


@transactions.get("/transactions/{transaction_id}", response_model=tx.TransactionView, summary="Get a transaction")
async def get_transaction(request: Request, transaction_id: TransactionId, _: Caller = Depends(auth.read)) -> Any:
    return Json(await call(request, "transactions", "get_transaction", transaction_id=transaction_id))


@transactions.get("/transactions/{transaction_id}/meter-values", response_model=list[tx.MeterValueView],
                  summary="Meter values of a transaction")
async def transaction_meter_values(
        request: Request, transaction_id: TransactionId,
        limit: int = Query(1000, ge=1, le=tx.MAX_METER_VALUES_PAGE),
        after: int | None = Query(None, ge=-2 ** 63, le=2 ** 63 - 1, description="the last id of the previous page"),
        _: Caller = Depends(auth.read)) -> Any:
    """In arrival order, ``limit`` at a time."""
    params = {"transaction_id": transaction_id, "limit": limit, **({"after": after} if after is not None else {})}
    items = await call(request, "transactions", "meter_values", **params)
    return page(request, items, limit, str(items[-1]["id"]) if items else None)


@transactions.get("/meter-values", response_model=list[tx.MeterValueView], summary="Query meter values")
async def query_meter_values(request: Request, query: Annotated[MeterValuesQuery, Query()],
                             _: Caller = Depends(auth.read)) -> Any:
    """By charge point (and connector), transaction or id tag, within a time range of the readings' own
    timestamps."""
    items = await call(request, "transactions", "query_meter_values", **dump(query))
    return page(request, items, query.limit, str(items[-1]["id"]) if items else None)


@transactions.post("/transactions/{transaction_id}/close", response_model=tx.TransactionView,
                   summary="Close a transaction the charge point will not stop", responses=CONFLICT)
async def close_transaction(request: Request, transaction_id: TransactionId, body: CloseTransactionBody,
                            _: Caller = Depends(auth.command)) -> Any:
    return Json(await call(request, "transactions", "close_transaction", transaction_id=transaction_id,
                           **dump(body)))


@transactions.get("/charge-points/{charge_point_id}/active-transactions",
                  response_model=list[tx.ActiveTransaction], summary="Transactions holding the connectors")
async def active_transactions(request: Request, charge_point_id: CpId, _: Caller = Depends(auth.read)) -> Any:
    return Json(await call(request, "transactions", "active_transactions", charge_point_id=charge_point_id))


@transactions.get("/id-tags", response_model=list[tx.IdTagView], summary="List id tags")
async def list_id_tags(request: Request, query: Annotated[tx.ListIdTagsParams, Query()],
                       _: Caller = Depends(auth.read)) -> Any:
    """In case-insensitive order, optionally by stored ``status``; each with the idTagInfo it gets now
    (parents and expiry applied); ``after`` = the last id_tag of the previous page."""
    items = await call(request, "transactions", "list_id_tags", **dump(query))
    return page(request, items, query.limit, items[-1]["id_tag"] if items else None)


@transactions.get("/id-tags/{id_tag}", response_model=tx.IdTagView, summary="Get an id tag")
async def get_id_tag(request: Request, id_tag: IdTagPath, _: Caller = Depends(auth.read)) -> Any:
    return Json(await call(request, "transactions", "get_id_tag", id_tag=id_tag))


@transactions.put("/id-tags/{id_tag}", response_model=tx.IdTagView, summary="Create or change an id tag")
async def put_id_tag(request: Request, id_tag: IdTagPath, body: IdTagBody, _: Caller = Depends(auth.admin)) -> Any:
    return Json(await call(request, "transactions", "set_id_tag", id_tag=id_tag, **dump(body)))


@transactions.delete("/id-tags/{id_tag}", response_model=tx.DeletedIdTag, summary="Delete an id tag")
async def delete_id_tag(request: Request, id_tag: IdTagPath, _: Caller = Depends(auth.admin)) -> Any:
    return Json(await call(request, "transactions", "delete_id_tag", id_tag=id_tag))


@transactions.get("/charge-points/{charge_point_id}/reservations", response_model=list[tx.ReservationView],
                  summary="Reservations of a station")
async def reservations(request: Request, charge_point_id: CpId, _: Caller = Depends(auth.read)) -> Any:
    """The unexpired reservations the charge point accepted (ReserveNow)."""
    return Json(await call(request, "transactions", "list_reservations", charge_point_id=charge_point_id))


@transactions.delete("/reservations/{reservation_id}", response_model=tx.DroppedReservation,
                     summary="Forget a reservation (the charge point is not told)")
async def drop_reservation(request: Request, reservation_id: Annotated[int, Path(ge=-2 ** 31, le=2 ** 31 - 1)],
                           charge_point_id: str | None = OptionalCp, _: Caller = Depends(auth.admin)) -> Any:
    """To cancel it on the charge point, send CancelReservation."""
    params = {"reservation_id": reservation_id, **({"charge_point_id": charge_point_id} if charge_point_id else {})}
    return Json(await call(request, "transactions", "drop_reservation", **params))


@transactions.get("/charge-points/{charge_point_id}/local-list", response_model=tx.LocalListView,
                  summary="The local authorization list")
async def local_list(request: Request, charge_point_id: CpId, _: Caller = Depends(auth.read)) -> Any:
    return Json(await call(request, "transactions", "get_local_list", charge_point_id=charge_point_id))


# ---- smart charging ------------------------------------------------------------------------------------------
charging = APIRouter(tags=["smart charging"])


@charging.get("/charge-points/{charge_point_id}/charging-profiles", response_model=list[sc.ProfileView],
              summary="Charging profiles the charge point accepted")
async def charging_profiles(request: Request, charge_point_id: CpId,
                            connector_id: int | None = Query(None, ge=0, le=1000),
                            _: Caller = Depends(auth.read)) -> Any:
    """``[{connector_id, profile}]`` in installation order (profile: OCPP csChargingProfiles)."""
    params = {"charge_point_id": charge_point_id, **({"connector_id": connector_id} if connector_id is not None
                                                     else {})}
    return Json(await call(request, "smart_charging", "list_profiles", **params))


@charging.get("/charge-points/{charge_point_id}/composite-schedule", response_model=sc.CompositeScheduleView,
              summary="Predicted composite schedule")
async def composite_schedule(
        request: Request, charge_point_id: CpId, connector_id: int = Query(ge=0, le=1000),
        duration: int = Query(ge=1, le=2 ** 31 - 1, description="seconds"),
        charging_rate_unit: Literal["A", "W"] | None = Query(None),
        start: IsoTime | None = Query(None, description="UTC ISO-8601; default now"),
        preset: str | None = Query(None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$"),
        _: Caller = Depends(auth.read)) -> Any:
    """What the central system computes from the profiles it stored (GetCompositeSchedule.conf shape), without
    asking the charge point; ``preset`` computes it with another preset than the charge point's."""
    params = {"charge_point_id": charge_point_id, "connector_id": connector_id, "duration": duration,
              "charging_rate_unit": charging_rate_unit, "start": format_utc(start) if start else None,
              "preset": preset}
    return Json(await call(request, "smart_charging", "composite_schedule",
                           **{k: v for k, v in params.items() if v is not None}))


@charging.get("/charge-points/{charge_point_id}/composite-reports", response_model=list[sc.CompositeReportView],
              summary="Composite schedules the charge point reported")
async def composite_reports(request: Request, charge_point_id: CpId, limit: int = Query(20, ge=1, le=500),
                            _: Caller = Depends(auth.read)) -> Any:
    """GetCompositeSchedule answers kept next to their predictions, newest first."""
    return Json(await call(request, "smart_charging", "list_composite_reports", charge_point_id=charge_point_id,
                           limit=limit))


SiteId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$", examples=["site-1"])]


class SiteStep(BaseModel):
    model_config = PutSiteParams.model_config
    start: IsoTime
    limit: float = Field(ge=0, le=1e9, allow_inf_nan=False)


class SiteBody(BaseModel):
    model_config = PutSiteParams.model_config
    name: str = Field("", max_length=200)
    unit: Literal["A", "W"]
    limit: float = Field(ge=0, le=1e9, allow_inf_nan=False)
    schedule: list[SiteStep] = Field(default_factory=list, max_length=96)
    strategy: Literal["fair", "priority"] = "fair"
    stack_level: int | None = Field(None, ge=0, le=2 ** 31 - 1)


class SiteMemberBody(BaseModel):
    model_config = PutSiteParams.model_config
    priority: int = Field(0, ge=0, le=100)
    max_limit: float | None = Field(None, ge=0, le=1e9, allow_inf_nan=False)


@charging.get("/sites", response_model=list[str], summary="List sites")
async def list_sites(request: Request, query: Annotated[sc.ListSitesParams, Query()],
                     _: Caller = Depends(auth.read)) -> Any:
    """Site ids in order; ``after`` = the last id of the previous page."""
    items = await call(request, "smart_charging", "list_sites", **dump(query))
    return page(request, items, query.limit, items[-1] if items else None)


@charging.get("/sites/{site_id}", response_model=sc.SiteView, summary="Get a site")
async def get_site(request: Request, site_id: SiteId, _: Caller = Depends(auth.read)) -> Any:
    return Json(await call(request, "smart_charging", "get_site", site_id=site_id))


@charging.put("/sites/{site_id}", response_model=sc.SiteView, summary="Create or change a site")
async def put_site(request: Request, site_id: SiteId, body: SiteBody, _: Caller = Depends(auth.admin)) -> Any:
    """A limit per phase (A) or in total (W), optionally varying in time; members share it."""
    return Json(await call(request, "smart_charging", "put_site", site_id=site_id, **dump(body)))


@charging.delete("/sites/{site_id}", response_model=sc.DeletedSite, summary="Delete a site")
async def delete_site(request: Request, site_id: SiteId, _: Caller = Depends(auth.admin)) -> Any:
    return Json(await call(request, "smart_charging", "delete_site", site_id=site_id))


@charging.get("/sites/{site_id}/plan", response_model=sc.SitePlanView, summary="What a rebalance would push now")
async def site_plan(request: Request, site_id: SiteId, _: Caller = Depends(auth.read)) -> Any:
    return Json(await call(request, "smart_charging", "site_plan", site_id=site_id))


@charging.put("/sites/{site_id}/members/{charge_point_id}", response_model=sc.SiteView,
              summary="Put a station under a site")
async def put_site_member(request: Request, site_id: SiteId, charge_point_id: CpId, body: SiteMemberBody,
                          _: Caller = Depends(auth.admin)) -> Any:
    return Json(await call(request, "smart_charging", "add_site_member", site_id=site_id,
                           charge_point_id=charge_point_id, **dump(body)))


@charging.delete("/sites/{site_id}/members/{charge_point_id}", response_model=sc.RemovedMember,
                 summary="Take a station out of a site")
async def delete_site_member(request: Request, site_id: SiteId, charge_point_id: CpId,
                             _: Caller = Depends(auth.admin)) -> Any:
    site = await call(request, "smart_charging", "get_site", site_id=site_id)
    if charge_point_id not in {member.get("charge_point_id") for member in site.get("members", [])}:
        raise Problem(404, f"{charge_point_id!r} is not a member of site {site_id!r}")
    return Json(await call(request, "smart_charging", "remove_site_member", charge_point_id=charge_point_id))


# ---- diagnostics, logs, firmware -------------------------------------------------------------------------
files = APIRouter(tags=["diagnostics and firmware"])


def _listing(charge_point_id: str | None, since: Any, until: Any, limit: int, **extra: Any) -> dict[str, Any]:
    values = {"charge_point_id": charge_point_id, "since": since, "until": until, "limit": limit, **extra}
    return {k: (format_utc(v) if hasattr(v, "isoformat") else v) for k, v in values.items() if v is not None}


@files.get("/diagnostics", response_model=list[diag.DiagnosticsRequestView], summary="GetDiagnostics requests")
async def list_diagnostics(request: Request, charge_point_id: str | None = OptionalCp,
                           since: IsoTime | None = Since, until: IsoTime | None = Until,
                           limit: int = Limit, _: Caller = Depends(auth.read)) -> Any:
    return Json(await call(request, "diagnostics", "list_requests", **_listing(charge_point_id, since, until, limit)))


@files.get("/diagnostics/{request_id}", response_model=diag.DiagnosticsRequestView, summary="A GetDiagnostics request")
async def get_diagnostics(request: Request, request_id: RecordId, _: Caller = Depends(auth.read)) -> Any:
    return Json(await call(request, "diagnostics", "get_request", request_id=request_id))


@files.get("/files", response_model=list[diag.FileView], summary="Uploaded diagnostics and log files")
async def list_files(request: Request, charge_point_id: str | None = OptionalCp,
                     since: IsoTime | None = Since, until: IsoTime | None = Until,
                     limit: int = Limit, kind: str | None = Query(None, min_length=1, max_length=32),
                     _: Caller = Depends(auth.read)) -> Any:
    """Metadata and the download URL (on the files server, with its own operator token)."""
    return Json(await call(request, "diagnostics", "list_files",
                           **_listing(charge_point_id, since, until, limit, kind=kind)))


@files.get("/files/{file_id}", response_model=diag.FileView, summary="An uploaded file")
async def get_file(request: Request, file_id: RecordId, _: Caller = Depends(auth.read)) -> Any:
    return Json(await call(request, "diagnostics", "get_file", file_id=file_id))


@files.get("/logs", response_model=list[diag.LogRequestView], summary="GetLog requests (security extension)")
async def list_logs(request: Request, charge_point_id: str | None = OptionalCp,
                    since: IsoTime | None = Since, until: IsoTime | None = Until,
                    limit: int = Limit, log_type: Literal["DiagnosticsLog", "SecurityLog"] | None = Query(None),
                    _: Caller = Depends(auth.read)) -> Any:
    return Json(await call(request, "diagnostics", "list_logs",
                           **_listing(charge_point_id, since, until, limit, log_type=log_type)))


@files.get("/logs/{request_id}", response_model=diag.LogRequestView, summary="A GetLog request")
async def get_log(request: Request, request_id: RecordId, _: Caller = Depends(auth.read)) -> Any:
    return Json(await call(request, "diagnostics", "get_log", request_id=request_id))


@files.get("/firmware", response_model=list[diag.FirmwareView], summary="Hosted firmware images")
async def list_firmware(request: Request, _: Caller = Depends(auth.read)) -> Any:
    return Json(await call(request, "diagnostics", "list_firmware"))


@files.get("/firmware-updates", response_model=list[diag.FirmwareUpdateView], summary="Firmware updates")
async def firmware_updates(request: Request, charge_point_id: str | None = OptionalCp,
                           since: IsoTime | None = Since, until: IsoTime | None = Until,
                           limit: int = Limit, _: Caller = Depends(auth.read)) -> Any:
    """UpdateFirmware and SignedUpdateFirmware requests and their progress."""
    return Json(await call(request, "diagnostics", "firmware_updates",
                           **_listing(charge_point_id, since, until, limit)))


@files.get("/firmware-updates/{request_id}", response_model=diag.FirmwareUpdateView, summary="A firmware update")
async def get_firmware_update(request: Request, request_id: RecordId, _: Caller = Depends(auth.read)) -> Any:
    return Json(await call(request, "diagnostics", "get_firmware_update", request_id=request_id))


# ---- certificates and security events --------------------------------------------------------------------
security = APIRouter(tags=["security"])


@security.get("/certificates", response_model=list[sec.CertificateView], summary="Charge point certificates")
async def list_certificates(request: Request, charge_point_id: str | None = OptionalCp,
                            status: sec.CertificateStatus | None = Query(None), limit: int = Limit,
                            _: Caller = Depends(auth.read)) -> Any:
    params = {"charge_point_id": charge_point_id, "status": status, "limit": limit}
    return Json(await call(request, "security", "list_certificates",
                           **{k: v for k, v in params.items() if v is not None}))


@security.get("/certificates/{fingerprint}", response_model=sec.CertificateView, summary="A certificate")
async def get_certificate(request: Request,
                          fingerprint: Annotated[str, Path(pattern=r"^[0-9a-fA-F]{64}$",
                                                           description="SHA-256 of the DER certificate, hex")],
                          _: Caller = Depends(auth.read)) -> Any:
    return Json(await call(request, "security", "get_certificate", fingerprint=fingerprint))


@security.get("/ca-certificate", response_model=sec.CaCertificateView, summary="The CA charge points trust")
async def ca_certificate(request: Request, _: Caller = Depends(auth.read)) -> Any:
    return Json(await call(request, "security", "ca_certificate"))


@security.get("/charge-points/{charge_point_id}/installed-certificates",
              response_model=list[sec.InstalledCertificateView], summary="CA certificates installed on a station")
async def installed_certificates(request: Request, charge_point_id: CpId,
                                 certificate_type: sec.CertificateType | None = Query(None),
                                 _: Caller = Depends(auth.read)) -> Any:
    params = {"charge_point_id": charge_point_id,
              **({"certificate_type": certificate_type} if certificate_type else {})}
    return Json(await call(request, "security", "installed_certificates", **params))


@security.get("/security-events", response_model=list[sec.SecurityEventView], summary="Security events")
async def security_events(request: Request, charge_point_id: str | None = OptionalCp,
                          since: IsoTime | None = Since, until: IsoTime | None = Until,
                          critical: bool | None = Query(None),
                          type: str | None = Query(None, min_length=1, max_length=50),  # noqa: A002
                          limit: int = Limit, _: Caller = Depends(auth.read)) -> Any:
    """SecurityEventNotifications as stored, newest first."""
    return Json(await call(request, "security", "list_security_events",
                           **_listing(charge_point_id, since, until, limit, critical=critical, type=type)))


# ---- commands --------------------------------------------------------------------------------------------
commands = APIRouter(tags=["commands"])
Mode = Query("sync", description="sync: wait for the charge point's answer (up to timeout); async: 202 and a "
                                 "command id at once, the result by polling, event and webhook")
Timeout = Query(None, gt=0, le=3600, description="seconds to wait for the charge point (default "
                                                  "CSMS_COMMAND_TIMEOUT; at most API_COMMAND_MAX_TIMEOUT)")
CallbackUrl = Query(None, min_length=1, max_length=2048, description=(
    "async only: POST the result here (instead of the key's webhook), signed with the key's webhook secret"))


def _command_route(action: str):
    async def send_command(request: Request, charge_point_id: CpId, mode: Literal["sync", "async"] = Mode,
                           timeout: float | None = Timeout, callback_url: str | None = CallbackUrl,
                           caller: Caller = Depends(auth.command)) -> Any:
        return await run_command(request, caller, charge_point_id, action, mode, timeout, callback_url)

    send_command.__name__ = f"command_{action}"
    send_command.__doc__ = (
        f"Send {action} to the charge point (the body is OCPP's {action}.req payload, camelCase). The owning "
        f"service applies its rules, then the charge point answers: 200 with the CommandResult (``status`` "
        f"answered and ``payload`` = its {action}.conf, or why there is none: call_error, offline, timeout, refused, "
        f"invalid_response); 400 when the payload breaks the OCPP schema or a rule OCPP sets. With mode=async: 202 "
        f"and a command id.")
    return send_command


async def run_command(request: Request, caller: Caller, charge_point_id: str, action: str, mode: str,
                      timeout: float | None, callback_url: str | None) -> JSONResponse:
    runtime = runtime_of(request)
    settings = runtime.settings
    payload = request.state.json_body if hasattr(request.state, "json_body") else None
    if payload is None:
        raise Problem(400, f"the body must be the {action} payload, a JSON object (e.g. {{}})")
    try:
        ocpp16.validate(action, payload)
    except ocpp16.OcppError as exc:
        path = exc.details.get("path") if exc.details else None
        raise Problem(400, f"payload does not fit {action}: {exc.description}",
                      [{"loc": ["body", *filter(None, (path or "").split(".")[1:])], "code": exc.code,
                        "msg": exc.description}]) from None
    wait = timeout if timeout is not None else settings.command_timeout
    if wait > settings.api_command_max_timeout:
        raise Problem(400, f"timeout: at most {settings.api_command_max_timeout:g} seconds (API_COMMAND_MAX_TIMEOUT)")
    if mode == "sync":
        if callback_url is not None:
            raise Problem(400, "callback_url: only with mode=async")
        result = await runtime.commands.send(charge_point_id, action, payload, wait)
        if result.status == "invalid":
            raise Problem(400, f"{action} refused before sending: {result.error_description or result.error_code}",
                          [json_of(result)])
        if result.status == "unsupported":
            raise Problem(503, f"no running service owns {action}", [json_of(result)])
        return Json(json_of(result))
    webhook = None
    if callback_url is not None:
        try:
            check_webhook_url(callback_url)
        except ValueError as exc:
            raise Problem(400, f"callback_url: {exc}") from None
        if not caller.webhook_secret:
            raise Problem(400, "callback_url needs a webhook secret for this key (PUT /api/v1/me/webhook) to sign "
                               "what is sent there")
        webhook = (callback_url, caller.webhook_secret)
    elif caller.webhook_url and caller.webhook_secret:
        webhook = (caller.webhook_url, caller.webhook_secret)
    if runtime.commands.full:
        raise Problem(429, f"{settings.api_max_async_commands} asynchronous commands in flight "
                           f"(API_MAX_ASYNC_COMMANDS); try again shortly", headers={"Retry-After": "1"})
    record = await runtime.commands.submit(caller.key_id, charge_point_id, action, payload, wait, webhook,
                                           callback_url)
    poll_url = f"{PREFIX}/commands/{record.command_id}"
    accepted = CommandAccepted(command_id=record.command_id, charge_point_id=charge_point_id, action=action,
                               poll_url=poll_url)
    return Json(dump(accepted), status_code=202, headers={"Location": poll_url})


def json_of(result: CommandResult) -> dict[str, Any]:
    return result.model_dump(mode="json")


for _action in ocpp16.ALL_CSMS_TO_CP:
    commands.add_api_route(
        f"/charge-points/{{charge_point_id}}/commands/{_action}", _command_route(_action), methods=["POST"],
        response_model=CommandResult, summary=f"Send {_action}", operation_id=f"command_{_action}",
        responses={202: {"model": CommandAccepted, "description": "mode=async: taken; poll the command"}, **BUSY},
        openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
            "schema": {"$ref": f"#/components/schemas/{REQUESTS[_action].__name__}"}}}}})


@commands.get("/commands/{command_id}", response_model=CommandRecord, summary="An asynchronous command")
async def get_command(request: Request, command_id: Annotated[str, Path(pattern=r"^[0-9a-f]{32}$")],
                      caller: Caller = Depends(auth.read)) -> Any:
    """Its status (pending until the outcome is known) and the CommandResult; only for the key that sent it (or
    an admin key)."""
    found = await runtime_of(request).commands.store.get(command_id)
    if found is None or (found[1] != caller.key_id and not caller.allows("admin")):
        raise Problem(404, f"unknown command {command_id!r}")
    return Json(found[0].model_dump(mode="json"))


# ---- events --------------------------------------------------------------------------------------------------
events = APIRouter(tags=["events"])


@events.get("/events", summary="Server-sent events", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {"schema": {"type": "string"}}},
                             "description": "an endless stream: `event: <type>`, `id: <event_id>`, `data: <the "
                                            "event as JSON>`; comments as keep-alives"}, **BUSY})
async def event_stream(request: Request,
                       types: str | None = Query(None, max_length=2000, description=(
                           "comma-separated event types or patterns, e.g. station.*,connector.status_changed,"
                           "transaction.*,command.completed (default: every event)")),
                       charge_point_id: str | None = OptionalCp, _: Caller = Depends(auth.read)) -> Any:
    """Live status: connectivity (station.connected / station.disconnected), connector status
    (connector.status_changed), transactions (transaction.started / transaction.stopped, meter.values), command
    results (command.completed) -- the bus's events, filtered."""
    try:
        patterns = rules.parse_types(types)
    except ValueError as exc:
        raise Problem(400, f"types: {exc}") from None
    hub = runtime_of(request).hub
    try:
        subscriber = hub.subscribe(patterns, charge_point_id)
    except TooManyClients as exc:
        raise Problem(429, str(exc), headers={"Retry-After": "5"}) from None
    return StreamingResponse(hub.stream(subscriber), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


# ---- API keys and the caller -----------------------------------------------------------------------------
keys = APIRouter(tags=["api keys"])


@keys.get("/me", response_model=WhoAmI, summary="The calling key")
async def whoami(caller: Caller = Depends(auth.read)) -> Any:
    return Json(dump(WhoAmI(key_id=caller.key_id, name=caller.name, scopes=caller.scopes,
                            webhook_url=caller.webhook_url, has_webhook_secret=bool(caller.webhook_secret))))


@keys.put("/me/webhook", response_model=WhoAmI, summary="Set the calling key's webhook")
async def put_webhook(request: Request, body: WebhookBody, caller: Caller = Depends(auth.command)) -> Any:
    """Results of this key's asynchronous commands are POSTed to ``url`` (or a request's ``callback_url``),
    signed: ``X-CSMS-Signature: sha256=<HMAC-SHA256(secret, X-CSMS-Timestamp + "." + body)>``."""
    await runtime_of(request).keys.set_webhook(caller.key_id, body.url, body.secret)
    return Json(dump(WhoAmI(key_id=caller.key_id, name=caller.name, scopes=caller.scopes, webhook_url=body.url,
                            has_webhook_secret=True)))


@keys.delete("/me/webhook", response_model=WhoAmI, summary="Remove the calling key's webhook")
async def delete_webhook(request: Request, caller: Caller = Depends(auth.command)) -> Any:
    await runtime_of(request).keys.set_webhook(caller.key_id, None, None)
    return Json(dump(WhoAmI(key_id=caller.key_id, name=caller.name, scopes=caller.scopes)))


@keys.get("/api-keys", response_model=list[KeyView], summary="List API keys")
async def list_keys(request: Request, include_revoked: bool = Query(False), _: Caller = Depends(auth.admin)) -> Any:
    return Json([dump(view) for view in await runtime_of(request).keys.listing(include_revoked)])


@keys.post("/api-keys", response_model=CreatedKey, status_code=201, summary="Create an API key")
async def post_key(request: Request, body: CreateKeyBody, caller: Caller = Depends(auth.admin)) -> Any:
    """The answer carries the key itself, this once (only its hash is kept)."""
    try:
        created = await create_key(runtime_of(request).keys, CreateKeyParams(**body.model_dump(),
                                                                              created_by=caller.key_id))
    except ApiError as exc:
        raise Problem(exc.status, str(exc)) from None
    return Json(created.model_dump(mode="json"), status_code=201)


@keys.delete("/api-keys/{key_id}", response_model=KeyView, summary="Revoke an API key")
async def revoke_key(request: Request, key_id: Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,64}$")],
                     _: Caller = Depends(auth.admin)) -> Any:
    view = await runtime_of(request).keys.revoke(key_id)
    if view is None:
        raise Problem(404, f"unknown key {key_id!r}")
    return Json(dump(view))


# ---- the application -------------------------------------------------------------------------------------------
def create_app(runtime: Any = None) -> FastAPI:
    app = FastAPI(title=TITLE, version=API_VERSION, description=DESCRIPTION, openapi_url=f"{PREFIX}/openapi.json",
                  docs_url=f"{PREFIX}/docs", redoc_url=None, responses=COMMON_RESPONSES)
    app.state.runtime = runtime
    for router in (stations, transactions, charging, files, security, commands, events, keys):
        app.include_router(router, prefix=PREFIX)
    if runtime is None or runtime.settings.api_dashboard:
        app.include_router(dashboard.router)
    app.add_exception_handler(Problem, _problem)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
    app.openapi = lambda: openapi_document(app)  # type: ignore[method-assign]
    return app


def error(status: int, message: str, details: list[dict[str, Any]] | None = None,
          headers: dict[str, str] | None = None) -> JSONResponse:
    return Json(ErrorBody(error=message, status=status, details=details).model_dump(exclude_none=True),
                status_code=status, headers=headers)


async def _problem(request: Request, exc: Problem) -> JSONResponse:
    return error(exc.status, exc.error, exc.details, exc.headers)


def _where(loc: tuple) -> str:
    parts = [str(part) for part in loc]
    if parts and parts[0] in ("query", "path", "body", "header"):
        parts = parts[1:] or parts
    return ".".join(parts) or "request"


async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    details = []
    for problem in exc.errors()[:20]:
        message = "unknown parameter" if problem.get("type") == "extra_forbidden" else str(problem.get("msg"))
        details.append({"loc": [str(part) for part in problem.get("loc", ())], "msg": message[:300],
                        "type": problem.get("type")})
    text = "; ".join(f"{_where(tuple(d['loc']))}: {d['msg']}" for d in details)
    return error(400, text[:1000] or "bad request", details)


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    message = exc.detail if isinstance(exc.detail, str) else "error"
    if exc.status_code == 404 and message == "Not Found":
        message = f"no such route: {request.method} {request.url.path} (see {PREFIX}/docs)"
    return error(exc.status_code, message, headers=getattr(exc, "headers", None))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    if outage_of(exc) is not None:  # PostgreSQL or RabbitMQ away: not the request's fault, and not a bug
        log.warning("%s %s: %s unavailable", request.method, request.url.path, outage_of(exc))
        return error(503, "temporarily unavailable", headers={"Retry-After": "5"})
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return error(500, "internal error")


def openapi_document(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, with the OCPP request models of the command routes, without FastAPI's 422 (bad input
    is a 400 here), with the security requirement of every route stated and bounds under their JSON Schema names
    (pydantic leaves some as ``ge``/``le``: ``csms.contracts.schema``)."""
    if app.openapi_schema:
        return app.openapi_schema
    document = get_openapi(title=app.title, version=app.version, openapi_version="3.1.0",
                           description=app.description, routes=app.routes)
    components = document.setdefault("components", {}).setdefault("schemas", {})
    _, ocpp_schemas = models_json_schema([(REQUESTS[a], "validation") for a in ocpp16.ALL_CSMS_TO_CP]
                                         + [(RESPONSES[a], "validation") for a in ocpp16.ALL_CSMS_TO_CP],
                                         by_alias=True, ref_template="#/components/schemas/{model}")
    for name, schema in ocpp_schemas.get("$defs", {}).items():
        components.setdefault(name, schema)
    _, server_schemas = models_json_schema([(view, "serialization") for view in server_views().values()],
                                           ref_template="#/components/schemas/{model}")
    for name, schema in server_schemas.get("$defs", {}).items():
        components.setdefault(name, schema)
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    for path in document.get("paths", {}).values():
        for operation in path.values():
            operation.get("responses", {}).pop("422", None)
    _type_command_answers(document)
    app.openapi_schema = standardise(document)
    return document


def _type_command_answers(document: dict[str, Any]) -> None:
    """Each command route answers ``<Action>Result``: the CommandResult whose payload is that action's OCPP
    response model when status is answered (as the AsyncAPI command replies say), so a client -- and
    schemathesis -- checks the charge point's answer, not just an object."""
    components = document["components"]["schemas"]
    for action in ocpp16.ALL_CSMS_TO_CP:
        name, response = f"{action}Result", RESPONSES[action].__name__
        if name in components or response not in components:
            raise ValueError(f"OpenAPI components: {name} taken or {response} missing")
        components[name] = {
            "title": name, "allOf": [{"$ref": "#/components/schemas/CommandResult"}],
            "description": f"The outcome of {action}; payload is the charge point's {action}.conf ({response}) "
                           f"when status is answered.",
            "if": copy.deepcopy(ANSWERED),
            "then": {"properties": {"payload": {"$ref": f"#/components/schemas/{response}"}}, "required": ["payload"]},
        }
        view = server_views().get(action)
        if view is not None:   # the central system's own view, typed (e.g. GetCompositeSchedule's prediction)
            components[name]["description"] += f" server is {view.__name__} (or null)."
            components[name]["properties"] = {"server": {"anyOf": [
                {"$ref": f"#/components/schemas/{view.__name__}"}, {"type": "null"}]}}
        operation = document["paths"][f"{PREFIX}/charge-points/{{charge_point_id}}/commands/{action}"]["post"]
        operation["responses"]["200"]["content"]["application/json"]["schema"] = {
            "$ref": f"#/components/schemas/{name}"}
