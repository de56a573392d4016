"""Hot layers: a workload's pull on one node is reported; another node prefetches it unasked."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from imgaccel.cache import pins
from imgaccel.oci.digest import Digest
from imgaccel.oci.media import MANIFEST_ACCEPT
from imgaccel.prewarm.jobs import JobsClient
from imgaccel.proxy.prefetch import Prefetcher
from imgaccel.proxy.pulls import PullRecorder
from imgaccel.proxy.state import NODE
from imgaccel.testing.images import Image
from imgaccel.testing.registry import DistributionRegistry
from tests.conftest import NodeServer, needs_registry, until

pytestmark = [pytest.mark.system, needs_registry]

FAST = {"hot_min_score": 0.5, "hot_interval_seconds": 0.3, "report_interval_seconds": 0.3}


async def pull(node: NodeServer, origin: DistributionRegistry, image: Image) -> None:
    """What a client does: the manifest, then its blobs."""
    base = f"{node.url}/v2/test/app"
    params = {"ns": origin.address}
    async with aiohttp.ClientSession() as http:
        accept = {"Accept": MANIFEST_ACCEPT}
        async with http.get(f"{base}/manifests/v1", params=params, headers=accept) as response:
            assert response.status == 200
        for digest in [image.config.digest, *(layer.digest for layer in image.layers)]:
            async with http.get(f"{base}/blobs/{digest}", params=params) as response:
                assert response.status == 200
                await response.read()


async def test_a_layer_pulled_elsewhere_is_prefetched_and_pinned(
    origin: DistributionRegistry,
    pushed: str,
    small_image: Image,
    p2p_node: Callable[..., Any],
) -> None:
    puller = await p2p_node("h1", **FAST)
    bystander = await p2p_node("h2", **FAST)

    await pull(puller, origin, small_image)

    store = bystander.app[NODE].store
    layers = [Digest.parse(layer.digest) for layer in small_image.layers]
    # The prefetcher pins a blob when its fill has ended, a moment after the store has it: wait
    # for both (a layer never pinned fails here on the timeout).
    await until(lambda: all(d in store and store.pinned_until(d) for d in layers), seconds=20)


#: A blob the origin does not have: a hot layer this node cannot fetch.
MISSING = "sha256:" + hashlib.sha256(b"never pushed").hexdigest()


async def make_hot(tracker: JobsClient, origin: DistributionRegistry, digests: list[str]) -> None:
    """Pull reports that rank ``digests`` in this order, each well above the default
    ``hot_min_score`` of 2 (the first from one node more than the next)."""
    for rank, digest in enumerate(digests):
        for n in range(len(digests) - rank + 2):
            pull = {"image": "test/app:v1", "registry": origin.address, "repository": "test/app"}
            await tracker.report_pulls(f"reporter{n}", [{**pull, "digests": [digest]}])


def origin_asked(origin: DistributionRegistry, digest: str) -> int:
    return len([r for r in origin.requests if "/blobs/" in r.uri and digest in r.uri])


async def test_a_hot_layer_that_fails_is_skipped_and_the_next_is_prefetched(
    origin: DistributionRegistry,
    pushed: str,
    small_image: Image,
    node: NodeServer,
    jobs_client: JobsClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    layer = small_image.layers[1].digest
    await make_hot(jobs_client, origin, [MISSING, layer])
    worker = Prefetcher(node.app[NODE], PullRecorder())
    worker.tracker = jobs_client

    with caplog.at_level(logging.WARNING, logger="imgaccel.proxy.prefetch"):
        await worker.hot_pass()
    store = node.app[NODE].store
    assert Digest.parse(layer) in store and store.pinned_until(Digest.parse(layer))
    assert f"hot layer {MISSING} of {origin.address}/test/app not prefetched" in caplog.text
    await origin.settle()
    asked = origin_asked(origin, MISSING)
    assert asked > 0

    await worker.hot_pass()  # within the backoff: the failed layer is not asked for again
    await origin.settle()
    assert origin_asked(origin, MISSING) == asked


async def test_no_hot_layer_is_fetched_into_a_cache_full_of_pinned_blobs(
    origin: DistributionRegistry,
    pushed: str,
    small_image: Image,
    node_factory: Callable[..., Any],
    jobs_client: JobsClient,
    tmp_path: Path,
) -> None:
    big, hot = small_image.layers[0], small_image.layers[1]
    first = await node_factory(origin, cache_dir=tmp_path / "cache")
    state = first.app[NODE]
    await Prefetcher(state, PullRecorder()).fetch(
        origin.address, "test/app", Digest.parse(big.digest)
    )
    pins.pin(state.store, state.meta, Digest.parse(big.digest), 3600, "a prewarm job")
    await first.close()
    # Restarted with a quota its pins fill (an operator lowered it, or the pins piled up).
    node = await node_factory(origin, cache_dir=tmp_path / "cache", cache={"quota_bytes": big.size})
    state = node.app[NODE]
    worker = Prefetcher(state, PullRecorder())
    worker.tracker = jobs_client
    await make_hot(jobs_client, origin, [hot.digest])
    origin.requests.clear()

    await worker.hot_pass()

    await origin.settle()
    assert origin.blob_gets(hot.digest) == []  # never downloaded only to be dropped
    assert Digest.parse(hot.digest) not in state.store
