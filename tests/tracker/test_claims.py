"""Cold-blob election: one fetcher per blob for the cluster, seeders first, leases that end."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aiohttp

from tests.conftest import until

from .conftest import FakeClock, TrackerClient, digest_of, torrent_for

DIGEST = digest_of("cold layer")
ORIGIN = {"registry": "docker.io", "repository": "library/ubuntu"}


async def _claim(tracker: TrackerClient, node: str, role: str = "node", **extra: str) -> Any:
    body = {"node": node, "role": role, **extra}
    async with tracker.api("POST", f"/v1/claims/{DIGEST}", json=body) as response:
        assert response.status == 200
        return await response.json()


async def _status(tracker: TrackerClient, method: str, path: str, **kwargs: Any) -> int:
    async with tracker.api(method, path, **kwargs) as response:
        return response.status


async def test_exactly_one_of_many_concurrent_claimants_fetches(tracker: TrackerClient) -> None:
    replies = await asyncio.gather(*(_claim(tracker, f"node-{n}") for n in range(25)))
    winners = [r for r in replies if r["fetch"]]
    assert len(winners) == 1
    assert winners[0]["lease_seconds"] == 30
    assert {r["holder"] for r in replies} == {winners[0]["holder"]}
    # Asking again is idempotent for the holder.
    assert (await _claim(tracker, winners[0]["holder"]))["fetch"] is True


async def test_published_blob_needs_no_fetch(tracker: TrackerClient) -> None:
    assert (await _claim(tracker, "a"))["fetch"] is True
    await _status(tracker, "PUT", f"/v1/metainfo/{DIGEST}?node=a", data=torrent_for(DIGEST))
    assert await _claim(tracker, "b") == {"fetch": False, "published": True}
    assert tracker.state.store.get_claim(DIGEST) is None


async def test_alive_seeder_is_elected_and_gets_the_work(tracker: TrackerClient) -> None:
    assert await _status(tracker, "POST", "/v1/seeders", json={"node": "seed-1"}) == 200

    async def poll_work() -> Any:
        async with tracker.api("GET", "/v1/seeders/work?node=seed-1&wait=10") as response:
            return await response.json()

    work = asyncio.create_task(poll_work())
    await until(lambda: bool(tracker.state.notifier.waiting("work:seed-1")))
    reply = await _claim(tracker, "node-a", **ORIGIN)
    assert reply["fetch"] is False and reply["holder"] == "seed-1"
    assert await work == {"work": [{"digest": DIGEST, **ORIGIN}]}
    # The seeder claims what it was given, and is told to fetch; nodes keep waiting.
    assert (await _claim(tracker, "seed-1", role="seeder"))["fetch"] is True
    assert (await _claim(tracker, "node-b", **ORIGIN))["holder"] == "seed-1"


async def test_dead_seeder_is_not_elected(tracker: TrackerClient, clock: FakeClock) -> None:
    await _status(tracker, "POST", "/v1/seeders", json={"node": "seed-1"})
    clock.advance(21)  # past seeder_ttl
    reply = await _claim(tracker, "node-a", **ORIGIN)
    assert reply["fetch"] is True and reply["holder"] == "node-a"


async def test_lapsed_lease_lets_another_node_fetch(
    tracker: TrackerClient, clock: FakeClock
) -> None:
    assert (await _claim(tracker, "crashed"))["fetch"] is True

    async def wait_metainfo() -> int:
        return await _status(tracker, "GET", f"/v1/metainfo/{DIGEST}?wait=30")

    waiter = asyncio.create_task(wait_metainfo())
    await until(lambda: bool(tracker.state.notifier.waiting(f"metainfo:{DIGEST}")))
    clock.advance(20)
    assert (
        await _status(tracker, "POST", f"/v1/claims/{DIGEST}/renew", json={"node": "crashed"})
        == 200
    )
    clock.advance(29)
    assert (await _claim(tracker, "b"))["fetch"] is False  # renewed: still held
    clock.advance(2)
    tracker.sweep()
    assert await waiter == 404  # woken at once to claim again, not after 30 s
    assert (await _claim(tracker, "b"))["fetch"] is True
    assert (
        await _status(tracker, "POST", f"/v1/claims/{DIGEST}/renew", json={"node": "crashed"})
        == 409
    )


async def test_release_hands_the_fetch_on(tracker: TrackerClient) -> None:
    assert (await _claim(tracker, "a"))["fetch"] is True
    assert await _status(tracker, "DELETE", f"/v1/claims/{DIGEST}?node=b") == 409
    assert await _status(tracker, "DELETE", f"/v1/claims/{DIGEST}?node=a") == 204
    assert (await _claim(tracker, "b"))["fetch"] is True


async def test_seeder_that_gives_up_is_skipped_for_that_blob(tracker: TrackerClient) -> None:
    await _status(tracker, "POST", "/v1/seeders", json={"node": "seed-1"})
    assert (await _claim(tracker, "node-a", **ORIGIN))["holder"] == "seed-1"
    assert await _status(tracker, "DELETE", f"/v1/claims/{DIGEST}?node=seed-1") == 204
    reply = await _claim(tracker, "node-a", **ORIGIN)
    assert reply == {"fetch": True, "holder": "node-a", "lease_seconds": 30}


async def test_bad_claims_are_400(tracker: TrackerClient) -> None:
    assert await _status(tracker, "POST", f"/v1/claims/{DIGEST}", json={"role": "node"}) == 400
    assert (
        await _status(tracker, "POST", f"/v1/claims/{DIGEST}", json={"node": "a", "role": "boss"})
        == 400
    )
    assert await _status(tracker, "POST", "/v1/claims/sha256:00", json={"node": "a"}) == 400
    assert await _status(tracker, "GET", "/v1/seeders/work") == 400


async def test_work_is_not_handed_to_a_poll_whose_seeder_went_away(tracker: TrackerClient) -> None:
    """A seeder restarts while its long poll waits on the tracker: the work that arrives then
    stays queued for the restarted seeder's poll, not written to the closed connection."""
    assert await _status(tracker, "POST", "/v1/seeders", json={"node": "seed-1"}) == 200
    async with aiohttp.ClientSession() as gone:
        poll = asyncio.create_task(gone.get(f"{tracker.url}/v1/seeders/work?node=seed-1&wait=10"))
        await until(lambda: bool(tracker.state.notifier.waiting("work:seed-1")))
        poll.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await poll
    await asyncio.sleep(0.1)  # the tracker sees the connection close

    reply = await _claim(tracker, "node-a", **ORIGIN)
    assert reply["holder"] == "seed-1"
    async with tracker.api("GET", "/v1/seeders/work?node=seed-1&wait=5") as response:
        assert await response.json() == {"work": [{"digest": DIGEST, **ORIGIN}]}
