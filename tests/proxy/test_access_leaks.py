"""Private content must not leak out of the cache through a side door.

The origin is the CNCF distribution registry, with token auth (alice may pull ``test/*``, anyone
``test/public``) or with Basic auth (alice only). The one hand-written server is the hostile
registry a real one cannot be: it answers every ``HEAD`` with 200 and every ``GET`` with bytes
of its own, whatever the digest.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from imgaccel.oci.digest import Digest
from imgaccel.p2p.certs import KeyPair
from imgaccel.proxy.peers import parse_torrent
from imgaccel.proxy.state import NODE
from imgaccel.testing.images import Image, push
from imgaccel.testing.registry import DistributionRegistry
from imgaccel.testing.tokenserver import TokenServer
from imgaccel.upstream.auth import basic_header
from tests.conftest import NodeServer
from tests.p2p_fixtures import certs_dir
from tests.proxy.conftest import ALICE, htpasswd_auth
from tests.proxy.test_auth import fetch_token, get_blob

pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(
        shutil.which("docker-registry") is None or shutil.which("skopeo") is None,
        reason="needs docker-registry and skopeo",
    ),
]

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"


class Liar:
    """A registry that claims every digest: 200 to any ``HEAD``, its own bytes to any ``GET``."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []
        app = web.Application()
        app.router.add_route("*", "/v2/{name:.+}/{kind:blobs|manifests}/{reference}", self.answer)
        self.server = TestServer(app, host="127.0.0.1", port=0)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    async def answer(self, request: web.Request) -> web.Response:
        self.seen.append((request.method, request.path))
        body = b'{"schemaVersion": 2, "layers": []}'
        headers = {
            "Docker-Content-Digest": request.match_info["reference"],
            "Content-Type": MANIFEST_TYPE,
            "Content-Length": str(len(body)),
        }
        if request.method == "HEAD":
            return web.Response(headers=headers)
        return web.Response(body=body, headers=headers)


@pytest.fixture
async def liar() -> AsyncIterator[Liar]:
    registry = Liar()
    await registry.server.start_server()
    yield registry
    await registry.server.close()


async def get(url: str, authorization: str | None = None) -> tuple[int, dict[str, str], bytes]:
    headers = {"Authorization": authorization} if authorization else {}
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as resp:
        return resp.status, dict(resp.headers), await resp.read()


def error_code(body: bytes) -> str:
    code: str = json.loads(body)["errors"][0]["code"]
    return code


# -- 1. an origin's word about a digest counts only if it holds the bytes ----------------------


async def test_a_registry_that_claims_every_digest_gets_no_cached_private_content(
    token_origin: DistributionRegistry,
    tokens: TokenServer,
    liar: Liar,
    node_factory: Callable[..., Any],
    small_image: Image,
) -> None:
    origin = token_origin
    node: NodeServer = await node_factory(
        origin, upstreams={liar.address: {"url": f"http://{liar.address}"}}
    )
    alice = f"Bearer {await fetch_token(tokens, ALICE, 'test/private')}"
    layer = small_image.layers[0].digest
    manifest = small_image.manifest.digest
    status, _, _ = await get_blob(node, origin.address, "test/private", layer, alice)
    assert status == 200
    status, _, _ = await get(f"{node.url}/v2/test/private/manifests/v1?ns={origin.address}", alice)
    assert status == 200
    assert Digest.parse(layer) in node.app[NODE].store

    # Anyone naming the digests through the liar, which would say yes to a HEAD: a blob is
    # passed through from the liar as a miss would be, and its bytes are not the digest, so
    # the response is cut short; the cached private layer is never sent.
    with pytest.raises(aiohttp.ClientPayloadError):
        await get_blob(node, liar.address, "any/thing", layer)
    status, _, body = await get(f"{node.url}/v2/any/thing/manifests/{manifest}?ns={liar.address}")
    assert status == 404
    assert error_code(body) == "MANIFEST_UNKNOWN"
    # The node asked the liar for the bytes themselves, not merely whether it had them.
    assert ("GET", f"/v2/any/thing/blobs/{layer}") in liar.seen
    assert ("GET", f"/v2/any/thing/manifests/{manifest}") in liar.seen

    # And a second try is not let through on what the first one left behind.
    with pytest.raises(aiohttp.ClientPayloadError):
        await get_blob(node, liar.address, "any/thing", layer)
    assert not node.app[NODE].meta.fetched_from(liar.address, Digest.parse(layer))


