"""A node whose cache disk is small: a real 16 MiB tmpfs as the cache dir, the real distribution
registry as the origin.

A blob the disk cannot take is refused with a 503 before any byte (containerd then pulls it from
the origin; a body cut off halfway would fail the pull), the node says why, and it goes on serving
other blobs; room is made by evicting least recently used blobs (never pinned ones), and
``cache.min_free_percent`` of the disk is left free.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from imgaccel.cache import pins, space
from imgaccel.cache.space import Usage
from imgaccel.errors import CacheFull, DiskFull, DiskLow, QuotaTooSmall
from imgaccel.oci.digest import Digest
from imgaccel.proxy.prefetch import Prefetcher
from imgaccel.proxy.pulls import PullRecorder
from imgaccel.proxy.state import NODE
from imgaccel.seeder import worker as worker_module
from imgaccel.seeder.metrics import SeederMetrics
from imgaccel.seeder.worker import SeederWorker
from imgaccel.testing.containerd import Containerd
from imgaccel.testing.images import Descriptor, Image, build_image, push
from imgaccel.testing.registry import DistributionRegistry, Request
from imgaccel.tracker.client import Work
from tests.conftest import NodeServer, needs_containerd, needs_registry, until, write_hosts
from tests.p2p_fixtures import get_blob, metric
from tests.seeder_fakes import ReleasingTracker
from tests.tmpfs import fill_up, free_bytes, tmpfs

pytestmark = [pytest.mark.system, needs_registry]

DISK = 16 * 1024 * 1024
REPO = "test/disk"


@dataclass(frozen=True)
class Layers:
    """The layers of the test image, by role."""

    a: Descriptor  # 4.5 MB
    b: Descriptor  # 4.5 MB
    pinned: Descriptor  # 3 MB
    c: Descriptor  # 6 MB
    big: Descriptor  # 20 MB: more than the whole disk


@pytest.fixture(scope="module")
def disk_image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    sizes = [4_500_000, 4_500_000, 3_000_000, 6_000_000, 20_000_000]
    return build_image(tmp_path_factory.mktemp("disk-image"), sizes, seed=7)


@pytest.fixture
def layers(disk_image: Image) -> Layers:
    return Layers(*disk_image.layers)


@pytest.fixture
async def pushed_disk_image(origin: DistributionRegistry, disk_image: Image) -> str:
    ref = f"{origin.address}/{REPO}:v1"
    await push(disk_image, ref)
    origin.requests.clear()
    return ref


@pytest.fixture
def cache_disk(tmp_path: Path) -> Iterator[Path]:
    """The node's cache dir, on its own 16 MiB filesystem (set up before the node, so that it
    is unmounted after the node closed)."""
    with tmpfs(tmp_path / "small-cache", "16m") as mounted:
        yield mounted


@pytest.fixture
def small_node(
    cache_disk: Path,
    node_factory: Callable[..., Any],
    origin: DistributionRegistry,
    pushed_disk_image: str,
) -> Callable[..., Any]:
    """Start the node on ``cache_disk``: ``await small_node(min_free_percent=0)``."""

    async def start(**cache: Any) -> NodeServer:
        return await node_factory(origin, cache_dir=cache_disk, cache=cache)  # type: ignore[no-any-return]

    return start


@dataclass(frozen=True)
class Answer:
    status: int
    content_type: str
    body: bytes


async def get(node: NodeServer, origin: DistributionRegistry, layer: Descriptor) -> Answer:
    url = f"{node.url}/v2/{REPO}/blobs/{layer.digest}?ns={origin.address}"
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return Answer(response.status, response.content_type, await response.read())


async def cached(node: NodeServer, origin: DistributionRegistry, *layers: Descriptor) -> None:
    """GET each of ``layers`` whole (so the node caches it)."""
    for layer in layers:
        body = await get_blob(node, origin, REPO, layer.digest)
        assert "sha256:" + hashlib.sha256(body).hexdigest() == layer.digest


def stored(node: NodeServer) -> set[str]:
    return {str(digest) for digest, _ in node.app[NODE].store.entries()}


def leftovers(cache_dir: Path) -> list[str]:
    return [path.name for path in (cache_dir / "tmp").iterdir()]


async def test_a_blob_the_disk_cannot_take_is_a_503_before_any_byte(
    small_node: Callable[..., Any],
    origin: DistributionRegistry,
    layers: Layers,
    cache_disk: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    node = await small_node(min_free_percent=0)

    with caplog.at_level(logging.WARNING, logger="imgaccel.proxy.fetcher"):
        answers = await asyncio.gather(*(get(node, origin, layers.big) for _ in range(3)))

    for answer in answers:  # every client waiting for the fill: no 200, not one body byte
        assert answer.status == 503 and answer.content_type == "application/json"
        assert b'"code": "UNAVAILABLE"' in answer.body and b"disk" in answer.body
    refused = [r for r in caplog.records if "disk full" in r.getMessage()]
    assert refused and all(r.levelno == logging.WARNING for r in refused)
    assert "pull it from the origin" in refused[0].getMessage()
    assert leftovers(cache_disk) == []
    assert layers.big.digest not in stored(node)
    assert await metric(node, 'imgaccel_fills_disk_full_total{when="start"}') >= 1

    await cached(node, origin, layers.a)  # and the node goes on serving what fits
    assert stored(node) == {layers.a.digest}


async def test_room_is_made_by_evicting_the_least_recently_used_blob_never_a_pinned_one(
    small_node: Callable[..., Any],
    origin: DistributionRegistry,
    layers: Layers,
    cache_disk: Path,
) -> None:
    node = await small_node(min_free_percent=0)
    state = node.app[NODE]
    await cached(node, origin, layers.pinned)
    pins.pin(state.store, state.meta, Digest.parse(layers.pinned.digest), 3600, "a prewarm job")
    await cached(node, origin, layers.a, layers.b)  # least recently used: pinned, a, b
    free = free_bytes(cache_disk)
    assert free < layers.c.size <= free + layers.a.size  # c fits only without a

    await cached(node, origin, layers.c)

    assert stored(node) == {layers.pinned.digest, layers.b.digest, layers.c.digest}
    assert await metric(node, "imgaccel_cache_evictions_total") == 1
    assert leftovers(cache_disk) == []


async def test_min_free_percent_of_the_disk_stays_free(
    small_node: Callable[..., Any],
    origin: DistributionRegistry,
    layers: Layers,
    cache_disk: Path,
) -> None:
    node = await small_node(min_free_percent=50)
    state = node.app[NODE]
    floor = DISK // 2

    await cached(node, origin, layers.a)
    await cached(node, origin, layers.b)  # both would leave less than half free: a goes
    assert stored(node) == {layers.b.digest}
    pins.pin(state.store, state.meta, Digest.parse(layers.b.digest), 3600, "a prewarm job")

    await cached(node, origin, layers.c)  # served whole, verified, and not kept

    assert stored(node) == {layers.b.digest}
    assert free_bytes(cache_disk) >= floor and leftovers(cache_disk) == []
    assert await metric(node, 'imgaccel_fills_not_kept_total{reason="disk"}') == 1
    assert await metric(node, "imgaccel_cache_disk_min_free_bytes") == floor
    assert await metric(node, "imgaccel_cache_disk_free_bytes") == free_bytes(cache_disk)


async def test_a_disk_another_process_takes_below_the_floor_gets_blobs_back_between_fills(
    small_node: Callable[..., Any],
    origin: DistributionRegistry,
    layers: Layers,
    cache_disk: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """containerd (here: a filler file) takes the disk below ``min_free_percent`` while no fill
    runs: the node evicts least recently used blobs, never a pinned one, until it is above the
    floor again, and no more."""
    node = await small_node(min_free_percent=25, disk_check_seconds=0.1)
    state = node.app[NODE]
    floor = DISK // 4
    await cached(node, origin, layers.pinned)
    pins.pin(state.store, state.meta, Digest.parse(layers.pinned.digest), 3600, "a prewarm job")
    await cached(node, origin, layers.a, layers.b)  # least recently used: pinned, a, b
    assert free_bytes(cache_disk) >= floor

    with caplog.at_level(logging.WARNING, "imgaccel"):
        fill_up(cache_disk, leave=1 << 20)
        await until(lambda: layers.a.digest not in stored(node))

    assert stored(node) == {layers.pinned.digest, layers.b.digest}  # a was enough
    assert free_bytes(cache_disk) >= floor
    assert "evicted 1 blobs" in caplog.text
    assert await metric(node, "imgaccel_cache_evictions_total") == 1


async def test_a_disk_filled_by_another_process_midway_leaves_no_trace(
    small_node: Callable[..., Any],
    origin: DistributionRegistry,
    layers: Layers,
    cache_disk: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Where the fill could not take its blocks first (a filesystem without preallocation, and
    its free space misread), another process fills the disk while the fill writes."""
    node = await small_node(min_free_percent=0)
    monkeypatch.setattr(space, "preallocate", lambda fd, size: False)
    monkeypatch.setattr(node.app[NODE].store, "_disk", lambda _: Usage(10**12, 10**12))
    filler = fill_up(cache_disk, leave=1_000_000)

    with caplog.at_level(logging.ERROR, logger="imgaccel.proxy.fetcher"):
        with pytest.raises(aiohttp.ClientPayloadError):  # headers were sent: it can only abort
            await get(node, origin, layers.a)
        await node.app[NODE].fetcher.close()  # the fill's task has ended

    assert "disk full while filling " + layers.a.digest in caplog.text
    assert leftovers(cache_disk) == [] and stored(node) == set()
    assert not list((cache_disk / "blobs" / "sha256").iterdir())
    assert await metric(node, 'imgaccel_fills_disk_full_total{when="midway"}') == 1
    filler.unlink()
    await cached(node, origin, layers.b)
    assert stored(node) == {layers.b.digest}


