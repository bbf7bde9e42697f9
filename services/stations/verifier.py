"""Password checks that hold under attack (docs/adr/basic-auth-under-attack.md).

* scrypt runs on a small thread pool of its own (STATIONS_AUTH_WORKERS), never on the event loop; at most
  STATIONS_AUTH_QUEUE checks wait for it -- beyond that :class:`Busy` is raised at once (the gateway answers 503
  + Retry-After) instead of a queue that grows until every handshake times out.
* Checks from *suspect* addresses (they failed logins recently, the gateway says) run on threads of their own
  (half as many, a quarter of the queue): a flood keeps those busy, never the ones real charge points get.
* The same work for every id: a station without a password is checked against a dummy hash, so the answer takes
  as long as for a station with one (the time does not tell which ids exist).
* A password verified before against the same stored hash is not hashed again: a bounded in-memory cache of
  HMAC(process key, stored hash, password) -> expiry. A changed password changes the stored hash, so its entries
  never match again; wrong passwords are never cached.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from services.stations import credentials
from services.stations.store import Credentials

CACHE_ENTRIES = 10_000      # verified (station, password) pairs kept
CACHE_SECONDS = 3600.0      # how long a verified pair is trusted without hashing again


class Busy(Exception):
    """Too many password checks are waiting: try again later."""


@dataclass(frozen=True)
class Verdict:
    authenticated: bool
    pending: bool = False   # it was the pending key (the charge point uses the new AuthorizationKey now)


class PasswordVerifier:
    def __init__(self, workers: int, queue: int):
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="password-check")
        self._slots = asyncio.Semaphore(workers + queue)
        suspect_workers = max(1, workers // 2)
        self._suspect_executor = ThreadPoolExecutor(max_workers=suspect_workers, thread_name_prefix="password-suspect")
        self._suspect_slots = asyncio.Semaphore(suspect_workers + max(1, queue // 4))
        self._key = os.urandom(32)
        self._cache: OrderedDict[bytes, float] = OrderedDict()
        self._dummy: str | None = None
        self._counting = threading.Lock()
        self.hashed = 0     # checks that ran scrypt (for tests and metrics)

    async def start(self) -> "PasswordVerifier":
        loop = asyncio.get_running_loop()
        self._dummy = await loop.run_in_executor(self._executor, credentials.hash_secret, os.urandom(20))
        return self

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._suspect_executor.shutdown(wait=False, cancel_futures=True)

    def _cache_key(self, stored: str, presented: bytes) -> bytes:
        return hmac.new(self._key, stored.encode() + b"\0" + presented, hashlib.sha256).digest()

    def _cached(self, stored: str | None, presented: bytes) -> bool:
        if not stored:
            return False
        key = self._cache_key(stored, presented)
        expires = self._cache.get(key)
        if expires is None:
            return False
        if expires < time.monotonic():
            del self._cache[key]
            return False
        self._cache.move_to_end(key)
        return True

    def _remember(self, stored: str, presented: bytes) -> None:
        self._cache[self._cache_key(stored, presented)] = time.monotonic() + CACHE_SECONDS
        while len(self._cache) > CACHE_ENTRIES:
            self._cache.popitem(last=False)

    async def verify(self, presented: bytes, stored: Credentials | None, suspect: bool = False) -> Verdict:
        """Whether ``presented`` is the station's password (or its pending one). Raises Busy."""
        if stored is not None:
            if self._cached(stored.password_hash, presented):
                return Verdict(True)
            if self._cached(stored.pending_hash, presented):
                return Verdict(True, pending=True)
        slots, executor = (self._suspect_slots, self._suspect_executor) if suspect else (self._slots, self._executor)
        if slots.locked():
            raise Busy("too many password checks waiting")
        async with slots:
            loop = asyncio.get_running_loop()
            verdict = await loop.run_in_executor(executor, self._check, presented, stored)
        if verdict.authenticated and stored is not None:
            self._remember(stored.pending_hash if verdict.pending else stored.password_hash, presented)
        return verdict

    def _check(self, presented: bytes, stored: Credentials | None) -> Verdict:
        """(on a worker thread) scrypt against the password -- or the dummy -- and then the pending key."""
        with self._counting:
            self.hashed += 1
        assert self._dummy is not None, "start() first"
        if credentials.verify(presented, stored.password_hash if stored is not None else self._dummy):
            return Verdict(stored is not None)
        if stored is not None and stored.pending_hash and credentials.verify(presented, stored.pending_hash):
            return Verdict(True, pending=True)
        return Verdict(False)