async def test_another_registry_that_really_holds_the_digest_is_served_it(
    token_origin: DistributionRegistry,
    tokens: TokenServer,
    node_factory: Callable[..., Any],
    small_image: Image,
    tmp_path: Path,
) -> None:
    origin = token_origin
    async with DistributionRegistry(tmp_path / "second", auth=htpasswd_auth(tmp_path)) as second:
        await push(small_image, f"{second.address}/copy/app:v1", creds=":".join(ALICE))
        second.requests.clear()
        node: NodeServer = await node_factory(
            origin, upstreams={second.address: {"url": second.url}}
        )
        layer = small_image.layers[0].digest
        alice = f"Bearer {await fetch_token(tokens, ALICE, 'test/private')}"
        status, _, _ = await get_blob(node, origin.address, "test/private", layer, alice)
        assert status == 200

        # The same private layer, asked for through a registry the node never fetched it from:
        # a cache miss for that registry, answered with its own verdict on the credentials.
        status, _, body = await get_blob(node, second.address, "copy/app", layer)
        assert status == 401
        assert error_code(body) == "UNAUTHORIZED"
        basic = basic_header(*ALICE)
        status, _, body = await get_blob(node, second.address, "copy/app", layer, basic)
        assert status == 200
        assert body == small_image.blob_path(layer).read_bytes()

        # Verified there once: from then on that registry's word is enough (a HEAD, or within
        # the access TTL not even that).
        await second.settle()
        assert len(second.blob_gets(layer)) == 1
        second.requests.clear()
        status, _, _ = await get_blob(node, second.address, "copy/app", layer, basic)
        assert status == 200
        await second.settle()
        assert second.blob_gets(layer) == []


# -- 2. a stale tag is served only to a client that may read it --------------------------------


async def test_a_stale_private_tag_is_not_served_to_a_client_without_credentials(
    token_origin: DistributionRegistry,
    tokens: TokenServer,
    node_factory: Callable[..., Any],
) -> None:
    origin = token_origin
    node: NodeServer = await node_factory(
        origin, cache={"tag_ttl_seconds": 0}, upstream_client={"retries": 0}
    )
    url = f"{node.url}/v2/test/private/manifests/v1?ns={origin.address}"
    alice = f"Bearer {await fetch_token(tokens, ALICE, 'test/private')}"
    status, headers, fresh = await get(url, alice)
    assert status == 200 and "Warning" not in headers

    await origin.stop()

    status, _, body = await get(url)
    assert status == 503
    assert error_code(body) == "UNAVAILABLE"
    assert b"schemaVersion" not in body
    # Alice, whose access the origin confirmed moments ago, still gets the stale answer.
    status, headers, stale = await get(url, alice)
    assert status == 200
    assert stale == fresh
    assert headers["Warning"].startswith("110 ")


# -- 3. what the node's own credentials fetched is not public ---------------------------------


async def test_a_layer_fetched_with_the_nodes_credentials_is_not_shared_as_public(
    basic_origin: DistributionRegistry,
    node_factory: Callable[..., Any],
    tracker: str,
    cluster_ca: KeyPair,
    small_image: Image,
    tmp_path: Path,
) -> None:
    origin = basic_origin

    p2p_node = _p2p_nodes(origin, node_factory, tracker, cluster_ca, tmp_path)
    # One node holds a pull secret for the registry in its config; the other does not.
    with_secret = await p2p_node(
        "secret", {"url": origin.url, "username": ALICE[0], "password": ALICE[1]}
    )
    without = await p2p_node("plain", {"url": origin.url})
    layer = small_image.layers[0].digest

    status, _, body = await get_blob(with_secret, origin.address, "test/app", layer)
    assert status == 200  # a client without credentials, served on the node's own
    torrent = with_secret.app[NODE].meta.torrent(Digest.parse(layer))
    assert torrent is not None
    _, public_in, origins = parse_torrent(torrent)
    assert public_in == frozenset()
    assert origins == frozenset({origin.address})  # where the node verified it from

    # A client without credentials on the other node: the origin is asked, and says no.
    status, _, body = await get_blob(without, origin.address, "test/app", layer)
    assert status == 401
    assert error_code(body) == "UNAUTHORIZED"


def _p2p_nodes(
    origin: DistributionRegistry,
    node_factory: Callable[..., Any],
    tracker: str,
    cluster_ca: KeyPair,
    tmp_path: Path,
) -> Callable[[str, dict[str, Any]], Any]:
    async def p2p_node(name: str, upstream: dict[str, Any]) -> NodeServer:
        p2p = {
            "tracker_url": tracker,
            "listen": "127.0.0.1:0",
            "node_id": name,
            "certs_dir": str(certs_dir(tmp_path / f"certs-{name}", cluster_ca)),
            "stall_seconds": 2.0,
            "no_peers_seconds": 2.0,
        }
        node: NodeServer = await node_factory(
            cache_dir=tmp_path / f"cache-{name}", upstreams={origin.address: upstream}, p2p=p2p
        )
        return node

    return p2p_node


