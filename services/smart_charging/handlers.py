"""Smart charging handlers: one function per OCPP command, event and API operation (thin; the rules are in
``rules.py`` and ``csms.charging``, the records in ``store.py``, site balancing in ``balancing.py``)."""
from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
from datetime import datetime
from typing import Any

from csms.charging import (
    PRESETS, ProfileRejected, StoredProfile, TxInfo, apply_clear, apply_set, compute_composite, parse_datetime,
    resolve, transaction_disagreement, validate_profile,
)
from csms.charging.compare import compare
from csms.charging.conventions import Conventions
from csms.client import ApiCallFailed
from csms.contracts.api.smart_charging import (
    CapabilitiesView, ChargePointParams, ChargePointPresetParams, ChargePointView, CompositeReportView,
    CompositeScheduleParams, CompositeScheduleView, CompositeServerView, DefaultPresetParams, DefaultPresetView,
    DeletedPreset, DeletedRule, DeletedSite, ElectricalParams, ElectricalView, ListPresetRulesParams,
    ListPresetsParams, ListProfilesParams, ListSitesParams, PresetDefinition, PresetNameParams, PresetRuleParams,
    PresetRuleView, PresetsView, PresetView, ProfileView, PutPresetParams, PutSiteParams, RemovedMember,
    ReportsParams, RuleIdParams, SiteIdParams, SiteMemberParams, SitePlanView, SiteView,
)
from csms.contracts.base import format_utc, utc_now
from csms.contracts.bus import CommandResult
from csms.contracts.events import (
    MeterValuesReceived, ScheduleMismatch, StationBooted, TransactionStarted,
    TransactionStopped,
)
from csms.contracts.ocpp16 import (
    ClearChargingProfileRequest, GetCompositeScheduleRequest, SetChargingProfileRequest,
)
from csms.service import ApiContext, ApiError, CommandContext, Service, ServiceContext
from services.smart_charging import balancing, rules
from services.smart_charging.publish import profile_lock, publish_changes
from services.smart_charging.configuration import known_charge_point, learn_configuration
from services.smart_charging.store import LockBusy, PgStore

log = logging.getLogger(__name__)

# the store changes no session state (at most transaction-level advisory locks): no session reset after each
# query, which would be a second round trip to PostgreSQL for every one
service = Service("smart_charging", database_reset_session=False)

API_TIMEOUT = 5.0  # seconds to wait for another service's API


class ServiceUnavailable(Exception):
    """Another service's API did not answer (not running, or too slow)."""


def store(ctx: ServiceContext) -> PgStore:
    return PgStore(ctx.db)


# ---- what the service needs to know --------------------------------------------------------------
async def conventions_of(ctx: ServiceContext, cp: str, preset: str | None = None):
    """``(choice, conventions, record)`` for a charge point; ``preset`` overrides the choice (KeyError)."""
    st = store(ctx)
    record = await st.charge_point(cp)
    custom = await st.custom_presets()
    if preset is not None:
        return rules.Choice(preset, "request"), resolve(preset, custom), record
    choice, conventions = rules.conventions_for(
        operator_choice=record.preset, vendor=record.vendor, model=record.model, firmware=record.firmware_version,
        rules=await st.rules(), default=await st.setting("default_preset", rules.DEFAULT_PRESET), custom=custom)
    return choice, conventions, record


async def transactions_api(ctx: ServiceContext, cp: str) -> dict[int, TxInfo]:
    """connector id -> active transaction, from the transactions service; raises ServiceUnavailable."""
    try:
        rows = await ctx.api("transactions", "active_transactions", timeout=API_TIMEOUT, charge_point_id=cp)
    except ApiCallFailed as exc:
        raise ServiceUnavailable(str(exc)) from None
    result: dict[int, TxInfo] = {}
    for row in rows or []:
        try:
            connector_id = int(row["connector_id"])
            tx = TxInfo(int(row["transaction_id"]), parse_datetime(row["start"]))
        except (KeyError, TypeError, ValueError):
            log.warning("ignoring malformed active transaction %r of %s", row, cp)
            continue
        if connector_id not in result or tx.start > result[connector_id].start:
            result[connector_id] = tx
    return result


