"""Peer-to-peer fixtures shared by the node, seeder and prewarm tests: a cluster CA, an mTLS
tracker on port 0, P2P nodes, and a multi-MB image in the origin."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from imgaccel.p2p.certs import CA_CERT, NODE_CERT, NODE_KEY, KeyPair, issue, make_ca
from imgaccel.testing.images import Image, build_image, push
from imgaccel.testing.registry import DistributionRegistry
from imgaccel.tracker import TrackerSettings, running
from tests.conftest import NodeServer


@pytest.fixture(scope="session")
def big_image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    return build_image(tmp_path_factory.mktemp("p2pimage"), [24_000_000, 10_000], seed=3)


@pytest.fixture(scope="session")
def cluster_ca() -> KeyPair:
    return make_ca("test-cluster")


def certs_dir(root: Path, ca: KeyPair) -> Path:
    ca.write(root, CA_CERT, "ca.key")
    issue(ca, "*").write(root, NODE_CERT, NODE_KEY)
    return root


@pytest.fixture
async def tracker(tmp_path: Path, cluster_ca: KeyPair) -> AsyncIterator[str]:
    """The tracker over HTTPS, accepting only clients with a certificate of the cluster CA."""
    certs = certs_dir(tmp_path / "certs-tracker", cluster_ca)
    settings = TrackerSettings(
        listen="127.0.0.1:0",
        data_dir=tmp_path / "tracker",
        ca_cert=certs / CA_CERT,
        cert=certs / NODE_CERT,
        key=certs / NODE_KEY,
    )
    async with running(settings) as served:
        yield served.url


@pytest.fixture
async def repo(origin: DistributionRegistry, big_image: Image) -> str:
    await push(big_image, f"{origin.address}/test/big:v1")
    origin.requests.clear()
    return "test/big"


@pytest.fixture
def p2p_node(
    node_factory: Callable[..., Any],
    origin: DistributionRegistry,
    tracker: str,
    cluster_ca: KeyPair,
    tmp_path: Path,
) -> Callable[..., Any]:
    """Start a P2P node: ``await p2p_node("n1")``."""

    async def start(name: str, ca: KeyPair | None = None, **p2p: Any) -> NodeServer:
        settings = {
            "tracker_url": tracker,
            "listen": "127.0.0.1:0",
            "node_id": name,
            "certs_dir": str(certs_dir(tmp_path / f"certs-{name}", ca or cluster_ca)),
            "stall_seconds": 2.0,
            "no_peers_seconds": 2.0,
            **p2p,
        }
        return await node_factory(origin, cache_dir=tmp_path / f"cache-{name}", p2p=settings)  # type: ignore[no-any-return]

    return start


async def get_blob(node: NodeServer, origin: DistributionRegistry, repo: str, digest: str) -> bytes:
    url = f"{node.url}/v2/{repo}/blobs/{digest}?ns={origin.address}"
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.read()


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


async def metric(node: NodeServer, line_start: str) -> float:
    async with aiohttp.ClientSession() as session, session.get(f"{node.url}/metrics") as resp:
        for line in (await resp.text()).splitlines():
            if line.startswith(line_start):
                return float(line.rsplit(" ", 1)[1])
    return 0.0
