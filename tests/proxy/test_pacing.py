"""Background fills keep to a bandwidth budget while nobody reads them, and only then."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from imgaccel.cache.fill import CHUNK, Fill
from imgaccel.oci.digest import Digest
from imgaccel.proxy.peers import _pace
from imgaccel.proxy.state import NODE
from imgaccel.testing.images import Image
from imgaccel.testing.registry import DistributionRegistry
from imgaccel.upstream.blobs import BlobLocation
from tests.conftest import NodeServer, needs_registry, until


class RecordingPacer:
    """A budget that records what it is asked to spend; the first spend can be held."""

    def __init__(self, rate: int = 1, hold_first: bool = False) -> None:
        self.rate = rate
        self.spent: list[int] = []
        self.release = asyncio.Event()
        if not hold_first:
            self.release.set()

    async def spend(self, nbytes: int) -> None:
        self.spent.append(nbytes)
        await self.release.wait()


def big_layer(image: Image) -> tuple[str, int]:
    layer = max(image.layers, key=lambda layer: layer.size)
    return layer.digest, layer.size


@needs_registry
async def test_a_background_fill_spends_its_budget_as_its_bytes_arrive(
    node: NodeServer, origin: DistributionRegistry, pushed: str, small_image: Image
) -> None:
    digest, size = big_layer(small_image)
    pacer = RecordingPacer()
    location = BlobLocation(origin.address, "test/app", Digest.parse(digest))

    fill = await node.app[NODE].fetcher.fill(location, pacer)

    assert fill is not None
    await fill.done
    assert size - CHUNK < sum(pacer.spent) <= size
    assert all(nbytes >= CHUNK for nbytes in pacer.spent)
    assert Digest.parse(digest) in node.app[NODE].store


@needs_registry
async def test_a_client_reading_the_blob_lifts_the_budget(
    node: NodeServer, origin: DistributionRegistry, pushed: str, small_image: Image
) -> None:
    digest, size = big_layer(small_image)
    pacer = RecordingPacer(hold_first=True)
    location = BlobLocation(origin.address, "test/app", Digest.parse(digest))
    fill = await node.app[NODE].fetcher.fill(location, pacer)
    assert fill is not None
    await until(lambda: len(pacer.spent) == 1)  # the background fill waits for its budget

    async with aiohttp.ClientSession() as http:
        url = f"{node.url}/v2/test/app/blobs/{digest}?ns={origin.address}"
        async with http.get(url) as response:
            await until(lambda: fill.readers == 1)
            pacer.release.set()
            body = await response.read()

    assert Digest.of(body) == Digest.parse(digest) and len(body) == size
    assert len(pacer.spent) == 1  # nothing more was paced once the client read the blob


class FakeHandle:
    def __init__(self) -> None:
        self.limits: list[int] = []

    def set_download_limit(self, limit: int) -> None:
        self.limits.append(limit)


class FakeDownload:
    def __init__(self) -> None:
        self.handle = FakeHandle()


async def test_a_paced_swarm_download_is_limited_until_a_client_reads(tmp_path: Path) -> None:
    data = b"x" * 1000
    fill = Fill(Digest.of(data), tmp_path / "blob.part", len(data))
    fill.pacer = RecordingPacer(rate=12_345)
    download: Any = FakeDownload()

    limit = _pace(download, fill, None)
    assert _pace(download, fill, limit) == 12_345  # unchanged: not set again
    reader = asyncio.create_task(anext(fill.read()))
    await until(lambda: fill.readers == 1)
    limit = _pace(download, fill, limit)

    assert download.handle.limits == [12_345, 0]  # 0: libtorrent's "unlimited"
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    await fill.finish(RuntimeError("test over"))
