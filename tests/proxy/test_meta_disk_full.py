"""A node whose cache disk is full to the last block: ``meta.db`` (SQLite, in the cache dir)
cannot take a write. A request that has to record something there gets 503 UNAVAILABLE, which
containerd falls back to the origin on, with one WARNING line and no traceback; the node serves
again once the disk has room. A real 16 MiB tmpfs, the real distribution registry as the origin.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from imgaccel.testing.images import Image
from imgaccel.testing.registry import DistributionRegistry
from tests.conftest import NodeServer, needs_registry
from tests.tmpfs import fill_up, tmpfs

pytestmark = [pytest.mark.system, needs_registry]


@pytest.fixture
def cache_disk(tmp_path: Path) -> Iterator[Path]:
    """The node's cache dir on its own 16 MiB filesystem (unmounted after the node closed)."""
    with tmpfs(tmp_path / "small-cache", "16m") as mounted:
        yield mounted


async def get(url: str) -> tuple[int, str, Any]:
    """The status, content type and, for JSON, the body of a GET."""
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        json = response.content_type == "application/json"
        return response.status, response.content_type, await response.json() if json else None


async def test_a_full_disk_under_meta_db_is_a_503_with_one_warning_and_no_traceback(
    cache_disk: Path,
    node_factory: Callable[..., Any],
    origin: DistributionRegistry,
    pushed: str,
    small_image: Image,
    caplog: pytest.LogCaptureFixture,
) -> None:
    node: NodeServer = await node_factory(
        origin, cache_dir=cache_disk, cache={"min_free_percent": 0}
    )
    tag = f"{node.url}/v2/test/app/manifests/v1?ns={origin.address}"
    config = f"{node.url}/v2/test/app/blobs/{small_image.config.digest}?ns={origin.address}"
    filler = fill_up(cache_disk, leave=0)

    with caplog.at_level(logging.INFO):
        answers = [await get(tag), await get(config)]

    for status, content_type, body in answers:
        assert (status, content_type) == (503, "application/json")
        assert body["errors"][0]["code"] == "UNAVAILABLE"
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.name for r in warnings] == ["imgaccel.proxy.errors"] * 2
    assert all("database or disk is full" in r.getMessage() for r in warnings)
    assert not any(r.exc_info for r in caplog.records)

    filler.unlink()  # room again: the same requests are served
    assert (await get(tag))[0] == 200 and (await get(config))[0] == 200
