"""``imgaccel prewarm`` against a real node and a real registry: platforms, credentials, exits.

The CLI runs in a thread (it has its own event loop) while the node serves in the test's loop.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from click.testing import CliRunner, Result

from imgaccel.cli.prewarm import prewarm
from imgaccel.oci.digest import Digest
from imgaccel.proxy.state import NODE
from imgaccel.testing.images import Image, build_multiarch, push
from imgaccel.testing.registry import DistributionRegistry
from imgaccel.testing.tokenserver import TokenServer
from tests.conftest import NodeServer, needs_registry
from tests.tmpfs import fill_up, tmpfs

pytestmark = [pytest.mark.system, needs_registry]

ALICE = ("alice", "alice-pw")


async def run_cli(*args: str, stdin: str | None = None) -> Result:
    return await asyncio.to_thread(
        CliRunner().invoke, prewarm, list(args), input=stdin, catch_exceptions=False
    )


def held(node: NodeServer, image: Image) -> set[str]:
    store = node.app[NODE].store
    wanted = [image.config.digest, *(layer.digest for layer in image.layers)]
    return {d for d in wanted if Digest.parse(d) in store}


def blobs_of(image: Image) -> set[str]:
    return {image.config.digest, *(layer.digest for layer in image.layers)}


@pytest.fixture(scope="module")
def multiarch(tmp_path_factory: pytest.TempPathFactory) -> Image:
    return build_multiarch(tmp_path_factory.mktemp("multi"), [400_000, 20_000], seed=7)


def platform_image(image: Image, arch: str, root: Path) -> Image:
    """The single-platform image of ``arch`` inside a multi-arch layout (for its digests)."""
    from imgaccel.testing.images import build_image

    return build_image(root, [400_000, 20_000], seed=7, arch=arch)


async def test_a_multiarch_index_warms_only_the_chosen_platform(
    origin: DistributionRegistry,
    node: NodeServer,
    multiarch: Image,
    tmp_path: Path,
) -> None:
    await push(multiarch, f"{origin.address}/test/multi:v1")
    arm64 = platform_image(multiarch, "arm64", tmp_path / "arm64")
    amd64 = platform_image(multiarch, "amd64", tmp_path / "amd64")
    origin.requests.clear()

    result = await run_cli(
        "--node", node.url, "--platform", "linux/arm64", "--json", f"{origin.address}/test/multi:v1"
    )

    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout.splitlines()[-1])
    assert record["platforms"] == ["linux/arm64"]
    assert held(node, arm64) == blobs_of(arm64)
    assert held(node, amd64) == set()
    assert {r.uri.split("?")[0].rpartition("/")[2] for r in origin.blob_gets()} == blobs_of(arm64)

    result = await run_cli("--node", node.url, "--all-platforms", f"{origin.address}/test/multi:v1")
    assert result.exit_code == 0, result.output
    assert held(node, amd64) == blobs_of(amd64)


async def test_a_platform_the_index_lacks_is_an_unknown_image(
    origin: DistributionRegistry, node: NodeServer, multiarch: Image
) -> None:
    await push(multiarch, f"{origin.address}/test/multi:v1")
    result = await run_cli(
        "--node", node.url, "--platform", "linux/s390x", f"{origin.address}/test/multi:v1"
    )
    assert result.exit_code == 3
    assert "linux/amd64" in result.stderr and "linux/arm64" in result.stderr


async def test_exit_codes_for_unknown_image_full_cache_and_unreachable_node(
    origin: DistributionRegistry,
    pushed: str,
    node_factory: Callable[..., Any],
    small_image: Image,
) -> None:
    node = await node_factory(origin)
    missing = await run_cli("--node", node.url, f"{origin.address}/test/nothing:v1")
    assert missing.exit_code == 3, missing.output
    assert "unknown" in missing.stderr

    tiny = await node_factory(origin, cache={"quota_bytes": 1_000_000})  # the 6 MB layer: no room
    full = await run_cli("--node", tiny.url, pushed)
    assert full.exit_code == 5, full.output
    assert "larger than the cache quota" in full.stderr
    assert "raise cache.quota_bytes above the blob's size" in full.stderr
    assert "unpin" not in full.stderr  # unpinning cannot make room for a blob over the quota
    assert "min_free_percent" not in full.stderr

    port = node.port
    await node.close()
    gone = await run_cli("--node", f"http://127.0.0.1:{port}", pushed)
    assert gone.exit_code == 6, gone.output


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A cache dir on its own 16 MiB filesystem (unmounted after the node closed)."""
    with tmpfs(tmp_path / "small-cache", "16m") as mounted:
        yield mounted


