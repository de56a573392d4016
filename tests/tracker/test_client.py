"""The node/seeder client against a live tracker: the whole cold-blob flow, as a node sees it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aiohttp
import pytest

from imgaccel.tracker.client import ClaimReply, Publication, TrackerClient, TrackerError, Work
from tests.conftest import until

from .conftest import TrackerClient as Live
from .conftest import digest_of, torrent_for

DIGEST = digest_of("cold")
ORIGIN = {"registry": "docker.io", "repository": "library/python"}


def _client(tracker: Live, node: str) -> TrackerClient:
    return TrackerClient(tracker.url, tracker.http, node=node)


async def test_seeder_fetches_once_while_nodes_wait(tracker: Live) -> None:
    seeder, node_a, node_b = (_client(tracker, n) for n in ("seed", "a", "b"))
    assert await seeder.heartbeat() == 20
    work = asyncio.create_task(seeder.work(wait=10))
    await until(lambda: tracker.state.notifier.waiting("work:seed") == 1)

    assert await node_a.get_metainfo(DIGEST) is None  # cache miss, not published
    claims = [await node.claim(DIGEST, **ORIGIN) for node in (node_a, node_b)]
    assert claims == [ClaimReply(False, "seed", 30.0)] * 2
    waits = [asyncio.create_task(n.get_metainfo(DIGEST, wait=10)) for n in (node_a, node_b)]

    assert await work == [Work(DIGEST, **ORIGIN)]
    assert (await seeder.claim(DIGEST, role="seeder")).fetch
    assert await seeder.renew(DIGEST)
    torrent = torrent_for(DIGEST)
    assert (await seeder.publish(DIGEST, torrent)).outcome == "created"
    assert await asyncio.gather(*waits) == [torrent, torrent]
    assert await node_b.claim(DIGEST) == ClaimReply(False, published=True)


async def test_failed_fetch_is_released_and_taken_over(tracker: Live) -> None:
    node_a, node_b = _client(tracker, "a"), _client(tracker, "b")
    assert (await node_a.claim(DIGEST)).fetch
    assert not (await node_b.claim(DIGEST)).fetch
    waiting = asyncio.create_task(node_b.get_metainfo(DIGEST, wait=10))
    await until(lambda: tracker.state.notifier.waiting(f"metainfo:{DIGEST}") == 1)
    await node_a.release(DIGEST)
    assert await waiting is None  # woken at once to claim again
    assert (await node_b.claim(DIGEST)).fetch
    assert not await node_a.renew(DIGEST)


async def test_republish_after_lost_state(tracker: Live) -> None:
    node = _client(tracker, "a")
    kept, lost = digest_of("kept"), digest_of("lost")
    first = await node.publish(kept, torrent_for(kept))
    assert first.outcome == "created"
    assert await node.publish(kept, torrent_for(kept)) == Publication("same", first.info_hash)
    assert await node.holdings([kept, lost]) == [lost]
    conflict = await node.publish(kept, torrent_for(kept, piece_length=65536))
    assert conflict.outcome == "conflict"


async def test_errors_are_tracker_errors() -> None:
    async with aiohttp.ClientSession() as http:
        client = TrackerClient("http://127.0.0.1:9", http, node="a")
        with pytest.raises(TrackerError):
            await client.claim(DIGEST)


async def test_bad_digest_is_a_tracker_error(tracker: Live) -> None:
    with pytest.raises(TrackerError, match="400"):
        await _client(tracker, "a").claim("sha256:short")


@contextlib.asynccontextmanager
async def hung_tracker() -> AsyncIterator[tuple[str, list[asyncio.StreamWriter]]]:
    """A tracker that accepts connections and never answers; its URL and the connections."""
    connections: list[asyncio.StreamWriter] = []

    async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", connections
    finally:
        for writer in connections:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_a_hung_tracker_costs_a_miss_its_timeout_then_is_not_asked() -> None:
    session_timeout = aiohttp.ClientTimeout(total=1.0)  # as the node sets tracker_timeout_seconds
    async with (
        hung_tracker() as (url, connections),
        aiohttp.ClientSession(timeout=session_timeout) as http,
    ):
        client = TrackerClient(url, http, node="a")
        # A correctness bound, generous against a slow machine: not the 30 s it once was.
        async with asyncio.timeout(15):
            with pytest.raises(TrackerError):
                await client.get_metainfo(DIGEST)
        with pytest.raises(TrackerError, match="not asked"):
            await client.get_metainfo(DIGEST)  # the next miss goes to the origin at once
        assert len(connections) == 1
