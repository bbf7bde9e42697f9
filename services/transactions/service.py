"""Transactions service: Authorize, StartTransaction, MeterValues, StopTransaction and the
commands around them (RemoteStart/StopTransaction, ReserveNow, CancelReservation, SendLocalList,
GetLocalListVersion).

State in Redis (every key under the namespace; ``{tag}`` is an id tag case-folded, since OCPP id
tags are case-insensitive ``CiString20``):

* ``idtag:{tag}``               hash: id_tag, status (Accepted|Blocked|Expired|Invalid), expiry_date
                                (ISO Z or ""), parent_id_tag (or ""), updated_at
* ``idtag:{tag}:open``          set of ids of the open transactions of this id tag (ConcurrentTx)
* ``tx:seq``                    counter: transaction ids come from INCR and are never reused
* ``tx:{id}``                   hash, every value JSON-encoded: the transaction record (see
                                ``_public``): charge_point_id, connector_id, id_tag, id_tag_info,
                                meter_start, start, reservation_id, status (active|stopped),
                                meter_last, meter_last_at, meter_stop, stop, reason, stop_id_tag,
                                energy_wh, closed_by (charge_point|superseded), superseded_by, ...
                                (fields starting with ``_`` are internal bookkeeping)
* ``tx:{id}:meter``             list of JSON meter values of the transaction, in arrival order:
                                {source: MeterValues|StopTransaction, timestamp, sampled_value, received_at}
* ``tx:start:{sha1}``           the transaction id a StartTransaction got; the digest covers
                                (charge point, connectorId, idTag, meterStart, timestamp): the
                                idempotency key of StartTransaction
* ``txs``                       sorted set of every transaction id (score = id)
* ``txs:cp:{cp}``               sorted set of the transaction ids of one charge point
* ``txs:open:{cp}``             hash: connectorId -> id of the transaction open on that connector
* ``txs:orphans:{cp}``          hash: transactionId -> JSON of a StopTransaction for a transaction
                                this system does not know (kept so no data is lost)
* ``txs:orphans``               set of charge point ids that have orphan stops
* ``meter:{cp}:{connector}``    list of JSON meter values per connector (newest ``METER_CAP`` kept):
                                {connector_id, transaction_id, timestamp, sampled_value, received_at}
* ``reservation:{id}``          hash: reservation_id, charge_point_id, connector_id, id_tag,
                                parent_id_tag, expiry_date, created_at; Redis expires it at expiryDate
* ``reservations:{cp}``         set of reservation ids of a charge point (expired ids pruned on read)
* ``locallist:{cp}``            hash: case-folded idTag -> JSON {id_tag, id_tag_info} as last accepted
* ``locallist:{cp}:meta``       hash: version (last version accepted or reported by the charge point),
                                entries_version (the version the stored entries belong to), updated_at

Rules where OCPP leaves room (decided here):

* Authorization: an unknown tag is Invalid; an Accepted tag whose expiry_date has passed is Expired.
  Parents are followed (cycle-safe, at most ``MAX_PARENT_DEPTH`` levels): a *known* parent that is not
  Accepted (Blocked, Expired, or stored as Invalid) gives the child its status; an unknown parent
  changes nothing (a parent id is a group name and need not be registered). The expiryDate answered
  is the earliest of the tag's and its parents' expiry dates, so a charge point's cache never outlives
  the group. Blocked/Expired/Invalid stored on the tag itself win over the parent.
* StartTransaction is always recorded, whatever the authorization (the charge point already started
  it and the energy is delivered); idTagInfo tells the charge point. An Accepted tag that already has an
  open transaction on another connector (same or other charge point) gets ConcurrentTx; the
  transaction is still recorded, and OCPP leaves it to the charge point to stop it.
* A StartTransaction repeated with the same (charge point, connectorId, idTag, meterStart, timestamp)
  gets the same transactionId and the idTagInfo first answered; nothing new is created.
* A different StartTransaction on a connector that still has an open transaction closes the old one
  (a ghost): reason Other, closed_by superseded, meter_stop = last Energy.Active.Import.Register
  reading or meter_start, stop time = the new transaction's start (never before the old start). If the
  charge point later sends its own StopTransaction for it, its values replace the estimate and a
  transaction.stopped event with ``correction=True`` follows.
* A StartTransaction with a reservationId consumes that reservation of the charge point; without one,
  a reservation of the charge point for the same id tag (or parent id tag) on that connector or
  connector 0 is consumed, as the charge point ends it too (OCPP 1.6 §5.13).
* StopTransaction for an unknown transactionId (or one of another charge point) is answered normally
  and kept as an orphan stop; repeats of any StopTransaction change nothing. A missing reason is Local.
* MeterValues are stored per connector always, and per transaction when the transactionId is a
  transaction of that charge point. The transaction's last reading is the newest (by the meter
  value's own timestamp) phase-less, unsigned Energy.Active.Import.Register sample in Wh or kWh.
* Reservations are stored only when the charge point accepts; a reservation id held (unexpired) by
  another charge point is refused, the same charge point may replace it (OCPP 1.6 §5.13).
  Expired reservations simply vanish (no event).
* RemoteStartTransaction with a chargingProfile: purpose must be TxProfile and transactionId must be
  absent (the transaction does not exist yet).
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
from datetime import datetime
from typing import Any

from csms.contracts.base import as_utc, format_utc, utc_now
from csms.contracts.bus import CommandResult
from csms.contracts.events import MeterValuesReceived, ReservationChanged, TransactionStarted, TransactionStopped
from csms.contracts.ocpp16 import (
    AuthorizeRequest, AuthorizeResponse, CancelReservationRequest, GetLocalListVersionRequest, IdTagInfo,
    MeterValue, MeterValuesRequest, MeterValuesResponse, RemoteStartTransactionRequest,
    RemoteStopTransactionRequest, ReserveNowRequest, SendLocalListRequest, StartTransactionRequest,
    StartTransactionResponse, StopTransactionRequest, StopTransactionResponse,
)
from csms.ocpp16 import ErrorCode, OcppError
from csms.service import (
    ApiContext, ApiError, CallContext, CommandContext, Service, ServiceContext, str_param,
)

log = logging.getLogger(__name__)

service = Service("transactions")

ID_TAG_STATUSES = ("Accepted", "Blocked", "Expired", "Invalid")
MAX_PARENT_DEPTH = 5
METER_CAP = 10_000  # meter values kept per connector
ENERGY_REGISTER = "Energy.Active.Import.Register"

# delete a hash field only if it still holds the expected value
_HDEL_IF_EQUALS = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
"""


