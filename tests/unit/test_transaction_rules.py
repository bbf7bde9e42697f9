"""The transactions service's pure decisions (services/transactions/rules.py)."""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from csms.contracts.ocpp16 import IdTagInfo, MeterValue
from services.transactions import rules
from services.transactions.rules import Reservation, TagRecord

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
PAST = NOW - timedelta(hours=1)
FUTURE = NOW + timedelta(days=1)
LATER = NOW + timedelta(days=2)


def tags(*records: TagRecord) -> dict[str, TagRecord]:
    return {rules.fold(record.id_tag): record for record in records}


# ---- authorization ----------------------------------------------------------------------------------
@pytest.mark.parametrize("records, tag, expected", [
    ((), "NOBODY", {"status": "Invalid"}),
    ((TagRecord("A", "Accepted"),), "a", {"status": "Accepted"}),                       # case-insensitive
    ((TagRecord("A", "Blocked"),), "A", {"status": "Blocked"}),
    ((TagRecord("A", "Invalid"),), "A", {"status": "Invalid"}),
    ((TagRecord("A", "Accepted", PAST),), "A", {"status": "Expired", "expiry_date": PAST}),
    ((TagRecord("A", "Accepted", FUTURE),), "A", {"status": "Accepted", "expiry_date": FUTURE}),
    # a known parent that is not Accepted gives the child its status; its expiry bounds the child's
    ((TagRecord("A", "Accepted", LATER, "G"), TagRecord("G", "Blocked")), "A",
     {"status": "Blocked", "expiry_date": LATER, "parent_id_tag": "G"}),
    ((TagRecord("A", "Accepted", LATER, "G"), TagRecord("G", "Accepted", FUTURE)), "A",
     {"status": "Accepted", "expiry_date": FUTURE, "parent_id_tag": "G"}),
    ((TagRecord("A", "Accepted", None, "G"), TagRecord("G", "Accepted", PAST)), "A",
     {"status": "Expired", "expiry_date": PAST, "parent_id_tag": "G"}),
    # the tag's own status wins over the parent's
    ((TagRecord("A", "Invalid", None, "G"), TagRecord("G", "Blocked")), "A",
     {"status": "Invalid", "parent_id_tag": "G"}),
    # an unknown parent is only a group name
    ((TagRecord("A", "Accepted", None, "NOSUCH"),), "A", {"status": "Accepted", "parent_id_tag": "NOSUCH"}),
    # grandparents count; cycles end
    ((TagRecord("A", "Accepted", None, "B"), TagRecord("B", "Accepted", None, "C"), TagRecord("C", "Expired")),
     "A", {"status": "Expired", "parent_id_tag": "B"}),
    ((TagRecord("A", "Accepted", None, "B"), TagRecord("B", "Accepted", None, "A")), "A",
     {"status": "Accepted", "parent_id_tag": "B"}),
])
def test_authorize(records, tag, expected):
    info = rules.authorize(tag, tags(*records), NOW)
    assert info.model_dump(exclude_none=True) == expected


def test_authorize_follows_at_most_max_parent_depth_levels():
    chain = [TagRecord(f"T{i}", "Accepted", None, f"T{i + 1}") for i in range(rules.MAX_PARENT_DEPTH + 2)]
    blocked_deep = TagRecord(f"T{rules.MAX_PARENT_DEPTH + 2}", "Blocked")
    assert rules.authorize("T0", tags(*chain, blocked_deep), NOW).status == "Accepted"
    near = [TagRecord(f"T{i}", "Accepted", None, f"T{i + 1}") for i in range(3)] + [TagRecord("T3", "Blocked")]
    assert rules.authorize("T0", tags(*near), NOW).status == "Blocked"


def test_concurrent_tx_only_for_an_accepted_tag_with_an_open_transaction_elsewhere():
    accepted = IdTagInfo(status="Accepted", parent_id_tag="G")
    assert rules.start_status(accepted, None) == accepted
    assert rules.start_status(accepted, 41).model_dump(exclude_none=True) == {"status": "ConcurrentTx",
                                                                              "parent_id_tag": "G"}
    assert rules.start_status(IdTagInfo(status="Blocked"), 41).status == "Blocked"


@pytest.mark.parametrize("status, holds", [("Accepted", True), ("ConcurrentTx", False), ("Blocked", False),
                                           ("Expired", False), ("Invalid", False)])
def test_only_accepted_transactions_hold_their_connector(status, holds):
    assert rules.holds_connector(status) is holds


# ---- meter readings ---------------------------------------------------------------------------------
def mv(timestamp: datetime, *samples: dict) -> MeterValue:
    return MeterValue.model_validate({"timestamp": timestamp.isoformat(), "sampledValue": list(samples)})