async def active_transactions(ctx: ServiceContext, cp: str) -> dict[int, TxInfo]:
    """connector id -> active transaction: the transactions service's, else this service's own records (from
    its events), said so in a warning on a command."""
    try:
        return await transactions_api(ctx, cp)
    except ServiceUnavailable as exc:
        note = f"the transactions service did not answer ({exc}); its transactions as this service recorded them"
        if isinstance(ctx, CommandContext):
            ctx.warn(note)
        else:
            log.warning("%s: %s", cp, note)
        return await store(ctx).active_transactions(cp)


async def station_connectors(ctx: ServiceContext, cp: str) -> list[int]:
    """Connector ids (> 0) the station reported; [] when unknown."""
    try:
        station = await ctx.api("stations", "get_station", timeout=API_TIMEOUT, charge_point_id=cp)
    except ApiCallFailed as exc:
        log.info("no connector list for %s: %s", cp, exc)
        return []
    ids = []
    for key in (station or {}).get("connectors", {}):
        with contextlib.suppress(TypeError, ValueError):
            if int(key) > 0:
                ids.append(int(key))
    return ids


async def server_schedule(ctx: ServiceContext, cp: str, connector_id: int, duration: int, unit: str | None,
                          start: datetime, preset: str | None = None) -> dict[str, Any]:
    """The GetCompositeSchedule.conf predicted from the records, with the preset and settings it used."""
    choice, conventions, record = await conventions_of(ctx, cp, preset)
    profiles = await store(ctx).profiles(cp)

    connectors = record.capabilities.connectors
    if connector_id == 0:
        active, reported = await asyncio.gather(active_transactions(ctx, cp), station_connectors(ctx, cp))
        known = set(reported) | set(active) | {s.connector_id for s in profiles}
        if connectors:
            known |= set(range(1, connectors + 1))
            known = {c for c in known if c <= connectors}
        connector_ids = sorted(c for c in known if c > 0) or [1]
    else:
        active, connector_ids = await active_transactions(ctx, cp), None
    composite = compute_composite(
        profiles, connector_id=connector_id, start=start, duration=duration, unit=unit, connector_ids=connector_ids,
        transactions=active, electrical=record.electrical, conventions=conventions, preset=choice.preset,
        connectors=connectors)
    source = choice.source if choice.rule_id is None else f"rule:{choice.rule_id}"
    return rules.server_view(composite, connector_id, source)


# ---- commands -------------------------------------------------------------------------------------
@service.command("SetChargingProfile")
async def set_charging_profile(ctx: CommandContext, req: SetChargingProfileRequest) -> CommandResult:
    cp = ctx.charge_point_id
    payload = copy.deepcopy(ctx.command.payload)  # forwarded as received: numbers keep their JSON type
    connector_id: int = payload["connectorId"]
    profile: dict[str, Any] = payload["csChargingProfiles"]
    is_tx_profile = profile.get("chargingProfilePurpose") == rules.TX_PROFILE

    st = store(ctx)
    await known_charge_point(ctx, cp)
    _, conventions, record = await conventions_of(ctx, cp)
    try:
        rules.check_set_profile(await st.profiles(cp), connector_id, profile, capabilities=record.capabilities,
                                conventions=conventions)
    except ProfileRejected as exc:
        return ctx.refuse(exc.reason, {"connectorId": connector_id,
                                       "chargingProfileId": profile.get("chargingProfileId")})
    refusal = await _site_conflict(ctx, cp, connector_id, profile, record.capabilities.max_stack_level)
    if refusal:
        return ctx.refuse(refusal, {"connectorId": connector_id, "chargingProfileId": profile.get("chargingProfileId")})
    # the operator's command goes out as given; only the stored copy may say more (the transaction it binds to)
    stored_profile = profile
    if is_tx_profile:
        # what the records say of the connector's transaction is a warning: the charge point decides
        tx = (await active_transactions(ctx, cp)).get(connector_id)
        disagreement = transaction_disagreement(connector_id, profile, tx.transaction_id if tx else None)
        if disagreement:
            ctx.warn(disagreement)
        if profile.get("transactionId") is None and tx is not None:
            stored_profile = {**profile, "transactionId": tx.transaction_id}
            ctx.warn(rules.unbound_tx_profile(connector_id, tx.transaction_id))

    def install(profiles: list[StoredProfile], stopped: set[int]):
        if is_tx_profile and stored_profile.get("transactionId") in stopped:
            return profiles, None
        return apply_set(profiles, connector_id, stored_profile)

    try:
        async with profile_lock(ctx, cp, ctx.command.timeout):
            result = await ctx.forward(payload)
            if not (result.ok and (result.payload or {}).get("status") == "Accepted"):
                return result
            new_and_replaced = await st.update_profiles(cp, install)
    except LockBusy:
        return _busy(ctx)
    if new_and_replaced is None:
        log.info("%s: TxProfile %s accepted after transaction %s stopped; not stored", cp,
                 profile["chargingProfileId"], stored_profile.get("transactionId"))
        return result
    new_id = int(profile["chargingProfileId"])
    gone = [s for s in new_and_replaced if not (s.connector_id == connector_id and s.profile_id == new_id)]
    await publish_changes(ctx, cp, "cleared", gone)
    await publish_changes(ctx, cp, "set", [StoredProfile(connector_id, stored_profile)])
    return result