# ---- helpers ----------------------------------------------------------------------------------
def fold(id_tag: str) -> str:
    return id_tag.casefold()


def parse_time(value: Any) -> datetime:
    if isinstance(value, datetime):
        return as_utc(value)
    if not isinstance(value, str):
        raise ValueError(f"not a date-time: {value!r}")
    return as_utc(datetime.fromisoformat(value.strip().replace("z", "Z")))


def _tx_key(ctx: ServiceContext, tx_id: int, *parts: str) -> str:
    return ctx.key("tx", tx_id, *parts)


async def _load_tx(ctx: ServiceContext, tx_id: int | str) -> dict | None:
    raw = await ctx.redis.hgetall(_tx_key(ctx, int(tx_id)))
    if not raw:
        return None
    return {k: json.loads(v) for k, v in raw.items()}


async def _save_tx(ctx: ServiceContext, tx_id: int, fields: dict) -> None:
    await ctx.redis.hset(_tx_key(ctx, tx_id), mapping={k: json.dumps(v) for k, v in fields.items()})


def _encode(fields: dict) -> dict:
    return {k: json.dumps(v) for k, v in fields.items()}


def _public(record: dict) -> dict:
    return {k: v for k, v in sorted(record.items()) if not k.startswith("_")}


def _info_dict(info: IdTagInfo) -> dict:
    return info.model_dump(mode="json", exclude_none=True)


# ---- authorization ----------------------------------------------------------------------------
async def _lookup_tag(ctx: ServiceContext, id_tag: str) -> dict | None:
    record = await ctx.redis.hgetall(ctx.key("idtag", fold(id_tag)))
    return record or None


def _own_status(record: dict, now: datetime) -> tuple[str, datetime | None]:
    status = record.get("status") or "Invalid"
    expiry = parse_time(record["expiry_date"]) if record.get("expiry_date") else None
    if status == "Accepted" and expiry is not None and expiry <= now:
        status = "Expired"
    return status, expiry


async def authorize_tag(ctx: ServiceContext, id_tag: str) -> IdTagInfo:
    """The idTagInfo for an id tag, following its parents (see the module docstring)."""
    now = utc_now()
    record = await _lookup_tag(ctx, id_tag)
    if record is None:
        return IdTagInfo(status="Invalid")
    status, expiry = _own_status(record, now)
    parent = record.get("parent_id_tag") or None
    seen = {fold(id_tag)}
    current = parent
    while current and fold(current) not in seen and len(seen) <= MAX_PARENT_DEPTH:
        seen.add(fold(current))
        parent_record = await _lookup_tag(ctx, current)
        if parent_record is None:
            break
        parent_status, parent_expiry = _own_status(parent_record, now)
        if parent_expiry is not None and (expiry is None or parent_expiry < expiry):
            expiry = parent_expiry
        if status == "Accepted" and parent_status != "Accepted":
            status = parent_status
        current = parent_record.get("parent_id_tag") or None
    return IdTagInfo(status=status, expiry_date=expiry, parent_id_tag=parent)


@service.call("Authorize")
async def authorize(ctx: CallContext, req: AuthorizeRequest) -> AuthorizeResponse:
    return AuthorizeResponse(id_tag_info=await authorize_tag(ctx, req.id_tag))


