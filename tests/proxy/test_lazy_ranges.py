"""Lazy pulls: a range far ahead of what the fill of an uncached blob has landed is answered by the
origin, while one fill of the whole blob caches it; everything else is served as before.

The origin is the CNCF distribution registry; its request log tells a ranged request (206) from
the fill's plain GET (200; the nodes here fetch on one connection, no parallel ranges). The one
hand-written origin is for the answers the real registry never gives: the whole blob, another
range or no total to a range, a 416 or 503 to a satisfiable one, a range but no whole blob.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import logging
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from imgaccel.cache.fill import Fill
from imgaccel.oci.digest import Digest
from imgaccel.proxy.ranges_ahead import ALLOWANCE, FarRange, far_range, served_span
from imgaccel.proxy.state import NODE
from imgaccel.testing.registry import DistributionRegistry
from imgaccel.upstream.auth import basic_header
from imgaccel.upstream.blobs import BlobLocation
from tests.conftest import NodeServer, needs_registry, needs_skopeo, until
from tests.proxy.conftest import ALICE

MiB = 1 << 20
#: A layer well past the allowance: its last bytes are "far ahead" of a fill that has not begun.
SIZE = ALLOWANCE + 24 * MiB
REPO = "test/app"
#: Nodes here fetch a blob on one connection: the origin's 206s are then the passed-through ranges.
ONE_CONNECTION = {"upstream_client": {"parallel_ranges": 1}}

Start = Callable[..., Any]


@pytest.fixture(scope="module")
def layer() -> bytes:
    return os.urandom(SIZE)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def push_blob(registry: DistributionRegistry, data: bytes, creds: str | None = None) -> str:
    """A monolithic upload through the registry's API (as ``creds``, Basic); the digest."""
    digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
    headers = {"Authorization": basic_header(*creds.split(":"))} if creds else {}
    async with aiohttp.ClientSession(headers=headers) as session:
        async with session.post(f"{registry.url}/v2/{REPO}/blobs/uploads/") as started:
            assert started.status == 202, await started.text()
            location = started.headers["Location"]
        async with session.put(location, params={"digest": digest}, data=io.BytesIO(data)) as done:
            assert done.status == 201, await done.text()
    registry.requests.clear()
    return digest


async def get(
    http: aiohttp.ClientSession, url: str, **headers: str
) -> tuple[int, dict[str, str], bytes]:
    async with http.get(url, headers=headers) as response:
        return response.status, dict(response.headers), await response.read()


def statuses(registry: DistributionRegistry, digest: str) -> list[int]:
    """The statuses of the origin's answers to GETs of ``digest`` that sent it (sorted)."""
    return sorted(r.status for r in registry.blob_gets(digest))


def stored(node: NodeServer, digest: str) -> bool:
    return Digest.parse(digest) in node.app[NODE].store


def blob_url(node: NodeServer, registry: str, digest: str) -> str:
    return f"{node.url}/v2/{REPO}/blobs/{digest}?ns={registry}"


# -- which range goes to the origin (no sockets) -------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (f"bytes={ALLOWANCE + 1}-", FarRange(ALLOWANCE + 1)),
        (f"bytes={ALLOWANCE + 1}-{ALLOWANCE + 99}", FarRange(ALLOWANCE + 1, ALLOWANCE + 99)),
        ("bytes=-100", FarRange(suffix=100)),  # the size is not known: the origin knows it
        (f"bytes={ALLOWANCE}-", None),  # within the allowance of nothing landed
        ("bytes=0-1", None),
        (f"bytes={ALLOWANCE + 1}-{ALLOWANCE}", None),  # malformed: the fill path's 416
        ("bytes=-0", None),
        # Several ranges: their span, as the fill path answers them; unless a suffix is among
        # them, which starts where the size (not known) says.
        (f"bytes={ALLOWANCE + 1}-,-5", None),
        (
            f"bytes={ALLOWANCE + 20}-{ALLOWANCE + 29}, {ALLOWANCE + 1}-{ALLOWANCE + 9}",
            FarRange(ALLOWANCE + 1, ALLOWANCE + 29),
        ),
        (f"bytes=0-9,{ALLOWANCE + 20}-{ALLOWANCE + 29}", None),  # the span starts at 0
        ("items=99999999-", None),
        (None, None),
    ],
)
def test_with_no_fill_in_flight(header: str | None, expected: FarRange | None) -> None:
    assert far_range(header, None) == expected


