"""Helpers shared by the p2p tests."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from imgaccel.p2p.certs import CA_CERT, NODE_CERT, NODE_KEY
from imgaccel.p2p.download import Download
from imgaccel.p2p.metainfo import Metainfo
from imgaccel.p2p.swarm import Swarm
from imgaccel.tracker import TrackerSettings, running
from imgaccel.tracker.server import Served


@dataclass(frozen=True)
class Blob:
    path: Path
    data: bytes
    metainfo: Metainfo


SwarmFactory = Callable[..., contextlib.AbstractAsyncContextManager[Swarm]]


async def collect(download: Download) -> bytes:
    """Land every piece, then the whole file as libtorrent wrote it."""
    async for _ in download.land():
        pass
    return download.path.read_bytes()


async def land_checked(download: Download, data: bytes, landed: list[int]) -> None:
    """Land pieces until the download ends or raises, checking each piece's bytes in the file
    at the moment it is reported, and adding it to ``landed``."""
    metainfo = download.metainfo
    async for batch in download.land():
        with download.path.open("rb") as file:
            for index in batch:
                start = index * metainfo.piece_length
                file.seek(start)
                piece = file.read(metainfo.piece_size(index))
                assert piece == data[start : start + len(piece)], f"piece {index} is wrong"
        landed += batch


async def push_blob(registry_url: str, repo: str, data: bytes) -> str:
    """A monolithic blob upload through the registry's own API; the blob's digest."""
    digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{registry_url}/v2/{repo}/blobs/uploads/") as started:
            assert started.status == 202, await started.text()
            location = started.headers["Location"]
        async with http.put(location, params={"digest": digest}, data=data) as done:
            assert done.status == 201, await done.text()
    return digest


@dataclass
class RangelessOrigin:
    """A registry that answers every blob GET with the whole blob (200), ``Range`` or not:
    HTTP allows it and some origins do it, but the distribution registry always honours Range.
    A blob's body can be held back at :attr:`gate` (open unless a test clears it)."""

    blobs: dict[str, bytes] = field(default_factory=dict)
    gets: list[tuple[str, str | None]] = field(default_factory=list)  # (digest, Range header)
    gate: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.gate.set()

    def add(self, data: bytes) -> str:
        digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
        self.blobs[digest] = data
        return digest

    def gets_of(self, digest: str) -> list[str | None]:
        """The Range header of each GET of ``digest`` (None: a plain GET)."""
        return [spec for seen, spec in self.gets if seen == digest]

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/v2/{name:.+}/blobs/{digest}", self.blob)
        return app

    async def blob(self, request: web.Request) -> web.StreamResponse:
        digest = request.match_info["digest"]
        data = self.blobs.get(digest)
        if data is None:
            return web.json_response({"errors": [{"code": "BLOB_UNKNOWN"}]}, status=404)
        response = web.StreamResponse(headers={"Docker-Content-Digest": digest})
        response.content_length = len(data)
        await response.prepare(request)
        if request.method == "GET":
            self.gets.append((digest, request.headers.get("Range")))
            await self.gate.wait()
            await response.write(data)
            await response.write_eof()
        return response


@contextlib.asynccontextmanager
async def rangeless_origin() -> AsyncIterator[tuple[RangelessOrigin, str]]:
    """A :class:`RangelessOrigin` on a loopback port; yields it and its ``HOST:PORT``."""
    fake = RangelessOrigin()
    server = TestServer(fake.app(), host="127.0.0.1", port=0)
    await server.start_server()
    try:
        yield fake, f"127.0.0.1:{server.port}"
    finally:
        fake.gate.set()
        await server.close()


@contextlib.asynccontextmanager
async def cluster_tracker(
    data_dir: Path, certs: Path, *, port: int = 0, lease_seconds: float = 60.0, **more: Any
) -> AsyncIterator[Served]:
    """The tracker over mTLS (``certs`` as written by ``tests.p2p_fixtures.certs_dir``);
    ``more``: other TrackerSettings."""
    settings = TrackerSettings(
        listen=f"127.0.0.1:{port}",
        data_dir=data_dir,
        ca_cert=certs / CA_CERT,
        cert=certs / NODE_CERT,
        key=certs / NODE_KEY,
        claim_lease_seconds=lease_seconds,
        **more,
    )
    async with running(settings) as served:
        yield served
