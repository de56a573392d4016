"""What the node asks the origin for, and what it answers, given the client's Accept headers.

The registry picks what a tag names by the client's Accept: a manifest list or an OCI index to
a client that accepts one, else the linux/amd64 child of a list, or a 404 for an index. The
node caches the answer to every manifest type, so each client must still get what the origin
would give it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from imgaccel.oci.media import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    MANIFEST_ACCEPT,
    OCI_INDEX,
    OCI_MANIFEST,
    accepts,
)
from imgaccel.proxy.manifests import client_accept
from imgaccel.testing.images import Image, build_multiarch, push
from imgaccel.testing.registry import DistributionRegistry
from tests.conftest import NodeServer, needs_registry, needs_skopeo

#: What containerd sends (one header per type, as ctr does), lists and indexes included.
CONTAINERD_ACCEPT = [DOCKER_MANIFEST, DOCKER_LIST, OCI_MANIFEST, OCI_INDEX, "*/*"]
#: A client of single-platform manifests only.
SINGLE_ONLY = [f"{DOCKER_MANIFEST}, {OCI_MANIFEST}"]
OCI_SINGLE_ONLY = [OCI_MANIFEST]


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([], MANIFEST_ACCEPT),
        (["*/*"], MANIFEST_ACCEPT),
        ([" */* "], MANIFEST_ACCEPT),
        ([OCI_MANIFEST], OCI_MANIFEST),
        ([OCI_MANIFEST, "*/*"], f"{OCI_MANIFEST}, */*"),  # containerd sends several headers
    ],
)
def test_client_accept(headers: list[str], expected: str) -> None:
    assert client_accept(headers) == expected


@pytest.mark.parametrize(
    ("accept", "media_type", "expected"),
    [
        (MANIFEST_ACCEPT, OCI_INDEX, True),
        (f"{DOCKER_MANIFEST}, {OCI_MANIFEST}", DOCKER_LIST, False),
        (f"{DOCKER_MANIFEST}, {OCI_MANIFEST}", OCI_MANIFEST, True),
        (f"{OCI_MANIFEST}, */*", OCI_INDEX, True),
        ("application/*", OCI_INDEX, True),
        (f"{OCI_INDEX};q=0.5", OCI_INDEX, True),
        (f"{OCI_INDEX.upper()}", OCI_INDEX, True),
        ("text/*", OCI_INDEX, False),
        (f"{OCI_INDEX}x", OCI_INDEX, False),
    ],
)
def test_accepts(accept: str, media_type: str, expected: bool) -> None:
    assert accepts(accept, media_type) is expected


# -- against the real registry: tags that name a list or an index -------------------------------


@pytest.fixture(scope="session")
def multiarch(tmp_path_factory: pytest.TempPathFactory) -> Image:
    """An OCI index over an amd64 and an arm64 image (small layers)."""
    return build_multiarch(tmp_path_factory.mktemp("multiarch"), [20_000, 3_000], seed=7)


@pytest.fixture
async def tags(origin: DistributionRegistry, multiarch: Image) -> dict[str, str]:
    """``multiarch`` at test/multi:index (an OCI index) and test/multi:list (a Docker manifest
    list over the same platform manifests); returns tag -> the list's or index's digest."""
    assert multiarch.index is not None
    await push(multiarch, f"{origin.address}/test/multi:index")
    docker_list = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": DOCKER_LIST,
            "manifests": [
                {**d.as_json(), "platform": {"architecture": arch, "os": "linux"}}
                for arch, d in multiarch.platforms.items()
            ],
        }
    ).encode()
    async with (
        aiohttp.ClientSession() as http,
        http.put(
            f"{origin.url}/v2/test/multi/manifests/list",
            data=docker_list,
            headers={"Content-Type": DOCKER_LIST},
        ) as put,
    ):
        assert put.status == 201, await put.text()
        list_digest = put.headers["Docker-Content-Digest"]
    origin.requests.clear()
    return {"index": multiarch.index.digest, "list": list_digest}


Answer = tuple[int, str | None]  # status, Docker-Content-Digest


async def ask(base: str, tag: str, accept: list[str], method: str = "GET", ns: str = "") -> Answer:
    url = f"{base}/v2/test/multi/manifests/{tag}" + (f"?ns={ns}" if ns else "")
    headers = [("Accept", value) for value in accept]
    async with aiohttp.ClientSession() as http, http.request(method, url, headers=headers) as r:
        await r.read()
        return r.status, r.headers.get("Docker-Content-Digest") if r.status == 200 else None


def via(node: NodeServer, origin: DistributionRegistry) -> Callable[..., Any]:
    """Ask the node, checking that GET and HEAD agree with each other and with the origin."""

    async def node_answer(tag: str, accept: list[str]) -> Answer:
        got = await ask(node.url, tag, accept, ns=origin.address)
        assert await ask(node.url, tag, accept, "HEAD", ns=origin.address) == got
        assert got == await ask(origin.url, tag, accept), f"{tag} with {accept}"
        return got

    return node_answer


@needs_registry
@needs_skopeo
async def test_a_single_manifest_client_first_does_not_pin_a_list_to_amd64(
    origin: DistributionRegistry, tags: dict[str, str], multiarch: Image, node: NodeServer
) -> None:
    answer = via(node, origin)
    assert await answer("list", SINGLE_ONLY) == (200, multiarch.platforms["amd64"].digest)
    # containerd (on any platform) then gets the list, and picks its own platform from it.
    assert await answer("list", CONTAINERD_ACCEPT) == (200, tags["list"])
    assert await answer("list", SINGLE_ONLY) == (200, multiarch.platforms["amd64"].digest)


@needs_registry
@needs_skopeo
async def test_an_oci_manifest_client_first_does_not_make_an_index_tag_unknown(
    origin: DistributionRegistry, tags: dict[str, str], node: NodeServer
) -> None:
    answer = via(node, origin)
    assert await answer("index", OCI_SINGLE_ONLY) == (404, None)
    assert await answer("index", CONTAINERD_ACCEPT) == (200, tags["index"])
    # No Accept (aiohttp's */*) stands for every type, unlike at the registry: the index.
    assert await ask(node.url, "index", [], ns=origin.address) == (200, tags["index"])


@needs_registry
@needs_skopeo
async def test_a_cached_index_is_not_served_to_a_client_that_does_not_accept_it(
    origin: DistributionRegistry, tags: dict[str, str], multiarch: Image, node: NodeServer
) -> None:
    answer = via(node, origin)
    assert await answer("index", CONTAINERD_ACCEPT) == (200, tags["index"])
    assert await answer("list", CONTAINERD_ACCEPT) == (200, tags["list"])
    assert await answer("index", OCI_SINGLE_ONLY) == (404, None)
    assert await answer("list", SINGLE_ONLY) == (200, multiarch.platforms["amd64"].digest)
    # The narrow answers were not cached in the tags' place.
    assert await answer("index", CONTAINERD_ACCEPT) == (200, tags["index"])
    assert await answer("list", CONTAINERD_ACCEPT) == (200, tags["list"])


@needs_registry
@needs_skopeo
async def test_a_stale_index_is_not_served_to_a_client_that_does_not_accept_it(
    origin: DistributionRegistry,
    tags: dict[str, str],
    node_factory: Callable[..., Any],
) -> None:
    node: NodeServer = await node_factory(
        origin, cache={"tag_ttl_seconds": 0}, upstream_client={"retries": 0}
    )
    assert await via(node, origin)("index", CONTAINERD_ACCEPT) == (200, tags["index"])
    address = origin.address
    await origin.stop()
    assert await ask(node.url, "index", CONTAINERD_ACCEPT, ns=address) == (200, tags["index"])
    status, _ = await ask(node.url, "index", OCI_SINGLE_ONLY, ns=address)
    assert status == 503


@needs_registry
@needs_skopeo
async def test_cached_oci_manifests_are_served_again_after_the_access_check_expires(
    origin: DistributionRegistry,
    tags: dict[str, str],
    multiarch: Image,
    node_factory: Callable[..., Any],
) -> None:
    # The re-check of a cached manifest asks the origin with a HEAD: without an Accept that
    # names OCI types, the registry says MANIFEST_UNKNOWN for every OCI manifest and index.
    node: NodeServer = await node_factory(origin, cache={"auth_ttl_seconds": 0})
    amd64 = multiarch.platforms["amd64"].digest
    for _ in range(2):  # the second time from the cache, after a re-check at the origin
        assert await via(node, origin)("index", CONTAINERD_ACCEPT) == (200, tags["index"])
        assert await via(node, origin)(amd64, CONTAINERD_ACCEPT) == (200, amd64)
        assert await via(node, origin)(tags["index"], CONTAINERD_ACCEPT) == (200, tags["index"])
