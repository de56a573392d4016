"""``kill -9`` of a real ``imgaccel node`` in the middle of writing a blob, then a restart.

The origin is a tiny fake that sends half the blob and then holds the rest back, so the node is
certainly mid-write when it dies. After the restart nothing of the half-written blob may be
visible, and the blob must be fetched again and served whole.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from imgaccel.testing.procs import terminate

SIZE = 4 * 1024 * 1024
HELD_AT = 2 * 1024 * 1024  # past the node's 1 MiB write buffer, so the .part file has bytes
BLOB = b"".join(hashlib.sha512(i.to_bytes(4, "big")).digest() for i in range(SIZE // 64))
DIGEST = f"sha256:{hashlib.sha256(BLOB).hexdigest()}"
ROOT = Path(__file__).resolve().parents[2]
_LISTENING = re.compile(r"imgaccel node listening on (http://\S+)")


@dataclass
class SlowOrigin:
    """Serves BLOB; every GET stops at HELD_AT until ``release`` is set."""

    release: asyncio.Event = field(default_factory=asyncio.Event)
    gets: int = 0

    async def blob(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["digest"] != DIGEST:
            return web.Response(status=404)
        response = web.StreamResponse(headers={"Docker-Content-Digest": DIGEST})
        response.content_length = SIZE
        await response.prepare(request)
        if request.method == "HEAD":
            return response
        self.gets += 1
        await response.write(BLOB[:HELD_AT])
        await self.release.wait()
        await response.write(BLOB[HELD_AT:])
        await response.write_eof()
        return response


@pytest.fixture
async def slow_origin() -> AsyncIterator[tuple[SlowOrigin, str]]:
    origin = SlowOrigin()
    app = web.Application()
    app.router.add_route("*", "/v2/{name:.+}/blobs/{digest}", origin.blob)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    yield origin, f"127.0.0.1:{server.port}"
    origin.release.set()
    await server.close()


async def start_node(
    cache: Path,
    registry: str,
    log: Path,
    *,
    prefix: Sequence[str] = (),
    env: dict[str, str] | None = None,
) -> tuple[asyncio.subprocess.Process, str]:
    """``imgaccel node`` as a subprocess (run by the command ``prefix``, with ``env`` added to
    the environment); returns it and its URL once it listens."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    with log.open("w") as stderr:
        proc = await asyncio.create_subprocess_exec(
            *prefix, sys.executable, "-m", "imgaccel", "node", "--listen", "127.0.0.1:0",
            "--cache-dir", str(cache), "--upstream", f"{registry}=http://{registry}",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=stderr, env=env,
        )  # fmt: skip
    for _ in range(300):
        if found := _LISTENING.search(await asyncio.to_thread(log.read_text)):
            return proc, found.group(1)
        if proc.returncode is not None:
            break
        await asyncio.sleep(0.05)
    await terminate(proc)
    text = await asyncio.to_thread(log.read_text)
    raise AssertionError(f"the node did not start:\n{text[-3000:]}")


async def test_a_kill_mid_write_leaves_nothing_visible_and_the_restart_refetches(
    slow_origin: tuple[SlowOrigin, str], tmp_path: Path
) -> None:
    origin, registry = slow_origin
    cache = tmp_path / "cache"
    blob_file = cache / "blobs" / "sha256" / DIGEST.split(":")[1]
    proc, url = await start_node(cache, registry, tmp_path / "node1.log")
    blob_url = f"{url}/v2/team/app/blobs/{DIGEST}?ns={registry}"
    try:
        async with aiohttp.ClientSession() as http, http.get(blob_url) as response:
            assert response.status == 200
            await response.content.readexactly(1024)  # the node is streaming the fill
            for _ in range(300):
                parts = list((cache / "tmp").glob("*.part"))
                if parts and parts[0].stat().st_size > 0:
                    break
                await asyncio.sleep(0.05)
            assert parts and parts[0].stat().st_size > 0

            proc.kill()
            await proc.wait()
            with pytest.raises(aiohttp.ClientPayloadError):
                await response.read()
    finally:
        await terminate(proc)
    assert list((cache / "tmp").glob("*.part"))  # the crash left its partial file behind
    assert not blob_file.exists()

    proc, url = await start_node(cache, registry, tmp_path / "node2.log")
    try:
        assert list((cache / "tmp").iterdir()) == []
        assert not blob_file.exists()
        origin.release.set()
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}/v2/team/app/blobs/{DIGEST}?ns={registry}") as again:
                assert again.status == 200
                assert await again.read() == BLOB
            async with http.get(f"{url}/healthz") as health:
                assert (await health.json())["cache_blobs"] == 1
        assert origin.gets == 2
        assert blob_file.read_bytes() == BLOB
    finally:
        await terminate(proc)