async def _site_conflict(ctx: CommandContext, cp: str, connector_id: int, profile: dict[str, Any],
                         max_stack_level: int | None) -> str | None:
    """The refusal of a profile that would replace or override the charge point's site cap (a warning for one
    it prevails over); None for a charge point in no site."""
    site_id = await store(ctx).site_of(cp)
    loaded = None if site_id is None else await store(ctx).site(site_id)
    if loaded is None:
        return None
    level = rules.site_stack_level(loaded[2], max_stack_level)
    refusal, warning = rules.site_conflict(connector_id, profile, site_id=loaded[0].site_id, level=level)
    if warning:
        ctx.warn(warning)
    return refusal


def _busy(ctx: CommandContext) -> CommandResult:
    return CommandResult(status="timeout", charge_point_id=ctx.charge_point_id, action=ctx.command.action,
                         error_description="another charging profile command for this charge point is in progress")


@service.command("ClearChargingProfile")
async def clear_charging_profile(ctx: CommandContext, req: ClearChargingProfileRequest) -> CommandResult:
    if req.connector_id is not None and req.connector_id < 0:
        return ctx.refuse("connectorId must not be negative")
    if req.stack_level is not None and req.stack_level < 0:
        return ctx.refuse("stackLevel must not be negative")
    cp = ctx.charge_point_id
    st = store(ctx)
    criteria = dict(profile_id=req.id, connector_id=req.connector_id, purpose=req.charging_profile_purpose,
                    stack_level=req.stack_level)

    def clear(profiles: list[StoredProfile], stopped: set[int]):
        return apply_clear(profiles, **criteria)

    _, conventions, _ = await conventions_of(ctx, cp)
    _, expected_removed = apply_clear(await st.profiles(cp), **criteria)
    predicted = rules.predicted_clear_status(expected_removed, conventions,
                                             any(v is not None for v in criteria.values()))
    try:
        async with profile_lock(ctx, cp, ctx.command.timeout):
            result = await ctx.forward()
            answered = (result.payload or {}).get("status") if result.ok else None
            removed = await st.update_profiles(cp, clear) if answered == "Accepted" else []
    except LockBusy:
        return _busy(ctx)
    if answered is not None and answered != predicted:
        ctx.warn(f"the charge point answered {answered}; the profiles recorded for it predicted {predicted}")
    await publish_changes(ctx, cp, "cleared", removed)
    site_id = await st.site_of(cp) if rules.site_cap_cleared(removed) else None
    if site_id is not None:
        # the operator's clear is done; the site's fuse must hold: its cap goes back at once
        await st.set_cap(cp, None)
        outcome = await balancing.rebalance(ctx, site_id, reason=f"site cap of {cp} cleared", cause=cp)
        status = outcome.get("pushed", {}).get(cp, outcome.get("skipped", "not pushed"))
        ctx.warn(f"the cap of site {site_id!r} was cleared with the other profiles and pushed again ({status})")
    return result


