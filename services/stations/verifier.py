"""Password checks that hold under attack (docs/adr/basic-auth-under-attack.md).

* scrypt runs on a small thread pool of its own (STATIONS_AUTH_WORKERS), never on the event loop.
* Checks wait in three lanes, and a free worker always takes the next check of the best lane that has one:
  ``known`` (a charge point id that logged in from this source address recently, the gateway says), ``clean``
  (an address without recent failed logins; the gateway lets one such check per address wait at a time) and
  ``suspect`` (everything else: addresses or pairs that failed recently, the rest of a burst). A flood from
  addresses that fail, or from fresh addresses beyond their first check, waits behind every real charge point.
* At most ``queue`` checks wait in all (STATIONS_AUTH_QUEUE, kept below the bus prefetch: at most
  PREFETCH * 3 // 4 - STATIONS_AUTH_WORKERS, handlers.py -- a waiting check holds its delivery, and a window full
  of waiting checks would leave every other request -- real charge points' ``admit`` and BootNotification
  included -- queued in RabbitMQ behind the flood). Of these ``known`` and ``suspect`` hold a quarter each,
  ``clean`` the rest; a check that finds its lane full waits in the next one down. :meth:`PasswordVerifier.room`
  tells before anything is looked up whether a check of a lane could wait at all.
* A check still waiting ``DEADLINE_MARGIN`` seconds before its caller stops waiting for the answer (the deadline
  the gateway sends, never later than CSMS_CALL_TIMEOUT after it arrived) is dropped unhashed: one handed a
  worker just before still has the time to be hashed and answered -- none is hashed for a caller that is gone.
  Beyond either, :class:`Busy` at once (the gateway answers 503 + Retry-After) instead of a queue that grows until
  every handshake times out.
* The same work for every id: one scrypt per reading of the password (credentials.matching) against the
  station's hashes -- the current and the pending key share one salt -- or, for a station without a password,
  against a dummy hash. The lane depends on the address, never on whether the id exists.
* A password verified before against the same stored hash is not hashed again: a bounded in-memory cache of
  HMAC(process key, stored hash, password) -> expiry. A changed password changes the stored hash, so its entries
  never match again; wrong passwords are never cached.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import math
import os
import threading
import time
from collections import OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

from services.stations import credentials
from services.stations.store import Credentials

CACHE_ENTRIES = 10_000      # verified (station, password) pairs kept
CACHE_SECONDS = 3600.0      # how long a verified pair is trusted without hashing again
DEADLINE_MARGIN = 1.0       # seconds before the caller's deadline a check that has no worker yet is dropped

Lane = Literal["known", "clean", "suspect"]
LANES: tuple[Lane, ...] = ("known", "clean", "suspect")   # best first


class Busy(Exception):
    """Too many password checks are waiting: try again later."""


@dataclass(frozen=True)
class Verdict:
    authenticated: bool
    pending: bool = False   # it was the pending key (the charge point uses the new AuthorizationKey now)


class _Lanes:
    """``workers`` slots handed out best lane first, FIFO within a lane; bounded waiting, stale waiters (their
    caller's deadline is near) dropped."""

    def __init__(self, workers: int, bounds: dict[Lane, int]):
        self.workers = workers
        self.running = 0
        self.bounds = bounds
        # each waiter with the instant (monotonic) after which it is no longer given a worker
        self.waiting: dict[Lane, deque[tuple[asyncio.Future, float]]] = {lane: deque() for lane in LANES}

    @staticmethod
    def _stale(until: float, now: float) -> bool:
        return now > until

    def room(self, lane: Lane) -> bool:
        """Whether a check of ``lane`` would get a worker or a place to wait now (full lanes may hold stale or
        abandoned waiters: then it may still get one)."""
        if self.running < self.workers:
            return True
        return any(len(self.waiting[candidate]) < self.bounds[candidate] for candidate in LANES[LANES.index(lane):])

    async def acquire(self, lane: Lane, until: float = math.inf) -> None:
        """A worker, at once or -- waiting -- until ``until`` (monotonic). Raises Busy."""
        now = time.monotonic()
        if self._stale(until, now):
            raise Busy("the caller stops waiting before a password check could be made")
        if self.running < self.workers:    # (then nobody waits: release() hands each freed slot on)
            self.running += 1
            return
        for candidate in LANES[LANES.index(lane):]:     # its lane, or when that is full the next one down
            queue = self.waiting[candidate]
            while queue and (queue[0][0].done() or self._stale(queue[0][1], now)):
                future, _ = queue.popleft()
                if not future.done():
                    future.set_exception(Busy("waited too long for a password check"))
            if len(queue) < self.bounds[candidate]:
                break
        else:
            raise Busy("too many password checks waiting")
        future = asyncio.get_running_loop().create_future()
        queue.append((future, until))
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled() and future.exception() is None:
                self.release()          # the slot was ours already: pass it on
            raise

    def release(self) -> None:
        now = time.monotonic()
        for lane in LANES:
            queue = self.waiting[lane]
            while queue:
                future, until = queue.popleft()
                if future.done():
                    continue                    # its handshake gave up
                if self._stale(until, now):
                    future.set_exception(Busy("waited too long for a password check"))
                    continue
                future.set_result(None)         # the slot goes to it
                return
        self.running -= 1


class PasswordVerifier:
    def __init__(self, workers: int, queue: int, max_wait: float | None = None):
        """``max_wait``: the longest a caller waits (CSMS_CALL_TIMEOUT), for checks that bring no deadline."""
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="password-check")
        known = suspect = max(1, queue // 4)
        self.bounds: dict[Lane, int] = {"known": known, "clean": max(1, queue - known - suspect), "suspect": suspect}
        self.max_wait = max_wait
        self._lanes = _Lanes(workers, self.bounds)
        self._key = os.urandom(32)
        self._cache: OrderedDict[bytes, float] = OrderedDict()
        self._dummy: str | None = None
        self._counting = threading.Lock()
        self.hashed = 0     # checks that ran scrypt (for tests and metrics)
        self.lanes_hashed: dict[Lane, int] = dict.fromkeys(LANES, 0)

    async def start(self) -> "PasswordVerifier":
        loop = asyncio.get_running_loop()
        self._dummy = await loop.run_in_executor(self._executor, credentials.hash_secret, os.urandom(20))
        return self

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

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

    def room(self, lane: Lane) -> bool:
        """Whether a check of ``lane`` could wait now: a caller refuses at once, before looking anything up."""
        return self._lanes.room(lane)

    async def verify(self, presented: bytes, stored: Credentials | None, lane: Lane = "clean",
                     within: float | None = None) -> Verdict:
        """Whether ``presented`` is the station's password (or its pending one); ``within``: seconds until the
        caller stops waiting for the answer (None: ``max_wait``) -- the check gets a worker no later than
        DEADLINE_MARGIN before that, else Busy. Raises Busy."""
        if stored is not None:
            if self._cached(stored.password_hash, presented):
                return Verdict(True)
            if self._cached(stored.pending_hash, presented):
                return Verdict(True, pending=True)
        within = self.max_wait if within is None else within
        until = math.inf if within is None else time.monotonic() + within - DEADLINE_MARGIN
        await self._lanes.acquire(lane, until)
        try:
            loop = asyncio.get_running_loop()
            verdict = await loop.run_in_executor(self._executor, self._check, presented, stored, lane)
        finally:
            self._lanes.release()
        if verdict.authenticated and stored is not None:
            self._remember(stored.pending_hash if verdict.pending else stored.password_hash, presented)
        return verdict

    def _check(self, presented: bytes, stored: Credentials | None, lane: Lane) -> Verdict:
        """(on a worker thread) one scrypt per reading of the password against the station's hashes, or the
        dummy's."""
        with self._counting:
            self.hashed += 1
            self.lanes_hashed[lane] += 1
        assert self._dummy is not None, "start() first"
        if stored is None:
            credentials.matching(presented, [self._dummy])
            return Verdict(False)
        hashes = [stored.password_hash, *([stored.pending_hash] if stored.pending_hash else [])]
        found = credentials.matching(presented, hashes)
        return Verdict(found is not None, pending=found == 1)
