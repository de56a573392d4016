"""Origins over HTTPS with a private CA (an on-prem Harbor behind the company's CA), some
requiring client certificates: the real distribution registry, pulled through the node with the
upstream's ``ca_file``, ``client_cert`` and ``client_key``.

Without the right files the client gets a registry error and the log says why (files that
cannot be used at all stop the node at start: tests/upstream/test_tls.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from imgaccel.hostconfig.containerd import configure
from imgaccel.serve import listening
from imgaccel.testing.containerd import Containerd
from imgaccel.testing.images import Image
from imgaccel.testing.registry import DistributionRegistry, RegistryTLS
from imgaccel.testing.tokenserver import TokenServer
from tests.conftest import NodeServer, needs_containerd, needs_registry, needs_skopeo
from tests.upstream.conftest import REPO, get_through, pull_through, push_tls, unavailable

pytestmark = [pytest.mark.system, needs_registry, needs_skopeo]


@pytest.fixture
async def mtls_origin(
    tmp_path: Path, tls: RegistryTLS, small_image: Image
) -> AsyncIterator[DistributionRegistry]:
    """``tls_origin`` that also takes only clients with a certificate of that CA."""
    async with DistributionRegistry(tmp_path / "origin", tls=tls, client_certs=True) as registry:
        await push_tls(small_image, registry, tls)
        yield registry


async def _node(node_factory: Any, origin: DistributionRegistry, **upstream: Any) -> NodeServer:
    settings = {
        "url": origin.url,
        **{k: str(v) if isinstance(v, Path) else v for k, v in upstream.items()},
    }
    node: NodeServer = await node_factory(upstreams={origin.address: settings})
    return node


# -- pulls over TLS ----------------------------------------------------------------------------


@pytest.mark.parametrize("ca", ["alone", "with others"])
async def test_an_origin_of_a_private_ca_is_pulled_through_with_its_ca_file_and_cached(
    tls_origin: DistributionRegistry,
    tls: RegistryTLS,
    node_factory: Any,
    small_image: Image,
    tmp_path: Path,
    ca: str,
) -> None:
    ca_file = tls.ca
    if ca == "with others":  # a bundle: an unrelated CA first, as in a company's CA file
        ca_file = tmp_path / "bundle.pem"
        ca_file.write_bytes(tls.other_ca.read_bytes() + b"\n" + tls.ca.read_bytes())
    node = await _node(node_factory, tls_origin, ca_file=ca_file)

    await pull_through(node, tls_origin, small_image)

    await tls_origin.settle()
    for layer in small_image.layers:
        assert len(tls_origin.blob_gets(layer.digest)) == 1
        cached = Path(node.settings.cache.dir) / "blobs" / "sha256" / layer.digest[7:]
        assert cached.is_file()
    tls_origin.requests.clear()

    await pull_through(node, tls_origin, small_image)  # warm: the cache, the tag still fresh

    await tls_origin.settle()
    assert tls_origin.requests == []


@pytest.mark.parametrize("client_certs", [False, True], ids=["ca_file", "mtls"])
async def test_a_big_layer_of_a_tls_origin_is_read_by_a_thread_on_a_connection_of_its_own(
    tmp_path: Path,
    tls: RegistryTLS,
    node_factory: Any,
    small_image: Image,
    caplog: pytest.LogCaptureFixture,
    client_certs: bool,
) -> None:
    """The 6 MB layer, past a lowered ``socket_body_min_bytes``: asked again on a blocking TLS
    socket with the upstream's context (upstream/tlsbody.py), read by the body's thread, and the
    same bytes; aiohttp's connection, paused meanwhile, is dropped."""
    pair = {"client_cert": str(tls.client_cert), "client_key": str(tls.client_key)}
    async with DistributionRegistry(
        tmp_path / "origin", tls=tls, client_certs=client_certs
    ) as origin:
        await push_tls(small_image, origin, tls)
        node = await node_factory(
            upstreams={
                origin.address: {"url": origin.url, "ca_file": str(tls.ca)}
                | (pair if client_certs else {})
            },
            upstream_client={"socket_body_min_bytes": 1_000_000, "tls_body_min_bytes": 1_000_000},
        )
        [big] = [layer for layer in small_image.layers if layer.size > 1_000_000]

        with caplog.at_level(logging.DEBUG, logger="imgaccel.upstream.tlsbody"):
            status, body = await get_through(node, origin, f"blobs/{big.digest}")

        assert status == 200 and f"sha256:{hashlib.sha256(body).hexdigest()}" == big.digest
        cached = Path(node.settings.cache.dir) / "blobs" / "sha256" / big.digest[7:]
        assert cached.read_bytes() == body  # renamed into the cache: the fill verified it
        [line] = [r.getMessage() for r in caplog.records if "of its own" in r.getMessage()]
        assert line.startswith(f"reading {big.size} body bytes")
        await origin.settle()
        # Two GETs: aiohttp's, abandoned (on loopback its socket buffers take all 6 MB before
        # the window closes), and the thread's.
        gets = origin.blob_gets(big.digest)
        assert len(gets) == 2 and big.size in [r.written for r in gets]