@service.command("GetCompositeSchedule")
async def get_composite_schedule(ctx: CommandContext, req: GetCompositeScheduleRequest) -> CommandResult:
    if req.connector_id < 0:
        return ctx.refuse("connectorId must not be negative")
    if req.duration <= 0:
        return ctx.refuse("duration must be a positive number of seconds")
    cp = ctx.charge_point_id
    await known_charge_point(ctx, cp)   # NumberOfConnectors: a connector it does not have is Rejected
    start = utc_now()
    forwarded = asyncio.create_task(ctx.forward())
    try:
        server = await server_schedule(ctx, cp, req.connector_id, req.duration, req.charging_rate_unit, start)
    except Exception:  # noqa: BLE001 - the charge point's answer must still reach the caller
        log.exception("%s: server-side composite schedule failed", cp)
        server = None
    result = await forwarded
    if server is not None and result.ok:
        server = await _report(ctx, cp, req, start, server, result.payload)
    if server is not None:   # what result.server is typed as (csms.contracts.bus.server_views)
        server = CompositeServerView.model_validate(server).model_dump(mode="json")
    return result.model_copy(update={"server": server})


async def _report(ctx: ServiceContext, cp: str, req: GetCompositeScheduleRequest, start: datetime,
                  server: dict[str, Any], reported: dict[str, Any] | None) -> dict[str, Any]:
    """Keep the charge point's answer next to the prediction; publish a mismatch when they disagree."""
    record = await store(ctx).charge_point(cp)
    predicted = rules.ocpp_part(server)
    truncated = server["conventions"].get("truncated")
    differences = compare(predicted, reported, start=start, duration=req.duration, electrical=record.electrical,
                          truncated=truncated is not None)
    preset = server["conventions"]["preset"]
    unit = req.charging_rate_unit or ((predicted or {}).get("chargingSchedule") or {}).get("chargingRateUnit")
    report_id = await store(ctx).add_report(cp, req.connector_id, start, req.duration, unit, preset, predicted,
                                            reported, differences, truncated)
    if differences:
        log.info("%s: composite schedule of connector %s differs from the %s prediction: %s", cp, req.connector_id,
                 preset, differences[:3])
        await ctx.publish(ScheduleMismatch(charge_point_id=cp, connector_id=req.connector_id, report_id=report_id,
                                           preset=preset, differences=differences))
    return {**server, "report": {"report_id": report_id, "mismatch": bool(differences), "differences": differences,
                                 "truncated": truncated}}


# ---- events ---------------------------------------------------------------------------------------
@service.event(StationBooted)
async def on_station_booted(ctx: ServiceContext, event: StationBooted) -> None:
    """Remember what the charge point is (for the boot rules); with SMART_CHARGING_READ_CONFIGURATION=on_boot
    also read its smart-charging limits now (otherwise before its first SetChargingProfile)."""
    cp = event.charge_point_id
    await store(ctx).set_boot(cp, event.vendor, event.model, event.firmware_version)
    if event.status != "Rejected" and ctx.settings.sc_read_configuration == "on_boot":
        await learn_configuration(ctx, cp, every=5.0)


@service.event(TransactionStarted)
async def on_transaction_started(ctx: ServiceContext, event: TransactionStarted) -> None:
    """Record the transaction; install the RemoteStart profile as its TxProfile; rebalance its site."""
    cp = event.charge_point_id
    if event.authorization_status != "Accepted":
        return  # the charge point stops a transaction that was not accepted
    st = store(ctx)
    await st.transaction_started(cp, event.transaction_id, event.connector_id, event.timestamp)
    if event.charging_profile is not None:
        await _install_remote_start_profile(ctx, event)
    site_id = await st.site_of(cp)
    if site_id is not None:
        await balancing.rebalance(ctx, site_id, reason=f"transaction {event.transaction_id} started", cause=cp)


async def _install_remote_start_profile(ctx: ServiceContext, event: TransactionStarted) -> None:
    cp, connector_id = event.charge_point_id, event.connector_id
    profile = {**event.charging_profile, "transactionId": event.transaction_id}
    try:
        validate_profile(connector_id, profile)
    except ProfileRejected as exc:
        log.warning("%s: RemoteStart profile of transaction %s not recorded: %s", cp, event.transaction_id,
                    exc.reason)
        return

    def install(profiles: list[StoredProfile], stopped: set[int]):
        if event.transaction_id in stopped:
            return profiles, None
        return apply_set(profiles, connector_id, profile)

    new_and_replaced = await store(ctx).update_profiles(cp, install, source="remote_start")
    if new_and_replaced is None:
        return
    new_id = int(profile["chargingProfileId"])
    gone = [s for s in new_and_replaced if not (s.connector_id == connector_id and s.profile_id == new_id)]
    await publish_changes(ctx, cp, "cleared", gone)
    await publish_changes(ctx, cp, "set", [StoredProfile(connector_id, profile)])


