"""``imgaccel prewarm`` against a node that fails mid-transfer (a raw stub: a real node cannot be
made to cut a blob short), and the CLI's refusals of flags that would be ignored.

The CLI runs in a thread (it has its own event loop) while the stub serves in the test's loop.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from click.testing import CliRunner, Result

from imgaccel.cli.prewarm import prewarm
from imgaccel.oci.reference import ImageRef
from imgaccel.prewarm.errors import NodeUnreachable
from imgaccel.prewarm.node import NodeAPI
from imgaccel.prewarm.plan import Blob

CUT = "sha256:" + "c" * 64  # sent with a Content-Length of 1000, then the connection closes
STALL = "sha256:" + "5" * 64  # the headers, then nothing
MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": CUT,
            "size": 1000,
        },
        "layers": [],
    }
).encode()


class StubNode:
    """Answers ``/v2/app/manifests/v1`` with a manifest naming :data:`CUT`, cuts that blob short,
    stalls on :data:`STALL`, and says 404 to anything else."""

    def __init__(self) -> None:
        self._server: asyncio.Server | None = None
        self._release = asyncio.Event()

    async def __aenter__(self) -> StubNode:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._release.set()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        path = (await reader.readline()).split()[1].decode().split("?")[0]
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        if path == "/v2/app/manifests/v1":
            head = "Content-Type: application/vnd.oci.image.manifest.v1+json\r\n"
            writer.write(_head(200, len(MANIFEST), head) + MANIFEST)
        elif path == f"/v2/app/blobs/{CUT}":
            writer.write(_head(200, 1000) + b"x" * 100)
        elif path == f"/v2/app/blobs/{STALL}":
            writer.write(_head(200, 1000))
            await writer.drain()
            await self._release.wait()
        else:
            writer.write(_head(404, 0))
        await writer.drain()
        writer.close()


def _head(status: int, length: int, extra: str = "") -> bytes:
    return f"HTTP/1.1 {status} X\r\nContent-Length: {length}\r\n{extra}\r\n".encode()


@pytest.fixture
async def stub() -> AsyncIterator[StubNode]:
    async with StubNode() as server:
        yield server


async def run_cli(*args: str) -> Result:
    return await asyncio.to_thread(CliRunner().invoke, prewarm, list(args), catch_exceptions=False)


async def test_a_blob_cut_short_is_an_error_naming_it_and_the_next_image_still_runs(
    stub: StubNode,
) -> None:
    result = await run_cli("--node", stub.url, "--json", "x.io/app:v1", "x.io/other:v1")

    assert result.exit_code == 1, result.output
    first, second = (json.loads(line) for line in result.stdout.splitlines())
    assert first["image"] == "x.io/app:v1" and first["status"] == "error"
    assert CUT in first["error"]
    assert second["image"] == "x.io/other:v1" and second["exit_code"] == 3


async def test_a_blob_the_node_stops_sending_is_unreachable_naming_it(stub: StubNode) -> None:
    timeout = aiohttp.ClientTimeout(sock_read=0.2)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        api = NodeAPI(stub.url, http)
        with pytest.raises(NodeUnreachable, match=STALL):
            await api.fetch_blob(ImageRef.parse("x.io/app:v1"), Blob(STALL, 1000), lambda n: None)


async def test_a_blob_error_answer_names_the_blob(stub: StubNode) -> None:
    missing = "sha256:" + "0" * 64
    async with aiohttp.ClientSession() as http:
        api = NodeAPI(stub.url, http)
        with pytest.raises(Exception, match=missing):
            await api.fetch_blob(ImageRef.parse("x.io/app:v1"), Blob(missing, 1), lambda n: None)
