"""API of the transactions service: parameters (validated: a bad one is a 400 naming the field) and results.

    await client.api("transactions", "close_transaction", transaction_id=42, reason="EVDisconnected")
    csms api transactions close_transaction transaction_id=42
"""
from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from csms.contracts.base import UtcDatetime

MAX_TRANSACTIONS_PAGE = 1000
MAX_ID_TAGS_PAGE = 1000
MAX_METER_VALUES_PAGE = 10_000
MAX_CHARGE_POINT_ID = 255

IdTagStatus = Literal["Accepted", "Blocked", "Expired", "Invalid"]
StopReason = Literal["EmergencyStop", "EVDisconnected", "HardReset", "Local", "Other", "PowerLoss", "Reboot",
                     "Remote", "SoftReset", "UnlockCommand", "DeAuthorized"]


def _integer(value: Any) -> Any:
    """Integers, or their text (the CLI passes ``transaction_id=42``); never a bool."""
    if isinstance(value, bool):
        raise ValueError("must be an integer")
    return value


def _blank_is_none(value: Any) -> Any:
    return None if value == "" else value


def _storable(value: str) -> str:
    if _UNSTORABLE.search(value):
        raise ValueError("must not contain NUL characters or unpaired surrogates")
    return value


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
Int = Annotated[int, BeforeValidator(_integer)]
Int32 = Annotated[int, BeforeValidator(_integer), Field(ge=-2 ** 31, le=2 ** 31 - 1)]
Int64 = Annotated[int, BeforeValidator(_integer), Field(ge=-2 ** 63, le=2 ** 63 - 1)]
Text = Annotated[str, AfterValidator(_storable)]
IdTag = Annotated[Text, Field(min_length=1, max_length=20)]
OptionalIdTag = Annotated[IdTag | None, BeforeValidator(_blank_is_none)]
ChargePointId = Annotated[Text, Field(min_length=1, max_length=MAX_CHARGE_POINT_ID)]
OptionalTime = Annotated[UtcDatetime | None, BeforeValidator(_blank_is_none)]


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---- parameters -------------------------------------------------------------------------------------
class IdTagParams(Params):
    id_tag: IdTag


class SetIdTagParams(Params):
    id_tag: IdTag
    status: IdTagStatus = "Accepted"
    expiry_date: OptionalTime = None
    parent_id_tag: OptionalIdTag = None

    @model_validator(mode="after")
    def _not_own_parent(self) -> "SetIdTagParams":
        if self.parent_id_tag is not None and self.parent_id_tag.casefold() == self.id_tag.casefold():
            raise ValueError("an id tag cannot be its own parent")
        return self


class ListIdTagsParams(Params):
    """Id tags by id (case-insensitive order), filtered; ``after`` = the last id_tag of the previous page."""
    status: IdTagStatus | None = Field(None, description=(
        "only tags stored with this status (an Accepted tag past its expiry_date is still stored Accepted; its "
        "id_tag_info says Expired)"))
    limit: Int = Field(100, ge=1, le=MAX_ID_TAGS_PAGE, description="at most this many id tags")
    after: OptionalIdTag = Field(None, description="continue after this id tag (pages)")


class TransactionParams(Params):
    transaction_id: Int32


class ChargePointParams(Params):
    charge_point_id: ChargePointId


class ListTransactionsParams(Params):
    """Transactions oldest first (by id), filtered; ``after`` = the last transaction_id of the previous page."""
    charge_point_id: ChargePointId | None = None
    id_tag: OptionalIdTag = None
    active_only: bool = False
    since: OptionalTime = None   # started at or after
    until: OptionalTime = None   # started before
    limit: Int = Field(100, ge=1, le=MAX_TRANSACTIONS_PAGE)
    after: Int32 | None = None


class MeterValuesParams(Params):
    """Meter values of one transaction in arrival order; ``after`` = the last ``id`` of the previous page."""
    transaction_id: Int32
    limit: Int = Field(1000, ge=1, le=MAX_METER_VALUES_PAGE)
    after: Int64 | None = None


class ConnectorMeterValuesParams(Params):
    charge_point_id: ChargePointId
    connector_id: Int32 = Field(ge=0)
    since: OptionalTime = None   # the reading's own timestamp, at or after
    until: OptionalTime = None   # ... before
    limit: Int = Field(1000, ge=1, le=MAX_METER_VALUES_PAGE)
    after: Int64 | None = None


class QueryMeterValuesParams(Params):
    """Meter values by charge point (and connector), transaction or id tag, within a time range of the
    readings' own timestamps; arrival order, ``after`` = the last ``id`` of the previous page."""
    charge_point_id: ChargePointId | None = None
    connector_id: Int32 | None = Field(None, ge=0)
    transaction_id: Int32 | None = None
    id_tag: OptionalIdTag = None
    since: OptionalTime = None
    until: OptionalTime = None
    limit: Int = Field(1000, ge=1, le=MAX_METER_VALUES_PAGE)
    after: Int64 | None = None

    @model_validator(mode="after")
    def _selective(self) -> "QueryMeterValuesParams":
        if self.charge_point_id is None and self.transaction_id is None and self.id_tag is None:
            raise ValueError("give charge_point_id, transaction_id or id_tag")
        if self.connector_id is not None and self.charge_point_id is None:
            raise ValueError("connector_id needs charge_point_id")
        return self


