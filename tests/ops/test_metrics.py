"""/metrics after pulls: bytes served by source add up to the exact blob sizes.

Each blob is fetched with the GET containerd sends for a layer (``?ns=`` names the registry),
and the origin's own request log confirms where the bytes came from.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from imgaccel.proxy.monitoring import METRICS_URL
from imgaccel.testing.images import Image
from imgaccel.testing.registry import DistributionRegistry
from tests.conftest import NodeServer, needs_registry

from .conftest import get, get_blob

pytestmark = [pytest.mark.system, needs_registry]

REPO = "test/app"


def blobs(image: Image) -> dict[str, int]:
    return {d.digest: d.size for d in [image.config, *image.layers]}


async def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``/metrics`` at ``url`` as {(sample name, labels): value}."""
    status, body = await get(f"{url}/metrics")
    assert status == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def served(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], source: str) -> float:
    return samples.get(("imgaccel_bytes_served_total", (("source", source),)), 0.0)


def saved(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> float:
    return samples[("imgaccel_origin_bytes_saved_total", ())]


async def test_cold_pull_counts_origin_bytes_and_warm_pull_cache_bytes(
    origin: DistributionRegistry, pushed: str, node: NodeServer, small_image: Image
) -> None:
    sizes = blobs(small_image)
    for digest in sizes:
        await get_blob(node, origin, REPO, digest)
    cold = await scrape(node.url)
    assert served(cold, "origin") == sum(sizes.values())
    assert served(cold, "cache") == served(cold, "peer") == 0
    assert saved(cold) == 0

    for digest in sizes:
        await get_blob(node, origin, REPO, digest)
    warm = await scrape(node.url)

    assert served(warm, "origin") == sum(sizes.values())  # unchanged: the origin saw no GET
    assert served(warm, "cache") == sum(sizes.values())
    assert saved(warm) == sum(sizes.values())
    assert all(len(origin.blob_gets(d)) == 1 for d in sizes)
    assert warm[("imgaccel_cache_bytes", ())] == sum(sizes.values())
    assert warm[("imgaccel_cache_hits_total", (("kind", "blob"),))] == len(sizes)


async def test_a_second_p2p_node_counts_peer_bytes_and_no_origin_bytes(
    origin: DistributionRegistry, pushed: str, p2p_node: Callable[..., Any], small_image: Image
) -> None:
    sizes = blobs(small_image)
    first = await p2p_node("m1")
    for digest in sizes:
        await get_blob(first, origin, REPO, digest)
    origin.requests.clear()

    second = await p2p_node("m2")
    for digest in sizes:
        assert await get_blob(second, origin, REPO, digest) == sizes[digest]
    samples = await scrape(second.url)

    assert origin.blob_gets() == []
    assert served(samples, "peer") == sum(sizes.values())
    assert served(samples, "origin") == served(samples, "cache") == 0
    assert saved(samples) == sum(sizes.values())
    assert served(await scrape(first.url), "origin") == sum(sizes.values())


async def test_the_metrics_listener_serves_the_same_metrics_and_nothing_else(
    origin: DistributionRegistry,
    pushed: str,
    node_factory: Callable[..., Any],
    small_image: Image,
) -> None:
    node = await node_factory(origin, metrics_listen="127.0.0.1:0")
    layer = small_image.layers[0]
    await get_blob(node, origin, REPO, layer.digest)
    metrics_url = node.app[METRICS_URL]
    assert metrics_url != node.url

    assert served(await scrape(metrics_url), "origin") == layer.size
    assert (await get(f"{metrics_url}/healthz"))[0] == 200
    for path in ("/v2/", f"/v2/{REPO}/blobs/{layer.digest}", "/_imgaccel/status"):
        assert (await get(f"{metrics_url}{path}"))[0] == 404, path
