"""``registry_listen``: more listeners, each for one registry, for clients that send no ``?ns=``
and take one mirror address per registry (stargz-snapshotter's resolver). Two real registries
hold the same repository name with different images; which one a request reaches is told by
the port it came in on."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import ValidationError

from imgaccel.settings import Settings
from imgaccel.testing.images import Image, build_image, push
from imgaccel.testing.registry import DistributionRegistry
from tests.conftest import free_port, needs_registry

MANIFEST = "application/vnd.oci.image.manifest.v1+json"


async def manifest_digest(url: str) -> tuple[int, str | None]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(url, headers={"Accept": MANIFEST}) as response,
    ):
        return response.status, response.headers.get("Docker-Content-Digest")


@needs_registry
async def test_a_request_without_ns_is_for_the_registry_of_its_listener(
    origin: DistributionRegistry,
    small_image: Image,
    node_factory: Callable[..., Any],
    tmp_path: Path,
) -> None:
    other_image = build_image(tmp_path / "other", [50_000], seed=2)
    async with DistributionRegistry(tmp_path / "other-origin") as other:
        await push(small_image, f"{origin.address}/test/app:v1")
        await push(other_image, f"{other.address}/test/app:v1")
        port = free_port()
        node = await node_factory(
            origin,
            upstreams={other.address: {"url": other.url}},
            default_registry=origin.address,
            registry_listen={f"127.0.0.1:{port}": other.address},
        )
        path = "/v2/test/app/manifests/v1"
        assert await manifest_digest(f"{node.url}{path}") == (200, small_image.manifest.digest)
        listener = f"http://127.0.0.1:{port}"
        assert await manifest_digest(f"{listener}{path}") == (200, other_image.manifest.digest)
        # containerd's ?ns= still names the registry on any listener.
        named = f"{listener}{path}?ns={origin.address}"
        assert await manifest_digest(named) == (200, small_image.manifest.digest)
        blob = other_image.layers[0]
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{listener}/v2/test/app/blobs/{blob.digest}") as response,
        ):
            assert response.status == 200
            assert await response.read() == other_image.blob_path(blob.digest).read_bytes()
        await other.settle()
        assert len(other.blob_gets(blob.digest)) == 1  # fetched from the listener's registry


@pytest.mark.parametrize(
    ("listen", "message"),
    [
        ({"127.0.0.1:0": "nvcr.io"}, "needs a fixed port"),
        ({"127.0.0.1": "nvcr.io"}, "HOST:PORT"),
        ({"127.0.0.1:65002": "https://nvcr.io"}, "not a registry host"),
        ({"127.0.0.1:65002": "nvcr.io/ngc"}, "not a registry host"),
    ],
)
def test_a_listener_needs_a_fixed_port_and_a_registry_host(
    listen: dict[str, str], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(registry_listen=listen)


def test_docker_hub_names_are_docker_io_and_other_ports_the_default() -> None:
    settings = Settings(
        default_registry="nvcr.io", registry_listen={"0.0.0.0:65002": "Registry-1.Docker.IO"}
    )
    assert settings.registry_listen == {"0.0.0.0:65002": "docker.io"}
    assert settings.registry_for_port(65002) == "docker.io"
    assert settings.registry_for_port(65001) == "nvcr.io"
    assert settings.registry_for_port(None) == "nvcr.io"
