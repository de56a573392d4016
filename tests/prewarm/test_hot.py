"""Hot layers: a workload's pull on one node is reported; another node prefetches it unasked."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from imgaccel.oci.digest import Digest
from imgaccel.oci.media import MANIFEST_ACCEPT
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
