"""Parameters and results of the smart_charging service's API operations (``smart_charging.<operation>``)."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema, field_validator, model_serializer

from csms.charging.composite import check_start
from csms.charging.conventions import Conventions
from csms.contracts.base import UtcDatetime

# a composite window or a site limit step starts between 1970-01-01 and 9000-01-01 (UTC)
BoundedUtc = Annotated[UtcDatetime, AfterValidator(check_start)]

ChargePointId = Field(min_length=1, max_length=255)
MAX_LIMIT = 1e9
PresetName = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ChargePointParams(Params):
    charge_point_id: str = ChargePointId


class ListProfilesParams(ChargePointParams):
    connector_id: int | None = Field(None, ge=0, le=1000)


class CompositeScheduleParams(ChargePointParams):
    connector_id: int = Field(ge=0, le=1000)
    duration: int = Field(ge=1, le=2**31 - 1)
    charging_rate_unit: Literal["A", "W"] | None = None
    start: BoundedUtc | None = None
    # compute with this preset instead of the charge point's
    preset: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")


class ElectricalParams(ChargePointParams):
    voltage: float = Field(gt=0, le=100_000, allow_inf_nan=False)
    phases: int = Field(ge=1, le=3, strict=True)

    @field_validator("voltage", mode="before")
    @classmethod
    def _number(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError("voltage must be a number")
        return value


class PutPresetParams(Params):
    name: str = PresetName
    base: str = Field("spec", min_length=1, max_length=64)
    settings: dict[str, Any] = Field(default_factory=dict, max_length=32)


class PresetNameParams(Params):
    name: str = PresetName


class DefaultPresetParams(Params):
    preset: str = PresetName


class ChargePointPresetParams(ChargePointParams):
    # None: back to the automatic choice (boot rules, else the default)
    preset: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")


class PresetRuleParams(Params):
    preset: str = PresetName
    vendor: str | None = Field(None, min_length=1, max_length=100)
    model: str | None = Field(None, min_length=1, max_length=100)
    firmware: str | None = Field(None, min_length=1, max_length=100)
    priority: int = Field(0, ge=-1000, le=1000)


class RuleIdParams(Params):
    rule_id: int = Field(ge=1)


class ListPresetsParams(Params):
    """No parameters (an unknown one is refused)."""


class ListPresetRulesParams(Params):
    """No parameters (an unknown one is refused)."""


SiteIdText = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
MAX_SITES_PAGE = 1000


class ListSitesParams(Params):
    after: str | None = Field(None, min_length=1, max_length=64, description="continue after this site id (pages)")
    limit: int = Field(100, ge=1, le=MAX_SITES_PAGE, description="at most this many sites, by id")


class ReportsParams(ChargePointParams):
    limit: int = Field(20, ge=1, le=500)


class SiteLimitStep(Params):
    start: BoundedUtc
    limit: float = Field(ge=0, le=MAX_LIMIT, allow_inf_nan=False)


class PutSiteParams(Params):
    site_id: str = SiteIdText
    name: str = Field("", max_length=200)
    unit: Literal["A", "W"]
    limit: float = Field(ge=0, le=MAX_LIMIT, allow_inf_nan=False)
    schedule: list[SiteLimitStep] = Field(default_factory=list, max_length=96)
    strategy: Literal["fair", "priority"] = "fair"
    stack_level: int | None = Field(None, ge=0, le=2**31 - 1)

    @field_validator("schedule")
    @classmethod
    def _ordered(cls, steps: list[SiteLimitStep]) -> list[SiteLimitStep]:
        starts = [step.start for step in steps]
        if starts != sorted(starts) or len(set(starts)) != len(starts):
            raise ValueError("schedule steps must have increasing start times")
        return steps


class SiteIdParams(Params):
    site_id: str = Field(min_length=1, max_length=64)


class SiteMemberParams(SiteIdParams):
    charge_point_id: str = ChargePointId
    priority: int = Field(0, ge=0, le=100)
    max_limit: float | None = Field(None, ge=0, le=MAX_LIMIT, allow_inf_nan=False)


# ---- results ----------------------------------------------------------------------------------------
# Times in results are UTC ISO-8601 text ("2024-01-01T00:00:00Z"), as the service formats them.
IsoText = Annotated[str, WithJsonSchema({"type": "string", "format": "date-time"})]


class View(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Compact(View):
    """A view whose optional fields are left out when empty (OCPP-shaped answers, and what only some have)."""

    @model_serializer(mode="wrap")
    def _without_empty(self, handler):  # no return annotation: the JSON schema stays the model's
        return {key: value for key, value in handler(self).items() if value is not None}


class ProfileView(View):
    connector_id: int = Field(description="the connector it is installed on (0: the whole charge point)")
    profile: dict[str, Any] = Field(description="OCPP csChargingProfiles, as the charge point accepted it")


class SchedulePeriodView(Compact):
    startPeriod: int
    limit: float
    numberPhases: int | None = None


class ChargingScheduleView(Compact):
    """OCPP ChargingSchedule (camelCase, as in GetCompositeSchedule.conf)."""
    duration: int | None = None
    startSchedule: IsoText | None = None
    chargingRateUnit: Literal["A", "W"]
    chargingSchedulePeriod: list[SchedulePeriodView]
    minChargingRate: float | None = None


class CompositeAnswer(Compact):
    """A GetCompositeSchedule.conf-shaped answer (predicted by the service)."""
    status: Literal["Accepted", "Rejected"]
    connectorId: int
    scheduleStart: IsoText | None = None
    chargingSchedule: ChargingScheduleView | None = None


class IgnoredProfile(View):
    chargingProfileId: int = Field(description="-1: a stored profile without a readable id")
    reason: str


class Truncation(View):
    at: IsoText = Field(description="where the composite ends, before the window asked for does")
    reason: str


class ConventionsUsed(Compact):
    """Which preset and settings computed a composite, why that preset, and what was left out."""
    preset: str
    source: str = Field(description="charge_point, rule:<id>, default or request")
    settings: Conventions
    requested_duration: int
    computed_duration: int
    ignored_profiles: list[IgnoredProfile]
    rejected: str | None = Field(None, description="why the charge point would answer Rejected")
    truncated: Truncation | None = None


class CompositeScheduleView(CompositeAnswer):
    conventions: ConventionsUsed


class Difference(View):
    """Where a charge point's GetCompositeSchedule answer disagrees with the prediction (``kind``, see README
    "Smart charging"); ``predicted`` / ``reported`` are what each says (null: nothing), ``at`` / ``until`` the
    span of a ``limit`` difference."""
    kind: Literal["status", "unreadable", "unit", "start", "end", "no_overlap", "limit"]
    predicted: Any = None
    reported: Any = None
    at: IsoText | None = None
    until: IsoText | None = None

    @model_serializer(mode="wrap")
    def _span_only_when_given(self, handler):  # no return annotation: the JSON schema stays the model's
        return {key: value for key, value in handler(self).items() if value is not None or key not in ("at", "until")}


class CompositeReportView(View):
    report_id: int
    charge_point_id: str
    connector_id: int
    requested_at: IsoText
    duration: int
    unit: str | None
    preset: str
    predicted: CompositeAnswer | None
    reported: dict[str, Any] | None = Field(description="the charge point's GetCompositeSchedule.conf, verbatim")
    differences: list[Difference]
    mismatch: bool
    truncated: Truncation | None = Field(description=(
        "where the prediction ends before the window asked for (its bounds): the answer after it is not compared"))


class ReportSummary(View):
    """The charge point's answer compared with the prediction (kept: ``list_composite_reports``)."""
    report_id: int
    mismatch: bool = Field(description="the answer disagrees with the prediction where it was compared")
    differences: list[Difference]
    truncated: Truncation | None = Field(description=(
        "where the prediction ends before the window asked for (its bounds): the answer after it is not compared"))