# ---- StartTransaction ---------------------------------------------------------------------------
def _start_digest(cp: str, req: StartTransactionRequest) -> str:
    identity = json.dumps([cp, req.connector_id, req.id_tag, req.meter_start, format_utc(req.timestamp)])
    return hashlib.sha1(identity.encode()).hexdigest()


def _stopped_event(record: dict, **flags: Any) -> TransactionStopped:
    return TransactionStopped(
        charge_point_id=record["charge_point_id"], transaction_id=record["transaction_id"],
        connector_id=record.get("connector_id"), id_tag=record.get("stop_id_tag") or record.get("id_tag"),
        meter_start=record.get("meter_start"), meter_stop=record["meter_stop"], energy_wh=record.get("energy_wh"),
        timestamp=parse_time(record["stop"]), reason=record.get("reason"), **flags,
    )


def _started_event(record: dict) -> TransactionStarted:
    return TransactionStarted(
        charge_point_id=record["charge_point_id"], transaction_id=record["transaction_id"],
        connector_id=record["connector_id"], id_tag=record["id_tag"], meter_start=record["meter_start"],
        timestamp=parse_time(record["start"]), reservation_id=record.get("reservation_id"),
        authorization_status=record["id_tag_info"]["status"],
    )


async def _release(ctx: ServiceContext, record: dict) -> None:
    """Forget a transaction as open: connector map (if still pointing at it) and id tag set."""
    tx_id = record["transaction_id"]
    await ctx.redis.eval(_HDEL_IF_EQUALS, 1, ctx.key("txs", "open", record["charge_point_id"]),
                         str(record["connector_id"]), str(tx_id))
    await ctx.redis.srem(ctx.key("idtag", fold(record["id_tag"]), "open"), str(tx_id))


async def _close_superseded(ctx: ServiceContext, old_id: int, new_id: int, new_start: datetime) -> dict | None:
    record = await _load_tx(ctx, old_id)
    if record is None or record.get("status") != "active":
        return None
    meter_stop = record["meter_last"] if record.get("meter_last") is not None else record["meter_start"]
    stop = max(new_start, parse_time(record["start"]))
    update = {
        "status": "stopped", "meter_stop": meter_stop, "stop": format_utc(stop), "reason": "Other",
        "closed_by": "superseded", "superseded_by": new_id, "energy_wh": meter_stop - record["meter_start"],
        "stopped_at": format_utc(utc_now()), "stop_id_tag": None,
    }
    await _save_tx(ctx, old_id, update)
    record.update(update)
    await ctx.redis.srem(ctx.key("idtag", fold(record["id_tag"]), "open"), str(old_id))
    log.warning("%s: transaction %s on connector %s closed: superseded by %s", record["charge_point_id"],
                old_id, record["connector_id"], new_id)
    return record


async def _reservation(ctx: ServiceContext, reservation_id: int | str) -> dict | None:
    record = await ctx.redis.hgetall(ctx.key("reservation", reservation_id))
    if not record:
        return None
    record["reservation_id"] = int(record["reservation_id"])
    record["connector_id"] = int(record["connector_id"])
    record["parent_id_tag"] = record.get("parent_id_tag") or None
    return record


async def _drop_reservation(ctx: ServiceContext, cp: str, reservation_id: int) -> None:
    async with ctx.redis.pipeline(transaction=True) as pipe:
        pipe.delete(ctx.key("reservation", reservation_id))
        pipe.srem(ctx.key("reservations", cp), str(reservation_id))
        await pipe.execute()


async def _find_reservation(ctx: ServiceContext, cp: str, req: StartTransactionRequest,
                            info: IdTagInfo) -> dict | None:
    if req.reservation_id is not None:
        record = await _reservation(ctx, req.reservation_id)
        return record if record and record["charge_point_id"] == cp else None
    for member in sorted(await ctx.redis.smembers(ctx.key("reservations", cp)), key=int):
        record = await _reservation(ctx, member)
        if record is None or record["connector_id"] not in (0, req.connector_id):
            continue
        same_tag = fold(record["id_tag"]) == fold(req.id_tag)
        same_parent = bool(record["parent_id_tag"] and info.parent_id_tag
                           and fold(record["parent_id_tag"]) == fold(info.parent_id_tag))
        if same_tag or same_parent:
            return record
    return None


async def _replay_start(ctx: CallContext, record: dict) -> StartTransactionResponse:
    if not record.get("_published_start"):
        await ctx.publish(_started_event(record))
        await _save_tx(ctx, record["transaction_id"], {"_published_start": True})
    return StartTransactionResponse(transaction_id=record["transaction_id"],
                                    id_tag_info=IdTagInfo.model_validate(record["id_tag_info"]))


