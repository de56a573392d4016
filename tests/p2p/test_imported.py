"""Blobs that entered a node's cache by ``imgaccel snapshot import`` are offered to peers like
the ones it fetched: seeded, and their torrents published, once the node indexes them (a rescan,
its start, or a miss that finds the file). A real registry as the origin, a real tracker,
libtorrent; every claim about where bytes came from is checked against the origin's request log.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from imgaccel.cache.store import BlobStore
from imgaccel.cli.prewarm import prewarm
from imgaccel.cli.snapshot import snapshot
from imgaccel.oci.digest import Digest
from imgaccel.proxy.state import NODE
from imgaccel.testing.images import Image
from imgaccel.testing.registry import DistributionRegistry
from tests.conftest import NodeServer, needs_registry
from tests.p2p_fixtures import get_blob, metric, sha256

pytestmark = [pytest.mark.system, needs_registry]


async def invoke(command: Any, *args: str) -> Any:
    # In a thread: the CLI runs its own event loop, and the nodes run in this one.
    return await asyncio.to_thread(CliRunner().invoke, command, list(args), catch_exceptions=False)


@pytest.fixture
async def bundle(
    origin: DistributionRegistry, repo: str, node_factory: Callable[..., Any], tmp_path: Path
) -> Path:
    """``repo:v1`` exported from a node without peer-to-peer that prewarmed it; the origin's
    log is empty after."""
    warm = await node_factory(origin, cache_dir=tmp_path / "warm")
    image = f"{origin.address}/{repo}:v1"
    assert (await invoke(prewarm, "--node", warm.url, image)).exit_code == 0
    path = tmp_path / "big.tar.zst"
    exported = await invoke(
        snapshot, "export", image, "-o", str(path), "--cache-dir", str(tmp_path / "warm")
    )
    assert exported.exit_code == 0, exported.output
    await warm.close()
    await origin.settle()
    origin.requests.clear()
    return path


async def published(node: NodeServer, digest: str, seconds: float = 30.0) -> None:
    """Return once the tracker has a torrent of ``digest`` (the node publishes in the
    background); fail after ``seconds``."""
    peers = node.app[NODE].fetcher.peers
    assert peers is not None and peers.tracker is not None
    try:
        async with asyncio.timeout(seconds):
            while True:  # polls: the tracker announces nothing
                if await peers.tracker.get_metainfo(digest) is not None:
                    return
                await asyncio.sleep(0.1)
    except TimeoutError:
        pytest.fail(f"{digest} was not published within {seconds:.0f}s")


async def from_peers_only(
    node: NodeServer, origin: DistributionRegistry, repo: str, big_image: Image
) -> None:
    """``node`` gets the big layer from the swarm: no byte of it from the origin."""
    layer = big_image.layers[0]
    assert sha256(await get_blob(node, origin, repo, layer.digest)) == layer.digest
    await origin.settle()
    assert origin.blob_gets(layer.digest) == []  # a HEAD (the client's access) at most
    assert await metric(node, 'imgaccel_bytes_served_total{source="peer"}') == layer.size


async def test_blobs_imported_and_rescanned_are_offered_to_peers(
    origin: DistributionRegistry,
    repo: str,
    big_image: Image,
    p2p_node: Callable[..., Any],
    bundle: Path,
) -> None:
    holder = await p2p_node("a")
    imported = await invoke(
        snapshot,
        "import",
        str(bundle),
        "--cache-dir",
        str(holder.settings.cache.dir),
        "--node",
        holder.url,
    )
    assert imported.exit_code == 0, imported.output
    await published(holder, big_image.layers[0].digest)

    await from_peers_only(await p2p_node("b"), origin, repo, big_image)
    assert "sharing 3 with peers" in imported.output  # the config and both layers


async def test_blobs_imported_before_the_node_starts_are_offered_to_peers(
    origin: DistributionRegistry,
    repo: str,
    big_image: Image,
    p2p_node: Callable[..., Any],
    bundle: Path,
    tmp_path: Path,
) -> None:
    imported = await invoke(
        snapshot, "import", str(bundle), "--cache-dir", str(tmp_path / "cache-a")
    )
    assert imported.exit_code == 0, imported.output
    holder = await p2p_node("a")  # on that cache
    await published(holder, big_image.layers[0].digest)

    await from_peers_only(await p2p_node("b"), origin, repo, big_image)


async def test_an_imported_blob_found_on_a_miss_is_offered_to_peers(
    origin: DistributionRegistry,
    repo: str,
    big_image: Image,
    p2p_node: Callable[..., Any],
    bundle: Path,
) -> None:
    holder = await p2p_node("a")
    imported = await invoke(
        snapshot, "import", str(bundle), "--cache-dir", str(holder.settings.cache.dir)
    )
    assert imported.exit_code == 0, imported.output
    layer = big_image.layers[0].digest
    assert sha256(await get_blob(holder, origin, repo, layer)) == layer  # indexed on the miss
    await published(holder, layer)

    await from_peers_only(await p2p_node("b"), origin, repo, big_image)


async def test_an_imported_blob_damaged_on_disk_is_removed_not_shared(
    origin: DistributionRegistry,
    repo: str,
    big_image: Image,
    p2p_node: Callable[..., Any],
    bundle: Path,
    tmp_path: Path,
) -> None:
    """The node reads an untorrented blob whole before it vouches for it: a file whose bytes
    changed on disk since the import (bit rot, a hand edit) is dropped from the cache, never
    published, and the next client gets the real blob from the origin."""
    cache = tmp_path / "cache-a"
    imported = await invoke(snapshot, "import", str(bundle), "--cache-dir", str(cache))
    assert imported.exit_code == 0, imported.output
    layer = big_image.layers[0]
    path = BlobStore(cache).path(Digest.parse(layer.digest))
    with open(path, "r+b") as f:  # one byte in the middle, the size unchanged
        f.seek(layer.size // 2)
        byte = f.read(1)
        f.seek(layer.size // 2)
        f.write(bytes([byte[0] ^ 0xFF]))

    holder = await p2p_node("a")  # on that cache: it queues the blob to be shared at start
    store, digest = holder.app[NODE].store, Digest.parse(layer.digest)
    gone = asyncio.Event()
    store.on_evict.append(lambda removed: gone.set() if removed == digest else None)
    if digest in store:  # not removed yet
        await asyncio.wait_for(gone.wait(), 30)
    assert not path.exists()
    peers = holder.app[NODE].fetcher.peers
    assert peers is not None and peers.tracker is not None
    assert await peers.tracker.get_metainfo(layer.digest) is None

    assert sha256(await get_blob(holder, origin, repo, layer.digest)) == layer.digest
    await origin.settle()
    assert len(origin.blob_gets(layer.digest)) == 1