@service.event(TransactionStopped)
async def on_transaction_stopped(ctx: ServiceContext, event: TransactionStopped) -> None:
    """A TxProfile lives as long as its transaction (OCPP 1.6 §3.13.1); the site gets the capacity back."""
    cp = event.charge_point_id
    st = store(ctx)
    await st.transaction_stopped(cp, event.transaction_id, event.connector_id, event.timestamp)

    def discard(profiles: list[StoredProfile], stopped: set[int]):
        ending = rules.tx_profiles_ending(profiles, event.transaction_id, event.connector_id)
        return [s for s in profiles if s not in ending], ending

    removed = await st.update_profiles(cp, discard)
    if removed:
        log.info("%s: discarded TxProfiles %s of stopped transaction %s", cp, [s.profile_id for s in removed],
                 event.transaction_id)
    await publish_changes(ctx, cp, "cleared", removed)
    site_id = await st.site_of(cp)
    if site_id is not None:
        await balancing.rebalance(ctx, site_id, reason=f"transaction {event.transaction_id} stopped", cause=cp)


@service.event(MeterValuesReceived)
async def on_meter_values(ctx: ServiceContext, event: MeterValuesReceived) -> None:
    """What a charge point draws; a site member drawing clearly less (or again up to) its cap is rebalanced."""
    if event.transaction_id is None:
        return
    draw = rules.draw_from_meter_values(event)
    if draw.amps is None and draw.watts is None:
        return
    at = rules.draw_instant(draw.at, utc_now(), ctx.settings.clock_skew)
    site_id = await store(ctx).measured(event.charge_point_id, event.transaction_id, draw.amps, draw.watts, at)
    if site_id is not None and await balancing.draw_changed(ctx, site_id, event.charge_point_id):
        await balancing.rebalance(ctx, site_id, reason="meter values", cause=event.charge_point_id)


@service.on_startup
async def start_planner(svc: Service) -> None:
    balancing.start_planner(svc)


@service.on_shutdown
async def stop_planner(svc: Service) -> None:
    await balancing.stop_planner(svc)


# ---- API: profiles and composites ------------------------------------------------------------------
@service.api("list_profiles")
async def api_list_profiles(ctx: ApiContext, params: ListProfilesParams) -> list[ProfileView]:
    """Stored profiles ``[{connector_id, profile}]`` in installation order; ``connector_id`` filters on the
    connector a profile is installed on (0 = station-wide ones only)."""
    return [ProfileView(connector_id=s.connector_id, profile=s.profile)
            for s in await store(ctx).profiles(params.charge_point_id)
            if params.connector_id is None or s.connector_id == params.connector_id]


@service.api("composite_schedule")
async def api_composite_schedule(ctx: ApiContext, params: CompositeScheduleParams) -> CompositeScheduleView:
    """The server-side composite schedule (GetCompositeSchedule.conf shape + ``conventions``) without asking
    the charge point; ``preset`` computes it with another preset than the charge point's."""
    try:
        view = await server_schedule(ctx, params.charge_point_id, params.connector_id, params.duration,
                                     params.charging_rate_unit, params.start or utc_now(), params.preset)
    except KeyError:
        raise ApiError(f"unknown preset {params.preset!r}", 404) from None
    return CompositeScheduleView.model_validate(view)


@service.api("list_composite_reports")
async def api_list_composite_reports(ctx: ApiContext, params: ReportsParams) -> list[CompositeReportView]:
    """GetCompositeSchedule answers kept next to their predictions, newest first."""
    rows = await store(ctx).reports(params.charge_point_id, params.limit)
    return [CompositeReportView.model_validate({**row, "requested_at": format_utc(row["requested_at"])})
            for row in rows]


@service.api("set_electrical")
async def api_set_electrical(ctx: ApiContext, params: ElectricalParams) -> ElectricalView:
    """The station's supply, for A <-> W conversion: ``voltage`` (V) and ``phases`` (1..3)."""
    await store(ctx).set_electrical(params.charge_point_id, float(params.voltage), params.phases)
    return ElectricalView(charge_point_id=params.charge_point_id, voltage=float(params.voltage), phases=params.phases)


