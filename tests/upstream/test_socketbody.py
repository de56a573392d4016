"""A body read off the socket by a thread: the bytes aiohttp would have given, told to the loop as
they land; bodies aiohttp must decode stay with it; nothing runs or writes after a cancellation."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import ssl
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from imgaccel.cache.fill import Fill
from imgaccel.errors import UpstreamError
from imgaccel.oci.digest import Digest
from imgaccel.p2p.certs import issue, make_ca
from imgaccel.upstream import socketbody
from tests.conftest import until

DATA = b"".join(hashlib.sha512(f"{n}".encode()).digest() for n in range(50_000))[:3_000_017]
HALF = len(DATA) // 2


class Origin:
    """Serves DATA in 64 KiB writes; ``gate`` holds the rest back after the first MiB."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.gate.set()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/blob", self.blob)
        app.router.add_get("/short", self.short)
        app.router.add_get("/chunked", self.chunked)
        app.router.add_get("/gzip", self.gzipped)
        return app

    async def blob(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = len(DATA)
        await response.prepare(request)
        for offset in range(0, len(DATA), 64 * 1024):
            if offset >= 1 << 20:
                await self.gate.wait()
            await response.write(DATA[offset : offset + 64 * 1024])
        await response.write_eof()
        return response

    async def short(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = len(DATA)
        await response.prepare(request)
        await response.write(DATA[:HALF])
        await asyncio.sleep(0.05)
        assert request.transport is not None
        request.transport.close()  # a clean FIN, half-way through the promised body
        return response

    async def chunked(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(DATA)
        await response.write_eof()
        return response

    async def gzipped(self, request: web.Request) -> web.Response:
        return web.Response(body=gzip.compress(DATA), headers={"Content-Encoding": "gzip"})


@pytest.fixture
async def origin() -> AsyncIterator[tuple[Origin, str]]:
    served = Origin()
    server = TestServer(served.app(), host="127.0.0.1", port=0)
    await server.start_server()
    yield served, f"http://127.0.0.1:{server.port}"
    served.gate.set()
    await server.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def readers() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("body-")]


async def test_the_body_lands_in_the_fill_and_verifies(
    origin: tuple[Origin, str], http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    fill = Fill(Digest.of(DATA), tmp_path / "blob.part", len(DATA))
    async with http.get(f"{origin[1]}/blob") as response:
        early = await response.content.readexactly(100_000)  # aiohttp read some, as a head may
        taken = socketbody.take_over(response, read_timeout=5)
        assert taken is not None and taken.length == len(DATA) - 100_000

        reached = await socketbody.copy(response, taken, fill, 100_000, len(DATA))

        assert reached == len(DATA) and fill.contiguous == 0  # the first 100 kB are not there
        await fill.write_at(0, early)
        await fill.verify()
        assert response.connection is None  # closed: aiohttp no longer knows where it is
    assert (tmp_path / "blob.part").read_bytes() == DATA
    assert readers() == []
    await fill.finish()


@pytest.mark.parametrize("path", ["/chunked", "/gzip"])
async def test_a_body_aiohttp_must_decode_stays_with_it(
    origin: tuple[Origin, str], http: aiohttp.ClientSession, path: str
) -> None:
    async with http.get(f"{origin[1]}{path}") as response:
        assert socketbody.take_over(response, read_timeout=5) is None
        assert await response.read() == DATA


async def test_a_body_below_the_least_size_stays_with_aiohttp(
    origin: tuple[Origin, str], http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{origin[1]}/blob") as response:
        assert socketbody.take_over(response, 5, min_bytes=len(DATA) + 1) is None
        assert await response.read() == DATA


async def test_a_tls_body_stays_with_aiohttp(http: aiohttp.ClientSession, tmp_path: Path) -> None:
    issue(make_ca()).write(tmp_path, "origin.crt", "origin.key")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "origin.crt", tmp_path / "origin.key")
    served = Origin()
    runner = web.AppRunner(served.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with http.get(f"https://127.0.0.1:{port}/blob", ssl=False) as response:
            assert socketbody.take_over(response, read_timeout=5) is None
            assert await response.read() == DATA
    finally:
        await runner.cleanup()


async def test_a_body_cut_short_raises_after_landing_what_came(
    origin: tuple[Origin, str], http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    fill = Fill(Digest.of(DATA), tmp_path / "blob.part", len(DATA))
    async with http.get(f"{origin[1]}/short") as response:
        taken = socketbody.take_over(response, read_timeout=5)
        assert taken is not None

        with pytest.raises(UpstreamError, match="closed the connection"):
            await socketbody.copy(response, taken, fill, 0, len(DATA))

    assert fill.missing() == [(HALF, len(DATA))]  # a resume starts here, not at 0
    assert (tmp_path / "blob.part").read_bytes() == DATA[:HALF]
    await fill.finish(RuntimeError("test over"))


async def test_a_cancelled_copy_ends_its_thread_before_it_returns(
    origin: tuple[Origin, str], http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    served, url = origin
    served.gate.clear()
    fill = Fill(Digest.of(DATA), tmp_path / "blob.part", len(DATA))
    async with http.get(f"{url}/blob") as response:
        taken = socketbody.take_over(response, read_timeout=30)
        assert taken is not None
        copying = asyncio.create_task(socketbody.copy(response, taken, fill, 0, len(DATA)))
        await until(lambda: fill.contiguous > 0)  # the thread is at work, bound for the gate
        assert len(readers()) == 1

        copying.cancel()
        with pytest.raises(asyncio.CancelledError):
            await copying

        assert readers() == []  # ended, so it cannot write into a file the fill closes next
        served.gate.set()
    await fill.finish(RuntimeError("test over"))
    assert fill.closed