@service.call("StartTransaction")
async def start_transaction(ctx: CallContext, req: StartTransactionRequest) -> StartTransactionResponse:
    cp = ctx.charge_point_id
    if req.connector_id <= 0:
        raise OcppError(ErrorCode.PROPERTY_CONSTRAINT_VIOLATION, "connectorId must be > 0")
    dedupe = ctx.key("tx", "start", _start_digest(cp, req))
    existing = await ctx.redis.get(dedupe)
    if existing is None:
        tx_id = await ctx.redis.incr(ctx.key("tx", "seq"))
        if not await ctx.redis.set(dedupe, tx_id, nx=True):  # a concurrent duplicate won the race
            tx_id = int(await ctx.redis.get(dedupe))
    else:
        tx_id = int(existing)
    record = await _load_tx(ctx, tx_id)
    if record is not None:
        log.info("%s: StartTransaction repeated, answering transaction %s again", cp, tx_id)
        return await _replay_start(ctx, record)

    info = await authorize_tag(ctx, req.id_tag)
    # ConcurrentTx: the tag has an open transaction elsewhere (another connector or charge point)
    concurrent = []
    open_key = ctx.key("idtag", fold(req.id_tag), "open")
    for other_id in await ctx.redis.smembers(open_key):
        other = await _load_tx(ctx, other_id)
        if other is None or other.get("status") != "active":
            await ctx.redis.srem(open_key, other_id)
        elif (other["charge_point_id"], other["connector_id"]) != (cp, req.connector_id):
            concurrent.append(other["transaction_id"])
    if concurrent and info.status == "Accepted":
        info = info.model_copy(update={"status": "ConcurrentTx"})

    # no ghosts: a transaction still open on this connector is closed
    superseded = None
    open_id = await ctx.redis.hget(ctx.key("txs", "open", cp), str(req.connector_id))
    if open_id is not None and int(open_id) != tx_id:
        superseded = await _close_superseded(ctx, int(open_id), tx_id, req.timestamp)

    reservation = await _find_reservation(ctx, cp, req, info)
    if reservation is not None:
        await _drop_reservation(ctx, cp, reservation["reservation_id"])

    now = utc_now()
    record = {
        "transaction_id": tx_id, "charge_point_id": cp, "connector_id": req.connector_id, "id_tag": req.id_tag,
        "id_tag_info": _info_dict(info), "authorization_status": info.status, "meter_start": req.meter_start,
        "start": format_utc(req.timestamp), "reservation_id": req.reservation_id,
        "reservation_consumed": reservation["reservation_id"] if reservation else None,
        "concurrent_with": sorted(concurrent), "status": "active", "meter_last": None, "meter_last_at": None,
        "meter_stop": None, "stop": None, "reason": None, "stop_id_tag": None, "energy_wh": None,
        "closed_by": None, "created_at": format_utc(now), "stopped_at": None,
    }
    async with ctx.redis.pipeline(transaction=True) as pipe:
        pipe.hset(_tx_key(ctx, tx_id), mapping=_encode(record))
        pipe.zadd(ctx.key("txs"), {str(tx_id): tx_id})
        pipe.zadd(ctx.key("txs", "cp", cp), {str(tx_id): tx_id})
        pipe.hset(ctx.key("txs", "open", cp), str(req.connector_id), str(tx_id))
        pipe.sadd(open_key, str(tx_id))
        await pipe.execute()

    if superseded is not None:
        await ctx.publish(_stopped_event(superseded, closed_by="superseded"))
        await _save_tx(ctx, superseded["transaction_id"], {"_published_stop": True})
    if reservation is not None:
        await ctx.publish(ReservationChanged(
            charge_point_id=cp, reservation_id=reservation["reservation_id"], change="consumed",
            connector_id=reservation["connector_id"], id_tag=reservation["id_tag"],
            expiry_date=parse_time(reservation["expiry_date"]), transaction_id=tx_id,
        ))
    await ctx.publish(_started_event(record))
    await _save_tx(ctx, tx_id, {"_published_start": True})
    return StartTransactionResponse(transaction_id=tx_id, id_tag_info=info)


# ---- StopTransaction ----------------------------------------------------------------------------
def _stop_fields(req: StopTransactionRequest, record: dict, id_tag_info: IdTagInfo | None) -> dict:
    return {
        "meter_stop": req.meter_stop, "stop": format_utc(req.timestamp), "reason": req.reason or "Local",
        "stop_id_tag": req.id_tag, "stop_id_tag_info": _info_dict(id_tag_info) if id_tag_info else None,
        "energy_wh": req.meter_stop - record["meter_start"], "stopped_at": format_utc(utc_now()),
        "cp_stopped": True,
    }


async def _store_transaction_data(ctx: ServiceContext, tx_id: int, req: StopTransactionRequest) -> None:
    if not req.transaction_data:
        return
    received = format_utc(utc_now())
    entries = [json.dumps({"source": "StopTransaction", **item.model_dump(mode="json", exclude_none=True),
                           "received_at": received}) for item in req.transaction_data]
    await ctx.redis.rpush(_tx_key(ctx, tx_id, "meter"), *entries)