class CompositeServerView(CompositeScheduleView):
    """``result.server`` of a GetCompositeSchedule command: the composite the central system predicts
    (GetCompositeSchedule.conf shape + ``conventions``) and, when the charge point answered, ``report``."""
    report: ReportSummary | None = None


class ElectricalView(View):
    charge_point_id: str
    voltage: float
    phases: int


class PresetView(Compact):
    builtin: bool
    base: str | None = None
    overrides: dict[str, Any] | None = None
    settings: Conventions | None = Field(None, description="its settings (none when it does not resolve)")
    error: str | None = Field(None, description="why a custom preset does not resolve")


class PresetsView(View):
    default: str
    presets: dict[str, PresetView]


class PresetDefinition(View):
    name: str
    base: str
    settings: Conventions


class DeletedPreset(View):
    name: str
    deleted: bool


class DefaultPresetView(View):
    default: str


class CapabilitiesView(View):
    """What the charge point advertises in its configuration keys (null: not known)."""
    max_stack_level: int | None
    allowed_units: list[Literal["A", "W"]] | None
    max_periods: int | None
    max_profiles: int | None
    connectors: int | None
    phase_switch: bool | None


class ChargePointView(View):
    charge_point_id: str
    preset: str
    preset_source: str
    rule_id: int | None
    operator_preset: str | None
    settings: Conventions
    vendor: str | None
    model: str | None
    firmware_version: str | None
    voltage: float
    phases: int
    configuration: dict[str, str | None] | None
    unknown_keys: list[str] | None
    configuration_at: IsoText | None
    capabilities: CapabilitiesView
    site_id: str | None


