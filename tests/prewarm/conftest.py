"""Fixtures for cluster prewarm: an mTLS tracker that tests can restart, P2P nodes with prefetch
(the cluster CA and certificates come from the ``tests.p2p_fixtures`` plugin)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from imgaccel.p2p.certs import CA_CERT, NODE_CERT, NODE_KEY, KeyPair
from imgaccel.prewarm.jobs import JobsClient
from imgaccel.testing.registry import DistributionRegistry
from imgaccel.tracker import TrackerSettings, running
from imgaccel.tracker.auth import client_context
from tests.conftest import NodeServer
from tests.p2p_fixtures import certs_dir  # cluster_ca comes from the same plugin


@pytest.fixture
def tracker_settings(tmp_path: Path, cluster_ca: KeyPair) -> TrackerSettings:
    certs = certs_dir(tmp_path / "certs-tracker", cluster_ca)
    return TrackerSettings(
        listen="127.0.0.1:0",
        data_dir=tmp_path / "tracker",
        ca_cert=certs / CA_CERT,
        cert=certs / NODE_CERT,
        key=certs / NODE_KEY,
    )


@pytest.fixture
async def tracker(tracker_settings: TrackerSettings) -> AsyncIterator[str]:
    async with running(tracker_settings) as served:
        yield served.url


@pytest.fixture
def client_certs(tmp_path: Path, cluster_ca: KeyPair) -> Path:
    """Certificates for the CLI talking to the tracker."""
    return certs_dir(tmp_path / "certs-cli", cluster_ca)


@pytest.fixture
async def jobs_client(tracker: str, client_certs: Path) -> AsyncIterator[JobsClient]:
    """The real tracker's client, as the prefetcher uses it."""
    ssl_context = client_context(*(client_certs / n for n in (CA_CERT, NODE_CERT, NODE_KEY)))
    async with aiohttp.ClientSession() as http:
        yield JobsClient(tracker, http, ssl_context)


@pytest.fixture
def p2p_node(
    node_factory: Callable[..., Any],
    origin: DistributionRegistry,
    tracker: str,
    cluster_ca: KeyPair,
    tmp_path: Path,
) -> Callable[..., Any]:
    """Start a P2P node with prefetch: ``await p2p_node("n1", labels={...}, **prefetch)``."""

    async def start(name: str, **prefetch: Any) -> NodeServer:
        p2p = {
            "tracker_url": tracker,
            "listen": "127.0.0.1:0",
            "node_id": name,
            "certs_dir": str(certs_dir(tmp_path / f"certs-{name}", cluster_ca)),
            "stall_seconds": 3.0,
            "no_peers_seconds": 2.0,
        }
        return await node_factory(  # type: ignore[no-any-return]
            origin, cache_dir=tmp_path / f"cache-{name}", p2p=p2p, prefetch=prefetch
        )

    return start