async def test_with_a_fill_in_flight_what_it_has_landed_counts(tmp_path: Path) -> None:
    size = 64 * MiB
    fill = Fill(Digest.of(b"x"), tmp_path / "fill", size)
    try:
        await fill.write_at(0, bytes(20 * MiB))
        # A pull resumed where the fill's bytes ended: still from the fill.
        assert far_range(f"bytes={20 * MiB}-", fill) is None
        assert far_range(f"bytes={20 * MiB + ALLOWANCE}-", fill) is None
        assert far_range(f"bytes={20 * MiB + ALLOWANCE + 1}-", fill) == FarRange(
            20 * MiB + ALLOWANCE + 1, size=size
        )
        # The size is known: a suffix is a range like any other, the end of a range clamped.
        assert far_range("bytes=-100", fill) == FarRange(size - 100, size=size)
        assert far_range("bytes=-100000000", fill) is None  # from byte 0
        assert far_range(f"bytes={size - 10}-{size + 10}", fill) == FarRange(size - 10, size=size)
        assert far_range(f"bytes={size}-", fill) is None  # unsatisfiable: the fill path's 416
        # Several ranges: their span; a suffix among them is a range like any other.
        assert far_range(f"bytes={size - 300}-{size - 201},-100", fill) == FarRange(
            size - 300, size=size
        )
        assert far_range(f"bytes={30 * MiB}-{30 * MiB + 9},-100", fill) is None  # within
    finally:
        await fill.finish(RuntimeError("test over"))


@pytest.mark.parametrize(
    ("content_range", "length", "expected"),
    [
        ("bytes 900-999/1000", "100", (900, 1000, 1000)),
        ("bytes 0-99/1000", "100", None),  # another range
        ("bytes 900-999/*", "100", None),  # no total
        ("bytes 900-999/2000", "100", None),  # a blob of another size than the fill's
        ("bytes 900-999/1000", "99", None),  # a length that is not the range's
        ("bytes 900-998/1000", "99", None),  # not all that was asked
        (None, "100", None),
        ("bytes 900-999/1000, 0-1/1000", "100", None),
    ],
)
def test_the_origin_s_content_range_must_be_the_range_asked_for(
    content_range: str | None, length: str, expected: tuple[int, int, int] | None
) -> None:
    headers = {"Content-Length": length}
    if content_range is not None:
        headers["Content-Range"] = content_range
    assert served_span(headers, FarRange(900, size=1000)) == expected


def test_a_suffix_or_open_range_is_checked_against_the_total_it_names() -> None:
    headers = {"Content-Range": "bytes 900-999/1000", "Content-Length": "100"}
    assert served_span(headers, FarRange(suffix=100)) == (900, 1000, 1000)
    assert served_span(headers, FarRange(900)) == (900, 1000, 1000)
    assert served_span(headers, FarRange(suffix=99)) is None
    assert served_span(headers, FarRange(800)) is None


# -- the real registry as the origin --------------------------------------------------------------


