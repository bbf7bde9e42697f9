"""Entry points of the transactions service: one handler per OCPP message, command, event and API operation.

Decisions live in ``rules.py``, records in ``store.py`` (PostgreSQL), event publication in ``outbox.py``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from csms.contracts.api.transactions import (
    ActiveTransaction, ChargePointParams, CloseTransactionParams, ConnectorMeterValuesParams, DeletedIdTag,
    DroppedReservation, DropReservationParams, IdTagParams, IdTagView, ListIdTagsParams, ListTransactionsParams,
    LocalListView,
    MeterValuesParams, MeterValueView, OrphanStopsParams, OrphanStopView, QueryMeterValuesParams, ReservationView,
    SetIdTagParams, TransactionParams, TransactionView,
)
from csms.contracts.base import as_utc, utc_now
from csms.contracts.bus import CommandResult
from csms.contracts.events import (
    ConnectorStatusChanged, MeterValuesReceived, ReservationChanged, StationBooted, TransactionStarted,
    TransactionStopped,
)
from csms.contracts.ocpp16 import (
    AuthorizeRequest, AuthorizeResponse, CancelReservationRequest, GetLocalListVersionRequest, IdTagInfo,
    MeterValuesRequest, MeterValuesResponse, RemoteStartTransactionRequest, RemoteStopTransactionRequest,
    ReserveNowRequest, SendLocalListRequest, StartTransactionRequest, StartTransactionResponse,
    StopTransactionRequest, StopTransactionResponse,
)
from csms.ocpp16 import ErrorCode, OcppError
from csms.service import ApiContext, ApiError, CallContext, CommandContext, Service, ServiceContext
from services.transactions import rules
from services.transactions.maintenance import Maintenance
from services.transactions.outbox import EventRelay
from services.transactions.store import (
    AlreadyClosed, ClampedEstimate, Closure, DuplicateStart, MeterReadings, NewStart, OutboxEvent, StopRequest,
    Stores, UnknownTransaction, call_digest,
)

log = logging.getLogger(__name__)

# the store changes no session state (SET LOCAL, transaction-level advisory locks only): no reset per query
service = Service("transactions", database_reset_session=False)


# ---- runtime: the stores and background tasks of a running service instance ----------------------------
@dataclass
class Runtime:
    stores: Stores
    relay: EventRelay
    maintenance: Maintenance


_RUNTIMES: dict[int, Runtime] = {}


def _runtime(ctx: ServiceContext) -> Runtime:
    """The runtime of the service instance handling ``ctx``, on its current pool (made on first use: messages
    may arrive before the start-up hook ran; a service started again gets a new one)."""
    svc = ctx.service
    pool = svc.db.pool
    runtime = _RUNTIMES.get(id(svc))
    if runtime is None or runtime.stores.pool is not pool:
        stores = Stores(pool)
        runtime = Runtime(stores, EventRelay(stores.outbox, svc.bus.publish_event, svc.settings.tx_event_retry),
                          Maintenance(pool, svc.settings.meter_values_retention_days))
        _RUNTIMES[id(svc)] = runtime
    return runtime


def _stores(ctx: ServiceContext) -> Stores:
    return _runtime(ctx).stores


async def _publish(ctx: ServiceContext, events: list[OutboxEvent]) -> None:
    await _runtime(ctx).relay.publish(events)


@service.on_startup
async def _start(svc: Service) -> None:
    runtime = _runtime(ServiceContext(svc))
    await runtime.maintenance.run()  # partitions ready before the first readings (DEFAULT takes them otherwise)
    runtime.relay.start()
    runtime.maintenance.start()


@service.on_shutdown
async def _stop(svc: Service) -> None:
    runtime = _RUNTIMES.pop(id(svc), None)
    if runtime is not None:
        await runtime.maintenance.stop()
        await runtime.relay.stop()


def _info_dict(info: IdTagInfo) -> dict:
    return info.model_dump(mode="json", exclude_none=True)


def _sampled(values) -> list[dict]:
    return [sample.model_dump(mode="json", exclude_none=True) for sample in values]


def _check_call(ctx: CallContext, int32: dict[str, int | None], int64: dict[str, int | None] | None = None) -> None:
    """What the records cannot hold is refused with a CALLERROR the charge point can read, not an internal
    error it would retry for ever."""
    if rules.unstorable_text(ctx.call.payload):
        raise OcppError(ErrorCode.PROPERTY_CONSTRAINT_VIOLATION,
                        "text with NUL characters or unpaired surrogates cannot be stored")
    name = rules.out_of_range(int32, int64)
    if name is not None:
        raise OcppError(ErrorCode.PROPERTY_CONSTRAINT_VIOLATION, f"{name} is out of range")


def _command_refusal(ctx: CommandContext, int32: dict[str, int | None]) -> CommandResult | None:
    if rules.unstorable_text(ctx.command.payload):
        return ctx.refuse("text with NUL characters or unpaired surrogates cannot be recorded")
    name = rules.out_of_range(int32)
    return ctx.refuse(f"{name} is out of range") if name is not None else None


async def authorize_tag(ctx: ServiceContext, id_tag: str) -> IdTagInfo:
    return rules.authorize(id_tag, await _stores(ctx).id_tags.chain(id_tag), utc_now())


# ---- Authorize ------------------------------------------------------------------------------------------
@service.call("Authorize")
async def authorize(ctx: CallContext, req: AuthorizeRequest) -> AuthorizeResponse:
    _check_call(ctx, {})
    return AuthorizeResponse(id_tag_info=await authorize_tag(ctx, req.id_tag))


# ---- StartTransaction -----------------------------------------------------------------------------------
async def _replay_start(ctx: CallContext, req: StartTransactionRequest) -> StartTransactionResponse:
    """A resent StartTransaction: the transaction it already is, with the idTagInfo first answered."""
    view = await _stores(ctx).transactions.existing_start(ctx.charge_point_id, req.connector_id, req.id_tag,
                                                         req.meter_start, as_utc(req.timestamp))
    if view is None:  # cannot happen: the unique key said it exists
        raise OcppError(ErrorCode.INTERNAL_ERROR, "StartTransaction could not be recorded")
    log.info("%s: StartTransaction repeated, answering transaction %s again", ctx.charge_point_id,
             view.transaction_id)
    return StartTransactionResponse(transaction_id=view.transaction_id,
                                    id_tag_info=IdTagInfo.model_validate(view.id_tag_info))


@service.call("StartTransaction")
async def start_transaction(ctx: CallContext, req: StartTransactionRequest) -> StartTransactionResponse:
    cp = ctx.charge_point_id
    if req.connector_id <= 0:
        raise OcppError(ErrorCode.PROPERTY_CONSTRAINT_VIOLATION, "connectorId must be > 0")
    _check_call(ctx, {"connectorId": req.connector_id, "reservationId": req.reservation_id},
                {"meterStart": req.meter_start})
    transactions = _stores(ctx).transactions
    start_at = as_utc(req.timestamp)
    facts = await transactions.start_facts(cp, req.connector_id, req.id_tag, req.meter_start, start_at,
                                           req.reservation_id)
    if facts.existing_id is not None:
        return await _replay_start(ctx, req)
    now = utc_now()
    info = rules.start_status(rules.authorize(req.id_tag, facts.tags, now), facts.concurrent_with)
    reservation = rules.reservation_to_consume(facts.reservations, req.connector_id, req.id_tag, info.parent_id_tag,
                                               req.reservation_id)
    tx_id = facts.new_id
    started = TransactionStarted(
        charge_point_id=cp, transaction_id=tx_id, connector_id=req.connector_id, id_tag=req.id_tag,
        meter_start=req.meter_start, timestamp=start_at, reservation_id=req.reservation_id,
        authorization_status=info.status)
    consumed = None if reservation is None else ReservationChanged(
        charge_point_id=cp, reservation_id=reservation.reservation_id, change="consumed",
        connector_id=reservation.connector_id, id_tag=reservation.id_tag,
        expiry_date=facts.reservation_expiry.get(reservation.reservation_id), transaction_id=tx_id)
    received = ctx.call.received_at
    ordered = rules.ordered_instant(start_at, received, ctx.settings.clock_skew)
    if ordered != start_at:
        log.warning("%s: StartTransaction dated %s, further ahead than CSMS_CLOCK_SKEW allows: ordered by the "
                    "time it was received", cp, start_at.isoformat())
    start = NewStart(
        transaction_id=tx_id, charge_point_id=cp, connector_id=req.connector_id, id_tag=req.id_tag,
        id_tag_info=_info_dict(info), authorization_status=info.status, meter_start=req.meter_start,
        start_at=start_at, received_at=received, start_ordered_at=ordered, reservation_id=req.reservation_id,
        consume_reservation=reservation.reservation_id if reservation else None,
        concurrent_with=facts.concurrent_with, pending_profile_id=facts.pending_profile_id, now=now)
    try:
        outcome = await transactions.record_start(start, started.model_dump(mode="json"),
                                                  consumed.model_dump(mode="json") if consumed else None)
    except DuplicateStart:  # the same StartTransaction, resent while this one was on its way
        return await _replay_start(ctx, req)
    for ghost in outcome.superseded:
        log.warning("%s: transaction %s on connector %s closed: superseded by %s", cp, ghost, req.connector_id,
                    tx_id)
    _warn_clamped(cp, outcome.clamped)
    await _publish(ctx, outcome.events)
    return StartTransactionResponse(transaction_id=tx_id, id_tag_info=info)


# ---- StopTransaction ------------------------------------------------------------------------------------
@service.call("StopTransaction")
async def stop_transaction(ctx: CallContext, req: StopTransactionRequest) -> StopTransactionResponse:
    cp = ctx.charge_point_id
    _check_call(ctx, {"transactionId": req.transaction_id}, {"meterStop": req.meter_stop})
    info = await authorize_tag(ctx, req.id_tag) if req.id_tag else None
    reason = req.reason or "Local"  # OCPP 1.6: a missing reason means Local
    data = req.transaction_data or []
    orphan_event = TransactionStopped(
        charge_point_id=cp, transaction_id=req.transaction_id, id_tag=req.id_tag, meter_stop=req.meter_stop,
        timestamp=req.timestamp, reason=reason, closed_by="charge_point", orphan=True)
    outcome = await _stores(ctx).transactions.record_stop(StopRequest(
        charge_point_id=cp, transaction_id=req.transaction_id, meter_stop=req.meter_stop,
        stop_at=as_utc(req.timestamp), reason=reason, id_tag=req.id_tag,
        id_tag_info=_info_dict(info) if info else None,
        readings=[(as_utc(item.timestamp), _sampled(item.sampled_value)) for item in data],
        transaction_data=[item.model_dump(mode="json", exclude_none=True) for item in data],
        digest=call_digest("StopTransaction", cp, ctx.call.payload), received_at=ctx.call.received_at,
    ), orphan_event.model_dump(mode="json"))
    if outcome.orphan_new:
        log.warning("%s: StopTransaction for unknown transaction %s kept as an orphan", cp, req.transaction_id)
    elif outcome.correction:
        log.warning("%s: StopTransaction for transaction %s, closed by the system before: its values replace "
                    "the estimate", cp, req.transaction_id)
    elif not outcome.stopped:
        log.info("%s: StopTransaction for transaction %s repeated", cp, req.transaction_id)
    await _publish(ctx, outcome.events)
    return StopTransactionResponse(id_tag_info=info)


# ---- MeterValues ----------------------------------------------------------------------------------------
@service.call("MeterValues")
async def meter_values(ctx: CallContext, req: MeterValuesRequest) -> MeterValuesResponse:
    cp = ctx.charge_point_id
    if req.connector_id < 0:
        raise OcppError(ErrorCode.PROPERTY_CONSTRAINT_VIOLATION, "connectorId must be >= 0")
    _check_call(ctx, {"connectorId": req.connector_id, "transactionId": req.transaction_id})
    values = [mv.model_dump(mode="json", exclude_none=True) for mv in req.meter_value]
    event = MeterValuesReceived(charge_point_id=cp, connector_id=req.connector_id,
                                transaction_id=req.transaction_id, meter_value=values)
    received, skew = ctx.call.received_at, ctx.settings.clock_skew
    newest = rules.newest_register_reading(req.meter_value, received, skew) if req.transaction_id is not None \
        else None
    outcome = await _stores(ctx).transactions.record_meter_values(MeterReadings(
        charge_point_id=cp, connector_id=req.connector_id, transaction_id=req.transaction_id,
        readings=[(as_utc(mv.timestamp), _sampled(mv.sampled_value)) for mv in req.meter_value],
        digest=call_digest("MeterValues", cp, ctx.call.payload), received_at=received, newest_register=newest,
    ), event.model_dump(mode="json"))
    ahead = rules.beyond_skew((mv.timestamp for mv in req.meter_value), received, skew)
    if ahead and outcome.inserted:
        log.warning("%s: MeterValues dated %s, further ahead than CSMS_CLOCK_SKEW allows: stored as dated, ordered "
                    "by the time it was received", cp, max(ahead).isoformat())
    if values and not outcome.inserted:
        log.info("%s: MeterValues repeated: nothing new stored", cp)
    elif req.transaction_id is not None and not outcome.known_transaction:
        log.warning("%s: MeterValues for unknown transaction %s kept per connector only", cp, req.transaction_id)
    elif outcome.after_close:
        log.warning("%s: MeterValues for transaction %s, which the system closed: kept; the charge point's "
                    "StopTransaction will correct it", cp, req.transaction_id)
    await _publish(ctx, outcome.events)
    return MeterValuesResponse()


# ---- reconciliation: records follow what the charge point reports ---------------------------------------
def _warn_clamped(charge_point_id: str, clamped: list[ClampedEstimate]) -> None:
    for item in clamped:
        log.warning("%s: transaction %s closed with meter_stop = meterStart %d Wh: its last energy register reading "
                    "%d Wh is below it (a meter reset or a bad reading); no negative energy recorded (estimate_note)",
                    charge_point_id, item.transaction_id, item.meter_start, item.meter_last)


@service.event(StationBooted)
async def on_station_booted(ctx: ServiceContext, event: StationBooted) -> None:
    """A charge point booted: the transactions it had open before are gone (it sends its own StopTransaction
    for them later, if it kept them: that corrects the estimate)."""
    if event.triggered:
        return
    closure = Closure(closed_by="reconciled", reconcile_reason="boot", evidence_at=event.occurred_at, now=utc_now())
    outcome = await _stores(ctx).transactions.close_open(event.charge_point_id, closure,
                                                         received_before=event.occurred_at)
    if outcome.events:
        log.warning("%s booted: closed %d open transaction(s) it had started before",
                    event.charge_point_id, len(outcome.events))
    _warn_clamped(event.charge_point_id, outcome.clamped)
    await _publish(ctx, outcome.events)


@service.event(ConnectorStatusChanged)
async def on_connector_status(ctx: ServiceContext, event: ConnectorStatusChanged) -> None:
    """A connector reported free (Available, Unavailable): transactions started on it before that status,
    and received before it was reported, are over."""
    reason = rules.free_status_reason(event.status, event.connector_id)
    if reason is None or rules.out_of_range({"connector_id": event.connector_id}) is not None:
        return
    at = rules.status_instant(event.ordered_at, event.timestamp, event.occurred_at, ctx.settings.clock_skew)
    closure = Closure(closed_by="reconciled", reconcile_reason=reason, evidence_at=at, now=utc_now())
    outcome = await _stores(ctx).transactions.close_open(
        event.charge_point_id, closure, received_before=event.occurred_at, connector_id=event.connector_id,
        started_before=at)
    if outcome.events:
        log.warning("%s connector %s is %s: closed %d open transaction(s)", event.charge_point_id,
                    event.connector_id, event.status, len(outcome.events))
    _warn_clamped(event.charge_point_id, outcome.clamped)
    await _publish(ctx, outcome.events)


# ---- commands: sent whatever the records say; disagreements come back as warnings -----------------------
@service.command("RemoteStartTransaction")
async def remote_start(ctx: CommandContext, req: RemoteStartTransactionRequest) -> CommandResult:
    cp = ctx.charge_point_id
    if req.connector_id is not None and req.connector_id <= 0:
        return ctx.refuse("connectorId must be > 0")
    if (refusal := _command_refusal(ctx, {"connectorId": req.connector_id})) is not None:
        return refusal
    profile = req.charging_profile
    if profile is not None:
        if profile.charging_profile_purpose != "TxProfile":
            return ctx.refuse("chargingProfile.chargingProfilePurpose must be TxProfile")
        if profile.transaction_id is not None:
            return ctx.refuse("chargingProfile.transactionId must not be set: the transaction does not exist yet")
    transactions = _stores(ctx).transactions
    if req.connector_id is not None:
        busy = await transactions.holding_connector(cp, req.connector_id)
        if busy is not None:
            ctx.warn(f"connector {req.connector_id} has open transaction {busy} in the records")
    pending = None
    if profile is not None:  # remembered before sending: the StartTransaction may come before the answer
        pending = await transactions.add_pending_profile(cp, req.id_tag, req.connector_id, profile.to_ocpp(),
                                                         utc_now(), ctx.settings.remote_start_profile_ttl)
    result = await ctx.forward()
    accepted = result.ok and (result.payload or {}).get("status") == "Accepted"
    if pending is not None and not accepted and result.status != "timeout":
        await transactions.drop_pending_profile(pending)
    return result


@service.command("RemoteStopTransaction")
async def remote_stop(ctx: CommandContext, req: RemoteStopTransactionRequest) -> CommandResult:
    in_range = rules.out_of_range({"transactionId": req.transaction_id}) is None
    view = await _stores(ctx).transactions.get(req.transaction_id) if in_range else None
    if view is None:
        ctx.warn(f"transaction {req.transaction_id} is not in the records")
    elif view.charge_point_id != ctx.charge_point_id:
        ctx.warn(f"transaction {req.transaction_id} belongs to {view.charge_point_id} in the records")
    elif view.status != "active":
        ctx.warn(f"transaction {req.transaction_id} is closed in the records (by {view.closed_by})")
    return await ctx.forward()


@service.command("ReserveNow")
async def reserve_now(ctx: CommandContext, req: ReserveNowRequest) -> CommandResult:
    cp = ctx.charge_point_id
    if req.expiry_date <= utc_now():
        return ctx.refuse("expiryDate is in the past")
    if req.connector_id < 0:
        return ctx.refuse("connectorId must be >= 0")
    refusal = _command_refusal(ctx, {"connectorId": req.connector_id, "reservationId": req.reservation_id})
    if refusal is not None:
        return refusal
    reservations = _stores(ctx).reservations
    for holder in await reservations.holders(req.reservation_id):
        if holder.charge_point_id != cp:
            ctx.warn(f"reservation {req.reservation_id} is held by {holder.charge_point_id} in the records")
            break
    result = await ctx.forward()
    if result.ok and (result.payload or {}).get("status") == "Accepted":
        view = ReservationView(reservation_id=req.reservation_id, charge_point_id=cp, connector_id=req.connector_id,
                               id_tag=req.id_tag, parent_id_tag=req.parent_id_tag, expiry_date=req.expiry_date,
                               created_at=utc_now())
        created = ReservationChanged(charge_point_id=cp, reservation_id=req.reservation_id, change="created",
                                     connector_id=req.connector_id, id_tag=req.id_tag, expiry_date=req.expiry_date)
        await _publish(ctx, await reservations.save(view, created.model_dump(mode="json")))
    return result


@service.command("CancelReservation")
async def cancel_reservation(ctx: CommandContext, req: CancelReservationRequest) -> CommandResult:
    cp = ctx.charge_point_id
    reservations = _stores(ctx).reservations
    in_range = rules.out_of_range({"reservationId": req.reservation_id}) is None
    if not in_range or await reservations.get(cp, req.reservation_id) is None:
        ctx.warn(f"no reservation {req.reservation_id} on {cp} in the records")
    result = await ctx.forward()
    if in_range and result.ok and (result.payload or {}).get("status") == "Accepted":
        cancelled = ReservationChanged(charge_point_id=cp, reservation_id=req.reservation_id, change="cancelled")
        await _publish(ctx, await reservations.drop(cp, req.reservation_id,
                                                    cancelled.model_dump(mode="json", exclude_none=True)))
    return result


@service.command("SendLocalList")
async def send_local_list(ctx: CommandContext, req: SendLocalListRequest) -> CommandResult:
    if (refusal := _command_refusal(ctx, {"listVersion": req.list_version})) is not None:
        return refusal
    entries = req.local_authorization_list or []
    folded = [rules.fold(entry.id_tag) for entry in entries]
    if len(set(folded)) != len(folded):
        return ctx.refuse("localAuthorizationList holds an idTag more than once")
    if req.update_type == "Full" and any(entry.id_tag_info is None for entry in entries):
        return ctx.refuse("every entry of a Full update needs idTagInfo")
    result = await ctx.forward()
    if result.ok and (result.payload or {}).get("status") == "Accepted":
        await _stores(ctx).local_lists.accepted(
            ctx.charge_point_id, req.list_version, req.update_type == "Full",
            [(entry.id_tag, _info_dict(entry.id_tag_info) if entry.id_tag_info else None) for entry in entries],
            utc_now())
    return result


@service.command("GetLocalListVersion")
async def get_local_list_version(ctx: CommandContext, req: GetLocalListVersionRequest) -> CommandResult:
    result = await ctx.forward()
    version = (result.payload or {}).get("listVersion") if result.ok else None
    if isinstance(version, int) and not isinstance(version, bool) and rules.out_of_range({"v": version}) is None:
        await _stores(ctx).local_lists.reported_version(ctx.charge_point_id, version, utc_now())
    return result


# ---- API: id tags ---------------------------------------------------------------------------------------
def _tag_view(record: dict, info: IdTagInfo) -> IdTagView:
    return IdTagView(id_tag=record["id_tag"], status=record["status"], expiry_date=record["expiry_date"],
                     parent_id_tag=record["parent_id_tag"], updated_at=record["updated_at"],
                     id_tag_info=_info_dict(info))


async def _id_tag_view(ctx: ServiceContext, id_tag: str) -> IdTagView:
    record = await _stores(ctx).id_tags.get(id_tag)
    if record is None:
        raise ApiError(f"unknown id tag {id_tag!r}", 404)
    return _tag_view(record, await authorize_tag(ctx, id_tag))


@service.api("set_id_tag")
async def api_set_id_tag(ctx: ApiContext, params: SetIdTagParams) -> IdTagView:
    """Store an id tag (status, expiry_date, parent_id_tag); returns it with the idTagInfo it gets now."""
    await _stores(ctx).id_tags.upsert(params.id_tag, params.status, params.expiry_date, params.parent_id_tag,
                                      utc_now())
    return await _id_tag_view(ctx, params.id_tag)


@service.api("get_id_tag")
async def api_get_id_tag(ctx: ApiContext, params: IdTagParams) -> IdTagView:
    return await _id_tag_view(ctx, params.id_tag)


@service.api("list_id_tags")
async def api_list_id_tags(ctx: ApiContext, params: ListIdTagsParams) -> list[IdTagView]:
    """Id tags in case-insensitive order, ``limit`` at a time (``after`` = the last id_tag of the previous
    page), optionally by stored status; each with the idTagInfo it gets now (parents and expiry applied)."""
    records, tags = await _stores(ctx).id_tags.page(params.status, params.after, params.limit)
    now = utc_now()
    return [_tag_view(record, rules.authorize(record["id_tag"], tags, now)) for record in records]


@service.api("delete_id_tag")
async def api_delete_id_tag(ctx: ApiContext, params: IdTagParams) -> DeletedIdTag:
    deleted = await _stores(ctx).id_tags.delete(params.id_tag)
    return DeletedIdTag(id_tag=params.id_tag, deleted=deleted is not None)


# ---- API: transactions ----------------------------------------------------------------------------------
@service.api("get_transaction")
async def api_get_transaction(ctx: ApiContext, params: TransactionParams) -> TransactionView:
    view = await _stores(ctx).transactions.get(params.transaction_id)
    if view is None:
        raise ApiError(f"unknown transaction {params.transaction_id}", 404)
    return view


@service.api("list_transactions")
async def api_list_transactions(ctx: ApiContext, params: ListTransactionsParams) -> list[TransactionView]:
    """By charge point and/or id tag, started in [since, until), oldest first, ``limit`` at a time."""
    return await _stores(ctx).transactions.find(
        charge_point_id=params.charge_point_id, id_tag=params.id_tag, active_only=params.active_only,
        since=params.since, until=params.until, limit=params.limit, after=params.after)


@service.api("active_transactions")
async def api_active_transactions(ctx: ApiContext, params: ChargePointParams) -> list[ActiveTransaction]:
    """The transactions holding the connectors of a charge point (smart charging: keep name and shape):
    [{transaction_id, connector_id, id_tag, start, meter_start}], by connector."""
    return await _stores(ctx).transactions.active(params.charge_point_id)


@service.api("close_transaction")
async def api_close_transaction(ctx: ApiContext, params: CloseTransactionParams) -> TransactionView:
    """An operator closes an open transaction (closed_by operator; the event is flagged reconciled).
    ``meter_stop`` (default: the last energy register reading, else meterStart) is never below meterStart: one
    given below is refused, a last reading below it gives meterStart (``estimate_note`` says why)."""
    transactions = _stores(ctx).transactions
    if params.meter_stop is not None:  # meterStart never changes once recorded: checked before closing
        record = await transactions.get(params.transaction_id)
        if record is None:
            raise ApiError(f"unknown transaction {params.transaction_id}", 404)
        if record.status != "active":
            raise ApiError(str(AlreadyClosed(record)), 409)
        problem = rules.operator_meter_stop_problem(record.meter_start, params.meter_stop)
        if problem is not None:
            raise ApiError(f"transaction {params.transaction_id}: {problem}", 400)
    now = utc_now()
    closure = Closure(closed_by="operator", reconcile_reason="operator", evidence_at=now, now=now,
                      stop_reason=params.reason, meter_stop=params.meter_stop, note=params.note)
    try:
        view, outcome = await transactions.close_one(params.transaction_id, closure)
    except UnknownTransaction:
        raise ApiError(f"unknown transaction {params.transaction_id}", 404) from None
    except AlreadyClosed as exc:
        raise ApiError(str(exc), 409) from None
    log.warning("transaction %s of %s closed by an operator", view.transaction_id, view.charge_point_id)
    _warn_clamped(view.charge_point_id, outcome.clamped)
    await _publish(ctx, outcome.events)
    return view


@service.api("meter_values")
async def api_meter_values(ctx: ApiContext, params: MeterValuesParams) -> list[MeterValueView]:
    transactions = _stores(ctx).transactions
    if await transactions.get(params.transaction_id) is None:
        raise ApiError(f"unknown transaction {params.transaction_id}", 404)
    return await transactions.meter_values(transaction_id=params.transaction_id, limit=params.limit,
                                           after=params.after)


@service.api("connector_meter_values")
async def api_connector_meter_values(ctx: ApiContext, params: ConnectorMeterValuesParams) -> list[MeterValueView]:
    return await _stores(ctx).transactions.meter_values(
        charge_point_id=params.charge_point_id, connector_id=params.connector_id, since=params.since,
        until=params.until, limit=params.limit, after=params.after)


@service.api("query_meter_values")
async def api_query_meter_values(ctx: ApiContext, params: QueryMeterValuesParams) -> list[MeterValueView]:
    return await _stores(ctx).transactions.meter_values(
        charge_point_id=params.charge_point_id, connector_id=params.connector_id,
        transaction_id=params.transaction_id, id_tag=params.id_tag, since=params.since, until=params.until,
        limit=params.limit, after=params.after)


@service.api("list_orphan_stops")
async def api_list_orphan_stops(ctx: ApiContext, params: OrphanStopsParams) -> list[OrphanStopView]:
    return await _stores(ctx).transactions.orphan_stops(params.charge_point_id, params.limit, params.after)


# ---- API: local lists and reservations ------------------------------------------------------------------
@service.api("get_local_list")
async def api_get_local_list(ctx: ApiContext, params: ChargePointParams) -> LocalListView:
    return await _stores(ctx).local_lists.get(params.charge_point_id)


@service.api("list_reservations")
async def api_list_reservations(ctx: ApiContext, params: ChargePointParams) -> list[ReservationView]:
    return await _stores(ctx).reservations.unexpired(params.charge_point_id)


@service.api("drop_reservation")
async def api_drop_reservation(ctx: ApiContext, params: DropReservationParams) -> DroppedReservation:
    """An operator forgets a reservation the records hold (the charge point is not told)."""
    reservations = _stores(ctx).reservations
    cp = params.charge_point_id
    if cp is None:
        holders = await reservations.holders(params.reservation_id)
        if len(holders) > 1:
            raise ApiError(f"reservation {params.reservation_id} is held by several charge points: "
                           f"give charge_point_id", 409)
        if not holders:
            raise ApiError(f"no reservation {params.reservation_id}", 404)
        cp = holders[0].charge_point_id
    dropped = ReservationChanged(charge_point_id=cp, reservation_id=params.reservation_id, change="dropped")
    events = await reservations.drop(cp, params.reservation_id, dropped.model_dump(mode="json", exclude_none=True))
    if not events:
        raise ApiError(f"no reservation {params.reservation_id} on {cp}", 404)
    log.warning("reservation %s of %s dropped by an operator", params.reservation_id, cp)
    await _publish(ctx, events)
    return DroppedReservation(reservation_id=params.reservation_id, charge_point_id=cp, dropped=True)
