"""Parameters of the smart_charging service's API operations (``smart_charging.<operation>``)."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from csms.charging.composite import check_start
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


class ReportsParams(ChargePointParams):
    limit: int = Field(20, ge=1, le=500)


class SiteLimitStep(Params):
    start: BoundedUtc
    limit: float = Field(ge=0, le=MAX_LIMIT, allow_inf_nan=False)


class PutSiteParams(Params):
    site_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
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
