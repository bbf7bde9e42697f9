"""Password checks in flight per source address at one gateway instance (lanes.py): the cap, and the clean lane's
turns (FIFO, held until the answer is in unless passed on)."""
from __future__ import annotations

import asyncio

import pytest

from services.gateway import lanes


def test_at_most_so_many_checks_of_one_address_are_in_flight():
    checks = lanes.ChecksInFlight(per_address=2)
    with checks.hold("10.0.0.1"), checks.hold("10.0.0.1"):
        with pytest.raises(lanes.TooMany):
            with checks.hold("10.0.0.1"):
                pass
        with checks.hold("10.0.0.2"):           # another address has its own
            assert (checks.count("10.0.0.1"), checks.count("10.0.0.2")) == (2, 1)
    assert checks.count("10.0.0.1") == 0 and not checks._counts


async def test_clean_turns_go_one_after_the_other_unless_passed_on():
    checks = lanes.ChecksInFlight(per_address=8)
    order: list[str] = []
    release = {name: asyncio.Event() for name in ("a", "b", "c")}

    async def check(name: str, pass_on: bool = False) -> None:
        async with checks.clean_turn("10.0.0.1") as turn:
            order.append(f"{name} in")
            if pass_on:
                turn.pass_on()
            await release[name].wait()
        order.append(f"{name} out")

    tasks = [asyncio.create_task(check("a")), asyncio.create_task(check("b", pass_on=True)),
             asyncio.create_task(check("c"))]
    await asyncio.sleep(0.01)
    assert order == ["a in"]                     # b and c wait for a's answer
    release["a"].set()
    await asyncio.sleep(0.01)
    assert order == ["a in", "a out", "b in", "c in"]   # b passed its turn on: c goes while b's check runs
    release["c"].set()
    release["b"].set()
    await asyncio.gather(*tasks)
    assert not checks._turns                     # nothing kept once nobody waits


async def test_a_cancelled_waiter_gives_up_its_turn():
    checks = lanes.ChecksInFlight(per_address=8)
    gate = asyncio.Event()

    async def holder() -> None:
        async with checks.clean_turn("10.0.0.1"):
            await gate.wait()
    first = asyncio.create_task(holder())
    await asyncio.sleep(0)

    async def waiter() -> None:
        async with checks.clean_turn("10.0.0.1"):
            pass
    second = asyncio.create_task(waiter())
    await asyncio.sleep(0)
    second.cancel()
    gate.set()
    await first
    with pytest.raises(asyncio.CancelledError):
        await second
    async with checks.clean_turn("10.0.0.1"):    # free again
        pass
    assert not checks._turns
