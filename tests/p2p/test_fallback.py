"""A node whose peers cannot deliver still serves the blob, and never keeps others waiting.

The origin here is hand-written (see :class:`tests.p2p.helpers.RangelessOrigin`): it ignores
``Range`` and can hold a body back, two things the distribution registry cannot be made to do.
Everything else is real: the tracker over mTLS, libtorrent swarms, the node app.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from imgaccel.oci.digest import Digest
from imgaccel.p2p.certs import KeyPair
from imgaccel.p2p.metainfo import PieceHasher
from imgaccel.proxy.peers import torrent_bytes, torrent_name
from imgaccel.proxy.state import NODE
from imgaccel.tracker.server import Served
from imgaccel.tracker.state import STATE
from tests.conftest import NodeServer, until
from tests.p2p.helpers import RangelessOrigin, cluster_tracker, rangeless_origin
from tests.p2p_fixtures import certs_dir

pytestmark = pytest.mark.system

REPO = "team/app"
StartNode = Callable[..., Awaitable[NodeServer]]


@pytest.fixture
def lease_seconds() -> float:
    return 60.0


@pytest.fixture
async def served_tracker(
    tmp_path: Path, cluster_ca: KeyPair, lease_seconds: float
) -> AsyncIterator[Served]:
    certs = certs_dir(tmp_path / "certs-tracker", cluster_ca)
    async with cluster_tracker(tmp_path / "tracker", certs, lease_seconds=lease_seconds) as served:
        yield served


@pytest.fixture
def tracker(served_tracker: Served) -> str:
    return served_tracker.url


@pytest.fixture
async def fake() -> AsyncIterator[tuple[RangelessOrigin, str]]:
    async with rangeless_origin() as served:
        yield served


@pytest.fixture
def start_node(
    node_factory: Callable[..., Any],
    fake: tuple[RangelessOrigin, str],
    tracker: str,
    cluster_ca: KeyPair,
    tmp_path: Path,
) -> StartNode:
    """Start a P2P node mirroring the fake origin: ``await start_node("n1")``."""
    address = fake[1]

    async def start(name: str, **overrides: Any) -> NodeServer:
        p2p = {
            "tracker_url": tracker,
            "listen": "127.0.0.1:0",
            "node_id": name,
            "certs_dir": str(certs_dir(tmp_path / f"certs-{name}", cluster_ca)),
            "stall_seconds": 2.0,
            "no_peers_seconds": 1.0,
        }
        node = await node_factory(
            None,
            cache_dir=tmp_path / f"cache-{name}",
            upstreams={address: {"url": f"http://{address}"}},
            default_registry=address,
            upstream_client={"retries": 1, "backoff_seconds": 0.01},
            p2p=p2p,
            **overrides,
        )
        assert isinstance(node, NodeServer)
        return node

    return start


async def get(node: NodeServer, digest: str) -> bytes:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{node.url}/v2/{REPO}/blobs/{digest}") as resp,
    ):
        assert resp.status == 200, await resp.text()
        return await resp.read()


def cached(node: NodeServer, digest: str) -> Path:
    return Path(node.settings.cache.dir) / "blobs" / "sha256" / digest.split(":")[1]


async def test_with_no_peer_left_an_origin_that_ignores_range_still_serves_the_blob(
    fake: tuple[RangelessOrigin, str], start_node: StartNode
) -> None:
    origin = fake[0]
    data = os.urandom(3 * 1024 * 1024)
    digest = origin.add(data)
    first = await start_node("r1")
    assert await get(first, digest) == data
    await first.close()  # its torrent stays published, with nobody left to seed it

    second = await start_node("r2")

    assert await get(second, digest) == data
    assert set(origin.gets_of(digest)) == {None}  # after the swarm gave up too: no Range
    assert cached(second, digest).read_bytes() == data


async def test_a_torrent_that_is_not_of_the_blob_sends_the_node_to_the_origin(
    fake: tuple[RangelessOrigin, str], start_node: StartNode
) -> None:
    origin = fake[0]
    wanted, other = os.urandom(2 * 1024 * 1024), os.urandom(1024 * 1024)
    digest, other_digest = origin.add(wanted), origin.add(other)
    liar = await start_node("x1")
    assert await get(liar, other_digest) == other
    # The liar seeds another blob under a torrent named for the wanted one: every piece
    # checks against the torrent, the whole does not hash to the digest.
    peers = liar.app[NODE].fetcher.peers
    assert peers is not None and peers.swarm is not None and peers.tracker is not None
    hasher = PieceHasher(len(other))
    hasher.update(other)
    bad = hasher.finish(
        torrent_name(Digest.parse(digest)),
        ssl_cert=peers.identity.ca_cert_pem,
        announce=peers.announce_url,
    )
    peers.swarm.seed(bad, peers.store.path(Digest.parse(other_digest)))
    await peers.tracker.publish(digest, torrent_bytes(bad, frozenset()))
    victim = await start_node("x2")

    # The client streaming the swarm's bytes was sent all but the last: it is cut off.
    with pytest.raises(aiohttp.ClientPayloadError):
        await get(victim, digest)

    await until(cached(victim, digest).exists, seconds=30)  # from the origin, unasked
    assert cached(victim, digest).read_bytes() == wanted
    assert await get(victim, digest) == wanted
    assert list((Path(victim.settings.cache.dir) / "tmp").iterdir()) == []


async def test_an_elected_node_that_keeps_nothing_releases_its_claim(
    fake: tuple[RangelessOrigin, str], start_node: StartNode, served_tracker: Served
) -> None:
    origin = fake[0]
    data = os.urandom(2 * 1024 * 1024)
    digest = origin.add(data)
    store = served_tracker.app[STATE].store
    node = await start_node("q1", cache={"quota_bytes": 1024 * 1024})  # too small to keep it
    origin.gate.clear()
    pull = asyncio.create_task(get(node, digest))
    await until(lambda: (claim := store.get_claim(digest)) is not None and claim.holder == "q1")

    origin.gate.set()

    assert await pull == data
    assert not cached(node, digest).exists()
    # Nothing was published: the nodes waiting on the claim must not wait out the lease.
    await until(lambda: store.get_claim(digest) is None)


@pytest.mark.parametrize("lease_seconds", [1.5])
async def test_an_elected_node_renews_its_claim_within_the_trackers_lease(
    fake: tuple[RangelessOrigin, str], start_node: StartNode, served_tracker: Served
) -> None:
    origin = fake[0]
    data = os.urandom(2 * 1024 * 1024)
    digest = origin.add(data)
    store = served_tracker.app[STATE].store
    node = await start_node("l1")
    origin.gate.clear()  # a slow origin: the fetch outlasts the lease
    pull = asyncio.create_task(get(node, digest))
    await until(lambda: (claim := store.get_claim(digest)) is not None and claim.holder == "l1")
    granted = store.get_claim(digest)
    assert granted is not None

    await until(
        lambda: (
            (claim := store.get_claim(digest)) is not None and claim.expires_at > granted.expires_at
        )
    )

    origin.gate.set()
    assert await pull == data
    await until(lambda: store.get_metainfo(digest) is not None)
    assert store.get_claim(digest) is None  # the publish ended it
    assert origin.gets_of(digest) == [None]
