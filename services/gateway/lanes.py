"""Password checks in flight at this gateway instance, per source address (docs/adr/basic-auth-under-attack.md).

* At most ``GATEWAY_AUTH_CHECKS_PER_ADDRESS`` checks of one address are in flight (:class:`TooMany` beyond: 429 +
  Retry-After 1), so a burst from one fresh address -- before any of its failures is counted -- never fills the
  stations service's queue.
* Of an address in good standing (``clean``: no recent failures) the checks take turns here
  (:meth:`ChecksInFlight.clean_turn`, FIFO): the one whose turn it is claims a place in the clean lane (lockout.py,
  shared by every instance) -- by then an earlier one may have failed and made the address suspect -- and keeps
  the turn until its answer is in, unless the address is *good* (a charge point authenticated from it recently):
  then it passes the turn on at once. A fresh address thus puts one check at a time ahead of the suspect lane,
  however many handshakes it opens; the charge points behind one NAT address that log in for the first time at
  once wait for the first of them, then go side by side. Known pairs skip the turn.
"""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class TooMany(Exception):
    """This address has as many password checks in flight as it may."""


class ChecksInFlight:
    def __init__(self, per_address: int):
        self.per_address = per_address
        self._counts: dict[str, int] = {}
        self._turns: dict[str, Turn] = {}

    def count(self, address: str) -> int:
        return self._counts.get(address, 0)

    @contextlib.contextmanager
    def hold(self, address: str):
        """One check of ``address`` in flight. Raises TooMany."""
        if self._counts.get(address, 0) >= self.per_address:
            raise TooMany(address)
        self._counts[address] = self._counts.get(address, 0) + 1
        try:
            yield
        finally:
            left = self._counts[address] - 1
            if left:
                self._counts[address] = left
            else:
                del self._counts[address]

    @contextlib.asynccontextmanager
    async def clean_turn(self, address: str) -> AsyncIterator["Turn"]:
        """The clean lane's turn of ``address`` at this instance (FIFO), held until the block ends or
        :meth:`Turn.pass_on`."""
        turn = self._turns.get(address)
        if turn is None:
            turn = self._turns[address] = Turn()
        turn.users += 1
        try:
            await turn.lock.acquire()
            mine = _Held(turn)
            try:
                yield mine
            finally:
                mine.pass_on()
        finally:
            turn.users -= 1
            if not turn.users:
                del self._turns[address]


class Turn:
    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0              # holding or waiting


class _Held:
    def __init__(self, turn: Turn):
        self._turn: Turn | None = turn

    def pass_on(self) -> None:
        """The next check of the address may go (this one keeps its place in the clean lane)."""
        if self._turn is not None:
            self._turn.lock.release()
            self._turn = None
