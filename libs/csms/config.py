"""Runtime settings shared by every service.

Everything is read from the environment (pydantic-settings) so the same image runs in docker-compose,
Kubernetes and tests. Types and enumerations are checked when the settings are loaded: a process
started with a bad value exits with status 2 and one line naming the setting (:func:`load_settings`).

``CSMS_NAMESPACE`` prefixes every exchange, queue and Redis key, so several systems (or parallel test
runs) can share one RabbitMQ vhost and Redis. ``DATABASE_SCHEMA`` does the same for PostgreSQL.
"""
from __future__ import annotations

import ipaddress
import re
import sys
import uuid
from typing import Any, Literal
from urllib.parse import quote, urlsplit

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

# the parts of a process that may have RabbitMQ credentials of their own (AMQP_SERVICE_URLS): the gateway and
# every service (tests/integration/test_process_settings.py checks this against the registry)
PROCESS_PARTS = ("gateway", "stations", "transactions", "smart_charging", "diagnostics", "security", "api")


# what the client libraries connect to (aio-pika, redis-py, asyncpg)
_URL_SCHEMES = {"amqp_url": ("amqp", "amqps"), "redis_url": ("redis", "rediss", "unix"),
                "database_url": ("postgresql", "postgres")}


def _env(name: str, default: Any = None, **kwargs: Any) -> Any:
    """A setting read from environment variable ``name`` (or passed by its field name)."""
    return Field(default, validation_alias=AliasChoices(name, name.lower()), **kwargs)


def _secret(name: str, default: Any = "", **kwargs: Any) -> Any:
    """A setting that is a secret (a token, a password): never echoed in an error (:func:`describe_error`), nor in
    the settings' repr."""
    return _env(name, default, repr=False, **kwargs)


