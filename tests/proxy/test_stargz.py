"""A real lazy pull: stargz-snapshotter mounts an eStargz image pulled through the node.

The snapshotter reads a layer with ``Range`` GETs: two bytes first, then its footer and table of
contents (the end of the layer), then the chunks of the files that are read. The node answers a
range far past what its fill of the layer has landed from the origin, the rest from the fill, and
a cached layer from the cache. The origin's log tells who asked it for what; the second pull runs
with the origin stopped.

The files are read in a thread: the node runs on the test's event loop, and a read of the FUSE
mount waits on the snapshotter, which waits on the node.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import random
import re
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from imgaccel.testing.containerd import Containerd
from imgaccel.testing.images import Descriptor, push
from imgaccel.testing.registry import DistributionRegistry
from imgaccel.testing.stargz import (
    SNAPSHOTTER,
    StargzSnapshotter,
    build_files_image,
    convert_to_estargz,
    mounted_view,
    mounts_under,
    proxy_plugin_config,
    rpull,
)
from tests.conftest import (
    NodeServer,
    free_port,
    needs_containerd,
    needs_registry,
    needs_skopeo,
    write_hosts,
)

pytestmark = [
    pytest.mark.system,
    needs_registry,
    needs_containerd,
    needs_skopeo,
    pytest.mark.skipif(
        not os.path.exists("/dev/fuse"), reason="no /dev/fuse: stargz mounts its layers with FUSE"
    ),
]

MiB = 1 << 20
SMALL = b"hello from a lazily pulled layer\n"
NODE_UA = "imgaccel/"
_SERVED = re.compile(r"served blob (\S+) source=(\S+) bytes=(\d+) size=(\d+)")


@pytest.fixture(scope="module")
def big() -> bytes:
    """A file big enough that the layer's end is far past what a fill lands at once."""
    return random.Random(7).randbytes(40 * MiB)


async def estargz_layer(origin: DistributionRegistry, repo: str, tag: str) -> Descriptor:
    """The one layer of the image ``repo:tag`` on ``origin``, as its manifest gives it."""
    headers = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
    async with aiohttp.ClientSession() as http:
        url = f"{origin.url}/v2/{repo}/manifests/{tag}"
        async with http.get(url, headers=headers) as response:
            manifest = json.loads(await response.read())
    (layer,) = manifest["layers"]
    assert "containerd.io/snapshot/stargz/toc.digest" in layer["annotations"]  # it is eStargz
    return Descriptor(layer["mediaType"], layer["digest"], layer["size"])


async def lazy_pull(
    stack: AsyncExitStack, root: Path, registry: str, node: NodeServer, ref: str, layer: str
) -> Containerd:
    """A fresh snapshotter and containerd under ``root`` that rpull ``ref`` through ``node``
    (the snapshotter through the node's listener for ``registry``); checks that the pull was
    lazy: ``layer`` is the snapshotter's FUSE mount, not content that containerd downloaded."""
    (listener,) = node.settings.registry_listen
    snapshotter = StargzSnapshotter(root / "stargz", {registry: listener})
    await stack.enter_async_context(snapshotter)
    containerd = Containerd(
        root / "containerd", extra_config=proxy_plugin_config(snapshotter.socket)
    )
    await stack.enter_async_context(containerd)
    await rpull(containerd, ref, write_hosts(root / "hosts", registry, node.url))
    fuse = [kind for kind in mounts_under(snapshotter.root).values() if kind.startswith("fuse")]
    assert fuse == ["fuse.rawBridge"]
    content = await containerd.ctr("content", "ls", "-q")
    assert layer not in content.stdout.decode().split()
    return containerd


async def read_files(containerd: Containerd, target: Path) -> tuple[bytes, str]:
    """``small.txt`` and the sha256 of ``big.bin`` of the image's one (remote) snapshot."""
    listed = await containerd.ctr("snapshots", "--snapshotter", SNAPSHOTTER, "ls")
    (chain,) = [line.split()[0] for line in listed.stdout.decode().splitlines()[1:]]
    async with mounted_view(containerd, chain, target) as view:
        small = await asyncio.wait_for(asyncio.to_thread((view / "small.txt").read_bytes), 60)
        big = await asyncio.wait_for(asyncio.to_thread(_sha256, view / "big.bin"), 60)
    return small, big


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def served(caplog: pytest.LogCaptureFixture, digest: str) -> list[tuple[str, int]]:
    """``(source, bytes)`` of each response the node sent of blob ``digest``."""
    found = []
    for record in caplog.records:
        match = _SERVED.match(record.getMessage())
        if match and match[1] == digest:
            found.append((match[2], int(match[3])))
    return found


async def test_stargz_pulls_lazily_through_the_node_and_again_with_the_origin_stopped(
    origin: DistributionRegistry,
    node_factory: Any,
    tmp_path: Path,
    big: bytes,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="imgaccel.serve")
    # The snapshotter sends no ?ns=: the node tells its registry by the listener it reads
    # from. One connection per fill: the origin's 206s are then the ranges passed through.
    node = await node_factory(
        origin,
        registry_listen={f"127.0.0.1:{free_port()}": origin.address},
        upstream_client={"parallel_ranges": 1},
    )
    image = build_files_image(tmp_path / "layout", {"small.txt": SMALL, "big.bin": big})
    plain, lazy = f"{origin.address}/test/plain:v1", f"{origin.address}/test/lazy:esgz"
    await push(image, plain)
    async with Containerd(tmp_path / "converter") as converter:
        await convert_to_estargz(converter, plain, lazy)
    layer = await estargz_layer(origin, "test/lazy", "esgz")
    assert layer.size > 2 * 16 * MiB
    digest = layer.digest
    origin.requests.clear()

    async with AsyncExitStack() as stack:
        containerd = await lazy_pull(stack, tmp_path / "first", origin.address, node, lazy, digest)
        small, big_sha = await read_files(containerd, tmp_path / "first" / "view")
    assert small == SMALL
    assert big_sha == hashlib.sha256(big).hexdigest()

    await origin.settle()
    # Only the node asked the origin for anything, and for the layer one whole GET: its fill.
    assert {r.user_agent.split("/")[0] for r in origin.requests} == {"imgaccel"}
    layer_gets = origin.blob_gets(digest)
    assert [r.written for r in layer_gets if r.status == 200] == [layer.size]
    # The snapshotter read the layer in ranges, all from the node: its two-byte probe (which
    # started the fill), the footer and table of contents, and the chunks of both files.
    sent = served(caplog, digest)
    ranges = [(source, n) for source, n in sent if n < layer.size]
    assert ranges[0] == ("origin", 2), ranges
    assert len(ranges) > 3 and sum(n for _, n in sent) >= len(big), sent
    # A range the origin answered with a 206 was one the node passed through (the footer,
    # unless the fill had landed near it by then).
    for passed in (r for r in layer_gets if r.status == 206):
        assert ("origin", passed.written) in ranges
    cache_blob = Path(node.settings.cache.dir) / "blobs" / "sha256" / digest.split(":")[1]
    assert cache_blob.stat().st_size == layer.size

    await origin.stop()
    caplog.clear()
    async with AsyncExitStack() as stack:
        containerd = await lazy_pull(stack, tmp_path / "second", origin.address, node, lazy, digest)
        small, big_sha = await read_files(containerd, tmp_path / "second" / "view")
    assert small == SMALL
    assert big_sha == hashlib.sha256(big).hexdigest()
    assert {source for source, _ in served(caplog, digest)} == {"cache"}
