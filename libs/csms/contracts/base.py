"""Base classes for every bus contract."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, PlainSerializer, WithJsonSchema


def as_utc(value: datetime) -> datetime:
    """Naive datetimes are read as UTC; aware ones are converted to UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    try:
        return value.astimezone(timezone.utc)
    except OverflowError:  # 0001-01-01T00:00+01:00: a ValueError is a validation error, not a crash
        raise ValueError("date-time out of range once converted to UTC") from None


def format_utc(value: datetime) -> str:
    value = as_utc(value)
    # strftime("%Y-%m-%dT%H:%M:%S") spelled out: the same text (glibc's %Y is not zero-padded), a third of the
    # time -- every event and bus envelope carries timestamps
    text = f"{value.year}-{value.month:02d}-{value.day:02d}T{value.hour:02d}:{value.minute:02d}:{value.second:02d}"
    if value.microsecond:
        text += f".{value.microsecond // 1000:03d}"
    return text + "Z"


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


UtcDatetime = Annotated[
    datetime, AfterValidator(as_utc), PlainSerializer(format_utc, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]


class OcppModel(BaseModel):
    """An OCPP payload: snake_case attributes, camelCase on the wire."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    def to_ocpp(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class BusModel(BaseModel):
    """A bus message (envelope or domain event): snake_case everywhere, JSON on the wire."""

    # serialisation-mode JSON schemas (tools/gen_asyncapi.py) list every field as required: the JSON
    # always carries them all
    model_config = ConfigDict(extra="ignore", json_schema_serialization_defaults_required=True)

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()
