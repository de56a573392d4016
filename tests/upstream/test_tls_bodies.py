"""A big blob body of an HTTPS origin, read by a thread on a connection of its own
(imgaccel/upstream/tlsbody.py): faults the real registry cannot produce, from the fake registry
of tests/proxy/test_faults.py served over TLS: a redirect to another host, a signed URL that
serves once, a connection cut mid-body, a body held back while the fill is cancelled.

The real distribution registry over TLS (with and without client certificates) is in
tests/upstream/test_tls_origin.py; the head check without sockets is at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict

from imgaccel.proxy.state import NODE
from imgaccel.testing.registry import RegistryTLS
from imgaccel.upstream.auth import basic_header
from imgaccel.upstream.tlsbody import Expected, NotTheSame, parse_head
from tests.conftest import NodeServer, until
from tests.proxy.test_faults import REPO, FakeRegistry, Seen, random_bytes

Start = Callable[..., Any]
SIZE = 5 * 1024 * 1024 + 123


@dataclass
class Origin(FakeRegistry):
    """The fake registry, with faults keyed by the number of a blob's body GETs."""

    once: bool = False  # a signed URL: a second GET of it is a 403
    cut: dict[int, int] = field(default_factory=dict)  # GET number (from 1) -> byte to hang up
    hold: set[int] = field(default_factory=set)  # GET numbers whose answer waits for ``gate``

    def body_gets(self, digest: str) -> list[Seen]:
        return [s for s in self.seen if s.method == "GET" and s.path.endswith(digest)]

    async def send_blob(self, request: web.Request, digest: str) -> web.StreamResponse:
        gets = self.body_gets(digest)
        if self.once and [s.path for s in gets].count(request.path) > 1:
            return web.Response(status=403, text="this signature was used")
        if (byte := self.cut.get(len(gets))) is not None:
            self.drop_at[digest] = byte
        if len(gets) in self.hold:
            self.gate_reached.set()
            await self.gate.wait()
        return await super().send_blob(request, digest)


@dataclass
class Rig:
    origin: Origin
    address: str
    storage: str  # another host, for redirects: https://localhost:<port>
    tls: RegistryTLS


def readers() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("body-")]


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def thread_reads(caplog: pytest.LogCaptureFixture) -> int:
    """How many bodies a thread read on a TLS connection of its own (tlsbody's debug line)."""
    return sum("on a TLS connection of its own" in r.getMessage() for r in caplog.records)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    """The fake over HTTPS, on two ports (the second named localhost, as blob storage)."""
    tls = RegistryTLS.make(tmp_path / "tls")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls.cert, tls.key)
    origin = Origin()
    servers = [TestServer(origin.app(), host="127.0.0.1", port=0) for _ in range(2)]
    for server in servers:
        await server.start_server(ssl=context)
    yield Rig(origin, f"127.0.0.1:{servers[0].port}", f"https://localhost:{servers[1].port}", tls)
    origin.gate.set()
    for server in servers:
        await server.close()


@pytest.fixture
def debug_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="imgaccel.upstream")  # tlsbody's lines, the resumes
    return caplog


async def _node(node_factory: Start, rig: Rig, tmp_path: Path, **upstream: Any) -> NodeServer:
    node: NodeServer = await node_factory(
        None,
        cache_dir=tmp_path / "cache",
        upstreams={
            rig.address: {"url": f"https://{rig.address}", "ca_file": str(rig.tls.ca), **upstream}
        },
        default_registry=rig.address,
        upstream_client={
            "retries": 3,
            "backoff_seconds": 0.01,
            "socket_body_min_bytes": 1 << 20,
            "tls_body_min_bytes": 1 << 20,
        },
    )
    return node


async def _fill(node: NodeServer, digest: str) -> bytes:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{node.url}/v2/{REPO}/blobs/{digest}") as response,
    ):
        assert response.status == 200
        return await response.read()


def _cached(tmp_path: Path, digest: str) -> bytes:
    """The blob as renamed into the cache: only a verified fill is."""
    return (tmp_path / "cache" / "blobs" / "sha256" / digest.split(":")[1]).read_bytes()


async def test_a_redirect_to_another_host_is_asked_again_without_the_origins_credentials(
    rig: Rig, node_factory: Start, tmp_path: Path, debug_log: pytest.LogCaptureFixture
) -> None:
    data = random_bytes(SIZE, seed=3)
    digest = rig.origin.add(data)
    rig.origin.credentials = basic_header("node", "secret")
    rig.origin.redirect_to = rig.storage
    node = await _node(node_factory, rig, tmp_path, username="node", password="secret")

    assert await _fill(node, digest) == data

    assert _cached(tmp_path, digest) == data
    asked = [s for s in rig.origin.body_gets(digest) if s.path.startswith("/v2/")]
    assert asked[-1].headers["Authorization"] == rig.origin.credentials  # after its challenge
    first, again = [s for s in rig.origin.body_gets(digest) if s.path.startswith("/storage/")]
    assert "Authorization" not in first.headers and "Authorization" not in again.headers
    # The request aiohttp sent, again: only the connection is not kept.
    assert again.headers.pop("Connection") == "close"
    first.headers.pop("Connection", None)
    assert again.headers == first.headers
    assert thread_reads(debug_log) == 1