async def test_a_node_whose_disk_is_below_its_floor_says_so_not_that_its_quota_is_full(
    small_disk: Path,
    origin: DistributionRegistry,
    pushed: str,
    node_factory: Callable[..., Any],
    small_image: Image,
) -> None:
    """No quota, half the disk kept free: the node streams every blob and keeps none."""
    node = await node_factory(origin, cache_dir=small_disk, cache={"min_free_percent": 50})
    fill_up(small_disk, leave=7 * 1024 * 1024)  # room for the 6 MB layer, not above the floor

    result = await run_cli("--node", node.url, pushed)

    assert result.exit_code == 5, result.output
    assert "could not keep 4 blob(s)" in result.stderr
    assert "50% of the cache's filesystem free" in result.stderr
    assert "lower cache.min_free_percent" in result.stderr
    assert "quota" not in result.stderr
    assert held(node, small_image) == set()


async def test_prewarmed_blobs_are_pinned(
    origin: DistributionRegistry, pushed: str, node: NodeServer, small_image: Image
) -> None:
    result = await run_cli("--node", node.url, "--pin-seconds", "3600", pushed)
    assert result.exit_code == 0, result.output
    assert "warmed 4 blobs" in result.stdout
    store = node.app[NODE].store
    assert all(store.pinned_until(Digest.parse(d)) for d in blobs_of(small_image))


async def test_a_pin_held_for_two_reasons_is_listed_and_dropped_one_at_a_time(
    origin: DistributionRegistry, pushed: str, node: NodeServer, small_image: Image
) -> None:
    assert (await run_cli("--node", node.url, pushed)).exit_code == 0  # pinned for "prewarm"
    digest = small_image.layers[0].digest
    async with aiohttp.ClientSession(node.url) as http:
        body = {"digests": [digest], "seconds": 60, "reason": "hot"}
        async with http.post("/_imgaccel/pins", json=body) as response:
            assert (await response.json())["pinned"] == [digest]

        async def reasons() -> list[str]:
            async with http.get("/_imgaccel/cache") as response:
                listing = (await response.json())["blobs"]
            return next(blob["reasons"] for blob in listing if blob["digest"] == digest)

        assert await reasons() == ["hot", "prewarm"]
        async with http.delete(f"/_imgaccel/pins/{digest}", params={"reason": "prewarm"}) as r:
            assert r.status == 204
        assert await reasons() == ["hot"]
        assert node.app[NODE].store.pinned_until(Digest.parse(digest))
        async with http.delete(f"/_imgaccel/pins/{digest}") as response:  # every reason
            assert response.status == 204
        assert await reasons() == []
        assert node.app[NODE].store.pinned_until(Digest.parse(digest)) is None


# -- private images -------------------------------------------------------------------------------


@pytest.fixture
async def tokens(tmp_path: Path) -> AsyncIterator[TokenServer]:
    async with TokenServer(
        tmp_path / "tokens", users=dict([ALICE]), grants={"alice": {"test/*": ["pull", "push"]}}
    ) as server:
        yield server


@pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo is not installed")
async def test_a_private_image_needs_credentials(
    tmp_path: Path,
    tokens: TokenServer,
    small_image: Image,
    node_factory: Callable[..., Any],
) -> None:
    async with DistributionRegistry(tmp_path / "private", auth=tokens.registry_auth()) as origin:
        ref = f"{origin.address}/test/private:v1"
        await push(small_image, ref, creds=":".join(ALICE))
        node = await node_factory(origin)

        denied = await run_cli("--node", node.url, ref)
        assert denied.exit_code == 4, denied.output
        assert "denied" in denied.stderr
        assert held(node, small_image) == set()

        wrong = await run_cli(
            "--node", node.url, "--username", "alice", "--password-stdin", ref, stdin="nope\n"
        )
        assert wrong.exit_code == 4, wrong.output

        ok = await run_cli(
            "--node", node.url, "--username", "alice", "--password-stdin", ref, stdin="alice-pw\n"
        )
        assert ok.exit_code == 0, ok.output
        assert held(node, small_image) == blobs_of(small_image)
