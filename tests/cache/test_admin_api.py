"""The node's cache admin API (``imgaccel/proxy/admin.py``) on a real node: what gc deletes, and
bad bodies as 400s. Who may call it: ``tests/proxy/test_admin_networks.py``."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest
from click.testing import CliRunner

from imgaccel.cli.cache import cache
from imgaccel.proxy.state import NODE
from tests.cache.test_store import put


async def gc_request(node_url: str, body: dict[str, Any]) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{node_url}/_imgaccel/gc", json=body) as response,
    ):
        return response.status, await response.json()


async def invoke(*args: str) -> Any:
    # In a thread: the CLI runs its own event loop, and the node runs in this one.
    return await asyncio.to_thread(CliRunner().invoke, cache, list(args), catch_exceptions=False)


async def test_gc_without_a_quota_or_a_target_deletes_nothing(node_factory: Any) -> None:
    node = await node_factory()  # the default: cache.quota_bytes 0, no quota
    state = node.app[NODE]
    kept = [put(state.store, bytes([n]) * 1000) for n in range(3)]
    state.meta.put_pin(kept[0], time.time() - 1, "manual")  # expired: gc forgets it
    assert await gc_request(node.url, {}) == (200, {"removed": [], "used_bytes": 3000})
    gc = await invoke("gc", "--node", node.url)
    assert gc.exit_code == 0 and "removed 0 blobs" in gc.output
    assert all(digest in state.store for digest in kept)
    assert state.meta.pins() == []
    # A target is still obeyed: the operator named the size.
    gc = await invoke("gc", "--node", node.url, "--target", "1000")
    assert "removed 2 blobs" in gc.output
    assert len(state.store) == 1


async def test_gc_with_a_quota_and_no_target_deletes_down_to_the_quota(node_factory: Any) -> None:
    node = await node_factory(cache={"quota_bytes": 10_000})
    state = node.app[NODE]
    for n in range(3):
        put(state.store, bytes([n]) * 1000)
    state.store.quota_bytes = 1500  # now below what the cache holds: gc has work to do
    status, answer = await gc_request(node.url, {})
    assert status == 200 and len(answer["removed"]) == 2


@pytest.mark.parametrize(
    ("path", "body", "content_type"),
    [
        ("/_imgaccel/gc", b'{"target_bytes": true}', "application/json"),
        ("/_imgaccel/pins", b'{"digests": [], "seconds": true}', "application/json"),
        ("/_imgaccel/pins", b'{"digests": [], "seconds": 1, "sizes": []}', "application/json"),
        (
            "/_imgaccel/pins",
            b'{"digests": [], "seconds": 1, "sizes": {"x": -1}}',
            "application/json",
        ),
        ("/_imgaccel/gc", b"{}", "application/json; charset=foo"),
        ("/_imgaccel/pins", b'{"digests": [], "seconds": 1}', "application/json; charset=foo"),
        ("/_imgaccel/pins", b'{"digests": [], "seconds": 1}', "application/json; charset=rot13"),
        ("/_imgaccel/gc", b"\xff\xfe{", "application/json"),
        ("/_imgaccel/gc", b"[" * 1020, "application/json"),  # too deep for the parser
    ],
)
async def test_a_bad_body_is_a_400_not_a_500(
    node_factory: Any, path: str, body: bytes, content_type: str
) -> None:
    node = await node_factory()
    put(node.app[NODE].store, b"a blob that must survive")
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{node.url}{path}", data=body, headers={"Content-Type": content_type}) as r,
    ):
        assert r.status == 400
        assert (await r.json())["errors"][0]["code"] == "INVALID_REQUEST"
    assert len(node.app[NODE].store) == 1
