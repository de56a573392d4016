"""The seeder's queue: work waiting for a fetch slot keeps its claim, and gives it back on stop."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from imgaccel.cache.store import BlobStore
from imgaccel.seeder import worker as worker_module
from imgaccel.seeder.worker import SeederWorker
from imgaccel.tracker.client import Work
from tests.seeder_fakes import ReleasingTracker, unaskable

FIRST = "sha256:" + "1" * 64
QUEUED = "sha256:" + "2" * 64


class BlockingFetcher:
    """A fetch that never ends: the slot stays taken (into a cache with neither a quota nor a
    disk to ask, so the worker does not ask the origin whether the blob fits)."""

    peers = None

    def __init__(self) -> None:
        self.store = BlobStore(Path("unused"), disk=unaskable)
        self.fills: dict[Any, Any] = {}

    async def fill(self, _location: Any) -> Any:
        await asyncio.sleep(3600)


async def test_a_queued_item_renews_its_claim_and_releases_it_on_stop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(worker_module, "QUEUED_RENEW_SECONDS", 0.05)
    tracker = ReleasingTracker()
    seeder = SeederWorker(tracker, BlockingFetcher(), concurrency=1)  # type: ignore[arg-type]
    work = [Work(digest, "registry.example", "team/app") for digest in (FIRST, QUEUED)]
    busy = asyncio.create_task(seeder._fetch(work[0]))
    queued = asyncio.create_task(seeder._fetch(work[1]))
    await asyncio.sleep(0.3)

    assert tracker.renewed.count(QUEUED) >= 3  # kept alive while it waits for the slot
    assert FIRST not in tracker.renewed  # the fetch itself renews through the fetcher

    queued.cancel()
    busy.cancel()
    await asyncio.gather(busy, queued, return_exceptions=True)
    assert tracker.released == [QUEUED]  # the nodes waiting for it need not wait out the lease