async def _orphan_stop(ctx: CallContext, req: StopTransactionRequest, id_tag_info: IdTagInfo | None) -> None:
    cp = ctx.charge_point_id
    record = {
        "transaction_id": req.transaction_id, "charge_point_id": cp, "meter_stop": req.meter_stop,
        "stop": format_utc(req.timestamp), "reason": req.reason or "Local", "id_tag": req.id_tag,
        "id_tag_info": _info_dict(id_tag_info) if id_tag_info else None,
        "transaction_data": [item.model_dump(mode="json", exclude_none=True) for item in req.transaction_data or []],
        "received_at": format_utc(utc_now()),
    }
    if not await ctx.redis.hsetnx(ctx.key("txs", "orphans", cp), str(req.transaction_id), json.dumps(record)):
        return  # a repeat
    await ctx.redis.sadd(ctx.key("txs", "orphans"), cp)
    log.warning("%s: StopTransaction for unknown transaction %s kept as an orphan", cp, req.transaction_id)
    await ctx.publish(TransactionStopped(
        charge_point_id=cp, transaction_id=req.transaction_id, id_tag=req.id_tag, meter_stop=req.meter_stop,
        timestamp=req.timestamp, reason=record["reason"], closed_by="charge_point", orphan=True,
    ))


@service.call("StopTransaction")
async def stop_transaction(ctx: CallContext, req: StopTransactionRequest) -> StopTransactionResponse:
    cp = ctx.charge_point_id
    info = await authorize_tag(ctx, req.id_tag) if req.id_tag else None
    record = await _load_tx(ctx, req.transaction_id)
    if record is None or record["charge_point_id"] != cp:
        await _orphan_stop(ctx, req, info)
        return StopTransactionResponse(id_tag_info=info)
    tx_id = record["transaction_id"]
    if record["status"] == "active":
        update = {**_stop_fields(req, record, info), "status": "stopped", "closed_by": "charge_point",
                  "meter_last": req.meter_stop, "meter_last_at": format_utc(req.timestamp)}
        await _save_tx(ctx, tx_id, update)
        record.update(update)
        await _store_transaction_data(ctx, tx_id, req)
        await _release(ctx, record)
        await ctx.publish(_stopped_event(record, closed_by="charge_point"))
        await _save_tx(ctx, tx_id, {"_published_stop": True})
    elif record.get("closed_by") == "superseded" and not record.get("cp_stopped"):
        # the charge point's own stop of a transaction we closed as a ghost: its values are the truth
        estimate = {k: record.get(k) for k in ("meter_stop", "stop", "reason", "energy_wh")}
        update = {**_stop_fields(req, record, info), "superseded_estimate": estimate}
        await _save_tx(ctx, tx_id, update)
        record.update(update)
        await _store_transaction_data(ctx, tx_id, req)
        await ctx.publish(_stopped_event(record, closed_by="charge_point", correction=True))
    elif not record.get("_published_stop"):
        await ctx.publish(_stopped_event(record, closed_by=record.get("closed_by")))
        await _save_tx(ctx, tx_id, {"_published_stop": True})
    else:
        log.info("%s: StopTransaction for transaction %s repeated", cp, tx_id)
    return StopTransactionResponse(id_tag_info=info)


# ---- MeterValues --------------------------------------------------------------------------------
def energy_register_wh(meter_value: MeterValue) -> int | None:
    """The phase-less, unsigned Energy.Active.Import.Register reading of a meter value, in Wh."""
    for sample in meter_value.sampled_value:
        if (sample.measurand or ENERGY_REGISTER) != ENERGY_REGISTER:
            continue
        if sample.format == "SignedData" or sample.phase is not None:
            continue
        unit = sample.unit or "Wh"
        if unit not in ("Wh", "kWh"):
            continue
        try:
            value = float(sample.value)
        except ValueError:
            continue
        if not math.isfinite(value):
            continue
        return round(value * 1000) if unit == "kWh" else round(value)
    return None