@needs_registry
async def test_the_end_of_an_uncached_blob_comes_from_the_origin_and_the_fill_caches_it(
    origin: DistributionRegistry, node_factory: Start, http: aiohttp.ClientSession, layer: bytes
) -> None:
    digest = await push_blob(origin, layer)
    node: NodeServer = await node_factory(origin, **ONE_CONNECTION)
    url = blob_url(node, origin.address, digest)

    status, headers, body = await get(http, url, Range=f"bytes={SIZE - 4096}-")

    assert (status, body) == (206, layer[-4096:])
    assert headers["Content-Range"] == f"bytes {SIZE - 4096}-{SIZE - 1}/{SIZE}"
    assert headers["Docker-Content-Digest"] == digest
    # The whole blob, verified, is in the cache: fetched once, by the fill started for the range.
    await until(lambda: stored(node, digest))
    cached = node.app[NODE].store.path(Digest.parse(digest)).read_bytes()
    assert hashlib.sha256(cached).hexdigest() == digest.split(":")[1]
    await origin.settle()
    assert statuses(origin, digest) == [200, 206]

    origin.requests.clear()
    for spec, expected in [(f"bytes={SIZE - 10}-", layer[-10:]), ("bytes=5-9", layer[5:10])]:
        status, _, body = await get(http, url, Range=spec)
        assert (status, body) == (206, expected)
    await origin.settle()
    assert origin.blob_gets(digest) == []


@needs_registry
async def test_several_ranges_far_ahead_come_from_the_origin_as_their_span(
    origin: DistributionRegistry, node_factory: Start, http: aiohttp.ClientSession, layer: bytes
) -> None:
    """stargz-snapshotter asks for several chunks of a layer in one request: their span is
    asked of the origin (one range), not waited for until the fill reaches it, and answered as
    the fill path answers several ranges."""
    digest = await push_blob(origin, layer)
    node: NodeServer = await node_factory(origin, **ONE_CONNECTION)
    url = blob_url(node, origin.address, digest)
    chunks = f"bytes={SIZE - 100}-{SIZE - 1},{SIZE - 5000}-{SIZE - 4001}"

    status, headers, body = await get(http, url, Range=chunks)

    assert (status, body) == (206, layer[SIZE - 5000 :])
    assert headers["Content-Range"] == f"bytes {SIZE - 5000}-{SIZE - 1}/{SIZE}"
    await until(lambda: stored(node, digest))
    await origin.settle()
    # The span's range, and the whole blob for the cache.
    assert statuses(origin, digest) == [200, 206]
    [ranged] = [r for r in origin.blob_gets(digest) if r.status == 206]
    assert ranged.written == 5000


@needs_registry
async def test_concurrent_ranges_are_each_asked_of_the_origin_and_start_one_fill(
    origin: DistributionRegistry, node_factory: Start, http: aiohttp.ClientSession, layer: bytes
) -> None:
    digest = await push_blob(origin, layer)
    node: NodeServer = await node_factory(origin, **ONE_CONNECTION)
    url = blob_url(node, origin.address, digest)
    starts = [SIZE - 4096 * n for n in range(1, 5)]

    answers = await asyncio.gather(
        *(get(http, url, Range=f"bytes={start}-{start + 999}") for start in starts)
    )

    assert [(status, body) for status, _, body in answers] == [
        (206, layer[start : start + 1000]) for start in starts
    ]
    await until(lambda: stored(node, digest))
    await origin.settle()
    assert statuses(origin, digest) == [200, 206, 206, 206, 206]


@dataclass
class HeldPacer:
    """A background fill's budget that stops it after ``budget`` bytes until ``go`` is set."""

    budget: int
    rate: int = 1
    spent: int = 0
    held: asyncio.Event = field(default_factory=asyncio.Event)
    go: asyncio.Event = field(default_factory=asyncio.Event)

    async def spend(self, nbytes: int) -> None:
        self.spent += nbytes
        if self.spent > self.budget:
            self.held.set()
            await self.go.wait()