@service.api("get_electrical")
async def api_get_electrical(ctx: ApiContext, params: ChargePointParams) -> ElectricalView:
    electrical = (await store(ctx).charge_point(params.charge_point_id)).electrical
    return ElectricalView(charge_point_id=params.charge_point_id, voltage=electrical.voltage, phases=electrical.phases)


# ---- API: conventions ---------------------------------------------------------------------------------
async def _known_preset(ctx: ServiceContext, name: str) -> None:
    if name not in PRESETS and name not in await store(ctx).custom_presets():
        raise ApiError(f"unknown preset {name!r}; presets: {', '.join([*PRESETS, *await store(ctx).custom_presets()])}",
                       404)


@service.api("list_presets")
async def api_list_presets(ctx: ApiContext, params: ListPresetsParams) -> PresetsView:
    """Every preset with its settings, and the global default."""
    custom = await store(ctx).custom_presets()
    presets = {name: PresetView(builtin=True, settings=conv) for name, conv in PRESETS.items()}
    for name, definition in custom.items():
        view = PresetView(builtin=False, base=definition["base"], overrides=definition["settings"])
        try:
            view.settings = resolve(name, custom)
        except (KeyError, ValueError) as exc:
            view.error = str(exc)
        presets[name] = view
    return PresetsView(default=await store(ctx).setting("default_preset", rules.DEFAULT_PRESET), presets=presets)


@service.api("put_preset")
async def api_put_preset(ctx: ApiContext, params: PutPresetParams) -> PresetDefinition:
    """Define (or redefine) a custom preset: a built-in ``base`` with some settings changed."""
    if params.name in PRESETS:
        raise ApiError(f"{params.name!r} is a built-in preset", 409)
    if params.base not in PRESETS:
        raise ApiError(f"base must be one of {', '.join(PRESETS)}")
    try:
        conventions = Conventions.from_settings(params.settings, PRESETS[params.base])
    except ValueError as exc:
        raise ApiError(str(exc)) from None
    await store(ctx).put_preset(params.name, params.base, params.settings)
    return PresetDefinition(name=params.name, base=params.base, settings=conventions)


@service.api("delete_preset")
async def api_delete_preset(ctx: ApiContext, params: PresetNameParams) -> DeletedPreset:
    if await store(ctx).preset_in_use(params.name):
        raise ApiError(f"preset {params.name!r} is in use (a charge point, a rule or the default)", 409)
    if not await store(ctx).delete_preset(params.name):
        raise ApiError(f"unknown custom preset {params.name!r}", 404)
    return DeletedPreset(name=params.name, deleted=True)


@service.api("set_default_preset")
async def api_set_default_preset(ctx: ApiContext, params: DefaultPresetParams) -> DefaultPresetView:
    """The preset used for charge points without a choice of their own or a matching boot rule."""
    await _known_preset(ctx, params.preset)
    await store(ctx).set_setting("default_preset", params.preset)
    return DefaultPresetView(default=params.preset)


@service.api("set_charge_point_preset")
async def api_set_charge_point_preset(ctx: ApiContext, params: ChargePointPresetParams) -> ChargePointView:
    """The operator's preset for one charge point (None: back to the automatic choice)."""
    if params.preset is not None:
        await _known_preset(ctx, params.preset)
    await store(ctx).set_preset(params.charge_point_id, params.preset)
    return await api_get_charge_point(ctx, ChargePointParams(charge_point_id=params.charge_point_id))


@service.api("get_charge_point")
async def api_get_charge_point(ctx: ApiContext, params: ChargePointParams) -> ChargePointView:
    """What smart charging knows of a charge point: its preset and why, its advertised limits, its supply."""
    choice, conventions, record = await conventions_of(ctx, params.charge_point_id)
    capabilities = record.capabilities
    return ChargePointView(
        charge_point_id=params.charge_point_id, preset=choice.preset, preset_source=choice.source,
        rule_id=choice.rule_id, operator_preset=record.preset, settings=conventions,
        vendor=record.vendor, model=record.model, firmware_version=record.firmware_version,
        voltage=record.electrical.voltage, phases=record.electrical.phases,
        configuration=record.configuration, unknown_keys=record.unknown_keys,
        configuration_at=format_utc(record.configuration_at) if record.configuration_at else None,
        capabilities=CapabilitiesView(
            max_stack_level=capabilities.max_stack_level,
            allowed_units=list(capabilities.allowed_units) if capabilities.allowed_units else None,
            max_periods=capabilities.max_periods, max_profiles=capabilities.max_profiles,
            connectors=capabilities.connectors, phase_switch=capabilities.phase_switch),
        site_id=await store(ctx).site_of(params.charge_point_id),
    )


