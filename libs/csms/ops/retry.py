"""Start-up and reconnect with backoff.

A process may start before RabbitMQ, Redis or PostgreSQL answer (a rollout, a node restart): it keeps
trying with growing waits (``RECONNECT_BACKOFF_INITIAL`` doubling up to ``RECONNECT_BACKOFF_MAX``, with
jitter so many pods do not retry in step), is not ready meanwhile, and logs one line per outage.
"""
from __future__ import annotations

import asyncio
import random
import ssl
from typing import Awaitable, Callable, TypeVar

from csms.ops.logs import OutageLog, outage_of

T = TypeVar("T")


class Backoff:
    """Waits that double from ``initial`` to ``maximum``, each within ±``jitter`` of its nominal value."""

    def __init__(self, initial: float, maximum: float, *, jitter: float = 0.2,
                 rng: Callable[[], float] = random.random):
        self.initial, self.maximum, self.jitter, self.rng = initial, max(maximum, initial), jitter, rng
        self.attempts = 0

    def nominal(self) -> float:
        return min(self.maximum, self.initial * 2 ** min(self.attempts, 60))

    def next(self) -> float:
        delay = self.nominal()
        self.attempts += 1
        return max(0.0, delay * (1 + self.jitter * (2 * self.rng() - 1)))

    def reset(self) -> None:
        self.attempts = 0


def retryable(exc: BaseException) -> bool:
    """A failure to connect that may heal by itself: refused, reset, timed out, name not resolved, server
    starting or overloaded, credentials not provisioned yet. Programming errors are not retried."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return False
    if outage_of(exc) is not None or isinstance(exc, (OSError, asyncio.TimeoutError)):
        return True
    module = type(exc).__module__ or ""
    if module.startswith(("aio_pika", "aiormq", "pamqp")):
        return True  # e.g. ProbableAuthenticationError while an operator provisions the user
    if module.startswith("asyncpg"):
        import asyncpg

        return isinstance(exc, (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError))
    if module.startswith("redis"):
        import redis.exceptions as redis_errors

        return isinstance(exc, (redis_errors.AuthenticationError, redis_errors.BusyLoadingError))
    return False


async def until_connected(connect: Callable[[], Awaitable[T]], *, dependency: str, outages: OutageLog,
                          initial: float, maximum: float, what: str = "") -> T:
    """``await connect()`` until it succeeds, waiting with backoff between attempts; failures that are not
    about reaching ``dependency`` are raised. Cancel the caller to give up (e.g. SIGTERM at start-up)."""
    backoff = Backoff(initial, maximum)
    while True:
        try:
            result = await connect()
        except Exception as exc:  # noqa: BLE001 - sorted by retryable()
            if not retryable(exc):
                raise
            outages.failed(dependency, exc, what)
            await asyncio.sleep(backoff.next())
            continue
        outages.recovered(dependency)
        return result
