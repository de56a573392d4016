"""The ``registries`` allowlist: a registry it does not allow gets 403 DENIED, and its origin is
never asked, however the request is made; an allowed one is mirrored as before.

The refused origin is configured as an upstream (plain HTTP, reachable): without the allowlist
the node would fetch from it, so its empty request log is the proof.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from imgaccel.oci.media import MANIFEST_ACCEPT
from imgaccel.proxy.state import NODE
from imgaccel.proxy.target import RegistryAllowlist
from imgaccel.settings import load_settings
from imgaccel.testing.containerd import Containerd
from imgaccel.testing.images import Image
from imgaccel.testing.registry import DistributionRegistry
from tests.conftest import NodeServer, needs_containerd, needs_registry, write_hosts

ACCEPT = {"Accept": MANIFEST_ACCEPT}


def paths(image: Image) -> list[str]:
    """A manifest by tag and by digest, and every blob, of ``image`` at test/app."""
    blobs = [image.config.digest, *(layer.digest for layer in image.layers)]
    return [
        "manifests/v1",
        f"manifests/{image.manifest.digest}",
        *(f"blobs/{digest}" for digest in blobs),
    ]


def refusals(caplog: pytest.LogCaptureFixture, registry: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.INFO and "allow" in r.getMessage() and registry in r.message
    ]


@needs_registry
async def test_a_registry_not_allowed_is_refused_without_asking_its_origin(
    origin: DistributionRegistry,
    pushed: str,
    small_image: Image,
    node_factory: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.DEBUG, logger="imgaccel"):
        # The origin is the default registry too: requests without ?ns= name it as well.
        node: NodeServer = await node_factory(
            origin, registries=["nvcr.io"], default_registry=origin.address
        )
        base = f"{node.url}/v2/test/app"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{node.url}/v2/") as response:
                assert response.status == 200  # the version check stays open
            for _ in range(3):  # a pull retried in a loop
                for path in paths(small_image):
                    for params in ({"ns": origin.address}, {}):
                        async with http.head(
                            f"{base}/{path}", params=params, headers=ACCEPT
                        ) as response:
                            assert response.status == 403, path
                        async with http.get(
                            f"{base}/{path}", params=params, headers=ACCEPT
                        ) as response:
                            assert response.status == 403, path
                            error = (await response.json())["errors"][0]
                            assert error["code"] == "DENIED"
                            assert origin.address in error["message"]
                            assert "registries" in error["message"]

    await origin.settle()
    assert origin.requests == []
    assert not [f for f in (Path(node.settings.cache.dir) / "blobs").rglob("*") if f.is_file()]
    # Logged once (and its upstreams table, unused, at start), not once per request.
    logged = refusals(caplog, origin.address)
    assert len([m for m in logged if m.startswith("registry ")]) == 1, logged
    assert any(m.startswith(f"upstreams.{origin.address} is not used") for m in logged), logged


@needs_registry
async def test_an_allowed_registry_is_mirrored_and_others_refused(
    origin: DistributionRegistry,
    pushed: str,
    small_image: Image,
    node_factory: Any,
) -> None:
    node: NodeServer = await node_factory(origin, registries=["nvcr.io", origin.address])
    base = f"{node.url}/v2/test/app"
    async with aiohttp.ClientSession() as http:
        for path in paths(small_image):
            async with http.get(
                f"{base}/{path}", params={"ns": origin.address}, headers=ACCEPT
            ) as response:
                assert response.status == 200, path
                await response.read()
        # Docker Hub under any of its names is one registry, and not on this list.
        for hub in ("docker.io", "index.docker.io", "registry-1.docker.io"):
            async with http.get(f"{base}/manifests/v1", params={"ns": hub}) as response:
                assert response.status == 403
                assert "registry docker.io is not allowed" in await response.text()

    await origin.settle()
    for digest in [small_image.config.digest, *(layer.digest for layer in small_image.layers)]:
        assert len(origin.blob_gets(digest)) == 1, digest


def test_a_refused_registry_is_logged_once_and_no_origin_is_looked_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    allowlist = RegistryAllowlist(load_settings(None, registries=["*.corp.example"]))

    with caplog.at_level(logging.INFO, logger="imgaccel.proxy.target"):
        for _ in range(100):
            assert allowlist.refuses("ghcr.io", "a client")
        assert not allowlist.refuses("registry.corp.example", "a client")
        with pytest.raises(Exception, match="registries") as raised:
            allowlist.upstream_for("ghcr.io")

    assert getattr(raised.value, "status", None) == 403
    assert allowlist.upstream_for("registry.corp.example").url == "https://registry.corp.example"
    assert len(caplog.records) == 1 and "ghcr.io" in caplog.records[0].getMessage()


@pytest.mark.parametrize(
    ("settings", "warned"),
    [
        ({}, []),
        ({"registries": ["docker.io"]}, []),
        ({"registries": ["nvcr.io"]}, ["default_registry docker.io"]),
        ({"registries": ["nvcr.io"], "default_registry": "nvcr.io"}, []),
        (
            {
                "registries": ["docker.io", "nvcr.io"],
                "registry_listen": {"127.0.0.1:65002": "nvcr.io", "127.0.0.1:65003": "ghcr.io"},
            },
            ["registry_listen 127.0.0.1:65003"],
        ),
        (
            {"registries": ["docker.io"], "upstreams": {"r.local:5000": {"url": "http://r:5000"}}},
            ["upstreams.r.local:5000"],
        ),
        # No `registries`: every registry is allowed, nothing is unused.
        ({"registry_listen": {"127.0.0.1:65003": "ghcr.io"}, "default_registry": "quay.io"}, []),
    ],
)
def test_settings_for_a_registry_the_allowlist_refuses_are_warned_about_at_start(
    settings: dict[str, Any], warned: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    allowlist = RegistryAllowlist(load_settings(None, **settings))

    with caplog.at_level(logging.INFO, logger="imgaccel.proxy.target"):
        allowlist.warn_unused_settings()

    messages = [r.getMessage() for r in caplog.records]
    assert [m.split(" is ")[0].split(" answers ")[0] for m in messages] == warned, messages
    assert all(r.levelno == logging.WARNING for r in caplog.records)


@pytest.mark.system
@needs_registry
@needs_containerd
async def test_containerd_pulls_a_refused_registry_from_the_origin_itself(
    origin: DistributionRegistry,
    pushed: str,
    small_image: Image,
    node_factory: Any,
    containerd: Containerd,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    node: NodeServer = await node_factory(origin, registries=["nvcr.io"])
    hosts = write_hosts(tmp_path / "hosts", origin.address, node.url)

    with caplog.at_level(logging.INFO, logger="imgaccel"):
        await containerd.pull(pushed, hosts_dir=hosts)  # succeeds: the origin is the fallback

    await origin.settle()
    assert origin.requests, "containerd pulled from the origin"
    assert [r for r in origin.requests if r.user_agent.startswith("imgaccel/")] == []
    for digest in [small_image.config.digest, *(layer.digest for layer in small_image.layers)]:
        assert len(origin.blob_gets(digest)) == 1, digest  # containerd's own, once
    # containerd asked the node first, and the node refused (logged once, not per request).
    assert len([m for m in refusals(caplog, origin.address) if m.startswith("registry ")]) == 1
    metrics = node.app[NODE].metrics.registry
    for sample in ("imgaccel_cache_misses_total", "imgaccel_bytes_served_total"):
        assert not any(s.value for m in metrics.collect() for s in m.samples if s.name == sample)
