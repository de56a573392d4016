"""Origin faults the real registry cannot produce, from a small hand-written fake registry.

Each fault is injected at one point (wrong bytes, 503s, a dropped connection, a redirect to
another host, a body held back at a gate) and the test asserts what a client of the node sees.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
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
from imgaccel.proxy.state import NODE
from imgaccel.upstream.auth import basic_header
from imgaccel.upstream.blobs import BlobLocation, OriginFetch
from tests.conftest import until

REPO = "team/app"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"


def digest_of(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def random_bytes(size: int, seed: int = 0) -> bytes:
    block = hashlib.sha512(f"{seed}".encode()).digest()
    out = bytearray()
    while len(out) < size:
        block = hashlib.sha512(block).digest()
        out += block * 64
    return bytes(out[:size])


def byte_range(spec: str, size: int) -> tuple[int, int] | None:
    """``[start, end)`` of one ``bytes=A-B``, ``bytes=A-`` or suffix ``bytes=-N`` range of a
    ``size``-byte blob, as the distribution registry reads it; None when it is unsatisfiable."""
    first, _, last = spec.removeprefix("bytes=").partition("-")
    if not first:
        suffix = int(last)
        return (max(0, size - suffix), size) if suffix and size else None
    start = int(first)
    return (start, size if not last else min(int(last) + 1, size)) if start < size else None


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]

    @property
    def range(self) -> str | None:
        return self.headers.get("Range")


@dataclass
class FakeRegistry:
    """Blobs and tagged manifests, served with the faults a test switches on."""

    blobs: dict[str, bytes] = field(default_factory=dict)
    manifests: dict[str, bytes] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    corrupt: set[str] = field(default_factory=set)  # served with wrong bytes of the right length
    unavailable: dict[str, int] = field(default_factory=dict)  # digest -> 503s still to send
    drop_at: dict[str, int] = field(default_factory=dict)  # digest -> byte where to hang up, once
    gate_at: dict[str, int] = field(default_factory=dict)  # digest -> byte where to wait for gate
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    gate_reached: asyncio.Event = field(default_factory=asyncio.Event)  # a body waits at gate_at
    redirect_to: str | None = None  # blob GETs answer 307 to this base URL
    credentials: str | None = None  # required Authorization (Basic challenge otherwise)
    cut_manifests: bool = False  # manifest GETs hang up half-way through the body
    down: bool = False  # everything is a 503
    range_delay: float = 0.0  # seconds before the body of a Range response
    ignore_ranges: bool = False  # answer a Range request with the whole blob (a 200)
    sending: int = 0  # blob bodies being sent now
    most_sending: int = 0  # the most at once

    def add(self, data: bytes) -> str:
        digest = digest_of(data)
        self.blobs[digest] = data
        return digest

    def blob_gets(self, digest: str) -> list[Seen]:
        return [s for s in self.seen if s.method == "GET" and s.path.endswith(f"/blobs/{digest}")]

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/v2/{name:.+}/blobs/{digest}", self.blob)
        app.router.add_route("*", "/v2/{name:.+}/manifests/{reference}", self.manifest)
        app.router.add_route("*", "/storage/{digest}", self.storage)
        return app

    def _record(self, request: web.Request) -> web.Response | None:
        self.seen.append(Seen(request.method, request.path, dict(request.headers)))
        if self.down:
            return web.Response(status=503)
        if self.credentials and request.headers.get("Authorization") != self.credentials:
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="fake"'})
        return None

    async def blob(self, request: web.Request) -> web.StreamResponse:
        if (refused := self._record(request)) is not None:
            return refused
        digest = request.match_info["digest"]
        if digest not in self.blobs:
            return web.json_response({"errors": [{"code": "BLOB_UNKNOWN"}]}, status=404)
        if self.unavailable.get(digest, 0) > 0:
            self.unavailable[digest] -= 1
            return web.Response(status=503)
        if self.redirect_to and request.method == "GET":
            raise web.HTTPTemporaryRedirect(f"{self.redirect_to}/storage/{digest}")
        return await self.send_blob(request, digest)

    async def storage(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(Seen(request.method, request.path, dict(request.headers)))
        return await self.send_blob(request, request.match_info["digest"])

    async def send_blob(self, request: web.Request, digest: str) -> web.StreamResponse:
        data = self.blobs[digest]
        if digest in self.corrupt:
            data = bytes(len(data))
        start, end, status = 0, len(data), 200
        if (spec := request.headers.get("Range")) is not None and not self.ignore_ranges:
            if (span := byte_range(spec, len(data))) is None:
                headers = {"Content-Range": f"bytes */{len(data)}"}
                return web.Response(status=416, headers=headers)
            (start, end), status = span, 206
        response = web.StreamResponse(status=status)
        response.headers.update({"Accept-Ranges": "bytes", "Docker-Content-Digest": digest})
        response.content_length = end - start
        if status == 206:
            response.headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(data)}"
        await response.prepare(request)
        if request.method == "HEAD":
            return response
        self.sending += 1
        self.most_sending = max(self.most_sending, self.sending)
        try:
            if status == 206:
                await asyncio.sleep(self.range_delay)
            await self._send_body(request, response, digest, data, start, end)
        finally:
            self.sending -= 1
        return response

    async def _send_body(
        self,
        request: web.Request,
        response: web.StreamResponse,
        digest: str,
        data: bytes,
        start: int,
        end: int,
    ) -> None:
        drop = self.drop_at.pop(digest, None) if start == 0 else None
        gate = self.gate_at.get(digest) if start == 0 else None
        offset = start
        while offset < end:
            stop = min(end, offset + 256 * 1024)
            for mark in (drop, gate):
                if mark is not None and offset < mark < stop:
                    stop = mark
            await response.write(data[offset:stop])
            offset = stop
            if offset == drop:
                assert request.transport is not None
                request.transport.abort()
                return
            if offset == gate:
                self.gate_reached.set()
                await self.gate.wait()
        await response.write_eof()

    async def manifest(self, request: web.Request) -> web.StreamResponse:
        if (refused := self._record(request)) is not None:
            return refused
        body = self.manifests.get(request.match_info["reference"])
        if body is None:
            return web.json_response({"errors": [{"code": "MANIFEST_UNKNOWN"}]}, status=404)
        headers = {"Content-Type": MANIFEST_TYPE, "Docker-Content-Digest": digest_of(body)}
        if request.method == "HEAD":
            return web.Response(headers={**headers, "Content-Length": str(len(body))})
        if self.cut_manifests:
            response = web.StreamResponse(headers=headers)
            response.content_length = len(body)
            await response.prepare(request)
            await response.write(body[: len(body) // 2])
            assert request.transport is not None
            request.transport.abort()
            return response
        return web.Response(body=body, headers=headers)


@dataclass
class Rig:
    """A fake origin, a node mirroring it, and an HTTP client."""

    fake: FakeRegistry
    node: Any
    http: aiohttp.ClientSession
    cache: Path

    def url(self, digest: str) -> str:
        return f"{self.node.url}/v2/{REPO}/blobs/{digest}"

    def cached(self, digest: str) -> Path:
        return self.cache / "blobs" / "sha256" / digest.split(":")[1]

    def temp_files(self) -> list[Path]:
        return list((self.cache / "tmp").iterdir())

    async def get(self, digest: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
        async with self.http.get(self.url(digest), headers=headers) as response:
            return response.status, dict(response.headers), await response.read()


Start = Callable[..., Any]


@pytest.fixture
async def fake_server() -> AsyncIterator[tuple[FakeRegistry, TestServer]]:
    fake = FakeRegistry()
    server = TestServer(fake.app(), host="127.0.0.1", port=0)
    await server.start_server()
    yield fake, server
    fake.gate.set()
    await server.close()


#: Every fault twice: with the bodies aiohttp reads on the event loop, and with every body read
#: by a thread off the socket (see imgaccel.upstream.socketbody).
READERS: dict[str, dict[str, Any]] = {
    "loop": {"socket_bodies": False},
    "socket": {"socket_bodies": True, "socket_body_min_bytes": 0},
}


@pytest.fixture(params=sorted(READERS))
async def rig_factory(
    request: pytest.FixtureRequest,
    fake_server: tuple[FakeRegistry, TestServer],
    node_factory: Start,
    tmp_path: Path,
) -> AsyncIterator[Start]:
    fake, server = fake_server
    sessions: list[aiohttp.ClientSession] = []
    reader = READERS[request.param]

    async def start(upstream: dict[str, Any] | None = None, **overrides: Any) -> Rig:
        address = f"127.0.0.1:{server.port}"
        cache = tmp_path / f"cache{len(sessions)}"
        client = {
            "retries": 3,
            "backoff_seconds": 0.01,
            **reader,
            **overrides.pop("upstream_client", {}),
        }
        node = await node_factory(
            None,
            cache_dir=cache,
            upstreams={address: {"url": f"http://{address}", **(upstream or {})}},
            default_registry=address,
            upstream_client=client,
            **overrides,
        )
        sessions.append(aiohttp.ClientSession())
        return Rig(fake, node, sessions[-1], cache)

    yield start
    for session in sessions:
        await session.close()


@pytest.fixture
async def rig(rig_factory: Start) -> Rig:
    return await rig_factory()  # type: ignore[no-any-return]


# -- (a) wrong bytes ----------------------------------------------------------------------------


async def test_a_blob_that_does_not_match_its_digest_is_aborted_and_not_cached(rig: Rig) -> None:
    data = random_bytes(300_000)
    digest = rig.fake.add(data)
    rig.fake.corrupt.add(digest)

    async with rig.http.get(rig.url(digest)) as response:
        assert response.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()

    assert not rig.cached(digest).exists()
    await until(lambda: rig.temp_files() == [])
    rig.fake.corrupt.clear()
    status, _, body = await rig.get(digest)
    assert status == 200 and body == data
    assert len(rig.fake.blob_gets(digest)) == 2  # the failure was not remembered as the blob
    assert rig.cached(digest).read_bytes() == data


# -- (b) retries ----------------------------------------------------------------------------------


async def test_two_503s_then_the_blob(rig: Rig) -> None:
    data = random_bytes(50_000, seed=1)
    digest = rig.fake.add(data)
    rig.fake.unavailable[digest] = 2

    status, _, body = await rig.get(digest)

    assert status == 200 and body == data
    assert len(rig.fake.blob_gets(digest)) == 3


# -- (c) resume -----------------------------------------------------------------------------------


async def test_a_dropped_connection_resumes_with_range_from_the_byte_reached(rig: Rig) -> None:
    data = random_bytes(3 * 1024 * 1024 + 123, seed=2)
    digest = rig.fake.add(data)
    rig.fake.drop_at[digest] = 1_500_000

    status, _, body = await rig.get(digest)

    assert status == 200 and body == data
    ranges = [s.range for s in rig.fake.blob_gets(digest) if s.range]
    assert ranges, "the node did not resume with a Range request"
    first_byte = int(ranges[0].removeprefix("bytes=").split("-")[0])
    assert 0 < first_byte <= 1_500_000
    assert rig.cached(digest).read_bytes() == data


# -- (d) redirects ------------------------------------------------------------------------------


async def test_a_redirect_to_another_host_never_carries_the_credentials(
    rig_factory: Start,
) -> None:
    storage = FakeRegistry()
    storage_server = TestServer(storage.app(), host="127.0.0.1", port=0)
    await storage_server.start_server()
    try:
        rig = await rig_factory({"username": "node", "password": "s3cret"})
        data = random_bytes(100_000, seed=3)
        digest = rig.fake.add(data)
        storage.add(data)
        rig.fake.credentials = basic_header("node", "s3cret")
        rig.fake.redirect_to = f"http://127.0.0.1:{storage_server.port}"

        status, _, body = await rig.get(digest)

        assert status == 200 and body == data
        authorized = [s for s in rig.fake.blob_gets(digest) if "Authorization" in s.headers]
        assert authorized and authorized[0].headers["Authorization"] == rig.fake.credentials
        assert storage.seen, "the blob did not come from the storage host"
        assert all("Authorization" not in s.headers for s in storage.seen)
    finally:
        await storage_server.close()


# -- (e) parallel ranges ------------------------------------------------------------------------

#: Blobs of 1 MiB and more may widen into 4 range requests, judged every 0.1 s.
WIDENS_QUICKLY = {
    "parallel_threshold_bytes": 1024 * 1024,
    "parallel_ranges": 4,
    "parallel_after_seconds": 0.1,
}


async def test_a_slow_big_blob_is_widened_into_parallel_ranges(rig_factory: Start) -> None:
    rig = await rig_factory(upstream_client=WIDENS_QUICKLY)
    data = random_bytes(8 * 1024 * 1024, seed=4)
    digest = rig.fake.add(data)
    rig.fake.gate_at[digest] = 2 * 1024 * 1024  # the first connection stalls at 2 MiB

    pull = asyncio.create_task(rig.get(digest))
    async with asyncio.timeout(10):
        while len([s for s in rig.fake.blob_gets(digest) if s.range]) < 3:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    rig.fake.gate.set()  # the first connection goes on until it meets what the ranges landed
    status, _, body = await pull

    assert status == 200 and body == data
    ranges = [s.range for s in rig.fake.blob_gets(digest) if s.range]
    starts = sorted(int(r.removeprefix("bytes=").split("-")[0]) for r in ranges)
    assert len(ranges) == 3 and starts[0] > 2 * 1024 * 1024, ranges
    assert rig.cached(digest).read_bytes() == data


async def test_no_widening_while_the_client_reads_slower_than_the_one_connection(
    rig_factory: Start,
) -> None:
    # Widening only pays when the client waits for the fetch. A client that is behind (a busy
    # runtime) would get nothing sooner; the ranges wait until it has caught up and waits.
    rig = await rig_factory(upstream_client=WIDENS_QUICKLY)
    data = random_bytes(48 * 1024 * 1024, seed=8)
    digest = rig.fake.add(data)
    gate = 24 * 1024 * 1024  # more than the loopback socket buffers hold
    rig.fake.gate_at[digest] = gate

    async with rig.http.get(rig.url(digest)) as response:
        assert response.status == 200
        async with asyncio.timeout(10):
            await rig.fake.gate_reached.wait()
        await asyncio.sleep(0.5)  # five widening periods with the client not reading
        assert [s.range for s in rig.fake.blob_gets(digest)] == [None]

        body = asyncio.create_task(response.read())
        async with asyncio.timeout(10):  # the client reads, catches up and waits: ranges come
            while len(rig.fake.blob_gets(digest)) == 1:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        rig.fake.gate.set()
        assert await body == data
    ranges = [s.range for s in rig.fake.blob_gets(digest) if s.range]
    assert len(ranges) == 3 and all(int(r[6:].split("-")[0]) >= gate for r in ranges), ranges


async def test_a_fast_big_blob_streams_on_one_connection(rig_factory: Start) -> None:
    rig = await rig_factory(
        upstream_client={"parallel_threshold_bytes": 1024 * 1024, "parallel_after_seconds": 30}
    )
    data = random_bytes(8 * 1024 * 1024, seed=6)
    digest = rig.fake.add(data)

    status, _, body = await rig.get(digest)

    assert status == 200 and body == data
    assert [s.range for s in rig.fake.blob_gets(digest)] == [None]


# -- (f) ranges on blobs in flight and cached ---------------------------------------------------


async def test_ranges_on_a_blob_in_flight_and_cached(rig: Rig) -> None:
    data = random_bytes(3 * 1024 * 1024, seed=5)
    size = len(data)
    digest = rig.fake.add(data)
    rig.fake.gate_at[digest] = 1_500_000  # the origin holds the rest back until the gate opens

    async with rig.http.get(rig.url(digest)) as whole:  # starts the fill
        assert whole.status == 200
        status, headers, body = await rig.get(digest, Range="bytes=100-199")
        assert (status, body) == (206, data[100:200])
        assert headers["Content-Range"] == f"bytes 100-199/{size}"
        status, headers, body = await rig.get(digest, Range=f"bytes={size}-")
        assert status == 416 and headers["Content-Range"] == f"bytes */{size}"
        assert b"RANGE_INVALID" in body
        assert not rig.fake.gate.is_set()  # all of that was answered while the fill waited

        rig.fake.gate.set()
        assert await whole.read() == data
    await until(lambda: rig.cached(digest).exists())

    for spec, expected in [
        ("bytes=100-199", data[100:200]),
        ("bytes=-100", data[-100:]),
        (f"bytes={size - 10}-", data[-10:]),
    ]:
        status, headers, body = await rig.get(digest, Range=spec)
        assert (status, body) == (206, expected), spec
    status, headers, _ = await rig.get(digest, Range=f"bytes={size}-")
    assert status == 416 and headers["Content-Range"] == f"bytes */{size}"
    assert len(rig.fake.blob_gets(digest)) == 1


async def test_a_suffix_range_on_a_blob_in_flight_waits_for_verification(rig: Rig) -> None:
    """The tail of a blob being filled comes from the fill, not the origin (the fill is within
    reach of it), and its last byte only once the whole blob verified: a tail of bytes that are
    not the digest never reaches the client whole."""
    data = random_bytes(2 * 1024 * 1024, seed=6)
    digest = rig.fake.add(data)
    rig.fake.gate_at[digest] = 1_500_000
    rig.fake.corrupt.add(digest)  # wrong bytes of the right length: the tail lands, and is wrong

    async with rig.http.get(rig.url(digest)) as whole:  # starts the fill
        await rig.fake.gate_reached.wait()
        async with rig.http.get(rig.url(digest), headers={"Range": "bytes=-10"}) as tail:
            assert tail.status == 206
            rig.fake.gate.set()
            with pytest.raises(aiohttp.ClientPayloadError):
                await tail.read()
        with pytest.raises(aiohttp.ClientPayloadError):
            await whole.read()

    rig.fake.corrupt.discard(digest)
    rig.fake.gate.clear()
    rig.fake.gate_reached.clear()
    async with rig.http.get(rig.url(digest)) as whole:
        await rig.fake.gate_reached.wait()
        async with rig.http.get(rig.url(digest), headers={"Range": "bytes=-10"}) as tail:
            assert tail.status == 206
            assert (
                tail.headers["Content-Range"]
                == f"bytes {len(data) - 10}-{len(data) - 1}/{len(data)}"
            )
            rig.fake.gate.set()
            assert await tail.read() == data[-10:]
        assert await whole.read() == data
    assert [s.range for s in rig.fake.blob_gets(digest)] == [None, None]  # the fills' only


async def test_a_suffix_range_of_a_blob_not_in_flight_is_asked_of_the_origin(rig: Rig) -> None:
    """A lazy pull's first read of a layer: the origin answers the tail at once, while the fill
    of the whole blob it starts beside it is still held back (none of the tail is cached: a
    range cannot be verified)."""
    data = random_bytes(2 * 1024 * 1024, seed=8)
    digest = rig.fake.add(data)
    rig.fake.gate_at[digest] = 1_000_000  # the fill's GET only: the tail starts past it

    status, headers, body = await asyncio.wait_for(rig.get(digest, Range="bytes=-10"), 10)

    assert (status, body) == (206, data[-10:])
    assert headers["Content-Range"] == f"bytes {len(data) - 10}-{len(data) - 1}/{len(data)}"
    assert not rig.cached(digest).exists()
    rig.fake.gate.set()
    await until(lambda: rig.cached(digest).exists())
    assert sorted(str(s.range) for s in rig.fake.blob_gets(digest)) == ["None", "bytes=-10"]


# -- (g) single flight --------------------------------------------------------------------------


async def test_eight_clients_cause_one_origin_fetch(rig: Rig) -> None:
    data = random_bytes(2 * 1024 * 1024, seed=7)
    digest = rig.fake.add(data)
    rig.fake.gate_at[digest] = 1024 * 1024

    async with contextlib.AsyncExitStack() as stack:
        responses = await asyncio.gather(
            *(stack.enter_async_context(rig.http.get(rig.url(digest))) for _ in range(8))
        )
        # Every client has its response headers while the origin is still held at the gate.
        assert [r.status for r in responses] == [200] * 8
        rig.fake.gate.set()
        bodies = await asyncio.gather(*(r.read() for r in responses))

    assert all(body == data for body in bodies)
    assert len(rig.fake.blob_gets(digest)) == 1


async def test_a_client_arriving_as_the_fill_commits_is_served_from_the_cache(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The blob is in the store from the fill's commit on, before the fill has ended: a request
    that finds it there is a hit. The origin it was verified from must vouch for it by then;
    else that request is a miss for the origin (see access.py) and fetches the blob again.
    Between the commit and the end of the fill there is one pass of the event loop (a pull of
    an image on a few hosts at once hit it); here the fill is held there until the test lets
    it go."""
    data = random_bytes(300_000, seed=9)
    digest = rig.fake.add(data)
    fetcher = rig.node.app[NODE].fetcher
    committed, release = asyncio.Event(), asyncio.Event()
    commit = fetcher._commit

    async def commit_then_wait(fill: Fill) -> None:
        await commit(fill)
        committed.set()
        await release.wait()

    monkeypatch.setattr(fetcher, "_commit", commit_then_wait)
    async with rig.http.get(rig.url(digest)) as first:
        assert first.status == 200
        await asyncio.wait_for(committed.wait(), 10)
        try:
            status, _, body = await asyncio.wait_for(rig.get(digest), 10)
        finally:
            release.set()
        assert (status, body) == (200, data)
        assert await first.read() == data

    assert len(rig.fake.blob_gets(digest)) == 1


