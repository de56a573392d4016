"""``imgaccel status`` and ``GET /_imgaccel/status`` against a real node after real pulls."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
from click.testing import CliRunner, Result

from imgaccel.cli import main
from imgaccel.ops.status import render
from imgaccel.ops.units import clock, human_bytes
from imgaccel.testing.images import Image
from imgaccel.testing.registry import DistributionRegistry
from tests.conftest import NodeServer, needs_registry

from .conftest import get, get_blob

pytestmark = [pytest.mark.system, needs_registry]

REPO = "test/app"


async def status(*args: str) -> Result:
    # The CLI runs its own event loop: keep it off this test's loop, which serves the node.
    return await asyncio.to_thread(CliRunner().invoke, main, ["status", *args])


async def test_status_shows_cache_use_and_recent_pulls_by_source(
    origin: DistributionRegistry, pushed: str, node: NodeServer, small_image: Image
) -> None:
    big, small = small_image.layers[0], small_image.layers[2]
    await get_blob(node, origin, REPO, big.digest)  # from the origin
    await get_blob(node, origin, REPO, big.digest)  # from the cache
    await get_blob(node, origin, REPO, small.digest)

    status_code, body = await get(f"{node.url}/_imgaccel/status")
    document = json.loads(body)

    assert status_code == 200
    assert document["cache"]["bytes"] == big.size + small.size
    assert document["cache"]["blobs"] == 2
    assert document["cache"]["shared_bytes"] == 0  # no containerd here
    assert document["served"] == {"origin": big.size + small.size, "cache": big.size, "peer": 0}
    assert document["origin_bytes_saved"] == big.size
    assert document["p2p"] is None
    recent = [(r["digest"], r["source"], r["bytes"]) for r in document["recent"]]
    assert recent == [  # newest first
        (small.digest, "origin", small.size),
        (big.digest, "cache", big.size),
        (big.digest, "origin", big.size),
    ]

    result = await status("--node", node.url)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"node     {node.url} (imgaccel {document['version']})"
    cached = human_bytes(big.size + small.size)
    assert lines[1] == f"cache    {cached} in 2 blobs, {node.settings.cache.dir}"
    assert "p2p      off" in result.output
    recent_lines = lines[lines.index("recent   blobs served, newest first:") + 1 :]
    assert [line.split()[1][:19] for line in recent_lines] == [
        small.digest[:19],
        big.digest[:19],
        big.digest[:19],
    ]
    assert [line.split()[-2] for line in recent_lines] == ["origin", "cache", "origin"]


async def test_status_json_is_the_nodes_document(
    origin: DistributionRegistry, pushed: str, node: NodeServer, small_image: Image
) -> None:
    await get_blob(node, origin, REPO, small_image.config.digest)
    result = await status("--node", node.url, "--json")

    assert result.exit_code == 0
    assert json.loads(result.output)["recent"][0]["digest"] == small_image.config.digest


async def test_status_of_a_p2p_node_shows_its_peers_and_transfer_totals(
    origin: DistributionRegistry, pushed: str, p2p_node: Callable[..., Any], small_image: Image
) -> None:
    layer = small_image.layers[0]
    first, second = await p2p_node("s1"), await p2p_node("s2")
    await get_blob(first, origin, REPO, layer.digest)
    await get_blob(second, origin, REPO, layer.digest)

    document = json.loads((await get(f"{second.url}/_imgaccel/status"))[1])

    assert document["p2p"]["node_id"] == "s2"
    assert document["p2p"]["downloaded_bytes"] >= layer.size
    assert document["p2p"]["torrents"] == 1  # seeding the layer it fetched
    assert document["p2p"]["cache_seeded"] is True
    assert document["recent"][0]["source"] == "peer"
    result = await status("--node", second.url)
    assert "p2p      node s2 at http://127.0.0.1:" in result.output
    assert ", 1 torrent" in result.output and "still seeding" not in result.output


def test_a_node_still_seeding_its_cache_after_a_restart_says_so() -> None:
    p2p = {"node_id": "n1", "tracker": "https://t:6970", "peers": 0, "uploaded_bytes": 0,
           "downloaded_bytes": 0, "torrents": 812, "cache_seeded": False}  # fmt: skip
    document = {"cache": {"bytes": 0, "blobs": 0, "quota_bytes": 0, "dir": "/c"},
                "served": {}, "origin_bytes_saved": 0, "p2p": p2p}  # fmt: skip

    [line] = [line for line in render(document, "http://n1").splitlines() if "p2p" in line]

    assert line.endswith(", 812 torrents (still seeding the cache, since the start)")


def test_a_node_whose_tracker_fails_says_since_when_and_why() -> None:
    p2p = {"node_id": "n1", "tracker": "https://t:6970", "peers": 0, "uploaded_bytes": 0,
           "downloaded_bytes": 0, "torrents": 3, "cache_seeded": True,
           "tracker_answered": None,
           "tracker_failing": {"since": 1.8e9, "reason": "tracker POST /v1/alive: x"}}  # fmt: skip
    document = {"cache": {"bytes": 0, "blobs": 0, "quota_bytes": 0, "dir": "/c"},
                "served": {}, "origin_bytes_saved": 0, "p2p": p2p}  # fmt: skip

    text = render(document, "http://n1")

    since = clock(1.8e9)
    assert f"  tracker FAILING since {since}: tracker POST /v1/alive: x (after 3 minutes" in text
    p2p["tracker_failing"] = None
    assert "FAILING" not in render(document, "http://n1")


def test_the_cache_line_says_how_much_is_kept_once_with_containerd() -> None:
    cache = {"bytes": 30_000_000_000, "blobs": 12, "quota_bytes": 0, "dir": "/c"}
    document = {"cache": cache, "served": {}, "origin_bytes_saved": 0, "p2p": None}

    assert "containerd" not in render(document, "http://n1")  # an earlier node: not said
    cache["shared_bytes"] = 0
    assert "containerd" not in render(document, "http://n1")
    cache["shared_bytes"] = 20_000_000_000

    [line] = [
        line for line in render(document, "http://n1").splitlines() if line.startswith("cache")
    ]
    assert line.endswith(
        f"/c; {human_bytes(20_000_000_000)} of it kept once with containerd's copies"
    )


async def test_status_says_what_to_do_when_the_node_is_down() -> None:
    result = await status("--node", "http://127.0.0.1:9")

    assert result.exit_code == 1
    assert "cannot reach the node at http://127.0.0.1:9" in result.output
    assert "imgaccel doctor" in result.output
