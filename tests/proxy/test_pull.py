"""Real containerd pulls through the node from a real distribution registry.

containerd quietly falls back to the origin when a mirror fails, so every test proves the path
the bytes took from the origin's own request log (or by stopping the origin).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from imgaccel.hostconfig.containerd import configure
from imgaccel.testing.containerd import Containerd
from imgaccel.testing.images import Image
from imgaccel.testing.registry import DistributionRegistry
from tests.conftest import NodeServer, needs_containerd, needs_registry, write_hosts

pytestmark = [pytest.mark.system, needs_registry, needs_containerd]


def blob_digests(image: Image) -> list[str]:
    return [image.config.digest, *(layer.digest for layer in image.layers)]


#: The origin's bodies read by aiohttp on the event loop, and (the 6 MB layer) by a thread off
#: the socket (see imgaccel.upstream.socketbody).
READERS = {
    "loop": {"socket_bodies": False},
    "socket": {"socket_bodies": True, "socket_body_min_bytes": 1_000_000},
}


@pytest.mark.parametrize("reader", sorted(READERS))
async def test_cold_pull_goes_through_the_node_and_warm_pull_never_touches_the_origin(
    origin: DistributionRegistry,
    pushed: str,
    node_factory: Any,
    containerd: Containerd,
    small_image: Image,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    reader: str,
) -> None:
    node = await node_factory(origin, upstream_client=READERS[reader])
    hosts = write_hosts(tmp_path / "hosts", origin.address, node.url)

    with caplog.at_level(logging.DEBUG, logger="imgaccel.upstream.socketbody"):
        await containerd.pull(pushed, hosts_dir=hosts)

    for digest in blob_digests(small_image):
        assert len(origin.blob_gets(digest)) == 1, digest
        blob = Path(node.settings.cache.dir) / "blobs" / "sha256" / digest.split(":")[1]
        assert blob.is_file()
    off_socket = [r.getMessage() for r in caplog.records if "off the socket" in r.getMessage()]
    big = next(layer for layer in small_image.layers if layer.size > 1_000_000)
    if reader == "socket":
        assert len(off_socket) == 1 and big.digest in off_socket[0], off_socket
    else:
        assert off_socket == []
    origin.requests.clear()
    await containerd.remove_all_images()

    await containerd.pull(pushed, hosts_dir=hosts)

    assert origin.requests == []


async def test_a_registry_without_a_directory_of_its_own_pulls_through_default(
    origin: DistributionRegistry,
    pushed: str,
    node_factory: Any,
    containerd: Containerd,
    small_image: Image,
    tmp_path: Path,
) -> None:
    """The node DaemonSet writes ``_default`` for every registry it does not list: this
    containerd reads it. Without it containerd pulls from the origin itself (checked), so
    the origin's log must name the node as the client."""
    node = await node_factory(origin)
    hosts = tmp_path / "hosts"
    configure(hosts, "_default", node.url)
    assert [p.name for p in hosts.iterdir()] == ["_default"]

    await containerd.pull(pushed, hosts_dir=hosts)

    for digest in blob_digests(small_image):
        assert [r.user_agent.split("/")[0] for r in origin.blob_gets(digest)] == ["imgaccel"]
        assert (Path(node.settings.cache.dir) / "blobs" / "sha256" / digest[7:]).is_file()


async def test_pulls_by_tag_and_digest_work_with_the_origin_stopped(
    origin: DistributionRegistry,
    pushed: str,
    node_factory: Any,
    containerd: Containerd,
    small_image: Image,
    tmp_path: Path,
) -> None:
    # A zero tag TTL makes the by-tag pull ask the origin again, so it must be served stale.
    node = await node_factory(origin, cache={"tag_ttl_seconds": 0})
    hosts = write_hosts(tmp_path / "hosts", origin.address, node.url)
    await containerd.pull(pushed, hosts_dir=hosts)
    await containerd.remove_all_images()
    await origin.stop()

    await containerd.pull(pushed, hosts_dir=hosts)
    by_digest = f"{origin.address}/test/app@{small_image.manifest.digest}"
    await containerd.pull(by_digest, hosts_dir=hosts)

    listed = (await containerd.ctr("images", "ls", "-q")).stdout.decode().split()
    assert pushed in listed and by_digest in listed
    metrics = await _metrics(node)
    assert (
        "imgaccel_stale_tags_served_total 1.0" in metrics
        or "imgaccel_stale_tags_served_total 2.0" in metrics
    )


async def test_concurrent_pulls_on_several_hosts_cause_one_origin_fetch_per_blob(
    origin: DistributionRegistry,
    pushed: str,
    node: NodeServer,
    small_image: Image,
    tmp_path: Path,
) -> None:
    hosts = write_hosts(tmp_path / "hosts", origin.address, node.url)
    daemons = [Containerd(tmp_path / f"containerd{i}") for i in range(3)]
    await asyncio.gather(*(d.start() for d in daemons))
    try:
        await asyncio.gather(*(d.pull(pushed, hosts_dir=hosts) for d in daemons))
    finally:
        await asyncio.gather(*(d.stop() for d in daemons))

    for digest in blob_digests(small_image):
        assert len(origin.blob_gets(digest)) == 1, digest
    manifest_gets = [r for r in origin.manifest_requests() if r.method == "GET"]
    assert len(manifest_gets) == 1


async def test_metrics_count_bytes_by_source_after_pulls(
    origin: DistributionRegistry,
    pushed: str,
    node: NodeServer,
    containerd: Containerd,
    small_image: Image,
    tmp_path: Path,
) -> None:
    hosts = write_hosts(tmp_path / "hosts", origin.address, node.url)
    await containerd.pull(pushed, hosts_dir=hosts)
    await containerd.remove_all_images()
    await containerd.pull(pushed, hosts_dir=hosts)

    text = await _metrics(node)
    blob_bytes = small_image.config.size + sum(layer.size for layer in small_image.layers)
    served = _samples(text, "imgaccel_bytes_served_total")
    assert served['source="origin"'] >= blob_bytes
    assert served['source="cache"'] >= blob_bytes
    assert _samples(text, "imgaccel_cache_bytes")[""] == blob_bytes
    hits = _samples(text, "imgaccel_cache_hits_total")
    assert hits['kind="blob"'] == len(blob_digests(small_image))


async def _metrics(node: NodeServer) -> str:
    async with aiohttp.ClientSession() as session, session.get(f"{node.url}/metrics") as resp:
        assert resp.status == 200
        return await resp.text()


def _samples(text: str, name: str) -> dict[str, float]:
    """``{labels: value}`` for one metric in Prometheus text format."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name):
            key, value = line.rsplit(" ", 1)
            labels = key[len(name) :].strip("{}")
            if key[len(name) :] and not key[len(name) :].startswith("{"):
                continue
            out[labels] = float(value)
    return out