async def test_a_private_layer_comes_from_peers_after_a_head_not_a_second_download(
    basic_origin: DistributionRegistry,
    node_factory: Callable[..., Any],
    tracker: str,
    cluster_ca: KeyPair,
    small_image: Image,
    tmp_path: Path,
) -> None:
    """The torrent names the registries its publisher verified the blob from, so the second
    node checks the client's access to it with a HEAD there and takes the bytes from the
    swarm: a private image spreads peer to peer like a public one."""
    origin = basic_origin
    p2p_node = _p2p_nodes(origin, node_factory, tracker, cluster_ca, tmp_path)
    first = await p2p_node("n1", {"url": origin.url})
    second = await p2p_node("n2", {"url": origin.url})
    layer = small_image.layers[0].digest
    alice = basic_header(*ALICE)

    status, _, body = await get_blob(first, origin.address, "test/app", layer, alice)
    assert status == 200
    gets = len(origin.blob_gets(layer))

    status, _, again = await get_blob(second, origin.address, "test/app", layer, alice)
    assert status == 200 and again == body
    assert second.app[NODE].store.lookup(Digest.parse(layer)) is not None
    assert len(origin.blob_gets(layer)) == gets  # from the swarm, not the origin
    # And still private there: a client without credentials is refused by the origin.
    status, _, refused = await get_blob(second, origin.address, "test/app", layer)
    assert status == 401 and error_code(refused) == "UNAUTHORIZED"


async def test_a_blob_cached_before_provenance_is_passed_through_once_then_served(
    basic_origin: DistributionRegistry,
    node_factory: Callable[..., Any],
    small_image: Image,
) -> None:
    """A cache from an older version has no provenance: the first request through each
    registry streams that registry's bytes (verified) as a miss would, the next ones are hits."""
    origin = basic_origin
    node: NodeServer = await node_factory(origin)
    layer = small_image.layers[0].digest
    alice = basic_header(*ALICE)
    status, _, body = await get_blob(node, origin.address, "test/app", layer, alice)
    assert status == 200
    meta = node.app[NODE].meta
    meta._db.execute("DELETE FROM origins")  # as a meta.db from before provenance
    assert not meta.fetched_from(origin.address, Digest.parse(layer))
    await origin.settle()
    gets = len(origin.blob_gets(layer))

    status, headers, again = await get_blob(node, origin.address, "test/app", layer, alice)
    assert (status, again) == (200, body) and headers["Content-Length"] == str(len(body))
    await origin.settle()
    assert len(origin.blob_gets(layer)) == gets + 1
    assert meta.fetched_from(origin.address, Digest.parse(layer))

    status, _, third = await get_blob(node, origin.address, "test/app", layer, alice)
    assert (status, third) == (200, body)
    await origin.settle()
    assert len(origin.blob_gets(layer)) == gets + 1  # a hit now
    status, _, _ = await get_blob(node, origin.address, "test/app", layer)
    assert status == 401  # and still private


async def test_a_slow_blob_fill_does_not_vouch_for_a_cached_manifest_of_its_digest(
    token_origin: DistributionRegistry,
    tokens: TokenServer,
    node_factory: Callable[..., Any],
    small_image: Image,
) -> None:
    """A registry sending a blob named like a cached private manifest vouches, while its fill
    runs, only for the requests that read that fill (checked before its last byte): asking for
    the manifest of that digest through it meanwhile gets nothing from the cache."""
    sending = asyncio.Event()

    async def slow_blob(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": "100000000"})
        await response.prepare(request)
        sending.set()
        for _ in range(100):
            await response.write(b"x")
            await asyncio.sleep(0.1)
        return response

    app = web.Application()
    app.router.add_get("/v2/{name:.+}/blobs/{digest}", slow_blob)
    app.router.add_get("/v2/{name:.+}/manifests/{reference}", slow_blob)
    evil = TestServer(app, host="127.0.0.1", port=0)
    await evil.start_server()
    address = f"127.0.0.1:{evil.port}"
    node: NodeServer = await node_factory(
        token_origin, upstreams={address: {"url": f"http://{address}"}}
    )
    alice = f"Bearer {await fetch_token(tokens, ALICE, 'test/private')}"
    manifest = small_image.manifest.digest
    url = f"{node.url}/v2/test/private/manifests/v1?ns={token_origin.address}"
    status, _, private = await get(url, alice)
    assert status == 200
    async with aiohttp.ClientSession() as http:
        blob = asyncio.create_task(
            http.get(f"{node.url}/v2/x/y/blobs/{manifest}?ns={address}").__aenter__()
        )
        await asyncio.wait_for(sending.wait(), 10)
        await asyncio.sleep(0.3)  # the node's fill of that digest from the slow registry runs

        try:
            async with http.get(
                f"{node.url}/v2/x/y/manifests/{manifest}?ns={address}",
                timeout=aiohttp.ClientTimeout(total=3),
            ) as response:
                body = await response.read()
                assert not (response.status == 200 and body == private)
        except (TimeoutError, aiohttp.ClientPayloadError):
            pass  # it went to the slow registry for the bytes, not to the cache
        finally:
            blob.cancel()
    await evil.close()