@service.call("MeterValues")
async def meter_values(ctx: CallContext, req: MeterValuesRequest) -> MeterValuesResponse:
    cp = ctx.charge_point_id
    if req.connector_id < 0:
        raise OcppError(ErrorCode.PROPERTY_CONSTRAINT_VIOLATION, "connectorId must be >= 0")
    received = format_utc(utc_now())
    values = [mv.model_dump(mode="json", exclude_none=True) for mv in req.meter_value]
    if values:
        connector_key = ctx.key("meter", cp, req.connector_id)
        async with ctx.redis.pipeline(transaction=True) as pipe:
            pipe.rpush(connector_key, *(json.dumps({"connector_id": req.connector_id,
                                                    "transaction_id": req.transaction_id, **v,
                                                    "received_at": received}) for v in values))
            pipe.ltrim(connector_key, -METER_CAP, -1)
            await pipe.execute()
    if req.transaction_id is not None and values:
        record = await _load_tx(ctx, req.transaction_id)
        if record is not None and record["charge_point_id"] == cp:
            tx_id = record["transaction_id"]
            await ctx.redis.rpush(_tx_key(ctx, tx_id, "meter"), *(
                json.dumps({"source": "MeterValues", **v, "received_at": received}) for v in values))
            if record["status"] == "active":
                readings = [(as_utc(mv.timestamp), wh) for mv in req.meter_value
                            if (wh := energy_register_wh(mv)) is not None]
                if readings:
                    at, wh = max(readings, key=lambda r: r[0])
                    last_at = record.get("meter_last_at")
                    if last_at is None or parse_time(last_at) <= at:
                        await _save_tx(ctx, tx_id, {"meter_last": wh, "meter_last_at": format_utc(at)})
        else:
            log.warning("%s: MeterValues for unknown transaction %s kept per connector only", cp,
                        req.transaction_id)
    await ctx.publish(MeterValuesReceived(charge_point_id=cp, connector_id=req.connector_id,
                                          transaction_id=req.transaction_id, meter_value=values))
    return MeterValuesResponse()


# ---- commands: remote start / stop ----------------------------------------------------------------
async def _open_on_connector(ctx: ServiceContext, cp: str, connector_id: int) -> dict | None:
    open_id = await ctx.redis.hget(ctx.key("txs", "open", cp), str(connector_id))
    if open_id is None:
        return None
    record = await _load_tx(ctx, open_id)
    return record if record and record.get("status") == "active" else None


@service.command("RemoteStartTransaction")
async def remote_start(ctx: CommandContext, req: RemoteStartTransactionRequest) -> CommandResult:
    cp = ctx.charge_point_id
    if req.connector_id is not None:
        if req.connector_id <= 0:
            return ctx.refuse("connectorId must be > 0")
        busy = await _open_on_connector(ctx, cp, req.connector_id)
        if busy is not None:
            return ctx.refuse(f"connector {req.connector_id} has open transaction {busy['transaction_id']}",
                              {"transaction_id": busy["transaction_id"]})
    profile = req.charging_profile
    if profile is not None:
        if profile.charging_profile_purpose != "TxProfile":
            return ctx.refuse("chargingProfile.chargingProfilePurpose must be TxProfile")
        if profile.transaction_id is not None:
            return ctx.refuse("chargingProfile.transactionId must not be set: the transaction does not exist yet")
    return await ctx.forward()


@service.command("RemoteStopTransaction")
async def remote_stop(ctx: CommandContext, req: RemoteStopTransactionRequest) -> CommandResult:
    record = await _load_tx(ctx, req.transaction_id)
    if record is None or record["charge_point_id"] != ctx.charge_point_id or record.get("status") != "active":
        return ctx.refuse(f"transaction {req.transaction_id} is not open on {ctx.charge_point_id}")
    return await ctx.forward()


# ---- commands: reservations ----------------------------------------------------------------------
@service.command("ReserveNow")
async def reserve_now(ctx: CommandContext, req: ReserveNowRequest) -> CommandResult:
    cp = ctx.charge_point_id
    if req.expiry_date <= utc_now():
        return ctx.refuse("expiryDate is in the past")
    if req.connector_id < 0:
        return ctx.refuse("connectorId must be >= 0")
    existing = await _reservation(ctx, req.reservation_id)
    if existing is not None and existing["charge_point_id"] != cp:
        return ctx.refuse(f"reservation {req.reservation_id} belongs to another charge point")
    result = await ctx.forward()
    if result.ok and result.payload.get("status") == "Accepted":
        key = ctx.key("reservation", req.reservation_id)
        record = {
            "reservation_id": str(req.reservation_id), "charge_point_id": cp, "connector_id": str(req.connector_id),
            "id_tag": req.id_tag, "parent_id_tag": req.parent_id_tag or "",
            "expiry_date": format_utc(req.expiry_date), "created_at": format_utc(utc_now()),
        }
        async with ctx.redis.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            pipe.hset(key, mapping=record)
            pipe.pexpireat(key, int(as_utc(req.expiry_date).timestamp() * 1000))
            pipe.sadd(ctx.key("reservations", cp), str(req.reservation_id))
            await pipe.execute()
        await ctx.publish(ReservationChanged(
            charge_point_id=cp, reservation_id=req.reservation_id, change="created", connector_id=req.connector_id,
            id_tag=req.id_tag, expiry_date=req.expiry_date,
        ))
    return result