@needs_registry
async def test_a_resumed_pull_comes_from_the_fill_in_flight_a_far_range_from_the_origin(
    origin: DistributionRegistry, node_factory: Start, http: aiohttp.ClientSession, layer: bytes
) -> None:
    digest = await push_blob(origin, layer)
    node: NodeServer = await node_factory(origin, **ONE_CONNECTION)
    url = blob_url(node, origin.address, digest)
    # A fill held past the allowance (a prefetch's, kept to its bandwidth budget).
    pacer = HeldPacer(budget=ALLOWANCE + 4 * MiB)
    location = BlobLocation(origin.address, REPO, Digest.parse(digest))
    fill = await node.app[NODE].fetcher.fill(location, pacer)
    assert fill is not None
    await pacer.held.wait()
    resume_at = fill.contiguous - 1000  # containerd got this far from the fill, then lost it
    assert resume_at > ALLOWANCE

    # Without the origin, this range would wait for the held fill: the hang guard fails it.
    async with asyncio.timeout(60):
        status, _, body = await get(http, url, Range=f"bytes={SIZE - 4096}-")
    assert (status, body) == (206, layer[-4096:])
    assert not fill.done.done()

    async with http.get(url, headers={"Range": f"bytes={resume_at}-"}) as resumed:
        assert resumed.status == 206
        assert resumed.headers["Content-Range"] == f"bytes {resume_at}-{SIZE - 1}/{SIZE}"
        pacer.go.set()
        assert await resumed.read() == layer[resume_at:]

    await until(lambda: stored(node, digest))
    await origin.settle()
    assert statuses(origin, digest) == [200, 206]  # the fill, and the far range: no resume


@needs_registry
@needs_skopeo  # basic_origin pushes an image
async def test_a_client_the_origin_refuses_gets_the_refusal_and_starts_no_fill(
    basic_origin: DistributionRegistry,
    node_factory: Start,
    http: aiohttp.ClientSession,
    layer: bytes,
) -> None:
    digest = await push_blob(basic_origin, layer, creds=":".join(ALICE))
    node: NodeServer = await node_factory(basic_origin, **ONE_CONNECTION)
    url = blob_url(node, basic_origin.address, digest)
    far = f"bytes={SIZE - 4096}-"

    status, headers, body = await get(http, url, Range=far)
    assert status == 401 and b"UNAUTHORIZED" in body
    assert "basic" in headers["WWW-Authenticate"].lower()
    await basic_origin.settle()
    assert basic_origin.blob_gets(digest) == []
    assert not node.app[NODE].fetcher.fills and not stored(node, digest)

    status, _, body = await get(http, url, Range=far, Authorization=basic_header(*ALICE))
    assert (status, body) == (206, layer[-4096:])
    await until(lambda: stored(node, digest))  # alice's range started the fill
    await basic_origin.settle()
    assert statuses(basic_origin, digest) == [200, 206]

    # Cached now, and still not for a client without credentials, however it asks.
    for spec in (far, "bytes=0-9"):
        status, _, body = await get(http, url, Range=spec)
        assert status == 401 and b"UNAUTHORIZED" in body


@needs_registry
async def test_a_registry_the_allowlist_refuses_is_refused_before_the_origin_is_asked(
    origin: DistributionRegistry, node_factory: Start, http: aiohttp.ClientSession, layer: bytes
) -> None:
    digest = await push_blob(origin, layer)
    node: NodeServer = await node_factory(origin, registries=["nvcr.io"])

    url = blob_url(node, origin.address, digest)
    status, _, body = await get(http, url, Range=f"bytes={SIZE - 4096}-")

    assert status == 403 and b"DENIED" in body
    await origin.settle()
    assert origin.requests == []


@needs_registry
async def test_a_client_that_leaves_mid_range_is_an_info_line(
    origin: DistributionRegistry,
    node_factory: Start,
    http: aiohttp.ClientSession,
    layer: bytes,
    caplog: pytest.LogCaptureFixture,
) -> None:
    digest = await push_blob(origin, layer)
    node: NodeServer = await node_factory(origin, **ONE_CONNECTION)
    url = blob_url(node, origin.address, digest)

    with caplog.at_level(logging.INFO):
        async with http.get(url, headers={"Range": f"bytes={ALLOWANCE + 1}-"}) as response:
            assert response.status == 206
            await response.content.readany()
            response.close()
        await until(lambda: any("went away" in r.getMessage() for r in caplog.records))
        await until(lambda: stored(node, digest))  # the fill goes on without it

    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    await origin.settle()
    ranged = [r for r in origin.blob_gets(digest) if r.status == 206]
    assert len(ranged) == 1 and ranged[0].written < SIZE - ALLOWANCE - 1  # it was left too
    served = node.app[NODE].metrics.registry.get_sample_value(
        "imgaccel_bytes_served_total", {"source": "origin"}
    )
    assert served is not None and 0 < served < SIZE - ALLOWANCE - 1