async def test_a_signed_url_that_serves_once_is_read_on_the_first_connection(
    rig: Rig, node_factory: Start, tmp_path: Path, debug_log: pytest.LogCaptureFixture
) -> None:
    data = random_bytes(SIZE, seed=4)
    digest = rig.origin.add(data)
    rig.origin.redirect_to = rig.storage
    rig.origin.once = True
    node = await _node(node_factory, rig, tmp_path)

    assert await _fill(node, digest) == data

    assert _cached(tmp_path, digest) == data
    storage = [s for s in rig.origin.body_gets(digest) if s.path.startswith("/storage/")]
    assert len(storage) == 2  # the second was refused: aiohttp's body, paused, was read on
    assert thread_reads(debug_log) == 0
    assert "its own connection failed" in debug_log.text
    assert not [r for r in debug_log.records if r.levelno >= logging.WARNING]


async def test_a_body_cut_on_its_own_connection_resumes_with_range_and_verifies(
    rig: Rig, node_factory: Start, tmp_path: Path, debug_log: pytest.LogCaptureFixture
) -> None:
    data = random_bytes(SIZE, seed=5)
    digest = rig.origin.add(data)
    rig.origin.cut[2] = 2_500_000  # the thread's GET: a reset, no close_notify
    node = await _node(node_factory, rig, tmp_path)

    assert await _fill(node, digest) == data

    assert _cached(tmp_path, digest) == data
    ranges = [s.range for s in rig.origin.body_gets(digest) if s.range]
    assert len(ranges) == 2, ranges  # aiohttp's range request and the thread's, the same
    assert ranges[0] == ranges[1]
    assert 0 < int(ranges[0].removeprefix("bytes=").split("-")[0]) <= 2_500_000
    assert thread_reads(debug_log) == 2  # the first GET and the resumed range
    assert "resuming at byte" in debug_log.text
    assert readers() == []


async def test_a_fill_cancelled_mid_body_leaves_no_thread_and_no_open_file(
    rig: Rig, node_factory: Start, tmp_path: Path, debug_log: pytest.LogCaptureFixture
) -> None:
    data = random_bytes(3 * 1024 * 1024, seed=6)
    digest = rig.origin.add(data)
    rig.origin.gate_at[digest] = 1_500_000  # every body waits there: the thread's in recv_into
    node = await _node(node_factory, rig, tmp_path)
    fds = open_fds()

    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{node.url}/v2/{REPO}/blobs/{digest}") as response,
    ):
        assert response.status == 200
        await response.content.readexactly(100_000)
        await until(lambda: thread_reads(debug_log) == 1)
        assert len(readers()) == 1
    async with asyncio.timeout(5):  # woken at once, not after the read timeout
        await node.app[NODE].fetcher.close()  # the client went away; the fill is cancelled

    assert readers() == []
    rig.origin.gate.set()
    await until(lambda: open_fds() <= fds)  # both connections to the origin closed
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file() and "blobs" in p.parts]


async def test_a_fill_cancelled_while_its_own_connection_waits_for_the_head_leaves_nothing(
    rig: Rig, node_factory: Start, tmp_path: Path, debug_log: pytest.LogCaptureFixture
) -> None:
    data = random_bytes(3 * 1024 * 1024, seed=7)
    digest = rig.origin.add(data)
    rig.origin.hold.add(2)  # the thread's GET: no answer yet
    node = await _node(node_factory, rig, tmp_path)
    fds = open_fds()

    client = asyncio.create_task(_fill(node, digest))
    await until(rig.origin.gate_reached.is_set)
    await until(lambda: readers() == ["body-head"])  # in the head's thread, reading
    async with asyncio.timeout(5):  # woken at once, not after the read timeout (60 s)
        await node.app[NODE].fetcher.close()
    client.cancel()
    with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError, AssertionError):
        await client

    assert readers() == []
    assert thread_reads(debug_log) == 0
    rig.origin.gate.set()
    await until(lambda: open_fds() <= fds)


# -- the head check, without sockets -------------------------------------------------------------

HEAD = b"HTTP/1.1 206 Partial Content\r\nContent-Length: 10\r\nContent-Range: bytes 5-14/99"
EXPECTED = Expected(206, 10, "bytes 5-14/99", None)


def test_the_same_answer_passes_the_head_check() -> None:
    status, headers = parse_head(HEAD + b"\r\nETag: x\r\nAccept-Ranges: bytes")
    EXPECTED.check(status, headers)
    Expected(206, 10, "bytes 5-14/99", "x").check(status, headers)


@pytest.mark.parametrize(
    "head",
    [
        HEAD.replace(b"206 Partial Content", b"200 OK"),
        HEAD.replace(b"206 Partial Content", b"403 Forbidden"),
        HEAD.replace(b"Length: 10", b"Length: 11"),
        HEAD + b"\r\nContent-Length: 10",
        HEAD.replace(b"5-14", b"6-15"),
        HEAD + b"\r\nContent-Encoding: gzip",
        HEAD + b"\r\nTransfer-Encoding: chunked",
        HEAD + b"\r\nETag: y",
        HEAD + b"\r\n folded",
        b"SSH-2.0-OpenSSH_9.2",
    ],
)
def test_another_answer_fails_the_head_check(head: bytes) -> None:
    with pytest.raises(NotTheSame):
        Expected(206, 10, "bytes 5-14/99", "x").check(*parse_head(head))


def test_header_names_are_case_insensitive() -> None:
    status, headers = parse_head(HEAD.lower().replace(b"http/1.1", b"HTTP/1.1"))
    assert isinstance(headers, CIMultiDict)
    EXPECTED.check(status, headers)