# -- (h) manifests: stale on outage, 404s -------------------------------------------------------


async def test_a_tag_is_served_stale_when_the_origin_is_down(rig_factory: Start) -> None:
    rig = await rig_factory(cache={"tag_ttl_seconds": 0}, upstream_client={"retries": 1})
    body = b'{"schemaVersion": 2, "layers": []}'
    rig.fake.manifests["v1"] = body
    url = f"{rig.node.url}/v2/{REPO}/manifests/v1"
    async with rig.http.get(url) as fresh:
        assert fresh.status == 200 and await fresh.read() == body
        assert "Warning" not in fresh.headers

    rig.fake.down = True
    async with rig.http.get(url) as stale:
        assert stale.status == 200 and await stale.read() == body
        assert stale.headers["Docker-Content-Digest"] == digest_of(body)
        assert stale.headers["Warning"].startswith("110 ")


async def test_a_manifest_body_cut_short_is_unavailable_or_served_stale(rig_factory: Start) -> None:
    rig = await rig_factory(cache={"tag_ttl_seconds": 0}, upstream_client={"retries": 0})
    url = f"{rig.node.url}/v2/{REPO}/manifests/v1"
    old = b'{"schemaVersion": 2, "layers": []}'
    rig.fake.manifests["v1"] = old
    rig.fake.cut_manifests = True
    async with rig.http.get(url) as cold:  # nothing to fall back on: the registry error JSON
        assert cold.status == 503
        assert (await cold.json())["errors"][0]["code"] == "UNAVAILABLE"

    rig.fake.cut_manifests = False
    async with rig.http.get(url) as fresh:
        assert fresh.status == 200 and await fresh.read() == old
    # The tag moves on, and the new manifest's body is cut short: the last answer, stale.
    rig.fake.manifests["v1"] = b'{"schemaVersion": 2, "layers": [], "annotations": {}}'
    rig.fake.cut_manifests = True
    async with rig.http.get(url) as stale:
        assert stale.status == 200 and await stale.read() == old
        assert stale.headers["Warning"].startswith("110 ")