# -- answers the real registry does not give: from a hand-written origin -------------------------


@dataclass
class OddOrigin:
    """One blob, whole to a plain GET; to a ``Range`` request, the answer ``mode`` names
    ("ranges-only": the range asked for, and a 503 to a plain GET)."""

    data: bytes
    mode: str
    seen: list[str | None] = field(default_factory=list)  # the Range of each blob GET

    @property
    def digest(self) -> str:
        return f"sha256:{hashlib.sha256(self.data).hexdigest()}"

    async def blob(self, request: web.Request) -> web.StreamResponse:
        spec = request.headers.get("Range")
        if request.method == "GET":
            self.seen.append(spec)
        headers = {"Accept-Ranges": "bytes", "Docker-Content-Digest": self.digest}
        if spec is None and self.mode == "ranges-only":
            return web.Response(status=503)
        if spec is None or self.mode == "whole" or request.method == "HEAD":
            return web.Response(body=self.data, headers=headers)
        if self.mode in ("503", "416"):
            return web.Response(status=int(self.mode), headers={"Content-Range": f"bytes */{SIZE}"})
        first, _, last = spec.removeprefix("bytes=").partition("-")
        start, end, total = int(first), int(last) + 1, str(SIZE)
        if self.mode == "other-range":
            start, end = 0, end - start
        elif self.mode == "no-total":
            total = "*"
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{total}"
        return web.Response(status=206, body=self.data[start:end], headers=headers)

    @contextlib.asynccontextmanager
    async def serving(self, node_factory: Start) -> AsyncIterator[tuple[NodeServer, str]]:
        """This origin on a loopback port, and a node mirroring it; the node and the address."""
        app = web.Application()
        app.router.add_route("*", "/v2/{name:.+}/blobs/{digest}", self.blob)
        async with TestServer(app, host="127.0.0.1", port=0) as server:
            address = f"127.0.0.1:{server.port}"
            node: NodeServer = await node_factory(
                None,
                upstreams={address: {"url": f"http://{address}"}},
                upstream_client={"retries": 1, "backoff_seconds": 0.01, "parallel_ranges": 1},
            )
            yield node, address


FAR = f"bytes={SIZE - 4096}-{SIZE - 1}"


@pytest.mark.parametrize("mode", ["whole", "other-range", "no-total", "416", "503"])
async def test_an_origin_that_does_not_answer_the_range_as_asked_leaves_it_to_the_fill(
    mode: str, node_factory: Start, http: aiohttp.ClientSession, layer: bytes
) -> None:
    fake = OddOrigin(layer, mode)
    async with fake.serving(node_factory) as (node, address):
        status, headers, body = await get(http, blob_url(node, address, fake.digest), Range=FAR)

    assert (status, body) == (206, layer[-4096:])
    assert headers["Content-Range"] == f"bytes {SIZE - 4096}-{SIZE - 1}/{SIZE}"
    tries = 2 if mode == "503" else 1  # a 5xx is retried first
    assert fake.seen == [FAR] * tries + [None]  # asked the origin, then the fill


async def test_a_fill_that_does_not_start_is_a_log_line_and_the_range_is_answered(
    node_factory: Start,
    http: aiohttp.ClientSession,
    layer: bytes,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = OddOrigin(layer, "ranges-only")
    async with fake.serving(node_factory) as (node, address):
        status, _, body = await get(http, blob_url(node, address, fake.digest), Range=FAR)
        assert (status, body) == (206, layer[-4096:])
        await until(lambda: any("did not start" in r.getMessage() for r in caplog.records))

    assert fake.seen == [FAR, None, None]  # the range; the fill's GET, retried once
    assert not stored(node, fake.digest)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
