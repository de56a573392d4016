"""The cache admin API and the node's status answer only clients in admin_networks: others can
neither change the cache nor learn which images it holds. /healthz and /metrics stay open."""

from __future__ import annotations

from typing import Any

import aiohttp

from imgaccel.testing.registry import DistributionRegistry

DIGEST = "sha256:" + "ab" * 32


async def test_loopback_may_change_the_cache_by_default(
    origin: DistributionRegistry, node_factory: Any
) -> None:
    node = await node_factory(origin)
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{node.url}/_imgaccel/gc", json={}) as resp:
            assert resp.status == 200
        async with session.delete(f"{node.url}/_imgaccel/pins/{DIGEST}") as resp:
            assert resp.status == 204
        for path in ("/_imgaccel/cache", "/_imgaccel/status"):  # `imgaccel cache ls`, `status`
            async with session.get(f"{node.url}{path}") as resp:
                assert resp.status == 200


async def test_clients_outside_admin_networks_are_denied(
    origin: DistributionRegistry, node_factory: Any
) -> None:
    node = await node_factory(origin, admin_networks=["10.0.0.0/8"])
    async with aiohttp.ClientSession() as session:
        for method, path, body in (
            ("POST", "/_imgaccel/gc", {}),
            ("POST", "/_imgaccel/pins", {"digests": [DIGEST], "seconds": 60}),
            ("DELETE", f"/_imgaccel/pins/{DIGEST}", None),
        ):
            async with session.request(method, f"{node.url}{path}", json=body) as resp:
                assert resp.status == 403
                assert (await resp.json())["errors"][0]["code"] == "DENIED"
        # Reading is denied too (it used to be open): the listing names every cached digest
        # and its pins, the status the latest blobs served and the node's directories.
        for path in ("/_imgaccel/cache", "/_imgaccel/status"):
            async with session.get(f"{node.url}{path}") as resp:
                assert resp.status == 403
                assert (await resp.json())["errors"][0]["code"] == "DENIED"
        for path in ("/healthz", "/metrics"):  # probes and Prometheus
            async with session.get(f"{node.url}{path}") as resp:
                assert resp.status == 200