async def test_an_https_body_under_tls_body_min_bytes_is_asked_for_once(
    tmp_path: Path, tls: RegistryTLS, node_factory: Any, small_image: Image
) -> None:
    """Asking again costs the origin what it sent the first connection: a body under
    ``tls_body_min_bytes`` (64 MiB by default) stays with aiohttp, one GET."""
    async with DistributionRegistry(tmp_path / "origin", tls=tls) as origin:
        await push_tls(small_image, origin, tls)
        node = await node_factory(
            upstreams={origin.address: {"url": origin.url, "ca_file": str(tls.ca)}},
            upstream_client={"socket_body_min_bytes": 1_000_000},
        )
        [big] = [layer for layer in small_image.layers if layer.size > 1_000_000]
        status, body = await get_through(node, origin, f"blobs/{big.digest}")
        assert status == 200 and f"sha256:{hashlib.sha256(body).hexdigest()}" == big.digest
        await origin.settle()
        assert [r.written for r in origin.blob_gets(big.digest)] == [big.size]


async def test_without_its_ca_file_the_client_gets_a_registry_error_and_the_log_says_why(
    tls_origin: DistributionRegistry,
    tls: RegistryTLS,
    node_factory: Any,
    small_image: Image,
    caplog: pytest.LogCaptureFixture,
) -> None:
    node = await _node(node_factory, tls_origin)  # the system's trust store only
    other = await _node(node_factory, tls_origin, ca_file=tls.other_ca)  # the wrong CA

    for mirror in (node, other):
        with caplog.at_level(logging.INFO):
            path = f"blobs/{small_image.config.digest}"
            status, body = await get_through(mirror, tls_origin, path)
        assert "certificate verify failed" in unavailable(status, body)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 2, warnings
    assert all("certificate verify failed" in w and "ca_file" in w for w in warnings)
    assert not any("retrying" in r.getMessage() for r in caplog.records)  # it would fail again
    assert "Traceback" not in caplog.text


async def test_tls_verify_false_accepts_the_certificate_without_the_ca(
    tls_origin: DistributionRegistry, node_factory: Any, small_image: Image
) -> None:
    node = await _node(node_factory, tls_origin, tls_verify=False)

    await pull_through(node, tls_origin, small_image)


@pytest.mark.parametrize("trust", ["ca_file", "tls_verify false"])
async def test_an_origin_that_takes_only_client_certificates_serves_the_node_with_one(
    mtls_origin: DistributionRegistry,
    tls: RegistryTLS,
    node_factory: Any,
    small_image: Image,
    caplog: pytest.LogCaptureFixture,
    trust: str,
) -> None:
    verify: dict[str, Any] = {"ca_file": tls.ca} if trust == "ca_file" else {"tls_verify": False}
    pair = {"client_cert": tls.client_cert, "client_key": tls.client_key}
    without = await _node(node_factory, mtls_origin, **verify)
    with_cert = await _node(node_factory, mtls_origin, **verify, **pair)

    with caplog.at_level(logging.INFO):
        status, body = await get_through(without, mtls_origin, "manifests/v1")
    assert "refused this node's TLS client certificate" in unavailable(status, body)
    [warning] = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert "client_cert" in warning
    assert not any("retrying" in r.getMessage() for r in caplog.records)

    await pull_through(with_cert, mtls_origin, small_image)
    await mtls_origin.settle()
    assert len(mtls_origin.blob_gets(small_image.layers[0].digest)) == 1


@contextlib.asynccontextmanager
async def _https_realm(tokens: TokenServer, tls: RegistryTLS) -> AsyncIterator[str]:
    """The token server's realm served over HTTPS with a certificate of the same private CA."""

    async def forward(request: web.Request) -> web.Response:
        headers = {k: v for k, v in request.headers.items() if k in ("Authorization", "User-Agent")}
        async with (
            aiohttp.ClientSession() as http,
            http.get(tokens.realm, params=request.query, headers=headers) as answer,
        ):
            body = await answer.read()
            return web.Response(body=body, status=answer.status, content_type="application/json")

    app = web.Application()
    app.router.add_get("/token", forward)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls.cert, tls.key)
    async with listening(app, "127.0.0.1", 0, context) as url:
        yield f"{url}/token"


async def test_a_token_realm_behind_the_same_private_ca_is_trusted_through_ca_file(
    tmp_path: Path, tls: RegistryTLS, node_factory: Any, small_image: Image
) -> None:
    async with (
        TokenServer(tmp_path / "tokens", public=[REPO]) as tokens,
        _https_realm(tokens, tls) as realm,
        DistributionRegistry(tmp_path / "origin", tls=tls) as origin,
    ):
        await push_tls(small_image, origin, tls)
        # Restarted with token auth (same port and data): pushed without it, no realm to trust.
        await origin.stop()
        origin.auth = {"token": {**tokens.registry_auth()["token"], "realm": realm}}
        await origin.start()
        node = await _node(node_factory, origin, ca_file=tls.ca)

        await pull_through(node, origin, small_image)

        assert tokens.requests_from("imgaccel/"), tokens.requests


@needs_containerd
async def test_containerd_pulls_a_private_ca_origin_through_the_node(
    tls_origin: DistributionRegistry,
    tls: RegistryTLS,
    node_factory: Any,
    small_image: Image,
    tmp_path: Path,
) -> None:
    node = await _node(node_factory, tls_origin, ca_file=tls.ca)
    # containerd's fallback, the origin itself, is not given the CA: had the node failed, the
    # pull would have failed too.
    configure(tmp_path / "hosts", tls_origin.address, node.url, origin=tls_origin.url)

    async with Containerd(tmp_path / "containerd") as containerd:
        await containerd.pull(f"{tls_origin.address}/{REPO}:v1", hosts_dir=tmp_path / "hosts")

    await tls_origin.settle()
    for digest in [small_image.config.digest, *(layer.digest for layer in small_image.layers)]:
        assert len(tls_origin.blob_gets(digest)) == 1, digest
    assert {r.user_agent.split("/")[0] for r in tls_origin.requests} == {"imgaccel"}
