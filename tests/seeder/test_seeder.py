"""The seeder fetches a cold blob once for the whole cluster; the nodes get it from the swarm."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from yarl import URL

from imgaccel.cache.meta import MetaStore
from imgaccel.oci.digest import Digest
from imgaccel.p2p.certs import KeyPair
from imgaccel.seeder import make_app
from imgaccel.settings import Settings, load_settings
from imgaccel.testing.images import Image
from imgaccel.testing.registry import DistributionRegistry
from imgaccel.tracker.state import STATE
from tests.conftest import needs_registry, until
from tests.p2p.helpers import cluster_tracker
from tests.p2p_fixtures import certs_dir, get_blob, metric, sha256

pytestmark = [pytest.mark.system, needs_registry]


def seeder_settings(
    origin: DistributionRegistry, tracker: str, ca: KeyPair, tmp_path: Path
) -> Settings:
    return load_settings(
        None,
        upstreams={origin.address: {"url": origin.url}},
        cache={"dir": str(tmp_path / "seeder-cache")},
        p2p={
            "tracker_url": tracker,
            "listen": "127.0.0.1:0",
            "node_id": "seeder-0",
            "certs_dir": str(certs_dir(tmp_path / "certs-seeder", ca)),
        },
    )


async def test_nodes_missing_a_cold_blob_get_it_through_the_seeder(
    origin: DistributionRegistry,
    repo: str,
    big_image: Image,
    tracker: str,
    cluster_ca: KeyPair,
    p2p_node: Callable[..., Any],
    tmp_path: Path,
) -> None:
    settings = seeder_settings(origin, tracker, cluster_ca, tmp_path)
    seeder = TestServer(make_app(settings), host="127.0.0.1", port=0)
    await seeder.start_server()
    try:
        nodes = [await p2p_node(f"s{i}") for i in range(3)]
        layer = big_image.layers[0].digest

        bodies = await asyncio.gather(*(get_blob(n, origin, repo, layer) for n in nodes))

        assert all(sha256(body) == layer for body in bodies)
        await origin.settle()
        assert len(origin.blob_gets(layer)) == 1
        seeder_cache = tmp_path / "seeder-cache" / "blobs" / "sha256" / layer.split(":")[1]
        assert seeder_cache.is_file()  # the one origin fetch was the seeder's
        for node in nodes:
            assert await metric(node, 'imgaccel_bytes_served_total{source="origin"}') == 0
    finally:
        await seeder.close()


async def test_a_seeder_asked_for_a_blob_it_holds_publishes_it_again(
    origin: DistributionRegistry,
    repo: str,
    big_image: Image,
    cluster_ca: KeyPair,
    node_factory: Callable[..., Any],
    tmp_path: Path,
) -> None:
    """The tracker restarted without its state: a node's claim elects the seeder for a blob the
    seeder holds. It publishes its torrent again, and the node gets the blob from it."""
    layer = big_image.layers[0]
    certs = certs_dir(tmp_path / "certs-tracker", cluster_ca)
    lease = 5.0  # without a publish, the node would go to the origin after one lease
    seeder: TestServer | None = None
    try:
        async with cluster_tracker(tmp_path / "tracker-1", certs, lease_seconds=lease) as first:
            seeder = TestServer(make_app(seeder_settings(origin, first.url, cluster_ca, tmp_path)))
            await seeder.start_server()
            url = seeder.make_url(f"/v2/{repo}/blobs/{layer.digest}?ns={origin.address}")
            async with aiohttp.ClientSession() as http, http.get(url) as resp:
                assert sha256(await resp.read()) == layer.digest
            port = URL(first.url).port
        assert port is not None
        async with cluster_tracker(
            tmp_path / "tracker-2", certs, port=port, lease_seconds=lease
        ) as second:
            store = second.app[STATE].store
            await until(lambda: store.alive_seeders(0.0) == ["seeder-0"], seconds=30)
            p2p = {
                "tracker_url": second.url,
                "listen": "127.0.0.1:0",
                "node_id": "n1",
                "certs_dir": str(certs_dir(tmp_path / "certs-n1", cluster_ca)),
            }
            node = await node_factory(origin, cache_dir=tmp_path / "cache-n1", p2p=p2p)

            assert sha256(await get_blob(node, origin, repo, layer.digest)) == layer.digest

            await origin.settle()
            assert len(origin.blob_gets(layer.digest)) == 1  # the seeder's, before the restart
            assert await metric(node, 'imgaccel_bytes_served_total{source="peer"}') == layer.size
    finally:
        if seeder is not None:
            await seeder.close()


async def test_a_seeder_holding_a_blob_without_its_torrent_makes_one_and_seeds_it(
    origin: DistributionRegistry,
    repo: str,
    big_image: Image,
    tracker: str,
    cluster_ca: KeyPair,
    p2p_node: Callable[..., Any],
    tmp_path: Path,
) -> None:
    """A blob came into the seeder's cache with no torrent (a snapshot import): elected for
    it, the seeder makes the torrent from the file, and the nodes get the blob from it."""
    layer = big_image.layers[0]
    blobs = tmp_path / "seeder-cache" / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    shutil.copyfile(big_image.blob_path(layer.digest), blobs / layer.digest.split(":")[1])
    meta = MetaStore(tmp_path / "seeder-cache" / "meta.db")  # the bundle's provenance
    meta.add_origin(origin.address, Digest.parse(layer.digest), anonymous=True)
    meta.close()
    seeder = TestServer(make_app(seeder_settings(origin, tracker, cluster_ca, tmp_path)))
    await seeder.start_server()
    try:
        nodes = [await p2p_node(f"s{i}") for i in range(2)]

        bodies = await asyncio.gather(*(get_blob(n, origin, repo, layer.digest) for n in nodes))

        assert all(sha256(body) == layer.digest for body in bodies)
        await origin.settle()
        assert origin.blob_gets(layer.digest) == []  # nobody fetched it from the origin
        for node in nodes:
            assert await metric(node, 'imgaccel_bytes_served_total{source="origin"}') == 0
    finally:
        await seeder.close()
