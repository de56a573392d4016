"""Private registries: the mirror against a real registry that checks bearer tokens or Basic auth.

The origin is the CNCF distribution registry with token auth from
:class:`~imgaccel.testing.tokenserver.TokenServer` (alice may pull everything, bob nothing private,
anyone may pull ``test/public``), or with an htpasswd file. Clients are real: ``ctr`` through a
``hosts.toml`` mirror entry, ``skopeo`` talking to the node as if it were the registry, and plain
HTTP for the requests a hostile client would make. "Went through the node" is proven from the
origin's own request log: every blob GET it served carries the node's ``imgaccel/`` User-Agent.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from imgaccel.oci.digest import Digest
from imgaccel.proxy.state import NODE
from imgaccel.testing.containerd import Containerd
from imgaccel.testing.images import Image, build_image, push
from imgaccel.testing.procs import run
from imgaccel.testing.registry import DistributionRegistry, Request
from imgaccel.testing.tokenserver import TokenServer
from imgaccel.upstream.auth import basic_header
from tests.conftest import NodeServer, until, write_hosts
from tests.proxy.conftest import ALICE, BOB, htpasswd_auth

pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(
        shutil.which("docker-registry") is None
        or shutil.which("containerd") is None
        or shutil.which("ctr") is None
        or shutil.which("skopeo") is None,
        reason="needs docker-registry, containerd, ctr and skopeo",
    ),
]

NODE_UA = "imgaccel/"


def _layer_digests(image: Image) -> set[str]:
    return {d.digest for d in image.layers}


def _blob_gets_by(origin: DistributionRegistry, *, node: bool) -> list[Request]:
    return [r for r in origin.blob_gets() if r.user_agent.startswith(NODE_UA) == node]


def assert_went_through_node(origin: DistributionRegistry, node: NodeServer, image: Image) -> None:
    """The node cached every layer, and nobody but the node fetched blobs from the origin."""
    store = node.app[NODE].store
    assert all(Digest.parse(d) in store for d in _layer_digests(image))
    fetched = {r.uri.split("?")[0].rpartition("/")[2] for r in _blob_gets_by(origin, node=True)}
    assert _layer_digests(image) <= fetched
    assert _blob_gets_by(origin, node=False) == []


async def fetch_token(tokens: TokenServer, user: tuple[str, str] | None, repo: str) -> str:
    """A token as a client gets it from the realm (alice's, bob's or anonymous)."""
    headers = {"Authorization": basic_header(*user)} if user else {}
    params = {"service": tokens.service, "scope": f"repository:{repo}:pull"}
    async with (
        aiohttp.ClientSession() as session,
        session.get(tokens.realm, params=params, headers=headers) as resp,
    ):
        assert resp.status == 200
        token: str = (await resp.json())["token"]
        return token


async def get_blob(
    node: NodeServer, registry: str, repo: str, digest: str, authorization: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    headers = {"Authorization": authorization} if authorization else {}
    url = f"{node.url}/v2/{repo}/blobs/{digest}?ns={registry}"
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as resp:
        return resp.status, dict(resp.headers), await resp.read()


async def test_private_pull_with_credentials_goes_through_the_node_and_stays_private(
    token_origin: DistributionRegistry,
    tokens: TokenServer,
    node_factory: Callable[..., Any],
    containerd: Containerd,
    small_image: Image,
    tmp_path: Path,
) -> None:
    origin = token_origin
    node: NodeServer = await node_factory(origin)
    hosts = write_hosts(tmp_path / "hosts", origin.address, node.url)

    await containerd.pull(
        f"{origin.address}/test/private:v1", hosts_dir=hosts, user=":".join(ALICE)
    )

    assert_went_through_node(origin, node, small_image)
    layer = small_image.layers[0]
    origin.requests.clear()

    # No credentials: refused with the origin's challenge, so a real client can authenticate.
    status, headers, body = await get_blob(node, origin.address, "test/private", layer.digest)
    assert status == 401
    assert json.loads(body)["errors"][0]["code"] == "UNAUTHORIZED"
    assert f'realm="{tokens.realm}"' in headers["WWW-Authenticate"]
    assert 'service="imgaccel-test"' in headers["WWW-Authenticate"]

    # A valid token of someone who may not pull the repository: refused, no bytes.
    bob = await fetch_token(tokens, BOB, "test/private")
    status, _, body = await get_blob(
        node, origin.address, "test/private", layer.digest, f"Bearer {bob}"
    )
    assert status in (401, 403)
    assert json.loads(body)["errors"][0]["code"] in ("UNAUTHORIZED", "DENIED")

    # Nor does the cached manifest leak to a client without credentials.
    url = f"{node.url}/v2/test/private/manifests/v1?ns={origin.address}"
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 401
        assert "schemaVersion" not in await resp.text()

    # Alice's own fresh token: the bytes, from the cache; the origin only answered a HEAD check.
    alice = await fetch_token(tokens, ALICE, "test/private")
    status, _, body = await get_blob(
        node, origin.address, "test/private", layer.digest, f"Bearer {alice}"
    )
    assert status == 200
    assert body == small_image.blob_path(layer.digest).read_bytes()
    assert origin.blob_gets() == []
    assert any(r.method == "HEAD" and r.status == 200 for r in origin.requests)


async def test_a_client_without_credentials_cannot_join_a_private_fill_in_progress(
    token_origin: DistributionRegistry,
    tokens: TokenServer,
    node_factory: Callable[..., Any],
    small_image: Image,
) -> None:
    origin = token_origin
    node: NodeServer = await node_factory(origin)
    metrics = node.app[NODE].metrics.registry
    layer = small_image.layers[0]
    alice = await fetch_token(tokens, ALICE, "test/private")
    # Hold the node's own token request, so alice's fetch of the blob stays "starting".
    tokens.gate = asyncio.Event()
    for_alice = asyncio.create_task(
        get_blob(node, origin.address, "test/private", layer.digest, f"Bearer {alice}")
    )
    await until(lambda: tokens.waiting == 1)

    anonymous = asyncio.create_task(get_blob(node, origin.address, "test/private", layer.digest))
    await until(
        lambda: metrics.get_sample_value("imgaccel_cache_misses_total", {"kind": "blob"}) == 2
    )
    tokens.gate.set()

    status, _, body = await anonymous
    assert status == 401
    assert json.loads(body)["errors"][0]["code"] == "UNAUTHORIZED"
    status, _, body = await for_alice
    assert status == 200
    assert body == small_image.blob_path(layer.digest).read_bytes()


async def test_public_image_pulls_anonymously_and_the_second_pull_comes_from_the_cache(
    token_origin: DistributionRegistry,
    node_factory: Callable[..., Any],
    containerd: Containerd,
    small_image: Image,
    tmp_path: Path,
) -> None:
    origin = token_origin
    node: NodeServer = await node_factory(origin)
    hosts = write_hosts(tmp_path / "hosts", origin.address, node.url)
    ref = f"{origin.address}/test/public:v1"

    await containerd.pull(ref, hosts_dir=hosts)
    assert_went_through_node(origin, node, small_image)
    origin.requests.clear()
    await containerd.remove_all_images()

    await containerd.pull(ref, hosts_dir=hosts)

    assert origin.blob_gets() == []


async def test_the_node_reuses_its_tokens_across_the_requests_of_a_pull(
    token_origin: DistributionRegistry,
    tokens: TokenServer,
    node_factory: Callable[..., Any],
    containerd: Containerd,
    tmp_path: Path,
) -> None:
    origin = token_origin
    many = build_image(tmp_path / "many", [4096] * 12, seed=7)
    await push(many, f"{origin.address}/test/public:many", creds=":".join(ALICE))
    origin.requests.clear()
    tokens.requests.clear()
    node: NodeServer = await node_factory(origin)
    hosts = write_hosts(tmp_path / "hosts", origin.address, node.url)

    await containerd.pull(f"{origin.address}/test/public:many", hosts_dir=hosts)

    assert_went_through_node(origin, node, many)
    node_requests = [r for r in origin.requests if r.user_agent.startswith(NODE_UA)]
    assert len(node_requests) >= 14  # the manifest, the config and 12 layers
    # Without a token cache each of those would have cost a token; with it, one for the scope.
    assert len(tokens.requests_from(NODE_UA)) <= 2, tokens.requests


async def test_a_basic_auth_origin_is_pulled_with_the_nodes_own_credentials(
    basic_origin: DistributionRegistry,
    node_factory: Callable[..., Any],
    containerd: Containerd,
    small_image: Image,
    tmp_path: Path,
) -> None:
    origin = basic_origin
    upstream = {"url": origin.url, "username": ALICE[0], "password": ALICE[1]}
    node: NodeServer = await node_factory(upstreams={origin.address: upstream})
    hosts = write_hosts(tmp_path / "hosts", origin.address, node.url)

    await containerd.pull(f"{origin.address}/test/app:v1", hosts_dir=hosts)

    assert_went_through_node(origin, node, small_image)
    # ctr had no credentials, so without the node it would have been refused.
    refused = await containerd.pull(f"{origin.address}/test/app:v1", check=False)
    assert refused.returncode != 0


async def skopeo_copy(node: NodeServer, repo: str, dest: Path, creds: str | None) -> Any:
    argv = ["skopeo", "copy", "--quiet", "--src-tls-verify=false"]
    if creds:
        argv += ["--src-creds", creds]
    return await run(*argv, f"docker://{node.address}/{repo}:v1", f"oci:{dest}", check=False)


async def test_skopeo_reads_a_private_image_through_the_node_only_with_credentials(
    token_origin: DistributionRegistry,
    tokens: TokenServer,
    node_factory: Callable[..., Any],
    small_image: Image,
    tmp_path: Path,
) -> None:
    origin = token_origin
    node: NodeServer = await node_factory(origin, default_registry=origin.address)
    # skopeo authenticates only if the version check challenges it: the node relays the origin's.
    async with aiohttp.ClientSession() as session, session.get(f"{node.url}/v2/") as resp:
        assert resp.status == 401
        assert f'realm="{tokens.realm}"' in resp.headers["WWW-Authenticate"]

    public = await skopeo_copy(node, "test/public", tmp_path / "public", None)
    assert public.returncode == 0, public.stderr.decode()

    anonymous = await skopeo_copy(node, "test/private", tmp_path / "anon", None)
    assert anonymous.returncode != 0
    assert (
        b"unauthorized" in anonymous.stderr.lower()
        or b"authentication required" in anonymous.stderr.lower()
    )

    copied = await skopeo_copy(node, "test/private", tmp_path / "alice", ":".join(ALICE))
    assert copied.returncode == 0, copied.stderr.decode()
    assert all(
        (tmp_path / "alice" / "blobs" / "sha256" / d.split(":")[1]).is_file()
        for d in _layer_digests(small_image)
    )
    assert_went_through_node(origin, node, small_image)


async def test_a_repository_made_private_at_the_origin_is_no_longer_served_to_anyone(
    origin: DistributionRegistry,
    pushed: str,
    node_factory: Callable[..., Any],
    small_image: Image,
    tmp_path: Path,
) -> None:
    node: NodeServer = await node_factory(origin, cache={"auth_ttl_seconds": 0})
    layer = small_image.layers[0].digest
    status, _, _ = await get_blob(node, origin.address, "test/app", layer)
    assert status == 200  # public: cached and marked readable by anyone

    # The origin is down: what was public is still served (the mirror works offline).
    await origin.stop()
    status, _, body = await get_blob(node, origin.address, "test/app", layer)
    assert status == 200
    assert body == small_image.blob_path(layer).read_bytes()

    # The operator locks the registry down (same address, same content).
    origin.auth = htpasswd_auth(tmp_path)
    await origin.start()
    origin.requests.clear()

    status, headers, body = await get_blob(node, origin.address, "test/app", layer)
    assert status == 401
    assert headers["WWW-Authenticate"].startswith("Basic")
    status, _, body = await get_blob(node, origin.address, "test/app", layer, basic_header(*ALICE))
    assert status == 200
    assert body == small_image.blob_path(layer).read_bytes()
    assert origin.blob_gets() == []
