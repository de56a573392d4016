"""The origin's "not found" for a tag is remembered for cache.not_found_ttl_seconds."""

from __future__ import annotations

import aiohttp

from imgaccel.testing.registry import DistributionRegistry
from tests.conftest import NodeServer


async def test_a_missing_tag_asked_for_again_and_again_costs_the_origin_one_request(
    origin: DistributionRegistry, pushed: str, node: NodeServer
) -> None:
    url = f"{node.url}/v2/test/app/manifests/no-such-tag?ns={origin.address}"
    async with aiohttp.ClientSession() as session:
        for _ in range(5):
            async with session.get(url) as resp:
                assert resp.status == 404
                assert (await resp.json())["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    await origin.settle()
    asked = [r for r in origin.manifest_requests() if r.uri.endswith("/no-such-tag")]
    assert len(asked) == 1
