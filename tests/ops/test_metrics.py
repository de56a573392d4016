"""/metrics after pulls: bytes served by source add up to the exact blob sizes.

Each blob is fetched with the GET containerd sends for a layer (``?ns=`` names the registry),
and the origin's own request log confirms where the bytes came from.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from imgaccel.oci.digest import Digest
from imgaccel.proxy.monitoring import METRICS_URL
from imgaccel.proxy.state import NODE
from imgaccel.testing.images import Image, build_image, push
from imgaccel.testing.registry import DistributionRegistry
from tests.conftest import NodeServer, needs_registry, until

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


def sample(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str) -> float:
    """The sum of ``name``'s samples over all labels."""
    return sum(value for (n, _), value in samples.items() if n == name)


async def test_head_and_range_requests_count_no_hit_miss_or_serve_time(
    origin: DistributionRegistry, pushed: str, node: NodeServer, small_image: Image
) -> None:
    cached, other = small_image.layers[0], small_image.layers[1]
    await get_blob(node, origin, REPO, cached.digest)
    await get_blob(node, origin, REPO, cached.digest)
    before = await scrape(node.url)

    async with aiohttp.ClientSession() as http:
        for digest in (cached.digest, other.digest):
            url = f"{node.url}/v2/{REPO}/blobs/{digest}?ns={origin.address}"
            async with http.head(url) as response:
                assert response.status == 200
        async with http.get(
            url.replace(other.digest, cached.digest), headers={"Range": "bytes=0-9"}
        ) as response:
            assert (response.status, len(await response.read())) == (206, 10)
    after = await scrape(node.url)

    for name in ("imgaccel_cache_hits_total", "imgaccel_cache_misses_total"):
        assert sample(after, name) == sample(before, name) == 1, name
    assert sample(after, "imgaccel_blob_serve_seconds_count") == 2  # the two whole GETs
    assert served(after, "cache") == cached.size + 10


async def get_and_leave(
    node: NodeServer, origin: DistributionRegistry, digest: str, keep: int
) -> None:
    """GET a blob as a client that goes away after ``keep`` bytes of the body. Its receive buffer
    is small, so the node cannot have sent much more when it goes."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
    sock.setblocking(False)
    host, port = node.address.split(":")
    await loop.sock_connect(sock, (host, int(port)))
    reader, writer = await asyncio.open_connection(sock=sock)
    path = f"/v2/{REPO}/blobs/{digest}?ns={origin.address}"
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {node.address}\r\n\r\n".encode())
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
    await reader.readexactly(keep)
    writer.transport.abort()


@pytest.fixture
async def big_layer(origin: DistributionRegistry, tmp_path: Path) -> Image:
    """An image with one 40 MB layer in ``origin``: more than loopback buffers hold."""
    image = build_image(tmp_path / "big", [40_000_000], seed=7)
    await push(image, f"{origin.address}/{REPO}:big")
    return image


KEEP = 8 << 20


async def test_a_client_that_leaves_a_fill_midway_counts_the_bytes_it_was_sent(
    origin: DistributionRegistry, node: NodeServer, big_layer: Image
) -> None:
    layer = big_layer.layers[0]
    await get_and_leave(node, origin, layer.digest, KEEP)
    await until(lambda: served_now(node, "origin") > 0)
    # sendfile from a fill goes 4 MiB at a time: the one going on when the client left is lost
    assert KEEP - (4 << 20) <= served_now(node, "origin") <= layer.size


async def test_a_client_that_leaves_a_cached_blob_midway_counts_the_bytes_it_was_sent(
    origin: DistributionRegistry, node: NodeServer, big_layer: Image
) -> None:
    layer = big_layer.layers[0]
    await get_blob(node, origin, REPO, layer.digest)
    digest, state = Digest.parse(layer.digest), node.app[NODE]
    await until(lambda: digest in state.store and digest not in state.fetcher.fills)
    cached = served_now(node, "cache")

    await get_and_leave(node, origin, layer.digest, KEEP)
    await until(lambda: served_now(node, "cache") > cached)
    assert KEEP <= served_now(node, "cache") - cached <= layer.size


def served_now(node: NodeServer, source: str) -> float:
    registry = node.app[NODE].metrics.registry
    return registry.get_sample_value("imgaccel_bytes_served_total", {"source": source}) or 0.0