@service.command("CancelReservation")
async def cancel_reservation(ctx: CommandContext, req: CancelReservationRequest) -> CommandResult:
    cp = ctx.charge_point_id
    existing = await _reservation(ctx, req.reservation_id)
    if existing is None or existing["charge_point_id"] != cp:
        return ctx.refuse(f"no reservation {req.reservation_id} on {cp}")
    result = await ctx.forward()
    if result.ok and result.payload.get("status") == "Accepted":
        await _drop_reservation(ctx, cp, req.reservation_id)
        await ctx.publish(ReservationChanged(
            charge_point_id=cp, reservation_id=req.reservation_id, change="cancelled",
            connector_id=existing["connector_id"], id_tag=existing["id_tag"],
            expiry_date=parse_time(existing["expiry_date"]),
        ))
    return result


# ---- commands: local authorization list -------------------------------------------------------------
@service.command("SendLocalList")
async def send_local_list(ctx: CommandContext, req: SendLocalListRequest) -> CommandResult:
    cp = ctx.charge_point_id
    entries = req.local_authorization_list or []
    folded = [fold(entry.id_tag) for entry in entries]
    if len(set(folded)) != len(folded):
        return ctx.refuse("localAuthorizationList holds an idTag more than once")
    if req.update_type == "Full" and any(entry.id_tag_info is None for entry in entries):
        return ctx.refuse("every entry of a Full update needs idTagInfo")
    result = await ctx.forward()
    if result.ok and result.payload.get("status") == "Accepted":
        list_key = ctx.key("locallist", cp)
        async with ctx.redis.pipeline(transaction=True) as pipe:
            if req.update_type == "Full":
                pipe.delete(list_key)
            for entry in entries:
                if entry.id_tag_info is None:
                    pipe.hdel(list_key, fold(entry.id_tag))
                else:
                    pipe.hset(list_key, fold(entry.id_tag), json.dumps(
                        {"id_tag": entry.id_tag, "id_tag_info": _info_dict(entry.id_tag_info)}))
            pipe.hset(ctx.key("locallist", cp, "meta"), mapping={
                "version": str(req.list_version), "entries_version": str(req.list_version),
                "updated_at": format_utc(utc_now()),
            })
            await pipe.execute()
    return result


@service.command("GetLocalListVersion")
async def get_local_list_version(ctx: CommandContext, req: GetLocalListVersionRequest) -> CommandResult:
    result = await ctx.forward()
    if result.ok and isinstance(result.payload.get("listVersion"), int):
        await ctx.redis.hset(ctx.key("locallist", ctx.charge_point_id, "meta"), mapping={
            "version": str(result.payload["listVersion"]), "reported_at": format_utc(utc_now()),
        })
    return result


# ---- API ---------------------------------------------------------------------------------------------
def _int_param(params: dict, name: str, required: bool = True) -> int | None:
    """An integer id; unlike csms.service.int_param it also takes numeric text (e.g. "42")."""
    value = params.get(name)
    if value is None:
        if required:
            raise ApiError(f"{name} is required")
        return None
    if isinstance(value, bool):
        raise ApiError(f"{name} must be an integer")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ApiError(f"{name} must be an integer") from None


async def _id_tag_view(ctx: ServiceContext, id_tag: str) -> dict:
    record = await _lookup_tag(ctx, id_tag)
    if record is None:
        raise ApiError(f"unknown id tag {id_tag!r}", 404)
    return {
        "id_tag": record["id_tag"], "status": record["status"], "expiry_date": record.get("expiry_date") or None,
        "parent_id_tag": record.get("parent_id_tag") or None, "updated_at": record.get("updated_at"),
        "id_tag_info": _info_dict(await authorize_tag(ctx, id_tag)),
    }


@service.api("set_id_tag")
async def api_set_id_tag(ctx: ApiContext, params: dict) -> dict:
    """params: id_tag, status (Accepted|Blocked|Expired|Invalid, default Accepted), expiry_date (ISO),
    parent_id_tag. Returns the stored tag and the idTagInfo it gets now."""
    id_tag = str_param(params, "id_tag", max_length=20)
    status = params.get("status") or "Accepted"
    if status not in ID_TAG_STATUSES:
        raise ApiError(f"status must be one of {ID_TAG_STATUSES}")
    expiry = params.get("expiry_date")
    if expiry not in (None, ""):
        try:
            expiry = format_utc(parse_time(expiry))
        except ValueError:
            raise ApiError("expiry_date must be an ISO 8601 date-time") from None
    parent = str_param(params, "parent_id_tag", max_length=20, required=False)
    if parent is not None and fold(parent) == fold(id_tag):
        raise ApiError("an id tag cannot be its own parent")
    await ctx.redis.hset(ctx.key("idtag", fold(id_tag)), mapping={
        "id_tag": id_tag, "status": status, "expiry_date": expiry or "", "parent_id_tag": parent or "",
        "updated_at": format_utc(utc_now()),
    })
    return await _id_tag_view(ctx, id_tag)


@service.api("get_id_tag")
async def api_get_id_tag(ctx: ApiContext, params: dict) -> dict:
    return await _id_tag_view(ctx, str_param(params, "id_tag", max_length=20))


