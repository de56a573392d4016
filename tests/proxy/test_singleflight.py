"""SingleFlight: one call per key, and a cancelled leader does not cancel its waiters."""

from __future__ import annotations

import asyncio

import pytest

from imgaccel.proxy.singleflight import SingleFlight


async def test_callers_of_one_key_share_one_call() -> None:
    flights: SingleFlight[str, int] = SingleFlight()
    calls = 0
    release = asyncio.Event()

    async def call() -> int:
        nonlocal calls
        calls += 1
        await release.wait()
        return 7

    tasks = [asyncio.create_task(flights.run("k", call)) for _ in range(3)]
    await asyncio.sleep(0.01)
    release.set()
    assert await asyncio.gather(*tasks) == [7, 7, 7] and calls == 1


async def test_a_waiter_outlives_its_cancelled_leader() -> None:
    """The leader's client went away (its request task is cancelled): another client waiting
    for the same manifest gets it, from a call of its own, instead of a dropped connection."""
    flights: SingleFlight[str, int] = SingleFlight()
    calls = 0

    async def call() -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(3600)  # the leader's call, cancelled below
        return calls

    leader = asyncio.create_task(flights.run("k", call))
    await asyncio.sleep(0.01)
    waiter = asyncio.create_task(flights.run("k", call))
    await asyncio.sleep(0.01)
    leader.cancel()

    assert await asyncio.wait_for(waiter, 5) == 2
    with pytest.raises(asyncio.CancelledError):
        await leader


async def test_a_cancelled_waiter_is_cancelled_and_the_leader_goes_on() -> None:
    flights: SingleFlight[str, int] = SingleFlight()
    release = asyncio.Event()

    async def call() -> int:
        await release.wait()
        return 1

    leader = asyncio.create_task(flights.run("k", call))
    await asyncio.sleep(0.01)
    waiter = asyncio.create_task(flights.run("k", call))
    await asyncio.sleep(0.01)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    release.set()
    assert await leader == 1
