"""Pure decisions of the transactions service (no I/O): where OCPP 1.6 leaves room, what we decided.

Every function here works on plain data and is unit-tested directly (tests/unit/test_transaction_rules.py).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Iterable, Sequence

from csms.contracts.base import as_utc
from csms.contracts.ocpp16 import IdTagInfo, MeterValue

ID_TAG_STATUSES = ("Accepted", "Blocked", "Expired", "Invalid")
MAX_PARENT_DEPTH = 5
ENERGY_REGISTER = "Energy.Active.Import.Register"

# connector statuses that show no transaction can be running on the connector (OCPP 1.6 §4.9): a
# ChangeAvailability to Inoperative during a transaction is Scheduled, so Unavailable comes after it ends
FREE_STATUSES = {"Available": "connector_available", "Unavailable": "connector_unavailable"}

# stop reason recorded when the system (not the charge point) closes a transaction
ESTIMATED_STOP_REASON = "Other"
# estimate_note of a system close whose last reading is below meterStart (PostgreSQL format(): last, start)
BELOW_START_NOTE = ("the last energy register reading (%s Wh) is below meterStart (%s Wh), a meter reset or a bad "
                    "reading: meter_stop is meterStart (no negative energy)")


INT32_MIN, INT32_MAX = -2 ** 31, 2 ** 31 - 1
INT64_MAX = 2 ** 63 - 1
# meter readings (Wh) are kept within +-(2^62 - 1), so the energy of a transaction (their difference) fits in
# 64 bits
METER_LIMIT = 2 ** 62 - 1


def out_of_range(int32: dict[str, int | None], meters: dict[str, int | None] | None = None) -> str | None:
    """The name of the first value that does not fit what is stored (ids in 32 bits, meter readings within
    +-METER_LIMIT Wh). OCPP's JSON schemas bound neither, but no charge point needs more."""
    for name, value in int32.items():
        if value is not None and not INT32_MIN <= value <= INT32_MAX:
            return name
    for name, value in (meters or {}).items():
        if value is not None and not -METER_LIMIT <= value <= METER_LIMIT:
            return name
    return None


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def unstorable_text(value: object, depth: int = 0) -> bool:
    """Whether a JSON value holds text PostgreSQL cannot store (NUL characters, unpaired surrogates)."""
    if isinstance(value, str):
        return _UNSTORABLE.search(value) is not None
    if depth > 64:
        return False
    if isinstance(value, dict):
        return any(unstorable_text(k, depth + 1) or unstorable_text(v, depth + 1) for k, v in value.items())
    if isinstance(value, list):
        return any(unstorable_text(item, depth + 1) for item in value)
    return False


def fold(id_tag: str) -> str:
    """OCPP id tags are case-insensitive (CiString20): records are keyed by the case-folded tag."""
    return id_tag.casefold()


# ---- authorization ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class TagRecord:
    """An id tag as stored (tx_id_tags)."""
    id_tag: str
    status: str
    expiry_date: datetime | None = None
    parent_id_tag: str | None = None


def own_status(tag: TagRecord, now: datetime) -> str:
    """A tag's own status: an Accepted tag whose expiry date has passed is Expired."""
    status = tag.status if tag.status in ID_TAG_STATUSES else "Invalid"
    if status == "Accepted" and tag.expiry_date is not None and as_utc(tag.expiry_date) <= now:
        return "Expired"
    return status


