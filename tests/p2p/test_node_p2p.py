"""Nodes share blobs through the swarm: a real registry as origin, a real tracker, libtorrent.

Every claim about where bytes came from is checked against the origin's own request log.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from yarl import URL

from imgaccel.oci.digest import Digest
from imgaccel.ops.status import render
from imgaccel.p2p.certs import KeyPair, make_ca
from imgaccel.p2p.metainfo import Metainfo
from imgaccel.proxy import peers as peers_module
from imgaccel.proxy.state import NODE
from imgaccel.testing.images import Image
from imgaccel.testing.registry import DistributionRegistry
from imgaccel.tracker import Served
from imgaccel.tracker.state import STATE
from imgaccel.tracker.swarm import Swarms
from imgaccel.upstream.blobs import BlobLocation
from tests.conftest import NodeServer, needs_registry, until
from tests.p2p.helpers import cluster_tracker, push_blob
from tests.p2p_fixtures import certs_dir, get_blob, metric, sha256

pytestmark = [pytest.mark.system, needs_registry]

EMPTY = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


async def test_a_blob_pulled_on_one_node_comes_from_peers_on_the_others(
    origin: DistributionRegistry,
    repo: str,
    big_image: Image,
    p2p_node: Callable[..., Any],
) -> None:
    layer = big_image.layers[0].digest
    first = await p2p_node("n1")
    assert sha256(await get_blob(first, origin, repo, layer)) == layer
    assert len(origin.blob_gets(layer)) == 1
    origin.requests.clear()

    others = [await p2p_node(f"n{i}") for i in (2, 3, 4)]
    bodies = await asyncio.gather(*(get_blob(n, origin, repo, layer) for n in others))

    assert all(sha256(body) == layer for body in bodies)
    await origin.settle()
    assert origin.requests == []  # not one request: no blob GET, no HEAD
    for n in others:
        assert (
            await metric(n, 'imgaccel_bytes_served_total{source="peer"}')
            == big_image.layers[0].size
        )


async def test_four_nodes_asking_for_one_cold_blob_cause_one_origin_fetch(
    origin: DistributionRegistry,
    repo: str,
    big_image: Image,
    p2p_node: Callable[..., Any],
) -> None:
    layer = big_image.layers[0].digest
    nodes = [await p2p_node(f"c{i}") for i in range(4)]

    bodies = await asyncio.gather(*(get_blob(n, origin, repo, layer) for n in nodes))

    assert all(sha256(body) == layer for body in bodies)
    await origin.settle()
    assert len(origin.blob_gets(layer)) == 1


async def test_origin_down_but_peers_hold_the_blob(
    origin: DistributionRegistry,
    repo: str,
    big_image: Image,
    p2p_node: Callable[..., Any],
) -> None:
    layer = big_image.layers[0].digest
    await get_blob(await p2p_node("d1"), origin, repo, layer)
    await origin.stop()

    body = await get_blob(await p2p_node("d2"), origin, repo, layer)

    assert sha256(body) == layer


async def test_tracker_down_means_the_origin(
    origin: DistributionRegistry,
    repo: str,
    big_image: Image,
    p2p_node: Callable[..., Any],
) -> None:
    layer = big_image.layers[0].digest
    node = await p2p_node("t1", tracker_url="https://127.0.0.1:9")  # nothing listens there

    assert sha256(await get_blob(node, origin, repo, layer)) == layer
    await origin.settle()
    assert len(origin.blob_gets(layer)) == 1


async def test_a_host_without_the_cluster_credentials_gets_nothing_from_peers(
    origin: DistributionRegistry,
    repo: str,
    big_image: Image,
    p2p_node: Callable[..., Any],
) -> None:
    layer = big_image.layers[0].digest
    await get_blob(await p2p_node("h1"), origin, repo, layer)
    stranger = await p2p_node("stranger", ca=make_ca("another-cluster"))

    body = await get_blob(stranger, origin, repo, layer)

    assert sha256(body) == layer  # its pull works, from the origin:
    await origin.settle()
    assert len(origin.blob_gets(layer)) == 2
    assert await metric(stranger, 'imgaccel_bytes_served_total{source="peer"}') == 0
    assert await metric(stranger, "imgaccel_p2p_download_bytes_total") == 0


async def test_a_peer_killed_mid_transfer_does_not_fail_the_pull(
    origin: DistributionRegistry,
    repo: str,
    big_image: Image,
    p2p_node: Callable[..., Any],
) -> None:
    layer = big_image.layers[0].digest
    # A slow uploader, so that the transfer is still going when it dies.
    holder = await p2p_node("k1", upload_rate_limit=4_000_000)
    await get_blob(holder, origin, repo, layer)
    origin.requests.clear()
    fetcher = await p2p_node("k2")

    pull = asyncio.create_task(get_blob(fetcher, origin, repo, layer))
    peers = fetcher.app[NODE].fetcher.peers
    assert peers is not None and peers.swarm is not None
    swarm = peers.swarm
    async with asyncio.timeout(30):
        while (await swarm.stats()).total_downloaded < 4_000_000:  # noqa: ASYNC110 - 24 MB at 4 MB/s
            await asyncio.sleep(0.05)
    await holder.close()
    body = await pull

    assert sha256(body) == layer
    await origin.settle()
    ranges = [r for r in origin.blob_gets(layer) if r.status == 206]
    assert ranges, "the rest should come from the origin with Range requests"
    assert not [r for r in origin.blob_gets(layer) if r.status == 200]
    # Pieces arrive rarest-first: what peers delivered, prefix or not, is not fetched again.
    from_origin = sum(r.written for r in ranges)
    assert from_origin <= big_image.layers[0].size - 4_000_000 + 2 * 1024 * 1024
    cached = Path(fetcher.settings.cache.dir) / "blobs" / "sha256" / layer.split(":")[1]
    assert sha256(cached.read_bytes()) == layer


async def test_a_peer_serving_corrupt_data_leaves_no_bad_byte_anywhere(
    origin: DistributionRegistry,
    repo: str,
    big_image: Image,
    p2p_node: Callable[..., Any],
) -> None:
    layer = big_image.layers[0].digest
    liar = await p2p_node("x1")
    await get_blob(liar, origin, repo, layer)
    blob = Path(liar.settings.cache.dir) / "blobs" / "sha256" / layer.split(":")[1]
    with open(blob, "r+b") as f:  # flip bytes in the middle of every 1 MiB after the first
        for offset in range(1 << 20, blob.stat().st_size, 1 << 20):
            f.seek(offset + 100)
            f.write(b"\xff" * 64)
    victim = await p2p_node("x2")

    body = await get_blob(victim, origin, repo, layer)

    assert sha256(body) == layer
    cached = Path(victim.settings.cache.dir) / "blobs" / "sha256" / layer.split(":")[1]
    assert sha256(cached.read_bytes()) == layer
    assert list((Path(victim.settings.cache.dir) / "tmp").iterdir()) == []


async def test_blobs_below_min_blob_bytes_come_from_the_origin_even_when_peers_have_them(
    origin: DistributionRegistry, repo: str, big_image: Image, p2p_node: Callable[..., Any]
) -> None:
    small = big_image.layers[1].digest  # 10 kB
    await get_blob(await p2p_node("m1"), origin, repo, small)
    node = await p2p_node("m2", min_blob_bytes=64 * 1024)

    assert sha256(await get_blob(node, origin, repo, small)) == small

    await origin.settle()
    assert len(origin.blob_gets(small)) == 2
    assert await metric(node, 'imgaccel_bytes_served_total{source="peer"}') == 0


async def test_a_fetch_of_a_blob_the_node_already_seeds_keeps_the_cache_file(
    origin: DistributionRegistry, repo: str, big_image: Image, p2p_node: Callable[..., Any]
) -> None:
    """A fetch can be asked for a blob committed a moment ago (by a prewarm, the seeder's work,
    a client that looked before the commit): it must not fetch the blob again, and the swarm
    must never delete the cache file it seeds from (a download of the blob would share the
    seeding torrent; ending that download once deleted the file)."""
    layer = Digest.parse(big_image.layers[0].digest)
    node = await p2p_node("d1")
    await get_blob(node, origin, repo, str(layer))
    fetcher = node.app[NODE].fetcher
    peers = fetcher.peers
    assert peers is not None
    origin.requests.clear()

    assert await fetcher.fill(BlobLocation(origin.address, repo, layer, None)) is None
    await asyncio.sleep(1.0)  # libtorrent would delete files on its disk thread

    cached = Path(node.settings.cache.dir) / "blobs" / "sha256" / layer.hex
    assert sha256(cached.read_bytes()) == str(layer)
    await origin.settle()
    assert origin.requests == []
    later = await p2p_node("d2")  # and the node still seeds it
    assert sha256(await get_blob(later, origin, repo, str(layer))) == str(layer)
    await origin.settle()
    assert origin.blob_gets(str(layer)) == []


async def test_a_node_that_served_the_empty_blob_starts_again_and_serves_it(
    origin: DistributionRegistry, p2p_node: Callable[..., Any]
) -> None:
    """libtorrent refuses a torrent of no bytes: the empty blob is served, never shared."""
    repo = "test/empty"
    assert await push_blob(origin.url, repo, b"") == EMPTY
    node = await p2p_node("e1")
    assert await get_blob(node, origin, repo, EMPTY) == b""
    await node.close()
    origin.requests.clear()

    again = await p2p_node("e1")  # the same cache and metadata

    assert await get_blob(again, origin, repo, EMPTY) == b""
    await origin.settle()
    assert origin.blob_gets(EMPTY) == []  # from the cache
    other = await p2p_node("e2")  # a node without it gets it from the origin, not the swarm
    assert await get_blob(other, origin, repo, EMPTY) == b""
    await origin.settle()
    assert len(origin.blob_gets(EMPTY)) == 1


async def test_a_stored_torrent_libtorrent_refuses_is_dropped_at_start(
    origin: DistributionRegistry,
    repo: str,
    big_image: Image,
    p2p_node: Callable[..., Any],
) -> None:
    small = big_image.layers[1]
    node = await p2p_node("r1")
    await get_blob(node, origin, repo, small.digest)
    peers = node.app[NODE].fetcher.peers
    assert peers is not None
    digest = Digest.parse(small.digest)
    stored = peers.meta.torrent(digest)
    assert stored is not None
    good = Metainfo.from_bytes(stored)
    # Valid bencoding and a consistent info dict, but a piece length libtorrent refuses.
    refused = replace(good, piece_length=1 << 30, pieces=bytes(20))
    peers.meta.put_torrent(digest, refused.to_bytes())
    await node.close()

    again = await p2p_node("r1")

    assert sha256(await get_blob(again, origin, repo, small.digest)) == small.digest
    peers = again.app[NODE].fetcher.peers
    assert peers is not None
    assert peers.meta.torrent(digest) is None


async def test_a_tracker_that_lost_its_state_learns_the_nodes_torrents_again(
    origin: DistributionRegistry,
    repo: str,
    big_image: Image,
    cluster_ca: KeyPair,
    node_factory: Callable[..., Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A tracker on a new, empty volume: running nodes publish what they hold again (every
    RESYNC_SECONDS), so the next node gets the blob from them, not from the origin."""
    monkeypatch.setattr(peers_module, "RESYNC_SECONDS", 0.5)
    layer = big_image.layers[0].digest
    certs = certs_dir(tmp_path / "certs-tracker", cluster_ca)

    async with cluster_tracker(tmp_path / "tracker-1", certs) as first:
        port = URL(first.url).port
        n1 = await _tracked_node(node_factory, origin, tmp_path, cluster_ca, "n1", first.url)
        assert sha256(await get_blob(n1, origin, repo, layer)) == layer
    assert port is not None
    async with cluster_tracker(tmp_path / "tracker-2", certs, port=port) as second:
        await _second_node_gets_it_from_the_first(
            second, node_factory, origin, repo, layer, tmp_path, cluster_ca
        )


