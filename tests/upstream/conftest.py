"""Shared by the tests of origins over HTTPS and behind a proxy: a private CA, an HTTPS
distribution registry with the small image, and requests through a node."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from imgaccel.oci.media import MANIFEST_ACCEPT
from imgaccel.testing.images import Image
from imgaccel.testing.procs import run
from imgaccel.testing.registry import DistributionRegistry, RegistryTLS
from tests.conftest import NodeServer

REPO = "test/app"


@pytest.fixture
def tls(tmp_path: Path) -> RegistryTLS:
    return RegistryTLS.make(tmp_path / "tls")


async def push_tls(image: Image, registry: DistributionRegistry, tls: RegistryTLS) -> None:
    """``image`` as test/app:v1, pushed with the CA and the client certificate of ``tls``."""
    await run(
        "skopeo", "copy", "--quiet", "--dest-cert-dir", str(tls.directory),
        f"oci:{image.layout}", f"docker://{registry.address}/{REPO}:v1",
    )  # fmt: skip
    registry.requests.clear()


@pytest.fixture
async def tls_origin(
    tmp_path: Path, tls: RegistryTLS, small_image: Image
) -> AsyncIterator[DistributionRegistry]:
    """An HTTPS registry whose certificate the private CA of ``tls`` signed."""
    async with DistributionRegistry(tmp_path / "origin", tls=tls) as registry:
        await push_tls(small_image, registry, tls)
        yield registry


async def get_through(
    node: NodeServer, origin: DistributionRegistry, path: str
) -> tuple[int, bytes]:
    """``GET /v2/test/app/PATH?ns=ORIGIN`` on ``node``: its status and body."""
    url = f"{node.url}/v2/{REPO}/{path}?ns={origin.address}"
    async with (
        aiohttp.ClientSession() as http,
        http.get(url, headers={"Accept": MANIFEST_ACCEPT}) as response,
    ):
        return response.status, await response.read()


async def pull_through(node: NodeServer, origin: DistributionRegistry, image: Image) -> None:
    """The manifest by tag and every blob, each verified against its digest."""
    status, manifest = await get_through(node, origin, "manifests/v1")
    assert status == 200, manifest
    assert f"sha256:{hashlib.sha256(manifest).hexdigest()}" == image.manifest.digest
    for digest in [image.config.digest, *(layer.digest for layer in image.layers)]:
        status, body = await get_through(node, origin, f"blobs/{digest}")
        assert status == 200, body
        assert f"sha256:{hashlib.sha256(body).hexdigest()}" == digest


def unavailable(status: int, body: bytes) -> str:
    """The message of the registry error JSON the node answered (a 503 UNAVAILABLE)."""
    assert status == 503, body
    [error] = json.loads(body)["errors"]
    assert error["code"] == "UNAVAILABLE"
    return str(error["message"])
