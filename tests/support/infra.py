"""Where the tests find RabbitMQ and Redis.

1. testcontainers, when a Docker engine answers;
2. otherwise TEST_AMQP_URL / TEST_REDIS_URL (or AMQP_URL / REDIS_URL), else the local defaults.
When nothing answers: the tests fail under CI=true, and are skipped elsewhere.
"""
from __future__ import annotations

import os
import socket
from contextlib import ExitStack
from urllib.parse import urlparse

DEFAULT_AMQP = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"


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


def start_infrastructure(stack: ExitStack) -> tuple[str, str]:
    if os.environ.get("TEST_USE_TESTCONTAINERS", "auto") != "never" and _docker_available():
        from testcontainers.rabbitmq import RabbitMqContainer
        from testcontainers.redis import RedisContainer

        rabbit = stack.enter_context(RabbitMqContainer("rabbitmq:3.13-alpine"))
        redis = stack.enter_context(RedisContainer("redis:7-alpine"))
        amqp_url = (f"amqp://{rabbit.username}:{rabbit.password}@{rabbit.get_container_host_ip()}:"
                    f"{rabbit.get_exposed_port(rabbit.port)}/")
        redis_url = f"redis://{redis.get_container_host_ip()}:{redis.get_exposed_port(redis.port)}/0"
        return amqp_url, redis_url
    amqp_url = os.environ.get("TEST_AMQP_URL") or os.environ.get("AMQP_URL") or DEFAULT_AMQP
    redis_url = os.environ.get("TEST_REDIS_URL") or os.environ.get("REDIS_URL") or DEFAULT_REDIS
    missing = [url for url, port in ((amqp_url, 5672), (redis_url, 6379)) if not _answers(url, port)]
    if missing:
        message = f"no Docker for testcontainers and nothing answers at {', '.join(missing)}"
        if os.environ.get("CI", "").lower() == "true":
            raise RuntimeError(message)
        import pytest

        pytest.skip(message)
    return amqp_url, redis_url
