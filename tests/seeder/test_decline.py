"""A seeder whose cache cannot hold a blob gives the work back unfetched: the origin never sends
it the blob (one ``HEAD`` tells its size), and a node fetches it once for the cluster instead."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from imgaccel.cache import pins
from imgaccel.oci.digest import Digest
from imgaccel.p2p.certs import KeyPair
from imgaccel.proxy.state import NODE
from imgaccel.seeder import make_app
from imgaccel.seeder.metrics import SeederMetrics
from imgaccel.seeder.worker import SeederWorker
from imgaccel.settings import Settings, load_settings
from imgaccel.testing.images import Image
from imgaccel.testing.registry import DistributionRegistry, Request
from imgaccel.tracker.client import Work
from imgaccel.tracker.state import STATE
from tests.conftest import NodeServer, needs_registry, until
from tests.p2p.helpers import cluster_tracker
from tests.p2p_fixtures import certs_dir, get_blob, metric, sha256
from tests.seeder_fakes import ReleasingTracker
from tests.tmpfs import fill_up, tmpfs

pytestmark = [pytest.mark.system, needs_registry]


def blob_requests(origin: DistributionRegistry, digest: str, method: str) -> list[Request]:
    """Every ``method`` request for the blob, whatever the origin answered."""
    return [
        r
        for r in origin.requests
        if r.method == method and "/blobs/" in r.uri and r.uri.split("?")[0].endswith(digest)
    ]


def seeder_settings(
    origin: DistributionRegistry, tracker: str, ca: KeyPair, tmp_path: Path, quota: int
) -> Settings:
    return load_settings(
        None,
        upstreams={origin.address: {"url": origin.url}},
        cache={"dir": str(tmp_path / "seeder-cache"), "quota_bytes": quota},
        p2p={
            "tracker_url": tracker,
            "listen": "127.0.0.1:0",
            "node_id": "seeder-0",
            "certs_dir": str(certs_dir(tmp_path / "certs-seeder", ca)),
        },
    )


async def metrics_text(url: str) -> str:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return await response.text()


async def test_a_blob_larger_than_the_seeders_quota_is_fetched_by_a_node_not_the_seeder(
    origin: DistributionRegistry,
    repo: str,
    big_image: Image,
    cluster_ca: KeyPair,
    node_factory: Callable[..., Any],
    tmp_path: Path,
) -> None:
    layer = big_image.layers[0]
    certs = certs_dir(tmp_path / "certs-tracker", cluster_ca)
    async with cluster_tracker(tmp_path / "tracker", certs) as tracker:
        settings = seeder_settings(origin, tracker.url, cluster_ca, tmp_path, layer.size // 2)
        seeder = TestServer(make_app(settings), host="127.0.0.1", port=0)
        await seeder.start_server()
        try:
            store = tracker.app[STATE].store
            await until(lambda: store.alive_seeders(0.0) == ["seeder-0"], seconds=30)
            p2p = {
                "tracker_url": tracker.url,
                "listen": "127.0.0.1:0",
                "node_id": "n1",
                "certs_dir": str(certs_dir(tmp_path / "certs-n1", cluster_ca)),
            }
            node = await node_factory(origin, cache_dir=tmp_path / "cache-n1", p2p=p2p)

            assert sha256(await get_blob(node, origin, repo, layer.digest)) == layer.digest

            await origin.settle()
            assert len(blob_requests(origin, layer.digest, "GET")) == 1
            # ... and that one was the node's: the seeder was never sent the blob
            assert await metric(node, 'imgaccel_bytes_served_total{source="origin"}') == layer.size
            text = await metrics_text(str(seeder.make_url("/metrics")))
            assert 'imgaccel_seeder_declined_total{reason="quota"} 1.0' in text
            assert not (tmp_path / "seeder-cache" / "blobs" / "sha256" / layer.digest[7:]).exists()
        finally:
            await seeder.close()


async def test_a_blob_the_room_pins_leave_cannot_hold_is_declined_without_a_get(
    origin: DistributionRegistry,
    repo: str,
    big_image: Image,
    node_factory: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The quota would hold the layer, but a pinned blob takes part of it: fetching would only
    stream the layer through (it could not be kept, so not seeded)."""
    layer, config = big_image.layers[0], big_image.config
    node: NodeServer = await node_factory(origin, cache={"quota_bytes": layer.size})
    state = node.app[NODE]
    await get_blob(node, origin, repo, config.digest)
    pins.pin(state.store, state.meta, Digest.parse(config.digest), 3600, "a prewarm job")
    tracker = ReleasingTracker()
    metrics = SeederMetrics(state.metrics.registry)
    worker = SeederWorker(tracker, state.fetcher, metrics=metrics)  # type: ignore[arg-type]
    origin.requests.clear()

    with caplog.at_level(logging.INFO, logger="imgaccel.seeder.worker"):
        await worker._fetch_in_slot(Work(layer.digest, origin.address, repo))

    await origin.settle()
    assert blob_requests(origin, layer.digest, "GET") == []
    assert len(blob_requests(origin, layer.digest, "HEAD")) == 1
    assert tracker.released == [layer.digest]  # at once: a node may fetch it now
    assert Digest.parse(layer.digest) not in state.store
    assert await metric(node, 'imgaccel_seeder_declined_total{reason="pinned"}') == 1
    assert f"seeder: not fetching {layer.digest}" in caplog.text


async def test_a_blob_that_fits_is_fetched_as_before(
    origin: DistributionRegistry,
    repo: str,
    big_image: Image,
    node_factory: Callable[..., Any],
) -> None:
    layer = big_image.layers[0]
    node: NodeServer = await node_factory(origin, cache={"quota_bytes": 2 * layer.size})
    state = node.app[NODE]
    tracker = ReleasingTracker()
    worker = SeederWorker(tracker, state.fetcher)  # type: ignore[arg-type]

    await worker._fetch_in_slot(Work(layer.digest, origin.address, repo))

    assert Digest.parse(layer.digest) in state.store
    assert tracker.released == []
    assert worker.fetched == 1


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A cache dir on its own 16 MiB filesystem (unmounted after the node closed)."""
    with tmpfs(tmp_path / "small-cache", "16m") as mounted:
        yield mounted


async def test_a_seeder_without_a_quota_on_a_disk_below_its_floor_gives_the_work_back(
    origin: DistributionRegistry,
    repo: str,
    big_image: Image,
    node_factory: Callable[..., Any],
    small_disk: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No quota, but another process took the disk below ``cache.min_free_percent``: the fill
    would stream the blob and not keep it, so the seeder does not fetch it at all."""
    layer = big_image.layers[1]  # 10 kB: the disk has room for it, not above its floor
    node: NodeServer = await node_factory(
        origin, cache_dir=small_disk, cache={"min_free_percent": 50}
    )
    state = node.app[NODE]
    fill_up(small_disk, leave=4 * 1024 * 1024)  # the floor is 8 MiB
    tracker = ReleasingTracker()
    metrics = SeederMetrics(state.metrics.registry)
    worker = SeederWorker(tracker, state.fetcher, metrics=metrics)  # type: ignore[arg-type]

    with caplog.at_level(logging.WARNING, logger="imgaccel.seeder.worker"):
        await worker._fetch_in_slot(Work(layer.digest, origin.address, repo))

    await origin.settle()
    assert blob_requests(origin, layer.digest, "GET") == []
    assert tracker.released == [layer.digest] and worker.fetched == 0
    assert await metric(node, 'imgaccel_seeder_declined_total{reason="disk"}') == 1
    assert "cache.min_free_percent" in caplog.text