async def test_a_node_moved_to_another_tracker_seeds_its_cache_through_that_one(
    origin: DistributionRegistry,
    repo: str,
    big_image: Image,
    cluster_ca: KeyPair,
    node_factory: Callable[..., Any],
    tmp_path: Path,
) -> None:
    """The tracker at a new address (another Service, a new port): the torrents in the
    node's cache name the old one as their announce URL, and so did those it published. The
    node announces them to the tracker it is configured with, and a node that gets their
    metainfo from that tracker finds it there as a peer: no byte from the origin."""
    layer = big_image.layers[0].digest
    certs = certs_dir(tmp_path / "certs-tracker", cluster_ca)

    async with cluster_tracker(tmp_path / "tracker-1", certs) as first:
        n1 = await _tracked_node(node_factory, origin, tmp_path, cluster_ca, "n1", first.url)
        assert sha256(await get_blob(n1, origin, repo, layer)) == layer
        await n1.close()
    async with cluster_tracker(tmp_path / "tracker-2", certs) as second:
        assert second.url != first.url
        await _tracked_node(node_factory, origin, tmp_path, cluster_ca, "n1", second.url)
        await _second_node_gets_it_from_the_first(
            second, node_factory, origin, repo, layer, tmp_path, cluster_ca
        )


async def test_a_restarted_node_joins_its_cache_s_swarms_with_one_call_not_an_announce_each(
    origin: DistributionRegistry,
    repo: str,
    big_image: Image,
    cluster_ca: KeyPair,
    node_factory: Callable[..., Any],
    tmp_path: Path,
) -> None:
    """libtorrent would announce every seed of a restarted node's cache: thousands of TLS
    handshakes for the tracker per node, a rolling update's worth at once. The node joins
    their swarms with its ``/v1/alive`` call instead, and peers find it there."""
    restarted = _restarted_on_its_cache(origin, repo, big_image, cluster_ca, node_factory, tmp_path)
    async with restarted as (tracker, n1, layers, sent):
        state = tracker.app[STATE]
        peers = n1.app[NODE].fetcher.peers
        assert peers is not None
        await peers.reseeded.wait()

        assert state.swarms.peer_count() == len(layers)  # every cached layer's swarm
        assert {event: _announces(state, event) for event in sent} == sent
        await asyncio.sleep(1.5)  # nor later: an announce would have landed by now
        assert {event: _announces(state, event) for event in sent} == sent
        await _second_node_gets_it_from_the_first(
            tracker, node_factory, origin, repo, layers[0], tmp_path, cluster_ca
        )


