"""The seeder fetches a cold blob once for the whole cluster; the nodes get it from the swarm."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from imgaccel.p2p.certs import KeyPair
from imgaccel.seeder import make_app
from imgaccel.settings import load_settings
from imgaccel.testing.images import Image
from imgaccel.testing.registry import DistributionRegistry
from tests.conftest import needs_registry
from tests.p2p_fixtures import certs_dir, get_blob, metric, sha256

pytestmark = [pytest.mark.system, needs_registry]


async def test_nodes_missing_a_cold_blob_get_it_through_the_seeder(
    origin: DistributionRegistry,
    repo: str,
    big_image: Image,
    tracker: str,
    cluster_ca: KeyPair,
    p2p_node: Callable[..., Any],
    tmp_path: Path,
) -> None:
    settings = load_settings(
        None,
        upstreams={origin.address: {"url": origin.url}},
        cache={"dir": str(tmp_path / "seeder-cache")},
        p2p={
            "tracker_url": tracker,
            "listen": "127.0.0.1:0",
            "node_id": "seeder-0",
            "certs_dir": str(certs_dir(tmp_path / "certs-seeder", cluster_ca)),
        },
    )
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
