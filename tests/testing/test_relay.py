"""The benchmark's hashing relay (imgaccel.testing.relay): it relays every byte both ways and
writes what the origin sent to a file on the way, as a verifying, caching mirror would."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from imgaccel.testing.procs import terminate
from tests.conftest import until

BODY = os.urandom(3 << 20)  # several of the relay's 1 MiB buffers


async def test_relays_both_ways_and_stores_what_the_origin_sent(tmp_path: Path) -> None:
    async def echo(request: web.Request) -> web.Response:
        return web.Response(body=BODY + await request.read())

    app = web.Application()
    app.router.add_post("/blob", echo)
    store = tmp_path / "store"
    store.mkdir()
    async with TestServer(app, host="127.0.0.1") as origin:
        relay = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "imgaccel.testing.relay"),
            *("--origin", f"127.0.0.1:{origin.port}", "--store", str(store)),
            stdout=asyncio.subprocess.PIPE,
        )
        try:
            assert relay.stdout is not None
            line = (await relay.stdout.readline()).decode()
            assert line.startswith("listening on 127.0.0.1:"), line
            url = f"http://{line.split()[-1]}/blob"
            async with aiohttp.ClientSession() as session:
                for request_body in (b"first", b"second"):  # one kept-alive connection
                    async with session.post(url, data=request_body) as response:
                        assert await response.read() == BODY + request_body
                # While the connection is open its file holds both responses, headers and all.
                (stored,) = store.iterdir()
                data = stored.read_bytes()
                assert data.count(BODY) == 2
                assert BODY + b"first" in data and BODY + b"second" in data
            await until(lambda: not any(store.iterdir()))  # the connection's file goes with it
        finally:
            await terminate(relay)
