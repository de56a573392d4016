"""Origins behind an HTTP proxy (a company network's only way out): the real distribution
registry pulled through the node, the node sending every origin request through tinyproxy, with
an upstream's ``proxy`` setting or the environment's ``HTTPS_PROXY``.

That a pull went through the proxy is shown by the proxy's own log (every request line it was
sent) and by the origin's request count, never by a pull merely succeeding; that nothing goes
around it, by a node whose proxy is down answering a registry error while the origin sees
nothing. The rules for which URL takes which proxy are in tests/upstream/test_proxy.py.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from imgaccel.oci.media import MANIFEST_ACCEPT
from imgaccel.testing.httpproxy import Tinyproxy
from imgaccel.testing.images import Image, push
from imgaccel.testing.registry import DistributionRegistry, RegistryTLS
from tests.conftest import NodeServer, needs_registry, needs_skopeo
from tests.upstream.conftest import REPO, get_through, pull_through, push_tls, unavailable

pytestmark = [
    pytest.mark.system,
    needs_registry,
    needs_skopeo,
    pytest.mark.skipif(shutil.which("tinyproxy") is None, reason="tinyproxy is not installed"),
]

#: Bodies past this are read by a thread off the socket (plain HTTP: off the proxy's
#: connection; HTTPS: on a tunnel of its own): the small image's 6 MB layer is.
OFF_SOCKET = {"socket_body_min_bytes": 1_000_000, "tls_body_min_bytes": 1_000_000}


@pytest.fixture
async def proxy(tmp_path: Path) -> AsyncIterator[Tinyproxy]:
    async with Tinyproxy(tmp_path / "proxy") as running:
        yield running


@pytest.fixture
async def plain_origin(tmp_path: Path, small_image: Image) -> AsyncIterator[DistributionRegistry]:
    async with DistributionRegistry(tmp_path / "origin") as registry:
        await _push_to(small_image, registry)
        yield registry


async def _push_to(image: Image, origin: DistributionRegistry) -> None:
    """``image`` as test/app:v1 on ``origin``, over HTTPS with its CA if it has one."""
    if origin.tls is not None:
        await push_tls(image, origin, origin.tls)
    else:
        await push(image, f"{origin.address}/{REPO}:v1")
        origin.requests.clear()


async def _node(
    node_factory: Any, origin: DistributionRegistry, proxy_url: str, tls: RegistryTLS | None
) -> NodeServer:
    upstream = {"url": origin.url, "proxy": proxy_url}
    if tls is not None:
        upstream["ca_file"] = str(tls.ca)
    node: NodeServer = await node_factory(
        upstreams={origin.address: upstream}, upstream_client={**OFF_SOCKET, "retries": 0}
    )
    return node


def _blobs(image: Image) -> list[str]:
    return [image.config.digest, *(layer.digest for layer in image.layers)]


async def test_a_plain_http_origin_is_pulled_through_its_proxy_and_never_around_it(
    plain_origin: DistributionRegistry,
    proxy: Tinyproxy,
    node_factory: Any,
    small_image: Image,
    tmp_path: Path,
) -> None:
    node = await _node(node_factory, plain_origin, proxy.url, None)

    await pull_through(node, plain_origin, small_image)  # each blob checked against its digest

    asked = proxy.targets("GET")
    for digest in _blobs(small_image):
        assert any(url.endswith(f"/blobs/{digest}") for url in asked), (digest, asked)
        cached = Path(node.settings.cache.dir) / "blobs" / "sha256" / digest[7:]
        assert cached.is_file()
    assert all(url.startswith(f"{plain_origin.url}/v2/") for url in asked)
    await plain_origin.settle()
    for layer in small_image.layers:  # the 6 MB one read off the proxy's socket, once
        assert len(plain_origin.blob_gets(layer.digest)) == 1

    # The proxy down: a node with it, and an empty cache, answers an error and does not go to
    # the origin instead.
    await proxy.stop()
    plain_origin.requests.clear()
    other = await node_factory(
        upstreams={plain_origin.address: {"url": plain_origin.url, "proxy": proxy.url}},
        upstream_client={"retries": 0},
        cache={"dir": str(tmp_path / "other-cache")},
    )
    status, body = await get_through(other, plain_origin, f"blobs/{small_image.layers[0].digest}")
    assert f"cannot connect to the proxy {proxy.url}" in unavailable(status, body)
    await plain_origin.settle()
    assert plain_origin.requests == []


async def test_an_https_origin_is_tunnelled_and_a_big_body_gets_a_tunnel_of_its_own(
    tls_origin: DistributionRegistry,
    tls: RegistryTLS,
    proxy: Tinyproxy,
    node_factory: Any,
    small_image: Image,
    caplog: pytest.LogCaptureFixture,
) -> None:
    node = await _node(node_factory, tls_origin, proxy.url, tls)

    with caplog.at_level(logging.DEBUG, logger="imgaccel.upstream.tlsbody"):
        await pull_through(node, tls_origin, small_image)

    [big] = [layer for layer in small_image.layers if layer.size > 1_000_000]
    [line] = [r.getMessage() for r in caplog.records if "of its own" in r.getMessage()]
    assert line.startswith(f"reading {big.size} body bytes")
    tunnels = proxy.targets("CONNECT")
    # aiohttp's tunnels (one per connection it opened), and the big body's own.
    assert set(tunnels) == {tls_origin.address} and len(tunnels) >= 2
    await tls_origin.settle()
    assert big.size in [r.written for r in tls_origin.blob_gets(big.digest)]


@pytest.mark.parametrize(
    ("scheme", "given"), [("http", "none"), ("https", "none"), ("https", "wrong")]
)
async def test_a_proxy_that_takes_credentials_gets_them_and_a_refusal_is_a_clear_error(
    tmp_path: Path,
    tls: RegistryTLS,
    node_factory: Any,
    small_image: Image,
    caplog: pytest.LogCaptureFixture,
    scheme: str,
    given: str,
) -> None:
    """Plain HTTP: the proxy answers 407 itself; HTTPS: it refuses the tunnel, 407 without
    credentials, 401 with wrong ones (tinyproxy's way; a plain-HTTP request with wrong ones
    gets the same 401 with a ``WWW-Authenticate``, which cannot be told from the origin's)."""
    origin_tls = tls if scheme == "https" else None
    async with (
        DistributionRegistry(tmp_path / "origin", tls=origin_tls) as origin,
        Tinyproxy(tmp_path / "proxy", credentials=("puller", "s3cretpass")) as proxy,
    ):
        await _push_to(small_image, origin)
        node = await _node(node_factory, origin, proxy.url, origin_tls)
        with caplog.at_level(logging.DEBUG):
            await pull_through(node, origin, small_image)
        assert proxy.targets("CONNECT" if scheme == "https" else "GET")

        instead = "puller:guess@" if given == "wrong" else ""
        refused = proxy.url.replace("puller:s3cretpass@", instead)
        other = await node_factory(
            upstreams={
                origin.address: {"url": origin.url, "proxy": refused, "ca_file": str(tls.ca)}
            },
            cache={"dir": str(tmp_path / "other-cache")},
        )
        origin.requests.clear()
        with caplog.at_level(logging.DEBUG):
            status, body = await get_through(other, origin, f"blobs/{small_image.layers[0].digest}")
        message = unavailable(status, body)
        code = "401" if given == "wrong" else "407"
        assert f"the proxy http://127.0.0.1:{proxy.port} refused the " in message
        assert f": {code} (it wants a user and password" in message
        assert "guess" not in message
        await origin.settle()
        assert origin.requests == []
    logged = [r.getMessage() for r in caplog.records]
    assert not [line for line in logged if "s3cret" in line or "guess" in line]


async def test_the_environment_names_the_proxy_for_remote_origins_only(
    tmp_path: Path,
    plain_origin: DistributionRegistry,
    node_factory: Any,
    small_image: Image,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``HTTPS_PROXY`` as a DaemonSet sets it, and dockerd's kind of request (no ``?ns=``: the
    default registry, Docker Hub). This tinyproxy hands every request to a proxy that is not
    there, so no request leaves the machine; its log shows what the node asked it for. The
    loopback origin is not sent through it."""
    async with Tinyproxy(tmp_path / "proxy", upstream="127.0.0.1:1") as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        node = await node_factory(plain_origin, upstream_client={"retries": 0})

        async with (
            aiohttp.ClientSession() as http,
            http.get(
                f"{node.url}/v2/library/busybox/manifests/latest",
                headers={"Accept": MANIFEST_ACCEPT},
            ) as response,
        ):
            status, body = response.status, await response.read()

        assert "the proxy" in unavailable(status, body)
        assert proxy.targets("CONNECT") == ["registry-1.docker.io:443"]

        status, manifest = await get_through(node, plain_origin, "manifests/v1")
        assert status == 200
        assert f"sha256:{hashlib.sha256(manifest).hexdigest()}" == small_image.manifest.digest
        assert proxy.targets("GET") == []
        assert proxy.targets("CONNECT") == ["registry-1.docker.io:443"]
