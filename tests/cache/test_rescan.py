"""A snapshot imported into the cache of a running node: served from the cache at once, counted
by the quota once the node is told (``POST /_imgaccel/rescan``, ``snapshot import --node``).

Every claim about where bytes came from is checked against the origin's own request log.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from click.testing import CliRunner

from imgaccel.cli.prewarm import prewarm
from imgaccel.cli.snapshot import snapshot
from imgaccel.oci.digest import Digest
from imgaccel.proxy.state import NODE
from imgaccel.testing.images import Image
from imgaccel.testing.registry import DistributionRegistry
from tests.cache.test_snapshot import _bundle, _index
from tests.cache.test_store import put
from tests.conftest import NodeServer, needs_registry
from tests.p2p_fixtures import metric


async def invoke(*args: str) -> Any:
    # In a thread: the CLI runs its own event loop, and the node runs in this one.
    return await asyncio.to_thread(CliRunner().invoke, snapshot, list(args), catch_exceptions=False)


async def get(url: str) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.read()


async def rescan(node: NodeServer) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{node.url}/_imgaccel/rescan") as response,
    ):
        return response.status, await response.json()


def blobs_of(image: Image) -> dict[str, int]:
    return {d.digest: d.size for d in (image.config, *image.layers)}


@pytest.fixture
async def bundle(
    origin: DistributionRegistry, pushed: str, node_factory: Callable[..., Any], tmp_path: Path
) -> Path:
    """``pushed`` exported from a node that prewarmed it; the origin's log is empty after."""
    warm = await node_factory(origin, cache_dir=tmp_path / "warm")
    result = await asyncio.to_thread(
        CliRunner().invoke, prewarm, ["--node", warm.url, pushed], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    path = tmp_path / "image.tar.zst"
    exported = await invoke(
        "export", pushed, "-o", str(path), "--cache-dir", str(tmp_path / "warm")
    )
    assert exported.exit_code == 0, exported.output
    await origin.settle()
    origin.requests.clear()
    return path


def _repo(pushed: str) -> str:
    return pushed.split("/", 1)[1].split(":")[0]


@pytest.mark.system
@needs_registry
async def test_an_import_told_to_the_running_node_is_served_and_counted_at_once(
    origin: DistributionRegistry,
    pushed: str,
    small_image: Image,
    node_factory: Callable[..., Any],
    bundle: Path,
    tmp_path: Path,
) -> None:
    node = await node_factory(
        origin, cache_dir=tmp_path / "running", cache={"quota_bytes": 100_000_000}
    )
    state = node.app[NODE]
    assert state.store.used_bytes == 0

    imported = await invoke(
        "import", str(bundle), "--cache-dir", str(tmp_path / "running"), "--node", node.url
    )

    assert imported.exit_code == 0, imported.output
    sizes = blobs_of(small_image)
    assert f"indexed {len(sizes)} new blobs" in imported.output
    # The quota counts the imported bytes before anyone asks for them: eviction can work.
    assert state.store.used_bytes == sum(sizes.values())
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{node.url}/_imgaccel/cache") as response,
    ):
        listing = await response.json()
    assert {b["digest"]: b["size"] for b in listing["blobs"]} == sizes

    repo = _repo(pushed)
    for digest in sizes:
        status, body = await get(f"{node.url}/v2/{repo}/blobs/{digest}?ns={origin.address}")
        assert status == 200
        assert "sha256:" + hashlib.sha256(body).hexdigest() == digest
    await origin.settle()
    assert origin.blob_gets() == []  # access checks (HEAD) only: not one byte from the origin
    assert await metric(node, 'imgaccel_cache_hits_total{kind="blob"}') == len(sizes)


@pytest.mark.system
@needs_registry
async def test_without_node_the_running_node_takes_an_imported_blob_on_its_first_miss(
    origin: DistributionRegistry,
    pushed: str,
    small_image: Image,
    node_factory: Callable[..., Any],
    bundle: Path,
    tmp_path: Path,
) -> None:
    node = await node_factory(origin, cache_dir=tmp_path / "running")
    state = node.app[NODE]
    imported = await invoke("import", str(bundle), "--cache-dir", str(tmp_path / "running"))
    assert imported.exit_code == 0, imported.output
    assert state.store.used_bytes == 0  # not told: it knows nothing yet

    layer = small_image.layers[0]
    url = f"{node.url}/v2/{_repo(pushed)}/blobs/{layer.digest}?ns={origin.address}"
    status, body = await get(url)

    assert status == 200
    assert "sha256:" + hashlib.sha256(body).hexdigest() == layer.digest
    await origin.settle()
    assert origin.blob_gets() == []
    assert Digest.parse(layer.digest) in state.store
    assert state.store.used_bytes == layer.size


