"""Runtime settings shared by every service.

Everything is read from the environment (pydantic-settings) so the same image runs in docker-compose,
Kubernetes and tests. Types and enumerations are checked when the settings are loaded: a process
started with a bad value exits with status 2 and one line naming the setting (:func:`load_settings`).

``CSMS_NAMESPACE`` prefixes every exchange, queue and Redis key, so several systems (or parallel test
runs) can share one RabbitMQ vhost and Redis. ``DATABASE_SCHEMA`` does the same for PostgreSQL.
"""
from __future__ import annotations

import sys
import uuid
from typing import Any, Literal
from urllib.parse import quote

from pydantic import AliasChoices, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict


def _env(name: str, default: Any = None, **kwargs: Any) -> Any:
    """A setting read from environment variable ``name`` (or passed by its field name)."""
    return Field(default, validation_alias=AliasChoices(name, name.lower()), **kwargs)


def _key_part(part: object) -> str:
    """One part of a Redis key. Parts that come from outside (charge point ids, id tags) are
    percent-encoded, so no id can contain ``:`` or a glob character and reach another record's keys."""
    return quote(str(part), safe="-._~@+=,")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(frozen=True, extra="ignore", env_ignore_empty=True, populate_by_name=True)

    amqp_url: str = _env("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
    redis_url: str = _env("REDIS_URL", "redis://127.0.0.1:6379/0")
    namespace: str = _env("CSMS_NAMESPACE", "csms", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    # PostgreSQL: the system of record. The schema holds every table (and alembic's version table).
    database_url: str = _env("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/csms")
    database_schema: str = _env("DATABASE_SCHEMA", "public", pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    db_pool_min: int = _env("DATABASE_POOL_MIN", 1, ge=0, le=100)
    db_pool_max: int = _env("DATABASE_POOL_MAX", 10, ge=1, le=500)
    # run the database migrations when a process starts (otherwise: `csms db upgrade`)
    db_migrate: bool = _env("DATABASE_MIGRATE", False)
    # gateway
    gateway_host: str = _env("GATEWAY_HOST", "0.0.0.0")
    gateway_port: int = _env("GATEWAY_PORT", 9000, ge=0, le=65535)
    gateway_instance: str = Field(default_factory=lambda: uuid.uuid4().hex[:12],
                                  validation_alias=AliasChoices("GATEWAY_INSTANCE", "gateway_instance"))
    # charge point authentication at the websocket handshake: none | basic (OCPP security profile 1/2)
    gateway_auth: Literal["none", "basic"] = _env("GATEWAY_AUTH", "none")
    # longest charge point id accepted (the percent-decoded last path segment)
    max_charge_point_id_length: int = _env("CSMS_MAX_CHARGE_POINT_ID_LENGTH", 64, ge=1, le=255)
    # seconds the gateway waits for a service to answer a charge point's CALL
    call_timeout: float = _env("CSMS_CALL_TIMEOUT", 15.0, gt=0, le=600)
    # default seconds a CSMS->CP command waits for the charge point's answer
    command_timeout: float = _env("CSMS_COMMAND_TIMEOUT", 30.0, gt=0, le=3600)
    # a charge point timestamp further than this many seconds in the future is not trusted for ordering
    clock_skew: float = _env("CSMS_CLOCK_SKEW", 300.0, ge=0, le=86400 * 365)
    # transactions: days of meter values kept (partitions dropped after; 0 = keep everything)
    meter_values_retention_days: int = _env("METER_VALUES_RETENTION_DAYS", 0, ge=0, le=36500)
    # seconds a RemoteStartTransaction's chargingProfile waits for its StartTransaction (like ConnectionTimeOut)
    remote_start_profile_ttl: float = _env("CSMS_REMOTE_START_PROFILE_TTL", 300.0, gt=0, le=86400)
    # seconds after which an event recorded but not yet published is published by the relay (and its period)
    tx_event_retry: float = _env("TRANSACTIONS_EVENT_RETRY_SECONDS", 10.0, gt=0, le=3600)
    # stations
    heartbeat_interval: int = _env("CSMS_HEARTBEAT_INTERVAL", 300, ge=1, le=86400)
    boot_policy: Literal["accept", "registered"] = _env("CSMS_BOOT_POLICY", "accept")
    # diagnostics / firmware file intake
    files_host: str = _env("FILES_HOST", "0.0.0.0")
    files_port: int = _env("FILES_HTTP_PORT", 9080, ge=0, le=65535)
    ftp_port: int = _env("FILES_FTP_PORT", 9021, ge=0, le=65535)
    files_public_host: str = _env("FILES_PUBLIC_HOST", "127.0.0.1")
    files_root: str = _env("FILES_ROOT", "./var/files")
    upload_max_bytes: int = _env("UPLOAD_MAX_BYTES", 50 * 1024 * 1024, ge=1)
    upload_ttl: int = _env("UPLOAD_TTL", 3600, ge=1)
    # Bearer token required for GET /files* and PUT /firmware (operators); empty = open (development only)
    files_operator_token: str = _env("FILES_OPERATOR_TOKEN", "")
    # FTP passive data ports ("60000-60100" or "60000,60001"; empty: any) and the public address
    # announced in PASV replies when the FTP server sits behind NAT (empty: the bound address)
    ftp_passive_ports: str = _env("FILES_FTP_PASSIVE_PORTS", "")
    ftp_masquerade_address: str = _env("FILES_FTP_MASQUERADE_ADDRESS", "")

    def key(self, *parts: object) -> str:
        """Redis key inside this system's namespace: ``<ns>:part1:part2``; each part percent-encoded."""
        return ":".join([self.namespace, *(_key_part(p) for p in parts)])

    def name(self, suffix: str) -> str:
        """RabbitMQ exchange/queue name inside this system's namespace."""
        return f"{self.namespace}.{suffix}"

    def replace(self, **changes: Any) -> "Settings":
        """A copy with some settings changed (validated like the originals)."""
        return type(self)(**{**self.model_dump(), **changes})


def _env_name(error: dict) -> str:
    name = str(error["loc"][0]) if error.get("loc") else "?"
    field = Settings.model_fields.get(name)
    alias = getattr(field, "validation_alias", None) if field else None
    choices = getattr(alias, "choices", None)
    return str(choices[0]) if choices else name.upper()


def describe_error(exc: ValidationError) -> str:
    """One line naming every bad setting, e.g. ``GATEWAY_AUTH='basci': Input should be 'none' or 'basic'``."""
    parts = []
    for error in exc.errors():
        parts.append(f"{_env_name(error)}={error.get('input')!r}: {error['msg']}")
    return "invalid setting " + "; ".join(parts)


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment; on a bad value print one line to stderr and exit 2."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        print(describe_error(exc), file=sys.stderr)
        raise SystemExit(2) from None


def get_settings(**overrides: object) -> Settings:
    return Settings(**overrides)  # type: ignore[arg-type]