async def test_a_restarted_node_announces_its_seeds_to_a_tracker_that_does_not_join_them(
    origin: DistributionRegistry,
    repo: str,
    big_image: Image,
    cluster_ca: KeyPair,
    node_factory: Callable[..., Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A tracker from before ``/v1/alive`` took ``downloading`` (a rolling update of the nodes
    first) answers the seeds unknown: the node gives each its tracker and announces it."""
    refresh = Swarms.refresh

    def without_joining(self: Swarms, *args: Any, seeds: object = ()) -> Any:
        return refresh(self, *args)

    monkeypatch.setattr(Swarms, "refresh", without_joining)
    restarted = _restarted_on_its_cache(origin, repo, big_image, cluster_ca, node_factory, tmp_path)
    async with restarted as (tracker, _, layers, sent):
        state = tracker.app[STATE]

        await until(lambda: state.swarms.peer_count() == len(layers), seconds=10)
        assert _announces(state, "started") == sent["started"] + len(layers)
        await _second_node_gets_it_from_the_first(
            tracker, node_factory, origin, repo, layers[0], tmp_path, cluster_ca
        )


@contextlib.asynccontextmanager
async def _restarted_on_its_cache(
    origin: DistributionRegistry,
    repo: str,
    image: Image,
    ca: KeyPair,
    node_factory: Callable[..., Any],
    tmp_path: Path,
) -> AsyncIterator[tuple[Served, NodeServer, list[str], dict[str, float]]]:
    """A tracker, and node n1 that fetched every layer of ``image`` and was then stopped and
    started again on its cache (out of every swarm before the start); the layers' digests, and
    the announces the tracker had counted before the start, by event ("" and "started")."""
    layers = [layer.digest for layer in image.layers]
    certs = certs_dir(tmp_path / "certs-tracker", ca)
    async with cluster_tracker(tmp_path / "tracker", certs) as tracker:
        state = tracker.app[STATE]
        n1 = await _tracked_node(node_factory, origin, tmp_path, ca, "n1", tracker.url)
        for layer in layers:
            assert sha256(await get_blob(n1, origin, repo, layer)) == layer
        await until(lambda: state.store.known_digests(layers) == set(layers), seconds=30)
        await n1.close()
        assert state.swarms.peer_count() == 0
        sent = {event: _announces(state, event) for event in ("", "started")}
        restarted = await _tracked_node(node_factory, origin, tmp_path, ca, "n1", tracker.url)
        yield tracker, restarted, layers, sent


def _announces(state: Any, event: str) -> float:
    value = state.registry.get_sample_value("imgaccel_tracker_announces_total", {"event": event})
    return value or 0.0


async def test_a_stopped_node_leaves_the_tracker_s_swarms_at_once(
    origin: DistributionRegistry,
    repo: str,
    big_image: Image,
    cluster_ca: KeyPair,
    node_factory: Callable[..., Any],
    tmp_path: Path,
) -> None:
    """A node that stops (a rollout, a scale-down) tells the tracker: it is out of the swarm
    of every blob it seeded at once, not after the tracker's peer_ttl (3 minutes), during which
    peers would be sent to it."""
    seeding = _seeding(node_factory, origin, repo, big_image, cluster_ca, tmp_path)
    async with seeding as (tracker, n1):
        await n1.close()

        assert tracker.app[STATE].swarms.peer_count() == 0


async def test_a_node_that_evicts_a_blob_leaves_its_swarm_at_once(
    origin: DistributionRegistry,
    repo: str,
    big_image: Image,
    cluster_ca: KeyPair,
    node_factory: Callable[..., Any],
    tmp_path: Path,
) -> None:
    """Else the tracker would hand the node out for the blob for its peer ttl (3 minutes), and
    a node asking then would find nobody there; the node keeps its other peers alive."""
    seeding = _seeding(node_factory, origin, repo, big_image, cluster_ca, tmp_path)
    async with seeding as (tracker, n1):
        state = tracker.app[STATE]

        assert n1.app[NODE].store.remove(Digest.parse(big_image.layers[0].digest))

        await until(lambda: state.swarms.peer_count() == 0, seconds=5)
        peers = n1.app[NODE].fetcher.peers
        assert peers is not None and peers.swarm is not None
        address = (ipaddress.ip_address("127.0.0.1"), peers.swarm.port)
        assert state.swarms.refreshes(address, state.now())


async def test_a_blob_evicted_and_fetched_again_at_once_stays_in_its_swarm(
    origin: DistributionRegistry,
    repo: str,
    big_image: Image,
    cluster_ca: KeyPair,
    node_factory: Callable[..., Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The node tells the tracker of evictions a moment later: not of a blob it seeds again
    by then (the tracker would drop the peer it just announced)."""
    monkeypatch.setattr(peers_module, "DEPARTURES_SECONDS", 6.0)
    layer = big_image.layers[0].digest
    seeding = _seeding(node_factory, origin, repo, big_image, cluster_ca, tmp_path)
    async with seeding as (tracker, n1):
        state = tracker.app[STATE]
        [(_, first)] = state.store.load_peers()

        evicted = time.monotonic()
        assert n1.app[NODE].store.remove(Digest.parse(layer))
        assert sha256(await get_blob(n1, origin, repo, layer)) == layer

        def announced_again() -> bool:  # by the new torrent: a peer id of its own
            return [p.peer_id for _, p in state.store.load_peers()] not in ([], [first.peer_id])

        await until(announced_again, seconds=5)  # before the node tells of the eviction
        await asyncio.sleep(evicted + peers_module.DEPARTURES_SECONDS + 1 - time.monotonic())
        assert state.swarms.peer_count() == 1


async def test_a_seeding_node_stays_in_the_swarms_past_the_tracker_s_peer_ttl(
    origin: DistributionRegistry,
    repo: str,
    big_image: Image,
    cluster_ca: KeyPair,
    node_factory: Callable[..., Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """libtorrent announces a seeding torrent every 5 minutes at the most, and the tracker
    forgets a peer after 3 (here 3 s): the node tells the tracker every interval which torrents
    it holds, which keeps it in their swarms; a tracker that lost them names them, and the node
    announces them again."""
    monkeypatch.setattr(peers_module, "ALIVE_SECONDS", 0.5)
    seeding = _seeding(
        node_factory, origin, repo, big_image, cluster_ca, tmp_path, announce_interval=1, peer_ttl=3
    )
    async with seeding as (tracker, _):
        state = tracker.app[STATE]
        await asyncio.sleep(6)  # twice the ttl; the sweeper runs every 0.75 s
        assert state.swarms.peer_count() == 1

        state.swarms.expire(state.now() + 10)  # the tracker forgets (a new volume, say)
        assert state.swarms.peer_count() == 0
        await until(lambda: state.swarms.peer_count() == 1, seconds=10)


async def test_a_node_tells_the_tracker_it_keeps_its_peers_alive_before_it_announces(
    origin: DistributionRegistry,
    cluster_ca: KeyPair,
    node_factory: Callable[..., Any],
    tmp_path: Path,
) -> None:
    """So that the tracker has the node's seeds announce rarely from their first announce on
    (the periodic call comes a minute later)."""
    certs = certs_dir(tmp_path / "certs-tracker", cluster_ca)
    async with cluster_tracker(tmp_path / "tracker", certs) as tracker:
        n1 = await _tracked_node(node_factory, origin, tmp_path, cluster_ca, "n1", tracker.url)
        peers = n1.app[NODE].fetcher.peers
        assert peers is not None and peers.swarm is not None
        await peers.reseeded.wait()
        state = tracker.app[STATE]
        address = (ipaddress.ip_address("127.0.0.1"), peers.swarm.port)
        assert state.swarms.refreshes(address, state.now())


async def test_a_node_whose_tracker_stopped_says_so_in_its_status(
    origin: DistributionRegistry,
    cluster_ca: KeyPair,
    node_factory: Callable[..., Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Peer-to-peer quietly stops working for a node that cannot reach its tracker (every
    pull from the origin): ``imgaccel status`` says since when and why."""
    monkeypatch.setattr(peers_module, "ALIVE_SECONDS", 0.3)
    certs = certs_dir(tmp_path / "certs-tracker", cluster_ca)
    async with cluster_tracker(tmp_path / "tracker", certs) as tracker:
        n1 = await _tracked_node(node_factory, origin, tmp_path, cluster_ca, "n1", tracker.url)
        peers = n1.app[NODE].fetcher.peers
        assert peers is not None
        await until(lambda: peers.tracker_answered is not None, seconds=10)
        assert peers.tracker_failing is None
        registry = n1.app[NODE].metrics.registry
        assert registry.get_sample_value("imgaccel_p2p_tracker_up") == 1
    await until(lambda: peers.tracker_failing is not None, seconds=10)  # the tracker stopped
    assert registry.get_sample_value("imgaccel_p2p_tracker_up") == 0  # what to alert on

    async with aiohttp.ClientSession() as http, http.get(f"{n1.url}/_imgaccel/status") as reply:
        document = await reply.json()
    assert document["p2p"]["tracker_failing"]["reason"].startswith("tracker POST /v1/alive")
    assert "  tracker FAILING since " in render(document, n1.url)


@contextlib.asynccontextmanager
async def _seeding(
    node_factory: Callable[..., Any],
    origin: DistributionRegistry,
    repo: str,
    image: Image,
    cluster_ca: KeyPair,
    tmp_path: Path,
    **tracker_settings: Any,
) -> AsyncIterator[tuple[Served, NodeServer]]:
    """A tracker, and node n1 seeding the image's first layer (fetched from the origin), known
    to the tracker as its one peer."""
    layer = image.layers[0].digest
    certs = certs_dir(tmp_path / "certs-tracker", cluster_ca)
    async with cluster_tracker(tmp_path / "tracker", certs, **tracker_settings) as tracker:
        n1 = await _tracked_node(node_factory, origin, tmp_path, cluster_ca, "n1", tracker.url)
        assert sha256(await get_blob(n1, origin, repo, layer)) == layer
        swarms = tracker.app[STATE].swarms
        await until(lambda: swarms.peer_count() == 1, seconds=30)  # seeding the layer
        yield tracker, n1


async def _tracked_node(
    node_factory: Callable[..., Any],
    origin: DistributionRegistry,
    tmp_path: Path,
    ca: KeyPair,
    name: str,
    tracker_url: str,
) -> NodeServer:
    """A P2P node ``name`` on the cache ``cache-NAME`` (the same one each time), with
    ``tracker_url``."""
    p2p = {
        "tracker_url": tracker_url,
        "listen": "127.0.0.1:0",
        "node_id": name,
        "certs_dir": str(certs_dir(tmp_path / f"certs-{name}", ca)),
    }
    node: NodeServer = await node_factory(origin, cache_dir=tmp_path / f"cache-{name}", p2p=p2p)
    return node


async def _second_node_gets_it_from_the_first(
    tracker: Served,
    node_factory: Callable[..., Any],
    origin: DistributionRegistry,
    repo: str,
    layer: str,
    tmp_path: Path,
    ca: KeyPair,
) -> None:
    """Once ``tracker`` knows ``layer`` (from n1), a new node n2 gets it from the swarm: the
    origin sends none of it."""
    store = tracker.app[STATE].store
    await until(lambda: store.known_digests([layer]) == {layer}, seconds=30)
    n2 = await _tracked_node(node_factory, origin, tmp_path, ca, "n2", tracker.url)
    await origin.settle()
    origin.requests.clear()

    assert sha256(await get_blob(n2, origin, repo, layer)) == layer
    await origin.settle()
    assert origin.blob_gets(layer) == []


@pytest.mark.parametrize(("options", "threads"), [({}, 2), ({"disk_threads": 5}, 5)])
async def test_the_node_runs_libtorrent_with_its_disk_threads(
    p2p_node: Callable[..., Any], options: dict[str, Any], threads: int
) -> None:
    # libtorrent's own default (10) wakes every thread for each queued block: see
    # docs/benchmarks.md, "libtorrent's disk threads, and the seed's second hash".
    node = await p2p_node("t1", **options)
    peers = node.app[NODE].fetcher.peers
    assert peers is not None
    assert peers.swarm._session.get_settings()["aio_threads"] == threads


async def test_a_blob_peers_are_fetching_counts_as_used_for_eviction(
    origin: DistributionRegistry,
    repo: str,
    big_image: Image,
    p2p_node: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # LRU eviction (quota, or a disk containerd fills) must not take the blob a scale-out is
    # pulling through this node's uploads: every peer still downloading it would go to the
    # origin. Local clients alone would leave it the least recently used here.
    monkeypatch.setattr(peers_module, "UPLOADS_SECONDS", 0.1)
    big, small = big_image.layers[0].digest, big_image.layers[1].digest
    holder = await p2p_node("h1")
    await get_blob(holder, origin, repo, big)
    await get_blob(holder, origin, repo, small)
    store = holder.app[NODE].store

    def lru() -> list[str]:
        return [str(digest) for digest, _ in store.entries()]

    assert lru().index(big) < lru().index(small)

    assert sha256(await get_blob(await p2p_node("h2"), origin, repo, big)) == big

    await origin.settle()
    assert len(origin.blob_gets(big)) == 1  # the holder's fill: h2 had it from the swarm
    await until(lambda: lru().index(big) > lru().index(small), seconds=5)