def authorize(id_tag: str, tags: dict[str, TagRecord], now: datetime) -> IdTagInfo:
    """The idTagInfo an id tag gets, following its parents.

    ``tags`` maps case-folded id tags to their records (the tag and its known ancestors). An unknown tag is
    Invalid. A *known* parent that is not Accepted (Blocked, Expired, stored Invalid) gives the child its
    status; an unknown parent changes nothing (a parent id is a group name and need not be registered).
    Blocked/Expired/Invalid stored on the tag itself win over the parent's. The expiryDate answered is the
    earliest of the tag's and its known parents' expiry dates, so a charge point's cache never outlives the
    group. Parents are followed at most MAX_PARENT_DEPTH levels and never round a cycle.
    """
    record = tags.get(fold(id_tag))
    if record is None:
        return IdTagInfo(status="Invalid")
    status = own_status(record, now)
    expiry = as_utc(record.expiry_date) if record.expiry_date else None
    seen = {fold(id_tag)}
    current = record.parent_id_tag
    while current and fold(current) not in seen and len(seen) <= MAX_PARENT_DEPTH:
        seen.add(fold(current))
        parent = tags.get(fold(current))
        if parent is None:
            break
        if parent.expiry_date is not None and (expiry is None or as_utc(parent.expiry_date) < expiry):
            expiry = as_utc(parent.expiry_date)
        parent_status = own_status(parent, now)
        if status == "Accepted" and parent_status != "Accepted":
            status = parent_status
        current = parent.parent_id_tag
    return IdTagInfo(status=status, expiry_date=expiry, parent_id_tag=record.parent_id_tag)


def start_status(info: IdTagInfo, concurrent_with: int | None) -> IdTagInfo:
    """StartTransaction's idTagInfo: an Accepted tag that already has an open, accepted transaction on
    another connector (of this or another charge point) gets ConcurrentTx. The transaction is recorded all
    the same; OCPP leaves it to the charge point to stop it."""
    if concurrent_with is not None and info.status == "Accepted":
        return info.model_copy(update={"status": "ConcurrentTx"})
    return info


def holds_connector(authorization_status: str) -> bool:
    """Whether an open transaction is *the* transaction of its connector (listed by active_transactions,
    ConcurrentTx for its tag, warned about by RemoteStartTransaction). A StartTransaction answered Blocked,
    Invalid, Expired or ConcurrentTx is recorded, but many charge points never run it: it holds nothing."""
    return authorization_status == "Accepted"


# ---- meter readings ---------------------------------------------------------------------------------
def energy_register_wh(meter_value: MeterValue) -> int | None:
    """The phase-less, unsigned Energy.Active.Import.Register reading of a meter value, in Wh (kWh
    converted); None when it has none (other measurands, per-phase, signed data, not a finite number, beyond
    METER_LIMIT Wh)."""
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
        wh = value * 1000 if unit == "kWh" else value
        if not math.isfinite(wh) or abs(wh) > METER_LIMIT:
            continue
        return round(wh)
    return None


def newest_register_reading(meter_values: Iterable[MeterValue], received: datetime, skew_seconds: float
                            ) -> tuple[datetime, int] | None:
    """(instant, Wh) of the newest energy register reading, each meter value ordered by
    :func:`ordered_instant`: its own timestamp, or the time it was received when that lies further ahead than
    the clock skew allows (one reading dated 2099 must not hide every later one). Readings with the same instant
    (several beyond the skew all count as received then) are ordered by their own timestamps, then as listed:
    the last of a buffered batch wins, not the first."""
    readings = [((ordered_instant(mv.timestamp, received, skew_seconds), as_utc(mv.timestamp), position), wh)
                for position, mv in enumerate(meter_values) if (wh := energy_register_wh(mv)) is not None]
    if not readings:
        return None
    (instant, _, _), wh = max(readings, key=lambda reading: reading[0])
    return instant, wh


def beyond_skew(timestamps: Iterable[datetime], received: datetime, skew_seconds: float) -> list[datetime]:
    """The timestamps further ahead of ``received`` than the clock skew allows (ordered by ``received``)."""
    return [as_utc(at) for at in timestamps if ordered_instant(at, received, skew_seconds) != as_utc(at)]


# ---- reconciliation ---------------------------------------------------------------------------------
def estimated_stop_time(start: datetime, evidence: datetime) -> datetime:
    """When a transaction the charge point never stopped is closed from other evidence (a new start on its
    connector, a boot, the connector free, an operator), it ended at the latest at that evidence; never
    before it started."""
    return max(as_utc(start), as_utc(evidence))