def _key_part(part: object) -> str:
    """One part of a Redis key. Parts that come from outside (charge point ids, id tags) are
    percent-encoded, so no id can contain ``:`` or a glob character and reach another record's keys."""
    return quote(str(part), safe="-._~@+=,")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(frozen=True, extra="ignore", env_ignore_empty=True, populate_by_name=True)

    # the URLs carry credentials: an error about them shows them masked (describe_error)
    amqp_url: str = _env("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/", max_length=2048)
    # RabbitMQ credentials per process part, JSON: {"gateway": "amqp://gw:...@host/", "stations": ...}; a part not
    # named uses AMQP_URL (one process per service can simply get its own AMQP_URL instead)
    amqp_service_urls: dict[str, str] = _env("AMQP_SERVICE_URLS", {})
    redis_url: str = _env("REDIS_URL", "redis://127.0.0.1:6379/0", max_length=2048)
    namespace: str = _env("CSMS_NAMESPACE", "csms", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    # PostgreSQL: the system of record. The schema holds every table (and alembic's version table).
    database_url: str = _env("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/csms", max_length=2048)
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
    # ---- charge point security (OCPP 1.6 security whitepaper profiles; services/gateway/profiles.py) ----
    # basic: every charge point authenticates (at least GATEWAY_MIN_SECURITY_PROFILE, and never below the profile
    # recorded for it). none (development only, logged at WARNING; a standalone gateway refuses it): a charge point
    # without a recorded profile or a password may connect without credentials (profile 0)
    gateway_auth: Literal["none", "basic"] = _env("GATEWAY_AUTH", "basic")
    # the lowest profile accepted from any charge point when GATEWAY_AUTH=basic: 1 Basic auth, 2 TLS + Basic auth,
    # 3 TLS with a client certificate. 2 and 3 need TLS (GATEWAY_TLS_CERT_FILE or GATEWAY_TRUSTED_PROXIES)
    gateway_min_security_profile: int = _env("GATEWAY_MIN_SECURITY_PROFILE", 1, ge=1, le=3)
    # TLS served by the gateway itself (wss://host:GATEWAY_TLS_PORT): the server certificate (PEM, followed by its
    # intermediates) and key; reloaded when the files change (checked every GATEWAY_TLS_RELOAD_INTERVAL seconds) or
    # on SIGHUP, without dropping connections
    gateway_tls_port: int = _env("GATEWAY_TLS_PORT", 9443, ge=0, le=65535)
    gateway_tls_cert_file: str = _env("GATEWAY_TLS_CERT_FILE", "")
    gateway_tls_key_file: str = _env("GATEWAY_TLS_KEY_FILE", "")
    gateway_tls_key_password: str = _secret("GATEWAY_TLS_KEY_PASSWORD", max_length=1024)
    # client certificates (profile 3) are trusted when issued by the security service's CA or by a CA in this PEM
    # bundle (e.g. the manufacturer's CA of factory-installed certificates)
    gateway_tls_client_ca_file: str = _env("GATEWAY_TLS_CLIENT_CA_FILE", "")
    gateway_tls_reload_interval: float = _env("GATEWAY_TLS_RELOAD_INTERVAL", 30.0, gt=0, le=86400)
    # TLS offload: handshakes from these addresses (comma-separated IPs or CIDRs, e.g. the ingress controller's
    # pods) are trusted for X-Forwarded-Proto, X-Forwarded-For and the client certificate header below; the same
    # headers from anyone else are ignored
    gateway_trusted_proxies: str = _env("GATEWAY_TRUSTED_PROXIES", "", max_length=4096)
    # the header a trusted proxy forwards the client certificate in: URL-encoded PEM (nginx
    # $ssl_client_escaped_cert), an Envoy X-Forwarded-Client-Cert element with Cert="...", or base64 DER
    gateway_client_cert_header: str = _env("GATEWAY_CLIENT_CERT_HEADER", "X-Forwarded-Client-Cert",
                                           pattern=r"^[A-Za-z0-9-]{1,64}$")
    # Basic auth under attack: more than GATEWAY_AUTH_MAX_FAILURES_PER_ADDRESS failed logins from one source address,
    # or GATEWAY_AUTH_MAX_FAILURES_PER_ID for one charge point id, within GATEWAY_AUTH_FAILURE_WINDOW seconds lock
    # them for GATEWAY_AUTH_LOCKOUT seconds (HTTP 429 + Retry-After, answered without checking the password). A
    # locked id stays open to addresses that have not failed for it (the real charge point keeps getting in)
    gateway_auth_failure_window: float = _env("GATEWAY_AUTH_FAILURE_WINDOW", 60.0, gt=0, le=86400)
    gateway_auth_max_failures_per_address: int = _env("GATEWAY_AUTH_MAX_FAILURES_PER_ADDRESS", 30, ge=1, le=100000)
    gateway_auth_max_failures_per_id: int = _env("GATEWAY_AUTH_MAX_FAILURES_PER_ID", 10, ge=1, le=100000)
    gateway_auth_lockout: float = _env("GATEWAY_AUTH_LOCKOUT", 60.0, gt=0, le=86400)
    # password checks one source address may have in flight at one gateway instance (429 + Retry-After 1 beyond):
    # enough for a site's charge points reconnecting at once behind one NAT address; small enough that a burst
    # from a fresh address cannot fill STATIONS_AUTH_QUEUE before its failures are counted
    gateway_auth_checks_per_address: int = _env("GATEWAY_AUTH_CHECKS_PER_ADDRESS", 8, ge=1, le=1000)
    # seconds a successful login (or the end of its connection) keeps an (address, charge point id) pair known: a
    # known pair is spared its address's lock (one misbehaving device behind a carrier NAT locks out nobody else)
    gateway_auth_known_pair_seconds: float = _env("GATEWAY_AUTH_KNOWN_PAIR_SECONDS", 30 * 86400.0, ge=60, le=366 * 86400)
    # handshakes without credentials per source address within GATEWAY_AUTH_FAILURE_WINDOW (429 beyond); they are
    # answered 401 without asking anyone
    gateway_auth_max_anonymous_per_address: int = _env("GATEWAY_AUTH_MAX_ANONYMOUS_PER_ADDRESS", 60, ge=1, le=100000)
    # source addresses (address groups) a charge point id is remembered at as a known pair: the most recent ones, the
    # oldest forgotten beyond (bounds the login memory in Redis per charge point; services/gateway/lockout.py)
    gateway_auth_known_addresses_per_id: int = _env("GATEWAY_AUTH_KNOWN_ADDRESSES_PER_ID", 8, ge=1, le=64)
    # every per-address limit counts an IPv6 source by its network of this prefix length (a host gets a whole /64);
    # IPv4 (and IPv4-mapped IPv6) addresses count one by one
    gateway_auth_ipv6_prefix: int = _env("GATEWAY_AUTH_IPV6_PREFIX", 64, ge=32, le=128)
    # longest charge point id accepted (the percent-decoded last path segment)
    max_charge_point_id_length: int = _env("CSMS_MAX_CHARGE_POINT_ID_LENGTH", 64, ge=1, le=255)
    # seconds a charge point's presence key (gateway instance, session) lives without a refresh; the gateway
    # refreshes its charge points every third of it, so a crashed gateway's charge points go offline by themselves
    gateway_presence_ttl: float = _env("GATEWAY_PRESENCE_TTL", 90.0, ge=0.3, le=86400)
    # same-id flapping: a take-over of a live charge point id beyond GATEWAY_FLAP_TAKEOVERS within
    # GATEWAY_FLAP_WINDOW seconds refuses newcomers (HTTP 429, Retry-After) for GATEWAY_FLAP_BACKOFF seconds,
    # doubling at each new episode up to GATEWAY_FLAP_BACKOFF_MAX; the current holder keeps the id
    gateway_flap_window: float = _env("GATEWAY_FLAP_WINDOW", 60.0, gt=0, le=86400)
    gateway_flap_takeovers: int = _env("GATEWAY_FLAP_TAKEOVERS", 5, ge=1, le=10000)
    gateway_flap_backoff: float = _env("GATEWAY_FLAP_BACKOFF", 10.0, gt=0, le=86400)
    gateway_flap_backoff_max: float = _env("GATEWAY_FLAP_BACKOFF_MAX", 600.0, gt=0, le=86400)
    # station.protocol_error events (a CALLERROR sent to or received from a charge point, an answer breaking OCPP):
    # at most GATEWAY_PROTOCOL_ERROR_EVENTS per charge point within GATEWAY_PROTOCOL_ERROR_WINDOW seconds; the rest
    # are counted, and the newest goes out with the count when the window ends (0: none published)
    gateway_protocol_error_events: int = _env("GATEWAY_PROTOCOL_ERROR_EVENTS", 10, ge=0, le=10000)
    gateway_protocol_error_window: float = _env("GATEWAY_PROTOCOL_ERROR_WINDOW", 60.0, gt=0, le=86400)
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
    # password checks (scrypt) run on this many threads; at most STATIONS_AUTH_QUEUE wait for one, beyond that a
    # handshake is answered 503 + Retry-After instead of piling up (a password verified before is not hashed again)
    stations_auth_workers: int = _env("STATIONS_AUTH_WORKERS", 2, ge=1, le=64)
    stations_auth_queue: int = _env("STATIONS_AUTH_QUEUE", 64, ge=1, le=10000)
    boot_policy: Literal["accept", "registered"] = _env("CSMS_BOOT_POLICY", "accept")
    # diagnostics / firmware file intake
    files_host: str = _env("FILES_HOST", "0.0.0.0")
    files_port: int = _env("FILES_HTTP_PORT", 9080, ge=0, le=65535)
    ftp_port: int = _env("FILES_FTP_PORT", 9021, ge=0, le=65535)
    files_public_host: str = _env("FILES_PUBLIC_HOST", "127.0.0.1")
    files_root: str = _env("FILES_ROOT", "./var/files")
    # the largest upload (a diagnostics file, a firmware image: at most 4 GiB) and the seconds a one-time upload
    # URL lives (at most a week)
    upload_max_bytes: int = _env("UPLOAD_MAX_BYTES", 50 * 1024 * 1024, ge=1, le=4 * 1024 ** 3)
    upload_ttl: int = _env("UPLOAD_TTL", 3600, ge=1, le=7 * 86400)
    # Bearer token required for GET /files* and PUT /firmware (operators): 16-512 printable ASCII characters. Empty:
    # one is generated at the first start, kept in FILES_ROOT/.operator-token (mode 0600) and printed once -- the
    # routes are never open
    files_operator_token: str = _secret("FILES_OPERATOR_TOKEN", max_length=512)
    # HTTPS for uploads and downloads and FTPS (explicit, AUTH TLS required) for FTP uploads: certificate chain and
    # key (PEM). Set: the default public URLs are https:// and ftps://
    files_tls_cert_file: str = _env("FILES_TLS_CERT_FILE", "")
    files_tls_key_file: str = _env("FILES_TLS_KEY_FILE", "")
    files_tls_key_password: str = _secret("FILES_TLS_KEY_PASSWORD", max_length=1024)
    # seconds between checks of the FILES_TLS_* files for a change (also re-read on SIGHUP)
    files_tls_reload_interval: float = _env("FILES_TLS_RELOAD_INTERVAL", 30.0, gt=0, le=86400)
    # offer FTP (FTPS with FILES_TLS_*) for GetDiagnostics / GetLog uploads at all
    files_ftp_enabled: bool = _env("FILES_FTP_ENABLED", True)
    # FTP passive data ports ("60000-60100" or "60000,60001"; empty: any) and the public address
    # announced in PASV replies when the FTP server sits behind NAT (empty: the bound address)
    ftp_passive_ports: str = _env("FILES_FTP_PASSIVE_PORTS", "")
    ftp_masquerade_address: str = _env("FILES_FTP_MASQUERADE_ADDRESS", "")
    # the URLs charge points are told to upload diagnostics to / download firmware from: what the
    # Service/Ingress exposes, not where the servers listen. Empty: http://{FILES_PUBLIC_HOST}:{FILES_HTTP_PORT}
    # and ftp://{FILES_PUBLIC_HOST}:{FILES_FTP_PORT} (the bound ports when those are 0). The HTTP URL may
    # be https and carry a path prefix (the ingress strips it); the FTP URL is scheme, host and port only.
    files_public_http_url: str = _env("FILES_PUBLIC_HTTP_URL", "", max_length=512)
    files_public_ftp_url: str = _env("FILES_PUBLIC_FTP_URL", "", max_length=512)
    # ---- security extension (services/security; firmware signing in services/diagnostics) ----
    # the CA that signs charge point certificates (SignCertificate): PEM certificate (the issuing CA first,
    # optionally followed by its parents) and PEM private key. Unset: a DEVELOPMENT CA is generated at first
    # start under SECURITY_DEV_DIR (logged at WARNING).
    security_ca_cert_file: str = _env("SECURITY_CA_CERT_FILE", "")
    security_ca_key_file: str = _env("SECURITY_CA_KEY_FILE", "")
    security_ca_key_password: str = _secret("SECURITY_CA_KEY_PASSWORD", max_length=1024)
    # where development CA and firmware signing material are generated (keys are written mode 0600)
    security_dev_dir: str = _env("SECURITY_DEV_DIR", "./var/security")
    # key type of generated development material
    security_key_type: Literal["ec-p256", "ec-p384", "rsa-2048", "rsa-3072", "rsa-4096"] = _env(
        "SECURITY_KEY_TYPE", "ec-p256")
    # days a charge point certificate signed by the CA is valid (never beyond the CA's own validity)
    security_cert_validity_days: int = _env("SECURITY_CERT_VALIDITY_DAYS", 365, ge=1, le=3650)
    # when set, a CSR's subject must carry exactly this organization (O) besides CN = charge point id
    security_csr_organization: str = _env("SECURITY_CSR_ORGANIZATION", "", max_length=64)
    # renewal: certificates expiring within this many days get ExtendedTriggerMessage(SignChargePointCertificate),
    # at most once per SECURITY_RENEWAL_PERIOD seconds each; the check runs every SECURITY_EXPIRY_CHECK_INTERVAL
    security_renew_before_days: int = _env("SECURITY_RENEW_BEFORE_DAYS", 30, ge=1, le=3650)
    security_renewal_period: float = _env("SECURITY_RENEWAL_PERIOD", 86400.0, ge=1, le=86400 * 365)
    security_expiry_check_interval: float = _env("SECURITY_EXPIRY_CHECK_INTERVAL", 3600.0, ge=0.05, le=86400 * 7)
    # seconds between answering SignCertificate and sending CertificateSigned (the CALLRESULT goes out first)
    security_certificate_signed_delay: float = _env("SECURITY_CERTIFICATE_SIGNED_DELAY", 1.0, ge=0, le=60)
    # security events (SecurityEventNotification) older than this many days are deleted
    security_events_retention_days: int = _env("SECURITY_EVENTS_RETENTION_DAYS", 365, ge=1, le=3650)
    # the firmware signing certificate (PEM, signing certificate first) and key used for SignedUpdateFirmware
    # with csms:firmware/<name>. Unset: a DEVELOPMENT signing certificate (and its root) is generated under
    # SECURITY_DEV_DIR (logged at WARNING).
    firmware_signing_cert_file: str = _env("FIRMWARE_SIGNING_CERT_FILE", "")
    firmware_signing_key_file: str = _env("FIRMWARE_SIGNING_KEY_FILE", "")
    firmware_signing_key_password: str = _secret("FIRMWARE_SIGNING_KEY_PASSWORD", max_length=1024)

    @field_validator("files_public_http_url")
    @classmethod
    def _public_http_url(cls, value: str) -> str:
        return check_public_url(value, ("http", "https"), allow_path=True) if value else value

    @field_validator("files_public_ftp_url")
    @classmethod
    def _public_ftp_url(cls, value: str) -> str:
        return check_public_url(value, ("ftp", "ftps"), allow_path=False) if value else value

    @field_validator("gateway_trusted_proxies")
    @classmethod
    def _trusted_proxies(cls, value: str) -> str:
        proxy_networks(value)  # ValueError naming the bad entry
        return value

    @field_validator("amqp_url", "redis_url", "database_url")
    @classmethod
    def _connection_url(cls, value: str, info: Any) -> str:
        schemes = _URL_SCHEMES[info.field_name]
        scheme = value.partition("://")[0].lower() if "://" in value else ""
        if info.field_name == "database_url":  # postgresql+asyncpg:// as SQLAlchemy spells it is fine
            scheme = scheme.partition("+")[0]
        if scheme not in schemes:
            raise ValueError(f"must start with {' or '.join(scheme + '://' for scheme in schemes)}")
        return value

    @field_validator("amqp_service_urls")
    @classmethod
    def _service_urls(cls, value: dict[str, str]) -> dict[str, str]:
        for part, url in value.items():
            if part not in PROCESS_PARTS:
                # a misspelt part would silently fall back to AMQP_URL (the shared credentials)
                shown = repr(part) if re.fullmatch(r"[A-Za-z0-9_.-]{1,32}", part) else "a key"
                raise ValueError(f"{shown} is not a part name; the parts are {', '.join(PROCESS_PARTS)}")
            if not url.startswith(("amqp://", "amqps://")):
                raise ValueError(f"the URL of {part!r} must start with amqp:// or amqps://")
        return value

    @field_validator("files_operator_token")
    @classmethod
    def _operator_token(cls, value: str) -> str:
        # the generated token has 43 characters; a short one can be guessed, a space or a control character
        # cannot travel in an Authorization header
        if value and not (len(value) >= 16 and value.isascii() and value.isprintable() and " " not in value):
            raise ValueError("must be 16-512 printable ASCII characters without spaces (e.g. openssl rand -hex 32)")
        return value

    @field_validator("ftp_passive_ports")
    @classmethod
    def _port_ranges(cls, value: str) -> str:
        for part in filter(None, (p.strip() for p in value.split(","))):
            bounds = part.split("-", 1)
            if not all(b.strip().isdigit() and 0 < int(b) < 65536 for b in bounds) or int(bounds[0]) > int(bounds[-1]):
                raise ValueError(f"{part!r} is not a port or port range like 30000-30009")
        return value

    @field_validator("files_public_host")
    @classmethod
    def _public_host(cls, value: str) -> str:
        # the default public URLs are built from it: it must make a valid URL
        try:
            ok = bool(value) and not any(ch in value for ch in "/?#@\\") and not any(ch.isspace() for ch in value) \
                and urlsplit(f"http://{value}:1").hostname is not None
        except ValueError:
            ok = False
        if not ok:
            raise ValueError("not a host name or address")
        return value

    # smart charging: seconds between the planned rebalances of every site (0 = only on events)
    sc_rebalance_interval: float = _env("SMART_CHARGING_REBALANCE_INTERVAL", 300.0, ge=0, le=86400)
    # smart charging: a site member's draw (meter values) older than this many seconds is left out of planning
    # (the member gets its full share again): a few meter-value intervals
    sc_draw_max_age: float = _env("SMART_CHARGING_DRAW_MAX_AGE", 600.0, gt=0, le=86400)
    # smart charging: seconds a GetConfiguration sent to learn a charge point's limits waits for its answer
    sc_configuration_timeout: float = _env("SMART_CHARGING_CONFIGURATION_TIMEOUT", 5.0, gt=0, le=600)
    # smart charging: when to read a charge point's limits (GetConfiguration): on_demand = when first needed, before
    # its first SetChargingProfile, GetCompositeSchedule or site cap (no extra traffic in a boot storm), on_boot =
    # also after every accepted BootNotification
    sc_read_configuration: Literal["on_demand", "on_boot"] = _env("SMART_CHARGING_READ_CONFIGURATION", "on_demand")

    # ---- operations (issue 8): logs, health/metrics endpoint, drain, reconnects, traces ----------
    # log lines as one JSON object each (for log collectors) or as text (for people)
    log_format: Literal["json", "text"] = _env("LOG_FORMAT", "text")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = _env("LOG_LEVEL", "INFO")
    # /healthz, /readyz and /metrics: one HTTP listener per process (0 = any free port)
    ops_host: str = _env("OPS_HOST", "0.0.0.0")
    ops_port: int = _env("OPS_PORT", 9100, ge=0, le=65535)
    # on SIGTERM the gateway closes its charge points' sockets (1001) spread over this many seconds
    gateway_drain_seconds: float = _env("GATEWAY_DRAIN_SECONDS", 20.0, ge=0, le=3600)
    # on SIGTERM a service stops consuming and waits at most this long for the messages it is handling
    service_drain_seconds: float = _env("SERVICE_DRAIN_SECONDS", 20.0, ge=0, le=3600)
    # waits between connection attempts to RabbitMQ, Redis and PostgreSQL grow from the first to the last
    backoff_initial: float = _env("RECONNECT_BACKOFF_INITIAL", 0.5, gt=0, le=60)
    backoff_max: float = _env("RECONNECT_BACKOFF_MAX", 30.0, gt=0, le=600)
    # repeats of one expected-outage log line are summarised once per this many seconds
    log_repeat_seconds: float = _env("LOG_REPEAT_SECONDS", 30.0, gt=0, le=3600)
    # RabbitMQ: declare the services' durable queues as quorum queues (replicated; needs a cluster to
    # matter). An existing queue keeps its type: switching needs new queues (e.g. a new CSMS_NAMESPACE)
    quorum_queues: bool = _env("AMQP_QUORUM_QUEUES", False)
    # OpenTelemetry traces: none (off), otlp (OTLP/HTTP to OTEL_EXPORTER_OTLP_ENDPOINT) or console
    traces_exporter: Literal["none", "otlp", "console"] = _env("OTEL_TRACES_EXPORTER", "none")
    otel_service_name: str = _env("OTEL_SERVICE_NAME", "", max_length=200)

    # ---- HTTP API (services/api, issue 10): python -m services.api ---------------------------------------
    # where the HTTP API listens (put TLS in front of it: an Ingress or a proxy)
    api_host: str = _env("API_HOST", "0.0.0.0")
    api_port: int = _env("API_PORT", 8080, ge=0, le=65535)
    # a secret: when set, an admin API key with exactly this value exists (created at start, never logged);
    # for the first key of an installation. At least 32 characters. Prefer `csms api-keys create --scope admin`
    api_bootstrap_admin_key: str = _secret("API_BOOTSTRAP_ADMIN_KEY")
    # the longest ``timeout`` (seconds) a command through the HTTP API may wait for the charge point
    api_command_max_timeout: float = _env("API_COMMAND_MAX_TIMEOUT", 120.0, gt=0, le=3600)
    # asynchronous commands one API process runs at once (more: HTTP 429)
    api_max_async_commands: int = _env("API_MAX_ASYNC_COMMANDS", 1000, ge=1, le=100_000)
    # days the results of commands sent through the HTTP API are kept for polling
    api_command_retention_days: int = _env("API_COMMAND_RETENTION_DAYS", 7, ge=1, le=3650)
    # webhooks: attempts per result (the first included), the first wait between attempts (doubling, at most
    # 300 s), the timeout of one attempt, and whether URLs may point at private or loopback addresses
    api_webhook_max_attempts: int = _env("API_WEBHOOK_MAX_ATTEMPTS", 6, ge=1, le=20)
    api_webhook_backoff: float = _env("API_WEBHOOK_BACKOFF", 2.0, gt=0, le=300)
    api_webhook_timeout: float = _env("API_WEBHOOK_TIMEOUT", 10.0, gt=0, le=60)
    api_webhook_allow_private: bool = _env("API_WEBHOOK_ALLOW_PRIVATE", False)
    # server-sent events: clients at once per process, events buffered per client (a client that falls further
    # behind is told and disconnected), seconds between keep-alive comments
    api_sse_max_clients: int = _env("API_SSE_MAX_CLIENTS", 100, ge=1, le=10_000)
    api_sse_buffer: int = _env("API_SSE_BUFFER", 1000, ge=1, le=100_000)
    api_sse_keepalive: float = _env("API_SSE_KEEPALIVE", 15.0, gt=0, le=300)
    # the operator dashboard (services/api/dashboard, issue 13) at /dashboard/: static files only (they hold no
    # secret; every datum comes from the API with the operator's key); false: not served
    api_dashboard: bool = _env("API_DASHBOARD", True)
    # recent events kept per charge point by each API process for GET /charge-points/{id}/activity (the
    # dashboard's recent messages and errors), and for how many charge points (the least recently active
    # are forgotten first); 0 keeps none
    # (each at most 2 KiB as JSON: a typical event takes ~1 KiB of memory, so the defaults hold ~50 MiB, at most
    # ~110 MiB; benchmarks/bench_activity.py)
    api_activity_events: int = _env("API_ACTIVITY_EVENTS", 50, ge=0, le=10_000)
    api_activity_charge_points: int = _env("API_ACTIVITY_CHARGE_POINTS", 1000, ge=1, le=1_000_000)

    @model_validator(mode="after")
    def _bootstrap_key(self) -> "Settings":
        # a rule over the model, not a field error: describe_error echoes the input of field errors
        value = self.api_bootstrap_admin_key
        if value and not (32 <= len(value) <= 256 and value.isascii() and value.isprintable() and " " not in value):
            raise ValueError("API_BOOTSTRAP_ADMIN_KEY must be 32-256 printable ASCII characters without spaces")
        return self

    # ---- performance (issue 12) -------------------------------------------------------------
    # the event loop of every CSMS process: uvloop (faster sockets, fewer system calls per frame) or the
    # standard library's asyncio (for debugging, or where uvloop is not installed)
    event_loop: Literal["uvloop", "asyncio"] = _env("CSMS_EVENT_LOOP", "uvloop")

    @model_validator(mode="after")
    def _pool_order(self) -> "Settings":
        # never clamped quietly: a pool smaller than asked for is a mistake the operator should hear about
        if self.db_pool_min > self.db_pool_max:
            raise ValueError(f"DATABASE_POOL_MIN ({self.db_pool_min}) must not exceed DATABASE_POOL_MAX "
                             f"({self.db_pool_max})")
        return self

    @model_validator(mode="after")
    def _backoff_order(self) -> "Settings":
        if self.backoff_initial > self.backoff_max:
            raise ValueError("RECONNECT_BACKOFF_INITIAL must not exceed RECONNECT_BACKOFF_MAX")
        return self

    @model_validator(mode="after")
    def _pem_file_pairs(self) -> "Settings":
        # a certificate without its key (or the reverse) is a mistake, not a request for development material
        for cert, key, names in (
                (self.security_ca_cert_file, self.security_ca_key_file, "SECURITY_CA_CERT_FILE/SECURITY_CA_KEY_FILE"),
                (self.firmware_signing_cert_file, self.firmware_signing_key_file,
                 "FIRMWARE_SIGNING_CERT_FILE/FIRMWARE_SIGNING_KEY_FILE"),
                (self.gateway_tls_cert_file, self.gateway_tls_key_file, "GATEWAY_TLS_CERT_FILE/GATEWAY_TLS_KEY_FILE"),
                (self.files_tls_cert_file, self.files_tls_key_file, "FILES_TLS_CERT_FILE/FILES_TLS_KEY_FILE")):
            if bool(cert) != bool(key):
                raise ValueError(f"{names}: set both or neither")
        return self

    @model_validator(mode="after")
    def _profiles_need_tls(self) -> "Settings":
        # profiles 2 and 3 for everyone, but nothing that could carry TLS: no charge point could ever connect
        if self.gateway_auth == "basic" and self.gateway_min_security_profile >= 2 and not (
                self.gateway_tls_cert_file or self.gateway_trusted_proxies):
            raise ValueError(f"GATEWAY_MIN_SECURITY_PROFILE={self.gateway_min_security_profile} needs TLS: set "
                             "GATEWAY_TLS_CERT_FILE/GATEWAY_TLS_KEY_FILE or GATEWAY_TRUSTED_PROXIES (TLS offload)")
        return self

    @property
    def gateway_tls(self) -> bool:
        """The gateway serves wss itself."""
        return bool(self.gateway_tls_cert_file)

    @property
    def files_tls(self) -> bool:
        """The file intake serves HTTPS and FTPS."""
        return bool(self.files_tls_cert_file)

    def for_part(self, part: str) -> "Settings":
        """The settings one part of a process (``gateway``, ``stations`` ...) runs with: its own RabbitMQ
        credentials when AMQP_SERVICE_URLS names it."""
        url = self.amqp_service_urls.get(part)
        return self if url is None or url == self.amqp_url else self.replace(amqp_url=url)

    def key(self, *parts: object) -> str:
        """Redis key inside this system's namespace: ``<ns>:part1:part2``; each part percent-encoded."""
        return ":".join([self.namespace, *(_key_part(p) for p in parts)])

    def name(self, suffix: str) -> str:
        """RabbitMQ exchange/queue name inside this system's namespace."""
        return f"{self.namespace}.{suffix}"

    def replace(self, **changes: Any) -> "Settings":
        """A copy with some settings changed (validated like the originals)."""
        return type(self)(**{**self.model_dump(), **changes})


def proxy_networks(value: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """The networks of GATEWAY_TRUSTED_PROXIES (``10.0.0.0/8, 192.168.1.7``); ValueError naming a bad entry."""
    networks = []
    for part in filter(None, (p.strip() for p in value.split(","))):
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ValueError(f"{part!r} is not an IP address or network") from None
    return networks


def check_public_url(value: str, schemes: tuple[str, ...], *, allow_path: bool) -> str:
    """A public base URL without a trailing slash; ValueError (one line) when it cannot be one."""
    try:
        parts = urlsplit(value.strip())
        port = parts.port  # raises on a bad port
    except ValueError as exc:
        raise ValueError(f"not a URL: {exc}") from None
    if parts.scheme.lower() not in schemes:
        raise ValueError(f"must start with {' or '.join(s + '://' for s in schemes)}")
    if not parts.hostname:
        raise ValueError("has no host")
    if port == 0:
        raise ValueError("port 0 cannot be reached")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not carry credentials")
    if parts.query or parts.fragment or "?" in value or "#" in value:
        raise ValueError("must not have a query or fragment")
    if parts.path.strip("/") and not allow_path:
        raise ValueError("must not have a path")
    if any(ch.isspace() for ch in value.strip()):
        raise ValueError("must not contain spaces")
    path = parts.path.rstrip("/") if allow_path else ""
    return f"{parts.scheme.lower()}://{parts.netloc}{path}"


def _field_name(loc: object) -> str:
    """The field an error location names: by field name (keyword arguments) or by variable (the environment)."""
    name = str(loc)
    if name in Settings.model_fields:
        return name
    for field_name, field in Settings.model_fields.items():
        if name in (getattr(field.validation_alias, "choices", None) or ()):
            return field_name
    return name


def _env_name(error: dict) -> str:
    name = _field_name(error["loc"][0]) if error.get("loc") else "?"
    field = Settings.model_fields.get(name)
    alias = getattr(field, "validation_alias", None) if field else None
    choices = getattr(alias, "choices", None)
    return str(choices[0]) if choices else name.upper()


# the user information of a URL (``scheme://user:password@``), masked wherever a value is echoed
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/?#@\s'\"]*)@")
_ECHO_CHARS = 120  # a longer value is cut in the error line


def mask_credentials(text: str) -> str:
    """``text`` with the credentials of every URL in it masked: ``amqp://gw:***@mq/``, ``https://***@host/``
    (a user name alone may be a token)."""
    def masked(match: re.Match) -> str:
        user, colon, _ = match["userinfo"].partition(":")
        return f"{match['scheme']}{user}:***@" if colon else f"{match['scheme']}***@"
    return _USERINFO.sub(masked, text)


def is_secret(field_name: str) -> bool:
    """A setting whose value is never echoed (declared with ``_secret``)."""
    field = Settings.model_fields.get(_field_name(field_name))
    return field is not None and field.repr is False


def _echo(field_name: str, value: Any) -> str:
    """The value of a bad setting as the error line shows it: hidden for a secret, URL credentials masked, long
    values cut."""
    if is_secret(field_name):
        return "<hidden>"
    text = mask_credentials(repr(value))
    return text if len(text) <= _ECHO_CHARS else f"{text[:_ECHO_CHARS]}... ({len(text)} characters)"


def describe_error(exc: ValidationError) -> str:
    """One line naming every bad setting, e.g. ``GATEWAY_AUTH='basci': Input should be 'none' or 'basic'``. The
    value of a secret is never shown, credentials in a URL are masked."""
    parts = []
    for error in exc.errors():
        if not error.get("loc"):  # a rule over several settings: its message names them (never echo the input)
            parts.append(str(error["msg"]).removeprefix("Value error, "))
            continue
        parts.append(f"{_env_name(error)}={_echo(str(error['loc'][0]), error.get('input'))}: {error['msg']}")
    return mask_credentials("invalid setting " + "; ".join(parts))


def describe_settings_error(exc: SettingsError) -> str:
    """One line for a value the settings source could not even parse (AMQP_SERVICE_URLS that is not JSON),
    naming the setting; the value is not shown (it may hold credentials)."""
    match = re.search(r'field "(\w+)"', str(exc))
    name = _env_name({"loc": (match.group(1),)}) if match else "?"
    cause = exc.__cause__
    if isinstance(cause, ValueError) and type(cause).__name__ == "JSONDecodeError":
        why = f"not valid JSON ({cause.msg} at character {cause.pos})"  # type: ignore[attr-defined]
    else:
        why = "cannot be read" + (f" ({type(cause).__name__})" if cause is not None else "")
    return f"invalid setting {name}: {why}"


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment; on a bad value print one line to stderr and exit 2."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        line = describe_error(exc)
    except SettingsError as exc:
        line = describe_settings_error(exc)
    print(line, file=sys.stderr)
    raise SystemExit(2)


def get_settings(**overrides: object) -> Settings:
    return Settings(**overrides)  # type: ignore[arg-type]
