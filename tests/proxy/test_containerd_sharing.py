"""A real containerd pulls through the node: the node then keeps each blob once on disk with
containerd's copy (a hard link, see imgaccel.cache.containerd), and still has it after
containerd deleted its own."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from imgaccel.proxy.app import NODE
from imgaccel.testing.containerd import Containerd
from imgaccel.testing.images import Image
from imgaccel.testing.registry import DistributionRegistry
from tests.conftest import needs_containerd, needs_registry, until, write_hosts
from tests.ops.conftest import get

pytestmark = [pytest.mark.system, needs_registry, needs_containerd]


async def test_blobs_containerd_pulled_through_the_node_are_kept_once_on_disk(
    origin: DistributionRegistry,
    pushed: str,
    node_factory: Any,
    containerd: Containerd,
    small_image: Image,
    tmp_path: Path,
) -> None:
    content = containerd.root / "root" / "io.containerd.content.v1.content"
    cache = {"containerd_content_dir": str(content), "containerd_share_seconds": 0.2}
    node = await node_factory(origin, cache=cache)
    hosts = write_hosts(tmp_path / "hosts", origin.address, node.url)
    blobs = [small_image.config, *small_image.layers]

    await containerd.pull(pushed, hosts_dir=hosts)

    for blob in blobs:  # through the node: the origin sent each blob to it, once
        assert len(origin.blob_gets(blob.digest)) == 1, blob.digest
    store = node.app[NODE].store

    def ours(digest: str) -> Path:
        return Path(node.settings.cache.dir) / "blobs" / "sha256" / digest.split(":")[1]

    def theirs(digest: str) -> Path:
        return content / "blobs" / "sha256" / digest.split(":")[1]

    def all_shared() -> bool:
        return all(os.path.samefile(ours(b.digest), theirs(b.digest)) for b in blobs)

    await until(all_shared, seconds=20)
    assert all(os.stat(ours(b.digest)).st_nlink == 2 for b in blobs)
    shared = sum(b.size for b in blobs)
    metrics = node.app[NODE].metrics.registry
    await until(lambda: metrics.get_sample_value("imgaccel_cache_shared_bytes") == shared)
    status_code, body = await get(f"{node.url}/_imgaccel/status")
    assert status_code == 200 and json.loads(body)["cache"]["shared_bytes"] == shared
    assert len(store) == len(blobs)

    await containerd.remove_all_images()  # containerd deletes its copies

    assert not any(theirs(b.digest).exists() for b in blobs)
    assert all(os.stat(ours(b.digest)).st_nlink == 1 for b in blobs)
    origin.requests.clear()
    await containerd.pull(pushed, hosts_dir=hosts)
    assert origin.requests == []  # all from the node's cache
    await until(all_shared, seconds=20)  # and shared with containerd's new copies
