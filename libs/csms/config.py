"""Runtime settings shared by every service.

Everything is read from the environment so the same image runs in docker-compose,
Kubernetes and tests. ``CSMS_NAMESPACE`` prefixes every exchange, queue and Redis key,
so several systems (or parallel test runs) can share one RabbitMQ vhost and Redis.
"""
from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field


def _env(name: str, default: str) -> str:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


@dataclass(frozen=True)
class Settings:
    amqp_url: str = field(default_factory=lambda: _env("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"))
    redis_url: str = field(default_factory=lambda: _env("REDIS_URL", "redis://127.0.0.1:6379/0"))
    namespace: str = field(default_factory=lambda: _env("CSMS_NAMESPACE", "csms"))
    # gateway
    gateway_host: str = field(default_factory=lambda: _env("GATEWAY_HOST", "0.0.0.0"))
    gateway_port: int = field(default_factory=lambda: int(_env("GATEWAY_PORT", "9000")))
    gateway_instance: str = field(default_factory=lambda: _env("GATEWAY_INSTANCE", uuid.uuid4().hex[:12]))
    # charge point authentication at the websocket handshake: none | basic (OCPP security profile 1/2)
    gateway_auth: str = field(default_factory=lambda: _env("GATEWAY_AUTH", "none"))
    # seconds the gateway waits for a service to answer a charge point's CALL
    call_timeout: float = field(default_factory=lambda: float(_env("CSMS_CALL_TIMEOUT", "15")))
    # default seconds a CSMS->CP command waits for the charge point's answer
    command_timeout: float = field(default_factory=lambda: float(_env("CSMS_COMMAND_TIMEOUT", "30")))
    # stations
    heartbeat_interval: int = field(default_factory=lambda: int(_env("CSMS_HEARTBEAT_INTERVAL", "300")))
    boot_policy: str = field(default_factory=lambda: _env("CSMS_BOOT_POLICY", "accept"))  # accept | registered
    # diagnostics / firmware file intake
    files_host: str = field(default_factory=lambda: _env("FILES_HOST", "0.0.0.0"))
    files_port: int = field(default_factory=lambda: int(_env("FILES_HTTP_PORT", "9080")))
    ftp_port: int = field(default_factory=lambda: int(_env("FILES_FTP_PORT", "9021")))
    files_public_host: str = field(default_factory=lambda: _env("FILES_PUBLIC_HOST", "127.0.0.1"))
    files_root: str = field(default_factory=lambda: _env("FILES_ROOT", "./var/files"))
    upload_max_bytes: int = field(default_factory=lambda: int(_env("UPLOAD_MAX_BYTES", str(50 * 1024 * 1024))))
    upload_ttl: int = field(default_factory=lambda: int(_env("UPLOAD_TTL", "3600")))
    # FTP passive data ports ("60000-60100" or "60000,60001"; empty: any) and the public address
    # announced in PASV replies when the FTP server sits behind NAT (empty: the bound address)
    # Bearer token required for GET /files* and PUT /firmware (operators); empty = open (development only)
    files_operator_token: str = field(default_factory=lambda: _env("FILES_OPERATOR_TOKEN", ""))
    ftp_passive_ports: str = field(default_factory=lambda: _env("FILES_FTP_PASSIVE_PORTS", ""))
    ftp_masquerade_address: str = field(default_factory=lambda: _env("FILES_FTP_MASQUERADE_ADDRESS", ""))

    def key(self, *parts: object) -> str:
        """Redis key inside this system's namespace: ``<ns>:part1:part2``."""
        return ":".join([self.namespace, *(str(p) for p in parts)])

    def name(self, suffix: str) -> str:
        """RabbitMQ exchange/queue name inside this system's namespace."""
        return f"{self.namespace}.{suffix}"


def get_settings(**overrides: object) -> Settings:
    return Settings(**overrides)  # type: ignore[arg-type]