async def test_origin_404s_are_manifest_and_blob_unknown(rig: Rig) -> None:
    async with rig.http.get(f"{rig.node.url}/v2/{REPO}/manifests/nope") as manifest:
        assert manifest.status == 404
        assert (await manifest.json())["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    status, _, body = await rig.get(digest_of(b"nope"))
    assert status == 404 and b'"BLOB_UNKNOWN"' in body
    async with rig.http.head(rig.url(digest_of(b"nope"))) as head:
        assert head.status == 404


async def test_the_gaps_peers_left_are_fetched_exactly_a_few_at_a_time(rig: Rig) -> None:
    # After a swarm stalls, the pieces it delivered (rarest-first: anywhere) stay; the origin
    # sends only the gaps, with at most parallel_ranges requests at once however many there are.
    piece, pieces = 64 * 1024, 40
    data = random_bytes(piece * pieces, seed=7)
    digest = rig.fake.add(data)
    rig.fake.range_delay = 0.02  # so that requests overlap when they may
    node = rig.node.app[NODE]
    fill = Fill(Digest.parse(digest), node.store.temp_path(), len(data))
    for index in range(1, pieces, 2):
        await fill.write_at(index * piece, data[index * piece : (index + 1) * piece], "peer")
    location = BlobLocation(node.settings.default_registry, REPO, Digest.parse(digest))

    await OriginFetch(node.client, location, fill, node.fetcher.settings).run(None, True)

    await fill.verify()
    await fill.finish()
    asked = sorted(s.range or "" for s in rig.fake.blob_gets(digest))
    wanted = sorted(f"bytes={i * piece}-{(i + 1) * piece - 1}" for i in range(0, pieces, 2))
    assert asked == wanted
    assert 1 < rig.fake.most_sending <= node.fetcher.settings.parallel_ranges


async def test_the_gaps_peers_left_come_whole_from_an_origin_that_ignores_range(rig: Rig) -> None:
    """HTTP lets an origin answer a range request with the whole blob (200): the gaps after a
    stalled swarm then come from one plain GET instead of failing the pull."""
    piece, pieces = 64 * 1024, 12
    data = random_bytes(piece * pieces, seed=8)
    digest = rig.fake.add(data)
    rig.fake.ignore_ranges = True
    node = rig.node.app[NODE]
    fill = Fill(Digest.parse(digest), node.store.temp_path(), len(data))
    for index in range(1, pieces, 2):
        await fill.write_at(index * piece, data[index * piece : (index + 1) * piece], "peer")
    location = BlobLocation(node.settings.default_registry, REPO, Digest.parse(digest))

    await OriginFetch(node.client, location, fill, node.fetcher.settings).run(None, True)

    await fill.verify()
    assert fill.temp.read_bytes() == data
    gets = rig.fake.blob_gets(digest)
    assert gets[-1].range is None and all(seen.range for seen in gets[:-1])
    await fill.finish(RuntimeError("test over"))


# -- (j) an empty answer ------------------------------------------------------------------------


async def test_an_empty_answer_for_a_blob_that_is_not_empty_is_refused(rig: Rig) -> None:
    """No last byte to withhold: the answer waits for the verification, which fails, so the
    client gets an error, not a complete empty 200 that the runtime would have to catch."""
    digest = digest_of(b"not empty")
    rig.fake.blobs[digest] = b""

    status, _, body = await rig.get(digest)

    assert status == 503 and b"UNAVAILABLE" in body
    assert not rig.cached(digest).exists()


async def test_the_empty_blob_is_served_and_cached(rig: Rig) -> None:
    digest = rig.fake.add(b"")

    status, headers, body = await rig.get(digest)  # from the fill, once verified

    assert (status, headers["Content-Length"], body) == (200, "0", b"")
    assert rig.cached(digest).exists()
    assert (await rig.get(digest))[0] == 200  # and from the store
