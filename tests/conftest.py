"""Shared fixtures: real origin registries, the node app on a real port, containerd, images.

Everything listens on port 0 on loopback; every directory is under pytest's tmp_path, so the
suite runs in parallel and twice in a row.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from imgaccel.address import split_listen
from imgaccel.hostconfig.containerd import configure
from imgaccel.proxy.app import make_app
from imgaccel.settings import Settings, load_settings
from imgaccel.testing.containerd import Containerd
from imgaccel.testing.images import Image, build_image, push
from imgaccel.testing.registry import DistributionRegistry

pytest_plugins = ["tests.p2p_fixtures"]

needs_registry = pytest.mark.skipif(
    shutil.which("docker-registry") is None, reason="docker-registry is not installed"
)
needs_containerd = pytest.mark.skipif(
    shutil.which("containerd") is None or shutil.which("ctr") is None,
    reason="containerd is not installed",
)
needs_skopeo = pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo is not installed")


async def until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    """Return once ``condition()`` holds, polling: for state that no event announces (another
    task's or process's progress). Fails with TimeoutError after ``seconds``."""
    async with asyncio.timeout(seconds):
        while not condition():  # noqa: ASYNC110 - polls state owned by another task
            await asyncio.sleep(0.01)


def free_port() -> int:
    """A loopback port nothing listens on now, for a listener that needs a fixed one."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.fixture(scope="session")
def small_image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    """A 3-layer image (one 6 MB layer, two small ones), built once per session."""
    return build_image(tmp_path_factory.mktemp("image"), [6_000_000, 300_000, 20_000], seed=1)


@pytest.fixture
async def origin(tmp_path: Path) -> AsyncIterator[DistributionRegistry]:
    """An open distribution registry."""
    async with DistributionRegistry(tmp_path / "origin") as registry:
        yield registry


@pytest.fixture
async def pushed(origin: DistributionRegistry, small_image: Image) -> str:
    """``small_image`` pushed to ``origin``; returns the reference ``HOST:PORT/test/app:v1``."""
    ref = f"{origin.address}/test/app:v1"
    await push(small_image, ref)
    origin.requests.clear()
    return ref


NodeFactory = Callable[..., "NodeServer"]


class NodeServer:
    """The node app on a real loopback port, with its settings, served as ``imgaccel node``
    serves it: an ``AppRunner`` that lets a handler run on after its client left (aiohttp's
    ``TestServer`` cancels it, a path production never takes)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app = make_app(settings)
        self._runner = web.AppRunner(
            self.app, access_log=None, handle_signals=False, shutdown_timeout=5
        )
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> NodeServer:
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]
        for address in self.settings.registry_listen:  # fixed ports, as imgaccel node serves
            await web.TCPSite(self._runner, *split_listen(address)).start()
        return self

    async def close(self) -> None:
        await self._runner.cleanup()


@pytest.fixture
async def node_factory(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Start node apps: ``await node_factory(origin, cache_dir=..., **settings)``."""
    started: list[NodeServer] = []

    async def start(
        registry: DistributionRegistry | None = None,
        *,
        cache_dir: Path | None = None,
        **overrides: Any,
    ) -> NodeServer:
        upstreams = dict(overrides.pop("upstreams", {}))
        if registry is not None:
            upstreams.setdefault(registry.address, {"url": registry.url})
        cache = {
            "dir": str(cache_dir or tmp_path / f"cache{len(started)}"),
            # Not the host's containerd: a test that shares blobs names its own.
            "containerd_content_dir": None,
            **overrides.pop("cache", {}),
        }
        settings = load_settings(None, upstreams=upstreams, cache=cache, **overrides)
        node = await NodeServer(settings).start()
        started.append(node)
        return node

    yield start
    for node in started:
        await node.close()


@pytest.fixture
async def node(node_factory: Callable[..., Any], origin: DistributionRegistry) -> NodeServer:
    """A node mirroring ``origin``."""
    return await node_factory(origin)  # type: ignore[no-any-return]


@pytest.fixture
async def containerd(tmp_path: Path) -> AsyncIterator[Containerd]:
    async with Containerd(tmp_path / "containerd") as daemon:
        yield daemon


def write_hosts(hosts_dir: Path, registry: str, mirror_url: str) -> Path:
    """containerd's hosts.toml, written by the product's own ``containerd-config`` code:
    ``registry`` through ``mirror_url``, the (plain HTTP) origin as the fallback server."""
    configure(hosts_dir, registry, mirror_url, origin=f"http://{registry}")
    return hosts_dir