class PresetRuleView(View):
    rule_id: int
    preset: str
    vendor: str | None
    model: str | None
    firmware: str | None
    priority: int


class DeletedRule(View):
    rule_id: int
    deleted: bool


# [[from, value], ...], the last value holding on (the pair's schema is written out: a tuple's prefixItems is
# not draft-07, which asyncapi/ uses)
CapStep = Annotated[tuple[IsoText, float], WithJsonSchema({
    "type": "array", "minItems": 2, "maxItems": 2, "description": "[from (UTC ISO-8601), value]",
    "items": {"anyOf": [{"type": "string", "format": "date-time"}, {"type": "number"}]}})]
CapSchedule = list[CapStep]


class SiteStepView(View):
    start: IsoText
    limit: float


class MemberView(View):
    charge_point_id: str
    priority: int
    max_limit: float | None
    cap_now: float | None = Field(description="the cap it holds now (null: none pushed)")
    cap: CapSchedule | None


class SiteView(View):
    site_id: str
    name: str
    unit: Literal["A", "W"]
    limit: float
    schedule: list[SiteStepView]
    strategy: Literal["fair", "priority"]
    stack_level: int | None
    limit_now: float
    members: list[MemberView]


class DeletedSite(View):
    site_id: str
    deleted: bool


class RemovedMember(View):
    charge_point_id: str
    site_id: str
    removed: bool


class MemberShare(View):
    """Why a member gets its share: what it can use now."""
    active_transactions: int
    priority: int
    demand: float | None = Field(description="null: no limit of its own")
    measured: float | None
    current_cap: float | None


class SitePlanView(Compact):
    """A rebalance: the caps planned from ``begin`` and, unless a dry run, what the members answered."""
    site_id: str
    reason: str
    skipped: Literal["busy"] | None = Field(None, description="another rebalance held the site too long")
    dry_run: bool | None = None
    unit: Literal["A", "W"] | None = None
    begin: IsoText | None = None
    limit_now: float | None = None
    strategy: Literal["fair", "priority"] | None = None
    caps: dict[str, CapSchedule | None] | None = Field(None, description=(
        "the caps planned from begin; null for a member pinned without a known cap (it counts as its maximum)"))
    caps_now: dict[str, float | None] | None = None
    members: dict[str, MemberShare] | None = None
    pushed: dict[str, str] | None = Field(None, description=(
        "each member's last answer to its cap: Accepted, its status, or timeout, busy, error"))
    failed: list[str] | None = None
    held_now: dict[str, float | None] | None = Field(None, description=(
        "the cap each member holds now as far as known (after an unknown outcome, the higher of old and new; "
        "null: none known)"))
    gave_up: str | None = Field(None, description="why the rebalance stopped with nothing raised")
