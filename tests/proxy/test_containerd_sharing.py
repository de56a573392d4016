"""A real containerd pulls through the node: the node then keeps each blob once on disk with
containerd's copy (a hard link, see imgaccel.cache.containerd), and still has it after
containerd deleted its own."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from imgaccel.proxy.app import NODE
from imgaccel.testing.containerd import Containerd
from imgaccel.testing.images import Image
from imgaccel.testing.procs import terminate
from imgaccel.testing.registry import DistributionRegistry
from tests.cache.test_crash import start_node
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


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")
async def test_the_daemonset_s_layout_and_rights_keep_blobs_once(
    origin: DistributionRegistry,
    pushed: str,
    containerd: Containerd,
    small_image: Image,
    tmp_path: Path,
) -> None:
    """The node DaemonSet's pod: root with every capability dropped, its cache a directory in
    containerd's root (one hostPath volume for both). containerd's blobs are root's and
    read-only: their owner may still read and link them, with no capability at all."""
    root = containerd.root / "root"
    content = root / "io.containerd.content.v1.content"
    cache = root / "imgaccel"
    env = {
        "IMGACCEL_CACHE__CONTAINERD_CONTENT_DIR": str(content),
        "IMGACCEL_CACHE__CONTAINERD_SHARE_SECONDS": "0.2",
    }
    no_capabilities = ["setpriv", "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"]
    proc, url = await start_node(
        cache, origin.address, tmp_path / "node.log", prefix=no_capabilities, env=env
    )
    try:
        status = await asyncio.to_thread(Path(f"/proc/{proc.pid}/status").read_text)
        assert re.search(r"^CapEff:\s+0+$", status, re.M), status
        blobs = [small_image.config, *small_image.layers]

        await containerd.pull(
            pushed, hosts_dir=write_hosts(tmp_path / "hosts", origin.address, url)
        )

        for blob in blobs:  # through the node
            assert [r.user_agent.split("/")[0] for r in origin.blob_gets(blob.digest)] == [
                "imgaccel"
            ]

        def shared() -> bool:
            return all(
                os.path.samefile(
                    cache / "blobs" / "sha256" / b.digest[7:],
                    content / "blobs" / "sha256" / b.digest[7:],
                )
                for b in blobs
            )

        await until(shared, seconds=20)
    finally:
        await terminate(proc)
