"""Fixtures for the operations tests: a cluster CA, trackers (plain and mTLS), P2P nodes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from imgaccel.p2p.certs import CA_CERT, NODE_CERT, NODE_KEY, KeyPair, issue, make_ca
from imgaccel.testing.registry import DistributionRegistry
from imgaccel.tracker import Served, TrackerSettings, running
from tests.conftest import NodeServer


@pytest.fixture(scope="session")
def cluster_ca() -> KeyPair:
    return make_ca("ops-test")


def write_certs(root: Path, ca: KeyPair) -> Path:
    """``root`` with ca.crt, node.crt and node.key, as ``imgaccel certs issue`` leaves them."""
    root.mkdir(parents=True, exist_ok=True)
    (root / CA_CERT).write_bytes(ca.cert_pem)
    issue(ca, "*").write(root, NODE_CERT, NODE_KEY)
    return root


@pytest.fixture
async def plain_tracker(tmp_path: Path) -> AsyncIterator[str]:
    """An ``--insecure`` tracker (what tests/p2p runs the nodes against)."""
    settings = TrackerSettings(listen="127.0.0.1:0", data_dir=tmp_path / "tracker", insecure=True)
    async with running(settings) as served:
        yield served.url


@pytest.fixture
async def tls_tracker(tmp_path: Path, cluster_ca: KeyPair) -> AsyncIterator[Served]:
    """An mTLS tracker with its plain metrics listener, as deployed."""
    certs = write_certs(tmp_path / "tracker-tls", cluster_ca)
    settings = TrackerSettings(
        listen="127.0.0.1:0",
        metrics_listen="127.0.0.1:0",
        data_dir=tmp_path / "tls-tracker",
        ca_cert=certs / CA_CERT,
        cert=certs / NODE_CERT,
        key=certs / NODE_KEY,
    )
    async with running(settings) as served:
        yield served


@pytest.fixture
def p2p_node(
    node_factory: Callable[..., Any],
    origin: DistributionRegistry,
    plain_tracker: str,
    cluster_ca: KeyPair,
    tmp_path: Path,
) -> Callable[..., Any]:
    """Start a P2P node mirroring ``origin``: ``await p2p_node("n1")``."""

    async def start(name: str) -> NodeServer:
        p2p = {
            "tracker_url": plain_tracker,
            "listen": "127.0.0.1:0",
            "node_id": name,
            "certs_dir": str(write_certs(tmp_path / f"certs-{name}", cluster_ca)),
            "stall_seconds": 3.0,
            "no_peers_seconds": 2.0,
        }
        node = await node_factory(origin, cache_dir=tmp_path / f"cache-{name}", p2p=p2p)
        assert isinstance(node, NodeServer)
        return node

    return start


async def get(url: str) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return resp.status, await resp.read()


async def get_blob(node: NodeServer, origin: DistributionRegistry, repo: str, digest: str) -> int:
    """GET a blob through the node as containerd does; returns the bytes received."""
    status, body = await get(f"{node.url}/v2/{repo}/blobs/{digest}?ns={origin.address}")
    assert status == 200, body[:200]
    return len(body)
