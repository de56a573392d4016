"""Hot-layer prefetch reads the sizes in the tracker's hot list: a layer that cannot fit in the
share of the cache prefetch may use is skipped before any of it is fetched; a layer of unknown
size (reports from nodes before sizes) is fetched as before."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from imgaccel.oci.digest import Digest
from imgaccel.p2p.certs import KeyPair
from imgaccel.prewarm.jobs import JobsClient
from imgaccel.proxy.prefetch import Prefetcher
from imgaccel.proxy.pulls import PullRecorder
from imgaccel.proxy.state import NODE
from imgaccel.testing.images import Image
from imgaccel.testing.registry import DistributionRegistry
from imgaccel.tracker import TrackerSettings, running
from tests.conftest import needs_registry, until
from tests.p2p_fixtures import certs_dir
from tests.prewarm.test_hot import pull

pytestmark = [pytest.mark.system, needs_registry]


@pytest.fixture
async def jobs_client(tmp_path: Path) -> AsyncIterator[JobsClient]:
    """A real tracker (plain HTTP) and the client the prefetcher reads the hot list with."""
    settings = TrackerSettings(listen="127.0.0.1:0", data_dir=tmp_path / "tracker", insecure=True)
    async with running(settings) as served, aiohttp.ClientSession() as http:
        yield JobsClient(served.url, http)


async def make_hot(
    tracker: JobsClient, origin: DistributionRegistry, layers: list[tuple[str, int | None]]
) -> None:
    """Pull reports ranking ``layers`` in this order, each with its size unless None."""
    for rank, (digest, size) in enumerate(layers):
        pull: dict[str, Any] = {
            "image": f"{origin.address}/test/app:v1",
            "registry": origin.address,
            "repository": "test/app",
            "digests": [digest],
        }
        if size is not None:
            pull["sizes"] = {digest: size}
        for n in range(len(layers) - rank + 2):
            await tracker.report_pulls(f"reporter{n}", [pull])


async def test_a_hot_layer_larger_than_the_cache_share_is_skipped_unfetched(
    origin: DistributionRegistry,
    pushed: str,
    small_image: Image,
    node_factory: Callable[..., Any],
    jobs_client: JobsClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    big, medium, small = small_image.layers  # 6 MB, 300 kB, 20 kB
    # A quota that holds the big layer, but prefetch's quarter of it does not.
    node = await node_factory(origin, cache={"quota_bytes": 2 * big.size})
    state = node.app[NODE]
    worker = Prefetcher(state, PullRecorder())
    worker.tracker = jobs_client
    await make_hot(jobs_client, origin, [(big.digest, big.size), (medium.digest, medium.size)])
    await make_hot(jobs_client, origin, [(small.digest, None)])  # from a node before sizes

    with caplog.at_level(logging.INFO, logger="imgaccel.proxy.prefetch"):
        await worker.hot_pass()

    await origin.settle()
    assert origin.blob_gets(big.digest) == []  # never started: it would not fit the share
    assert f"hot layer {big.digest} skipped" in caplog.text
    store = state.store
    for layer in (medium, small):  # the pass went on past it
        assert Digest.parse(layer.digest) in store
        assert store.pinned_until(Digest.parse(layer.digest))

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="imgaccel.proxy.prefetch"):
        await worker.hot_pass()
    assert "skipped" not in caplog.text  # said once; the next passes say it at DEBUG


async def test_a_hot_layer_larger_than_the_room_pins_leave_is_skipped_unfetched(
    origin: DistributionRegistry,
    pushed: str,
    small_image: Image,
    node_factory: Callable[..., Any],
    jobs_client: JobsClient,
) -> None:
    big, medium = small_image.layers[0], small_image.layers[1]
    # The whole quota is prefetch's, but a pinned blob leaves one byte too few for the layer.
    quota = big.size + medium.size - 1
    node = await node_factory(origin, cache={"quota_bytes": quota}, prefetch={"cache_share": 1.0})
    state = node.app[NODE]
    worker = Prefetcher(state, PullRecorder())
    worker.tracker = jobs_client
    await worker.fetch(origin.address, "test/app", Digest.parse(medium.digest))
    state.store.pin(Digest.parse(medium.digest), 2**40)  # an operator's pin
    await make_hot(jobs_client, origin, [(big.digest, big.size)])
    origin.requests.clear()

    await worker.hot_pass()

    await origin.settle()
    assert origin.blob_gets(big.digest) == []
    assert Digest.parse(big.digest) not in state.store


FAST = {"hot_min_score": 0.5, "hot_interval_seconds": 0.3, "report_interval_seconds": 0.3}


async def test_a_layer_pulled_on_one_node_reaches_the_hot_list_with_its_size(
    origin: DistributionRegistry,
    pushed: str,
    small_image: Image,
    node_factory: Callable[..., Any],
    tracker: str,
    cluster_ca: KeyPair,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Pull reports carry the sizes; the tracker publishes them; a node whose cache share cannot
    hold the big layer prefetches the others and never starts on it (not even from peers)."""

    async def p2p_node(name: str, **cache: Any) -> Any:
        p2p = {
            "tracker_url": tracker,
            "listen": "127.0.0.1:0",
            "node_id": name,
            "certs_dir": str(certs_dir(tmp_path / f"certs-{name}", cluster_ca)),
        }
        cache_dir = tmp_path / f"cache-{name}"
        return await node_factory(origin, cache_dir=cache_dir, cache=cache, p2p=p2p, prefetch=FAST)

    big = small_image.layers[0]
    puller = await p2p_node("h1")
    bystander = await p2p_node("h2", quota_bytes=2 * big.size)

    with caplog.at_level(logging.INFO, logger="imgaccel.proxy.prefetch"):
        await pull(puller, origin, small_image)
        store = bystander.app[NODE].store
        others = [Digest.parse(b.digest) for b in [small_image.config, *small_image.layers[1:]]]
        await until(lambda: all(d in store and store.pinned_until(d) for d in others), seconds=20)
        await until(lambda: f"hot layer {big.digest} skipped" in caplog.text, seconds=20)

    assert Digest.parse(big.digest) not in store
    assert Digest.parse(big.digest) not in bystander.app[NODE].fetcher.fills


async def test_the_cache_share_frees_again_when_hot_pins_end(
    origin: DistributionRegistry,
    pushed: str,
    small_image: Image,
    node_factory: Callable[..., Any],
    jobs_client: JobsClient,
) -> None:
    _, medium, small = small_image.layers  # 300 kB, 20 kB
    # prefetch's quarter of the quota holds the medium layer and no more.
    node = await node_factory(
        origin, cache={"quota_bytes": 4 * medium.size}, prefetch={"pin_seconds": 1.0}
    )
    state = node.app[NODE]
    worker = Prefetcher(state, PullRecorder())
    worker.tracker = jobs_client
    await make_hot(jobs_client, origin, [(medium.digest, medium.size), (small.digest, None)])

    await worker.hot_pass()
    assert Digest.parse(medium.digest) in state.store
    assert Digest.parse(small.digest) not in state.store  # the share is used
    assert worker.hot_bytes == medium.size

    await until(lambda: not state.store.pinned_until(Digest.parse(medium.digest)), seconds=5)
    assert worker.hot_bytes == 0  # the pin ended: the blob is ordinary cache now
    await worker.hot_pass()
    assert Digest.parse(small.digest) in state.store
    assert state.store.pinned_until(Digest.parse(small.digest))
