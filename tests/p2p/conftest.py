"""Fixtures for the p2p tests: a cluster CA, a random blob and its metainfo, swarms on port 0."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from imgaccel.p2p.certs import KeyPair, NodeIdentity, make_ca
from imgaccel.p2p.metainfo import PieceHasher
from imgaccel.p2p.swarm import Swarm

from .helpers import Blob, SwarmFactory

BLOB_SIZE = 24 * 1024 * 1024 + 12345  # not a multiple of the piece length


@pytest.fixture(scope="session")
def ca() -> KeyPair:
    return make_ca()


@pytest.fixture(scope="session")
def blob_bytes() -> bytes:
    return os.urandom(BLOB_SIZE)


@pytest.fixture
def blob(tmp_path: Path, blob_bytes: bytes, ca: KeyPair) -> Blob:
    name = "sha256-" + hashlib.sha256(blob_bytes).hexdigest()
    path = tmp_path / "seed" / name
    path.parent.mkdir()
    path.write_bytes(blob_bytes)
    hasher = PieceHasher(len(blob_bytes))
    for start in range(0, len(blob_bytes), 1 << 20):
        hasher.update(blob_bytes[start : start + (1 << 20)])
    return Blob(path, blob_bytes, hasher.finish(name, ssl_cert=ca.cert_pem))


@pytest.fixture
def make_swarm(ca: KeyPair) -> SwarmFactory:
    @contextlib.asynccontextmanager
    async def factory(
        identity: NodeIdentity | None = None,
        stall_seconds: float = 3.0,
        host: str = "127.0.0.1",
        **options: Any,
    ) -> AsyncIterator[Swarm]:
        async with Swarm(
            identity or NodeIdentity.issue(ca),
            listen=f"{host}:0",
            stall_seconds=stall_seconds,
            no_peers_grace=1.5,
            **options,
        ) as swarm:
            yield swarm

    return factory