class OrphanStopsParams(Params):
    """Orphan stops by charge point, then transaction id; ``after`` (a transactionId) needs charge_point_id."""
    charge_point_id: ChargePointId | None = None
    limit: Int = Field(100, ge=1, le=MAX_TRANSACTIONS_PAGE)
    after: Int32 | None = None

    @model_validator(mode="after")
    def _after_needs_cp(self) -> "OrphanStopsParams":
        if self.after is not None and self.charge_point_id is None:
            raise ValueError("after needs charge_point_id")
        return self


class CloseTransactionParams(Params):
    """An operator closes a transaction the charge point will not stop (a ghost). meter_stop defaults to
    the last energy register reading (or meterStart)."""
    transaction_id: Int32
    meter_stop: Int64 | None = Field(None, ge=0)
    reason: StopReason = "Other"
    note: Annotated[Text, Field(max_length=200)] | None = None


class DropReservationParams(Params):
    """An operator forgets a reservation (the charge point is not told: send CancelReservation for that)."""
    reservation_id: Int32
    charge_point_id: ChargePointId | None = None


# ---- results ----------------------------------------------------------------------------------------
class View(BaseModel):
    model_config = ConfigDict(extra="forbid")


class IdTagView(View):
    id_tag: str
    status: IdTagStatus
    expiry_date: UtcDatetime | None = None
    parent_id_tag: str | None = None
    updated_at: UtcDatetime
    id_tag_info: dict[str, Any]  # the idTagInfo it gets now (parents and expiry applied)


class DeletedIdTag(View):
    id_tag: str
    deleted: bool


class TransactionView(View):
    transaction_id: int
    charge_point_id: str
    connector_id: int
    id_tag: str
    id_tag_info: dict[str, Any]
    authorization_status: str            # what StartTransaction answered
    meter_start: int
    start: UtcDatetime                   # the charge point's timestamp
    received_at: UtcDatetime             # when the central system received the StartTransaction
    start_ordered_at: UtcDatetime        # start, or received_at when start is beyond CSMS_CLOCK_SKEW ahead
    reservation_id: int | None = None
    reservation_consumed: int | None = None
    concurrent_with: int | None = None   # the open transaction of the tag that made this one ConcurrentTx
    charging_profile: dict[str, Any] | None = None  # the RemoteStart TxProfile it started with
    status: Literal["active", "stopped"]
    meter_last: int | None = None
    meter_last_at: UtcDatetime | None = None
    meter_stop: int | None = None
    stop: UtcDatetime | None = None
    reason: str | None = None
    stop_id_tag: str | None = None
    stop_id_tag_info: dict[str, Any] | None = None
    energy_wh: int | None = None
    stopped_at: UtcDatetime | None = None  # when the record was closed
    # reconciliation: who closed it (charge_point | superseded | reconciled | operator) and why
    closed_by: str | None = None
    reconcile_reason: str | None = None
    superseded_by: int | None = None
    operator_note: str | None = None
    cp_stopped: bool = False             # the charge point's own StopTransaction arrived
    estimate: dict[str, Any] | None = None  # the system's closing values the charge point's stop replaced
    # why the system's closing meter_stop is not the last reading (it was below meterStart: meterStart instead)
    estimate_note: str | None = None
    corrected_at: UtcDatetime | None = None
    meter_values_after_close: int = 0    # readings that arrived while it was closed by the system


class ActiveTransaction(View):
    """Shape used by smart charging: keep it."""
    transaction_id: int
    connector_id: int
    id_tag: str
    start: UtcDatetime
    meter_start: int


class MeterValueView(View):
    id: int
    charge_point_id: str
    connector_id: int
    transaction_id: int | None = None    # as the charge point reported it
    known_transaction: bool = False      # it is a transaction of this charge point in the records
    source: Literal["MeterValues", "StopTransaction"]
    timestamp: UtcDatetime
    sampled_value: list[dict[str, Any]]
    received_at: UtcDatetime


class OrphanStopView(View):
    charge_point_id: str
    transaction_id: int
    meter_stop: int
    stop: UtcDatetime
    reason: str
    id_tag: str | None = None
    id_tag_info: dict[str, Any] | None = None
    transaction_data: list[dict[str, Any]]
    received_at: UtcDatetime


class ReservationView(View):
    reservation_id: int
    charge_point_id: str
    connector_id: int
    id_tag: str
    parent_id_tag: str | None = None
    expiry_date: UtcDatetime
    created_at: UtcDatetime


class DroppedReservation(View):
    reservation_id: int
    charge_point_id: str
    dropped: bool


class LocalListView(View):
    """version: the last one accepted or reported by the charge point; entries_version: the one the stored
    entries belong to."""
    charge_point_id: str
    version: int | None = None
    entries_version: int | None = None
    entries: dict[str, dict[str, Any]]