async def test_a_blob_whose_commit_fails_is_served_whole_and_not_kept(
    small_node: Callable[..., Any],
    origin: DistributionRegistry,
    layers: Layers,
    cache_disk: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The fsync before the rename fails (out of space for what the filesystem still had to
    write, an I/O error): the blob verified, so the clients get all of it."""
    node = await small_node()
    store = node.app[NODE].store

    def no_room(temp: Path, digest: Digest, size: int) -> Path:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store, "commit", no_room)

    await cached(node, origin, layers.a)

    assert stored(node) == set() and leftovers(cache_disk) == []
    assert store.reserved_bytes == 0


class HotList:
    """The tracker's hot-layer list, as the prefetcher reads it."""

    def __init__(self, origin: DistributionRegistry, *layers: Descriptor) -> None:
        self.layers = [
            {"digest": layer.digest, "registry": origin.address, "repository": REPO}
            for layer in layers
        ]

    async def hot(self, min_score: float) -> list[dict[str, Any]]:
        return self.layers


def origin_gets(origin: DistributionRegistry, layer: Descriptor) -> int:
    return len([r for r in origin.requests if r.method == "GET" and layer.digest in r.uri])


async def test_prefetch_on_a_full_disk_skips_without_waiting(
    small_node: Callable[..., Any],
    origin: DistributionRegistry,
    layers: Layers,
    cache_disk: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    node = await small_node(min_free_percent=50)
    fill_up(cache_disk, leave=DISK // 2 - 1_000_000)  # below the floor: nothing is kept
    worker = Prefetcher(node.app[NODE], PullRecorder())
    worker.tracker = HotList(origin, layers.a, layers.b)  # type: ignore[assignment]

    with caplog.at_level(logging.INFO, logger="imgaccel.proxy.prefetch"):
        async with asyncio.timeout(30):
            await worker.hot_pass()  # a hot layer the cache would not keep is not fetched
            with pytest.raises(DiskFull):  # a job's blob the disk cannot take at all
                await worker.fetch(origin.address, REPO, Digest.parse(layers.big.digest))

    assert f"hot layer {layers.a.digest} of {origin.address}/{REPO} not prefetched" in caplog.text
    await origin.settle()
    assert origin_gets(origin, layers.b) == 0  # the pass stopped: the next would not fit either
    assert stored(node) == set() and leftovers(cache_disk) == []


async def test_a_prewarm_jobs_blob_not_kept_says_whether_the_disk_or_the_quota_kept_it_out(
    small_node: Callable[..., Any],
    origin: DistributionRegistry,
    layers: Layers,
    cache_disk: Path,
) -> None:
    """A job's fetch streams the blob and then fails with why it was not kept: that message is
    the job's status on the tracker, and its fix differs (free the disk, or the quota)."""
    node = await small_node(min_free_percent=50)
    store = node.app[NODE].store
    filler = fill_up(cache_disk, leave=DISK // 2 - 1_000_000)  # room for a, not above the floor
    worker = Prefetcher(node.app[NODE], PullRecorder())
    a, b = Digest.parse(layers.a.digest), Digest.parse(layers.b.digest)

    with pytest.raises(DiskLow) as low:
        await worker.fetch(origin.address, REPO, a)
    assert f"could not keep {a}: " in str(low.value)
    assert "50% of the cache's filesystem" in str(low.value) and "quota" not in str(low.value)

    filler.unlink()
    store.quota_bytes = layers.b.size - 1
    with pytest.raises(CacheFull) as full:
        await worker.fetch(origin.address, REPO, b)
    assert isinstance(full.value, QuotaTooSmall) and "cache quota" in str(full.value)
    assert stored(node) == set()
    await origin.settle()
    assert origin_gets(origin, layers.a) == origin_gets(origin, layers.b) == 1


async def test_a_seeder_on_a_small_disk_gives_the_work_back_and_goes_on(
    small_node: Callable[..., Any],
    origin: DistributionRegistry,
    layers: Layers,
    cache_disk: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    node = await small_node(min_free_percent=15, quota_bytes=1 << 30)
    fetcher = node.app[NODE].fetcher
    tracker = ReleasingTracker()
    metrics = SeederMetrics(node.app[NODE].metrics.registry)
    seeder = SeederWorker(tracker, fetcher, metrics=metrics)  # type: ignore[arg-type]
    work = Work(layers.big.digest, origin.address, REPO)

    async with asyncio.timeout(30):
        await seeder._fetch(work)  # its HEAD says the disk cannot keep it: given back
        fetcher.store.quota_bytes = 0  # no quota: the disk alone decides, the same way
        await seeder._fetch(work)
        await origin.settle()
        assert origin_gets(origin, layers.big) == 0

        async def no_size(*_: object) -> None:  # an origin that does not tell: the fill refuses
            return None

        monkeypatch.setattr(worker_module, "origin_size", no_size)
        with caplog.at_level(logging.WARNING, logger="imgaccel.seeder.worker"):
            await seeder._fetch(work)
        await seeder._fetch(Work(layers.a.digest, origin.address, REPO))  # and it goes on

    assert tracker.released == [layers.big.digest] * 2
    assert await metric(node, 'imgaccel_seeder_declined_total{reason="disk"}') == 2
    await origin.settle()
    assert origin_gets(origin, layers.big) == 1  # the third try's, refused after its headers
    assert "seeder: could not fetch " + layers.big.digest in caplog.text
    assert seeder.fetched == 1 and stored(node) == {layers.a.digest}
    assert leftovers(cache_disk) == []


@pytest.fixture
def n2_disk(tmp_path: Path) -> Iterator[Path]:
    """The cache dir ``p2p_node("n2")`` uses, on a 16 MiB filesystem."""
    with tmpfs(tmp_path / "cache-n2", "16m") as mounted:
        yield mounted


async def test_a_blob_peers_have_is_refused_before_the_swarm_writes_a_byte(
    n2_disk: Path,
    p2p_node: Callable[..., Any],
    origin: DistributionRegistry,
    repo: str,
    big_image: Image,
    caplog: pytest.LogCaptureFixture,
) -> None:
    layer = big_image.layers[0]  # 24 MB
    first = await p2p_node("n1")
    assert len(await get_blob(first, origin, repo, layer.digest)) == layer.size  # and shared
    origin.requests.clear()
    second = await p2p_node("n2")

    with caplog.at_level(logging.WARNING, logger="imgaccel.proxy.fetcher"):
        async with aiohttp.ClientSession() as http:
            url = f"{second.url}/v2/{repo}/blobs/{layer.digest}?ns={origin.address}"
            async with http.get(url) as response:
                assert response.status == 503

    assert f"cannot take {layer.digest}" in caplog.text
    peers = second.app[NODE].fetcher.peers
    assert peers is not None and peers.swarm is not None
    assert (await peers.swarm.stats()).total_downloaded == 0  # libtorrent never started
    assert leftovers(n2_disk) == []
    await origin.settle()
    assert origin.blob_gets(layer.digest) == []


@needs_containerd
async def test_a_pull_through_a_node_whose_disk_is_too_small_falls_back_to_the_origin(
    small_node: Callable[..., Any],
    origin: DistributionRegistry,
    pushed_disk_image: str,
    layers: Layers,
    containerd: Containerd,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    node = await small_node()  # the default floor
    hosts = write_hosts(tmp_path / "hosts", origin.address, node.url)

    with caplog.at_level(logging.WARNING, logger="imgaccel.proxy.fetcher"):
        await containerd.pull(pushed_disk_image, hosts_dir=hosts)

    assert f"cannot take {layers.big.digest}" in caplog.text  # the node refused it
    assert await metric(node, 'imgaccel_fills_disk_full_total{when="start"}') >= 1
    await origin.settle()
    from_origin = {r.uri.split("?")[0].rsplit("/", 1)[1]: r.written for r in to_containerd(origin)}
    assert from_origin[layers.big.digest] == layers.big.size  # the origin served it
    # What the disk could take at the time came through the node (pulled at once, the layers
    # need more than the disk has: some may have been refused too).
    assert len(from_origin) < len([layers.a, layers.b, layers.pinned, layers.c, layers.big])


def to_containerd(origin: DistributionRegistry) -> list[Request]:
    """The blobs the origin sent containerd itself (after the node refused them)."""
    return [r for r in origin.blob_gets() if "containerd" in r.user_agent]