@service.api("refresh_configuration")
async def api_refresh_configuration(ctx: ApiContext, params: ChargePointParams) -> ChargePointView:
    """Read the charge point's smart-charging configuration keys again now."""
    if not await learn_configuration(ctx, params.charge_point_id, every=0):
        raise ApiError("the charge point did not answer GetConfiguration", 409)
    return await api_get_charge_point(ctx, params)


@service.api("add_preset_rule")
async def api_add_preset_rule(ctx: ApiContext, params: PresetRuleParams) -> PresetRuleView:
    """Choose ``preset`` for charge points whose BootNotification matches the (shell-style) patterns."""
    await _known_preset(ctx, params.preset)
    rule_id = await store(ctx).add_rule(params.preset, params.vendor, params.model, params.firmware, params.priority)
    return PresetRuleView(rule_id=rule_id, **params.model_dump())


@service.api("list_preset_rules")
async def api_list_preset_rules(ctx: ApiContext, params: ListPresetRulesParams) -> list[PresetRuleView]:
    return [PresetRuleView(**vars(rule)) for rule in await store(ctx).rules()]


@service.api("delete_preset_rule")
async def api_delete_preset_rule(ctx: ApiContext, params: RuleIdParams) -> DeletedRule:
    if not await store(ctx).delete_rule(params.rule_id):
        raise ApiError(f"unknown rule {params.rule_id}", 404)
    return DeletedRule(rule_id=params.rule_id, deleted=True)


# ---- API: sites ------------------------------------------------------------------------------------
@service.api("put_site")
async def api_put_site(ctx: ApiContext, params: PutSiteParams) -> SiteView:
    """Create or change a site: a limit per phase (A) or in total (W), optionally varying in time."""
    return await balancing.put_site(ctx, params)


@service.api("get_site")
async def api_get_site(ctx: ApiContext, params: SiteIdParams) -> SiteView:
    return await balancing.site_view(ctx, params.site_id)


@service.api("list_sites")
async def api_list_sites(ctx: ApiContext, params: ListSitesParams) -> list[str]:
    """Site ids in order, ``limit`` at a time; ``after`` = the last id of the previous page."""
    return await store(ctx).site_ids(params.after, params.limit)


@service.api("delete_site")
async def api_delete_site(ctx: ApiContext, params: SiteIdParams) -> DeletedSite:
    """Forget a site (the caps its members hold stay until replaced or cleared)."""
    if not await store(ctx).delete_site(params.site_id):
        raise ApiError(f"unknown site {params.site_id!r}", 404)
    return DeletedSite(site_id=params.site_id, deleted=True)


@service.api("add_site_member")
async def api_add_site_member(ctx: ApiContext, params: SiteMemberParams) -> SiteView:
    """Put a charge point under a site (moving it from another one) and rebalance."""
    return await balancing.add_member(ctx, params)


@service.api("remove_site_member")
async def api_remove_site_member(ctx: ApiContext, params: ChargePointParams) -> RemovedMember:
    site_id = await store(ctx).remove_member(params.charge_point_id)
    if site_id is None:
        raise ApiError(f"{params.charge_point_id!r} is in no site", 404)
    await balancing.rebalance(ctx, site_id, reason="member removed")
    return RemovedMember(charge_point_id=params.charge_point_id, site_id=site_id, removed=True)


@service.api("site_plan")
async def api_site_plan(ctx: ApiContext, params: SiteIdParams) -> SitePlanView:
    """Dry run: the caps a rebalance would push now, and why (nothing is sent)."""
    return SitePlanView.model_validate(await balancing.rebalance(ctx, params.site_id, reason="dry run", dry_run=True))


@service.api("rebalance_site")
async def api_rebalance_site(ctx: ApiContext, params: SiteIdParams) -> SitePlanView:
    return SitePlanView.model_validate(await balancing.rebalance(ctx, params.site_id, reason="operator"))