@service.api("delete_id_tag")
async def api_delete_id_tag(ctx: ApiContext, params: dict) -> dict:
    id_tag = str_param(params, "id_tag", max_length=20)
    deleted = await ctx.redis.delete(ctx.key("idtag", fold(id_tag)))
    return {"id_tag": id_tag, "deleted": bool(deleted)}


@service.api("get_transaction")
async def api_get_transaction(ctx: ApiContext, params: dict) -> dict:
    tx_id = _int_param(params, "transaction_id")
    record = await _load_tx(ctx, tx_id)
    if record is None:
        raise ApiError(f"unknown transaction {tx_id}", 404)
    return _public(record)


@service.api("list_transactions")
async def api_list_transactions(ctx: ApiContext, params: dict) -> list[dict]:
    """params: charge_point_id (optional), active_only (optional bool). Oldest first."""
    cp = str_param(params, "charge_point_id", required=False)
    active_only = bool(params.get("active_only"))
    index = ctx.key("txs", "cp", cp) if cp else ctx.key("txs")
    result = []
    for tx_id in await ctx.redis.zrange(index, 0, -1):
        record = await _load_tx(ctx, tx_id)
        if record is None or (active_only and record.get("status") != "active"):
            continue
        result.append(_public(record))
    return result


@service.api("active_transactions")
async def api_active_transactions(ctx: ApiContext, params: dict) -> list[dict]:
    """The open transactions of a charge point (used by smart charging: keep name and shape):
    [{transaction_id, connector_id, id_tag, start (ISO Z), meter_start}], by connector."""
    cp = str_param(params, "charge_point_id")
    result = []
    for tx_id in (await ctx.redis.hgetall(ctx.key("txs", "open", cp))).values():
        record = await _load_tx(ctx, tx_id)
        if record is None or record.get("status") != "active" or record["charge_point_id"] != cp:
            continue
        result.append({"transaction_id": record["transaction_id"], "connector_id": record["connector_id"],
                       "id_tag": record["id_tag"], "start": record["start"], "meter_start": record["meter_start"]})
    return sorted(result, key=lambda item: item["connector_id"])


@service.api("meter_values")
async def api_meter_values(ctx: ApiContext, params: dict) -> list[dict]:
    tx_id = _int_param(params, "transaction_id")
    if not await ctx.redis.exists(_tx_key(ctx, tx_id)):
        raise ApiError(f"unknown transaction {tx_id}", 404)
    return [json.loads(item) for item in await ctx.redis.lrange(_tx_key(ctx, tx_id, "meter"), 0, -1)]


@service.api("connector_meter_values")
async def api_connector_meter_values(ctx: ApiContext, params: dict) -> list[dict]:
    cp = str_param(params, "charge_point_id")
    connector = _int_param(params, "connector_id")
    return [json.loads(item) for item in await ctx.redis.lrange(ctx.key("meter", cp, connector), 0, -1)]


@service.api("list_orphan_stops")
async def api_list_orphan_stops(ctx: ApiContext, params: dict) -> list[dict]:
    cp = str_param(params, "charge_point_id", required=False)
    cps = [cp] if cp else sorted(await ctx.redis.smembers(ctx.key("txs", "orphans")))
    result = []
    for charge_point in cps:
        stored = await ctx.redis.hgetall(ctx.key("txs", "orphans", charge_point))
        result.extend(json.loads(value) for _, value in sorted(stored.items(), key=lambda kv: int(kv[0])))
    return result


@service.api("get_local_list")
async def api_get_local_list(ctx: ApiContext, params: dict) -> dict:
    """{charge_point_id, version, entries_version, entries: {idTag: idTagInfo}}; version is the last one
    accepted or reported by the charge point, entries_version the one the stored entries belong to."""
    cp = str_param(params, "charge_point_id")
    meta = await ctx.redis.hgetall(ctx.key("locallist", cp, "meta"))
    stored = await ctx.redis.hgetall(ctx.key("locallist", cp))
    entries = {}
    for value in stored.values():
        entry = json.loads(value)
        entries[entry["id_tag"]] = entry["id_tag_info"]
    return {
        "charge_point_id": cp,
        "version": int(meta["version"]) if meta.get("version") else None,
        "entries_version": int(meta["entries_version"]) if meta.get("entries_version") else None,
        "entries": dict(sorted(entries.items())),
    }


@service.api("list_reservations")
async def api_list_reservations(ctx: ApiContext, params: dict) -> list[dict]:
    cp = str_param(params, "charge_point_id")
    now = utc_now()
    index = ctx.key("reservations", cp)
    result = []
    for member in sorted(await ctx.redis.smembers(index), key=int):
        record = await _reservation(ctx, member)
        if record is None:
            await ctx.redis.srem(index, member)  # expired
            continue
        if record["charge_point_id"] != cp or parse_time(record["expiry_date"]) <= now:
            continue
        result.append(record)
    return result
