"""The seeder and the ``registries`` allowlist: work from a registry it does not allow is given
back at once (the nodes waiting for the blob need not wait out the lease), never fetched."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from imgaccel.cache.store import BlobStore
from imgaccel.proxy.target import RegistryAllowlist
from imgaccel.seeder.worker import SeederWorker
from imgaccel.settings import load_settings
from imgaccel.tracker.client import Work
from tests.seeder_fakes import ReleasingTracker, unaskable

DIGESTS = ["sha256:" + str(n) * 64 for n in range(1, 5)]


class RecordingFetcher:
    """Records what it was asked to fetch; the fetch ends at once (the blob is held already)."""

    peers = None
    store = BlobStore(Path("unused"), disk=unaskable)  # nothing to decide: no origin HEAD

    def __init__(self) -> None:
        self.fills: dict[Any, Any] = {}
        self.asked: list[str] = []

    async def fill(self, location: Any) -> Any:
        self.asked.append(location.registry)
        await asyncio.sleep(0)


async def test_work_from_a_refused_registry_is_released_and_the_rest_fetched(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tracker, fetcher = ReleasingTracker(), RecordingFetcher()
    allowlist = RegistryAllowlist(load_settings(None, registries=["nvcr.io"]))
    seeder = SeederWorker(tracker, fetcher, registries=allowlist)  # type: ignore[arg-type]
    work = [
        Work(DIGESTS[0], "ghcr.io", "team/app"),
        Work(DIGESTS[1], "nvcr.io", "nvidia/cuda"),
        Work(DIGESTS[2], "ghcr.io", "team/other"),
    ]

    with caplog.at_level(logging.INFO, logger="imgaccel"):
        await asyncio.gather(*(seeder._fetch(item) for item in work))

    assert tracker.released == [DIGESTS[0], DIGESTS[2]]
    assert fetcher.asked == ["nvcr.io"]
    refused = [r.getMessage() for r in caplog.records if "ghcr.io" in r.getMessage()]
    assert len(refused) == 1 and "seeder work" in refused[0], refused