@pytest.mark.parametrize("sample, wh", [
    ({"value": "1234"}, 1234),                                                    # the default measurand, Wh
    ({"value": "1234.6", "measurand": "Energy.Active.Import.Register"}, 1235),
    ({"value": "2.5", "unit": "kWh"}, 2500),
    ({"value": "2.5", "unit": "kWh", "phase": "L1"}, None),                       # per phase
    ({"value": "abc"}, None),
    ({"value": "nan"}, None),
    ({"value": "inf"}, None),
    ({"value": "1e30"}, None),                                                    # does not fit a bigint
    ({"value": "1e16", "unit": "kWh"}, None),                                     # ... once in Wh
    ({"value": "12", "format": "SignedData"}, None),
    ({"value": "7200", "measurand": "Power.Active.Import", "unit": "W"}, None),
    ({"value": "10", "unit": "varh"}, None),
])
def test_energy_register_reading(sample, wh):
    assert rules.energy_register_wh(mv(NOW, sample)) == wh


def test_newest_register_reading_is_by_the_readings_own_timestamp():
    values = [mv(NOW, {"value": "300"}), mv(PAST, {"value": "900"}), mv(FUTURE, {"value": "x"}),
              mv(NOW + timedelta(minutes=1), {"value": "5", "measurand": "Voltage", "unit": "V"}, {"value": "400"})]
    assert rules.newest_register_reading(values, NOW, 300) == (NOW + timedelta(minutes=1), 400)
    assert rules.newest_register_reading([mv(NOW, {"value": "5", "unit": "V", "measurand": "Voltage"})],
                                         NOW, 300) is None


def test_a_reading_dated_beyond_the_clock_skew_is_ordered_by_when_it_was_received():
    wild = datetime(2099, 1, 1, tzinfo=timezone.utc)
    received = NOW + timedelta(seconds=10)
    assert rules.newest_register_reading([mv(wild, {"value": "100"})], received, 300) == (received, 100)
    # in one MeterValues: the 2099 reading counts as received, after a reading taken before that
    assert rules.newest_register_reading([mv(wild, {"value": "100"}), mv(NOW, {"value": "90"})],
                                         received, 300) == (received, 100)
    assert rules.newest_register_reading([mv(NOW + timedelta(seconds=60), {"value": "7"})], NOW, 300) == (
        NOW + timedelta(seconds=60), 7)                                   # within the skew: as dated
    assert rules.beyond_skew([NOW, wild, NOW + timedelta(seconds=301)], NOW, 300) == [
        wild, NOW + timedelta(seconds=301)]
    assert rules.beyond_skew([NOW + timedelta(seconds=300)], NOW, 300) == []



def test_readings_beyond_the_skew_in_one_call_keep_their_own_order():
    """Several readings dated beyond the skew all count as received then: the newest by their own clock is the
    last reading, then the last listed (max() kept the first of equal keys: the oldest of a buffered batch)."""
    received = NOW + timedelta(seconds=10)
    early, late = datetime(2099, 1, 1, tzinfo=timezone.utc), datetime(2099, 1, 1, 0, 5, tzinfo=timezone.utc)
    assert rules.newest_register_reading([mv(early, {"value": "100"}), mv(late, {"value": "150"})],
                                         received, 300) == (received, 150)
    assert rules.newest_register_reading([mv(late, {"value": "150"}), mv(early, {"value": "100"})],
                                         received, 300) == (received, 150)
    assert rules.newest_register_reading([mv(early, {"value": "100"}), mv(early, {"value": "120"})],
                                         received, 300) == (received, 120)
    assert rules.newest_register_reading([mv(NOW, {"value": "1"}), mv(NOW, {"value": "2"})], received, 300) == (
        NOW, 2)

# ---- reconciliation ---------------------------------------------------------------------------------
@pytest.mark.parametrize("meter_start, meter_stop, problem", [
    (1000, None, None), (1000, 1000, None), (1000, 5000, None), (-50, 0, None),
    (1000, 10, "below the transaction's meter_start 1000"), (0, 2 ** 62, "beyond"),
    (-2 ** 62 + 1, 2 ** 62 - 1, None), (-2 ** 63, 2 ** 62 - 1, "beyond"),  # (a meterStart recorded before the bound)
])
def test_an_operators_meter_stop_is_never_below_the_start(meter_start, meter_stop, problem):
    found = rules.operator_meter_stop_problem(meter_start, meter_stop)
    assert (found is None) if problem is None else (problem in found)