def operator_meter_stop_problem(meter_start: int, meter_stop: int | None) -> str | None:
    """Why an operator's meter_stop for closing a transaction is refused, else None: never below the
    transaction's meterStart (negative energy) nor beyond what is stored."""
    if meter_stop is None:
        return None
    if meter_stop < meter_start:
        return (f"meter_stop {meter_stop} Wh is below the transaction's meter_start {meter_start} Wh: "
                f"give {meter_start} or more (or leave it out for the last reading)")
    if meter_stop > METER_LIMIT or meter_stop - meter_start > INT64_MAX:
        return f"meter_stop {meter_stop} Wh is beyond {METER_LIMIT} Wh"
    return None


def ordered_instant(timestamp: datetime | None, received: datetime, skew_seconds: float) -> datetime:
    """The instant something the charge point dated is ordered by: its own timestamp, unless it lies further in
    the future than CSMS_CLOCK_SKEW allows (a clock in 2099); then the time it was received."""
    if timestamp is not None and as_utc(timestamp) <= as_utc(received) + timedelta(seconds=skew_seconds):
        return as_utc(timestamp)
    return as_utc(received)


def status_instant(ordered_at: datetime | None, timestamp: datetime | None, received: datetime,
                   skew_seconds: float) -> datetime:
    """The instant a StatusNotification is ordered by: the stations service's ``ordered_at`` when it gives one,
    else as :func:`ordered_instant`."""
    if ordered_at is not None:
        return as_utc(ordered_at)
    return ordered_instant(timestamp, received, skew_seconds)


def free_status_reason(status: str, connector_id: int) -> str | None:
    """The reconcile reason when a StatusNotification shows a connector free of any transaction, else None.
    Connector 0 (the charge point as a whole) closes nothing."""
    if connector_id <= 0:
        return None
    return FREE_STATUSES.get(status)


# ---- reservations -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Reservation:
    reservation_id: int
    connector_id: int
    id_tag: str
    parent_id_tag: str | None = None


def reservation_to_consume(reservations: Sequence[Reservation], connector_id: int, id_tag: str,
                           parent_id_tag: str | None, reservation_id: int | None) -> Reservation | None:
    """The reservation of the charge point a StartTransaction ends (OCPP 1.6 §5.13): the one it names; else
    one on that connector or on connector 0 for the same id tag or the same parent id tag (the charge point
    ends it too). ``reservations`` are the charge point's unexpired ones, ordered by id."""
    if reservation_id is not None:
        return next((r for r in reservations if r.reservation_id == reservation_id), None)
    for reservation in reservations:
        if reservation.connector_id not in (0, connector_id):
            continue
        same_tag = fold(reservation.id_tag) == fold(id_tag)
        same_parent = bool(reservation.parent_id_tag and parent_id_tag
                           and fold(reservation.parent_id_tag) == fold(parent_id_tag))
        if same_tag or same_parent:
            return reservation
    return None


# ---- meter value partitions -------------------------------------------------------------------------
PARTITION_PREFIX = "tx_meter_values_p"


def partition_name(day: date) -> str:
    return f"{PARTITION_PREFIX}{day:%Y%m%d}"


def partition_day(name: str) -> date | None:
    """The day a partition holds, from its name; None for other tables (e.g. the DEFAULT partition)."""
    if not name.startswith(PARTITION_PREFIX):
        return None
    try:
        return datetime.strptime(name[len(PARTITION_PREFIX):], "%Y%m%d").date()
    except ValueError:
        return None


def partitions_wanted(today: date, ahead: int) -> list[date]:
    """Daily partitions kept ready: yesterday (late readings), today and ``ahead`` days."""
    return [today + timedelta(days=offset) for offset in range(-1, ahead + 1)]


def retention_cutoff(today: date, retention_days: int) -> date | None:
    """Readings received before this day (and, in a daily partition, dated before it) are dropped; None keeps
    everything (retention 0)."""
    return today - timedelta(days=retention_days) if retention_days > 0 else None


def partitions_to_drop(existing: Iterable[date], cutoff: date | None) -> list[date]:
    """Partitions whose whole day lies before the cutoff."""
    if cutoff is None:
        return []
    return sorted(day for day in existing if day < cutoff)
