"""Where the system under test finds RabbitMQ, Redis and PostgreSQL.

1. testcontainers, when a Docker engine answers (``TEST_USE_TESTCONTAINERS=never`` turns that off);
2. otherwise ``TEST_AMQP_URL`` / ``TEST_REDIS_URL`` / ``TEST_DATABASE_URL`` (or ``AMQP_URL`` / ``REDIS_URL``),
   else the local defaults (``amqp://guest:guest@127.0.0.1:5672/``, ``redis://127.0.0.1:6379/0``,
   ``postgresql://postgres@127.0.0.1:5432/csms_test``; the database is created when missing).
When nothing answers: a failure under ``CI=true``, a skip elsewhere.
Each test then works in a namespace (RabbitMQ names, Redis keys) and a PostgreSQL schema of its own
(:func:`csms.testing.system.make_settings`).
"""
from __future__ import annotations

import os
import socket
from contextlib import ExitStack
from dataclasses import dataclass
from urllib.parse import urlparse

DEFAULT_AMQP = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
DEFAULT_DATABASE = "postgresql://postgres@127.0.0.1:5432/csms_test"


@dataclass(frozen=True)
class Infrastructure:
    amqp_url: str
    redis_url: str
    database_url: str


def _answers(url: str, default_port: int) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or default_port), timeout=2):
            return True
    except OSError:
        return False


def _docker_available() -> bool:
    try:
        import docker

        docker.from_env(timeout=2).ping()
        return True
    except Exception:  # noqa: BLE001 - no engine, no socket, no permission: all mean "no docker"
        return False


def start_infrastructure(stack: ExitStack) -> Infrastructure:
    if os.environ.get("TEST_USE_TESTCONTAINERS", "auto") != "never" and _docker_available():
        from testcontainers.postgres import PostgresContainer
        from testcontainers.rabbitmq import RabbitMqContainer
        from testcontainers.redis import RedisContainer

        rabbit = stack.enter_context(RabbitMqContainer("rabbitmq:3.13-alpine"))
        redis = stack.enter_context(RedisContainer("redis:7-alpine"))
        postgres = stack.enter_context(PostgresContainer("postgres:16-alpine", driver=None))
        amqp_url = (f"amqp://{rabbit.username}:{rabbit.password}@{rabbit.get_container_host_ip()}:"
                    f"{rabbit.get_exposed_port(rabbit.port)}/")
        redis_url = f"redis://{redis.get_container_host_ip()}:{redis.get_exposed_port(redis.port)}/0"
        return Infrastructure(amqp_url, redis_url, postgres.get_connection_url())
    amqp_url = os.environ.get("TEST_AMQP_URL") or os.environ.get("AMQP_URL") or DEFAULT_AMQP
    redis_url = os.environ.get("TEST_REDIS_URL") or os.environ.get("REDIS_URL") or DEFAULT_REDIS
    database_url = os.environ.get("TEST_DATABASE_URL") or DEFAULT_DATABASE
    missing = [url for url, port in ((amqp_url, 5672), (redis_url, 6379), (database_url, 5432))
               if not _answers(url, port)]
    if missing:
        message = f"no Docker for testcontainers and nothing answers at {', '.join(missing)}"
        if os.environ.get("CI", "").lower() == "true":
            raise RuntimeError(message)
        import pytest

        pytest.skip(message)
    return Infrastructure(amqp_url, redis_url, database_url)