def test_estimated_stop_is_never_before_the_start():
    assert rules.estimated_stop_time(NOW, FUTURE) == FUTURE
    assert rules.estimated_stop_time(NOW, PAST) == NOW


@pytest.mark.parametrize("status, connector, reason", [
    ("Available", 1, "connector_available"), ("Unavailable", 2, "connector_unavailable"),
    ("Available", 0, None), ("Charging", 1, None), ("Finishing", 1, None), ("Faulted", 1, None),
    ("Preparing", 1, None), ("SuspendedEV", 1, None), ("Reserved", 1, None),
])
def test_only_a_free_connector_closes_transactions(status, connector, reason):
    assert rules.free_status_reason(status, connector) == reason


def test_ordered_instant_ignores_a_clock_too_far_ahead():
    assert rules.ordered_instant(PAST, NOW, 300) == PAST
    assert rules.ordered_instant(NOW + timedelta(seconds=300), NOW, 300) == NOW + timedelta(seconds=300)
    assert rules.ordered_instant(NOW + timedelta(seconds=301), NOW, 300) == NOW
    assert rules.ordered_instant(None, NOW, 300) == NOW


def test_status_instant():
    received = NOW
    assert rules.status_instant(PAST, FUTURE, received, 300) == PAST                 # the stations service's
    assert rules.status_instant(None, PAST, received, 300) == PAST                   # the charge point's
    assert rules.status_instant(None, NOW + timedelta(seconds=299), received, 300) == NOW + timedelta(seconds=299)
    assert rules.status_instant(None, datetime(2099, 1, 1, tzinfo=timezone.utc), received, 300) == received
    assert rules.status_instant(None, None, received, 300) == received


# ---- reservations -----------------------------------------------------------------------------------
RESERVATIONS = [Reservation(1, 1, "TAG1"), Reservation(2, 2, "OTHER", "GROUP"), Reservation(3, 0, "TAG3"),
                Reservation(4, 2, "TAG4")]


@pytest.mark.parametrize("connector, tag, parent, named, expected", [
    (2, "x", None, 4, 4),              # the one it names, whatever the tag
    (2, "x", None, 99, None),          # named but not held
    (1, "tag1", None, None, 1),        # same tag (case-insensitive), same connector
    (2, "TAG1", None, None, None),     # same tag, another connector
    (5, "TAG3", None, None, 3),        # connector 0 reservations end on any connector
    (2, "MEMBER", "group", None, 2),   # the same parent id tag
    (2, "MEMBER", None, None, None),
])
def test_reservation_a_start_consumes(connector, tag, parent, named, expected):
    found = rules.reservation_to_consume(RESERVATIONS, connector, tag, parent, named)
    assert (found.reservation_id if found else None) == expected


# ---- bounds -----------------------------------------------------------------------------------------
def test_values_that_cannot_be_stored_are_named():
    assert rules.out_of_range({"connectorId": 2 ** 31 - 1, "reservationId": None}, {"meterStart": -2 ** 62 + 1}) is None
    assert rules.out_of_range({"connectorId": 2 ** 31}) == "connectorId"
    # meter readings within +-(2^62 - 1) Wh: the energy (their difference) always fits in 64 bits
    assert rules.out_of_range({"a": 1}, {"meterStop": 2 ** 62 - 1}) is None
    assert rules.out_of_range({"a": 1}, {"meterStop": 2 ** 62}) == "meterStop"
    assert rules.out_of_range({"a": 1}, {"meterStart": -2 ** 62}) == "meterStart"
    assert not rules.unstorable_text({"idTag": "ABC", "v": [1, "x", {"k": None}]})
    assert rules.unstorable_text({"idTag": "A\x00"})
    assert rules.unstorable_text([{"value": "\udc80"}])


# ---- partitions -------------------------------------------------------------------------------------
def test_partition_names_and_windows():
    day = date(2026, 11, 25)
    assert rules.partition_name(day) == "tx_meter_values_p20261125"
    assert rules.partition_day("tx_meter_values_p20261125") == day
    assert rules.partition_day("tx_meter_values_default") is None
    assert rules.partition_day("tx_meter_values_p2026xx25") is None
    assert rules.partitions_wanted(day, 2) == [date(2026, 11, 24), day, date(2026, 11, 26), date(2026, 11, 27)]
    assert rules.retention_cutoff(day, 0) is None
    assert rules.retention_cutoff(day, 30) == date(2026, 10, 26)
    existing = [date(2026, 10, 25), date(2026, 10, 26), day]
    assert rules.partitions_to_drop(existing, date(2026, 10, 26)) == [date(2026, 10, 25)]
    assert rules.partitions_to_drop(existing, None) == []