@pytest.mark.system
@needs_registry
async def test_an_imported_image_is_served_with_the_origin_down(
    origin: DistributionRegistry,
    pushed: str,
    small_image: Image,
    node_factory: Callable[..., Any],
    bundle: Path,
    tmp_path: Path,
) -> None:
    node = await node_factory(
        origin, cache_dir=tmp_path / "running", upstream_client={"retries": 0}
    )
    repo = _repo(pushed)
    await origin.stop()

    imported = await invoke(
        "import", str(bundle), "--cache-dir", str(tmp_path / "running"), "--node", node.url
    )

    assert imported.exit_code == 0, imported.output
    status, body = await get(f"{node.url}/v2/{repo}/manifests/v1?ns={origin.address}")
    assert status == 200, body
    assert json.loads(body)["layers"][0]["digest"] == small_image.layers[0].digest
    for digest in blobs_of(small_image):
        status, body = await get(f"{node.url}/v2/{repo}/blobs/{digest}?ns={origin.address}")
        assert status == 200, body
        assert "sha256:" + hashlib.sha256(body).hexdigest() == digest


@pytest.mark.system
@needs_registry
async def test_rescan_ignores_junk_in_blobs_and_never_serves_it(
    origin: DistributionRegistry, pushed: str, node_factory: Callable[..., Any], tmp_path: Path
) -> None:
    node = await node_factory(origin, cache_dir=tmp_path / "cache")
    store = node.app[NODE].store
    secret = b"not a blob of this cache"
    outside = tmp_path / "outside"
    outside.write_bytes(secret)
    linked = Digest.of(secret)  # the name even matches the content
    os.symlink(outside, store.path(linked))
    directory = Digest.of(b"a directory")
    store.path(directory).mkdir()
    fifo = Digest.of(b"a fifo")
    os.mkfifo(store.path(fifo))
    upper = Digest.of(b"upper case")
    (store.root / "blobs" / "sha256" / upper.hex.upper()).write_bytes(b"upper case")
    (store.root / "blobs" / "sha256" / "not-a-digest").write_bytes(b"junk")
    good = b"a blob another process committed"
    (store.path(Digest.of(good))).write_bytes(good)

    status, answer = await rescan(node)

    assert status == 200, answer
    assert answer["indexed"] == [str(Digest.of(good))]
    assert answer["indexed_bytes"] == len(good) == store.used_bytes
    for junk in (linked, directory, fifo, upper):
        assert junk not in store
        url = f"{node.url}/v2/{_repo(pushed)}/blobs/{junk}?ns={origin.address}"
        status, body = await get(url)  # a miss: the origin has no such blob
        assert status == 404 and secret not in body
        assert junk not in store


async def test_rescan_evicts_down_to_the_quota_like_a_fill(
    node_factory: Callable[..., Any],
) -> None:
    node = await node_factory(cache={"quota_bytes": 2500})
    store = node.app[NODE].store
    old = put(store, b"o" * 1000)
    pinned = put(store, b"p" * 1000)
    store.pin(pinned, time.time() + 600)
    imported = Digest.of(b"i" * 1000)
    store.path(imported).write_bytes(b"i" * 1000)

    status, answer = await rescan(node)

    assert status == 200, answer
    assert answer["indexed"] == [str(imported)] and answer["evicted"] == 1
    assert old not in store and not store.path(old).exists()  # least recently used
    assert pinned in store and imported in store
    assert store.used_bytes == answer["used_bytes"] == 2000


async def test_rescan_is_denied_outside_admin_networks(
    node_factory: Callable[..., Any], tmp_path: Path
) -> None:
    node = await node_factory(cache_dir=tmp_path / "cache", admin_networks=["10.0.0.0/8"])
    store = node.app[NODE].store
    data = b"imported"
    store.path(Digest.of(data)).write_bytes(data)

    status, answer = await rescan(node)

    assert status == 403 and answer["errors"][0]["code"] == "DENIED"
    assert len(store) == 0
    bundle = tmp_path / "empty.tar.zst"  # and `snapshot import --node` says so, exit 4
    told = await invoke(
        "import",
        str(_empty_bundle(bundle)),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--node",
        node.url,
    )
    assert told.exit_code == 4
    assert "imported 0 manifests and 0 blobs" in told.output and "403" in told.output


async def test_import_into_another_cache_than_the_nodes_is_an_error(
    node_factory: Callable[..., Any], tmp_path: Path
) -> None:
    node = await node_factory(cache_dir=tmp_path / "node-cache")
    told = await invoke(
        "import",
        str(_empty_bundle(tmp_path / "empty.tar.zst")),
        "--cache-dir",
        str(tmp_path / "other-cache"),
        "--node",
        node.url,
    )
    assert told.exit_code == 4
    assert str(tmp_path / "node-cache") in told.output


def _empty_bundle(path: Path) -> Path:
    return _bundle(path, [], _index())
