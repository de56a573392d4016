"""``HEAD``/``GET /v2/<name>/blobs/<digest>``: from the cache, else from a fill in progress (a
range far ahead of the fill: from the origin, see :mod:`imgaccel.proxy.ranges_ahead`)."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import IO, Any

import aiohttp
from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from multidict import CIMultiDict

from imgaccel.cache.fill import Fill, FillFailed
from imgaccel.errors import UpstreamUnavailable
from imgaccel.oci.digest import Digest
from imgaccel.proxy.access import refusal
from imgaccel.proxy.fetcher import open_blob
from imgaccel.proxy.ranges import parse_range
from imgaccel.proxy.ranges_ahead import FarRange, far_range, origin_range
from imgaccel.proxy.state import NODE, Node
from imgaccel.proxy.target import ALLOWLIST, Target, client_auth, target_of
from imgaccel.upstream.blobs import BlobLocation, batches, parse_content_length

log = logging.getLogger("imgaccel.serve")

#: Bytes handed to ``loop.sendfile`` at a time from a fill: what a client that goes away leaves
#: uncounted at most (one call's progress is lost when it fails).
_SENDFILE_CHUNK = 4 << 20


def _headers(digest: Digest) -> dict[str, str]:
    return {
        "Docker-Content-Digest": str(digest),
        "Content-Type": "application/octet-stream",
        "Accept-Ranges": "bytes",
        "Docker-Distribution-API-Version": "registry/2.0",
    }


async def blob(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE]
    digest = Digest.parse(request.match_info["digest"])
    target = target_of(request, node.settings)
    request.app[ALLOWLIST].check(target.registry)
    auth = client_auth(request)
    # A fill can commit the blob (and the store evict it) while this request awaits: look again.
    # The request counts once, as a hit or a miss, by what the first look found; only a whole-blob
    # GET counts (a HEAD or a ranged GET, a resume, says nothing about how the cache serves pulls).
    counts = _whole_get(request)
    for attempt in range(3):
        cached, filling = digest in node.store, digest in node.fetcher.fills
        joining = filling and not cached
        if (
            (cached or filling)
            and "Range" not in request.headers
            and not node.guard.vouches(target.registry, digest, joining_fill=joining)
        ):
            # A registry not known to hold it (access.py): as a miss would, from there.
            if request.method == "HEAD":
                return await _head_origin(node, target, digest, auth)
            return await _through_origin(request, node, target, digest, auth)
        if cached:
            await node.guard.check(target.registry, target.repo, digest, auth, "blobs")
            if (entry := node.store.lookup(digest)) is not None:
                if attempt == 0 and counts:
                    node.metrics.cache_hits.labels("blob").inc()
                return _cached(request, node, digest, entry.size)
        if attempt == 0 and counts:
            node.metrics.cache_misses.labels("blob").inc()
        if request.method == "HEAD" and digest not in node.fetcher.fills:
            return await _head_origin(node, target, digest, auth)
        if attempt == 0 and (far := _far_range(request, node, digest)) is not None:
            answered = await _range_from_origin(request, node, target, digest, auth, far)
            if answered is not None:
                return answered
        if digest in node.fetcher.fills:
            await node.guard.check(
                target.registry, target.repo, digest, auth, "blobs", joining_fill=True
            )
        fill = await node.fetcher.fill(BlobLocation(target.registry, target.repo, digest, auth))
        if fill is None:
            continue  # committed since the lookup: serve it from the store
        if fill.closed:
            # It ended before this request got to read from it: committed (the store has it),
            # or failed or not kept (fetch it again).
            continue
        return await _from_fill(request, node, fill)
    raise UpstreamUnavailable("the blob was evicted from the cache while being requested")


def _whole_get(request: web.BaseRequest) -> bool:
    """A GET of the whole blob: what hits, misses and ``blob_serve_seconds`` count."""
    return request.method == "GET" and "Range" not in request.headers


def _cached(request: web.Request, node: Node, digest: Digest, size: int) -> CachedBlob:
    return CachedBlob(node, digest, size, parse_range(request.headers.get("Range"), size))


class CachedBlob(web.FileResponse):
    """A verified blob sent with sendfile (aiohttp handles HEAD and the range); the blob is held
    against eviction while it is being sent.

    ``byte_range`` is the client's ``Range`` as :func:`parse_range` read it (already checked);
    aiohttp is handed that instead of the raw header, so a cached blob and a blob being filled
    answer the same ``Range`` the same way (aiohttp alone sends an empty 416 for several ranges
    and treats ``bytes=-0`` as the whole blob).
    """

    def __init__(
        self, node: Node, digest: Digest, size: int, byte_range: tuple[int, int] | None
    ) -> None:
        super().__init__(node.store.path(digest), chunk_size=1 << 20, headers=_headers(digest))
        self._node, self._digest, self._size = node, digest, size
        self._range = byte_range
        self._sent: int | None = None  # set by _sendfile

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        started = time.monotonic()
        self._node.store.acquire(self._digest)
        try:
            writer = await super().prepare(_with_range(request, self._range))
        finally:
            self._node.store.release(self._digest)
            # What sendfile got out, also to a client that went away. aiohttp's _sendfile is
            # not public API: should a new aiohttp not call it, count the response's length.
            if self._sent is None:
                self._sent = 0 if request.method == "HEAD" else (self.content_length or 0)
            self._node.metrics.served("cache", self._sent)
        _log_served(request, self._digest, "cache", self._sent, self._size, started)
        return writer

    async def _sendfile(
        self, request: web.BaseRequest, fobj: IO[Any], offset: int, count: int
    ) -> AbstractStreamWriter:
        try:
            return await super()._sendfile(request, fobj, offset, count)
        finally:
            # loop.sendfile leaves the file after the last byte it sent, also when it fails
            # (and where it was, before ``offset``, when it failed before sending any).
            self._sent = min(max(0, fobj.tell() - offset), count)


def _with_range(request: web.BaseRequest, byte_range: tuple[int, int] | None) -> web.BaseRequest:
    """``request`` with its ``Range`` header replaced by the canonical form of ``byte_range``."""
    if "Range" not in request.headers:
        return request
    headers = CIMultiDict(request.headers)
    headers.popall("Range")
    if byte_range is not None:
        headers["Range"] = f"bytes={byte_range[0]}-{byte_range[1] - 1}"
    return request.clone(headers=headers)


async def _head_origin(
    node: Node, target: Target, digest: Digest, auth: str | None
) -> web.Response:
    async with node.client.open(
        "HEAD", target.registry, target.repo, f"blobs/{digest}", client_auth=auth, kind="blob-head"
    ) as answer:
        if answer.status != 200:
            raise refusal(answer.status, "blobs", answer.challenge)
        size = parse_content_length(answer.headers.get("Content-Length"))
        if size is None:  # not "0": that would tell the client the blob is empty
            raise UpstreamUnavailable(f"the origin answered HEAD {digest} without a length")
        headers = _headers(digest)
        headers["Content-Length"] = str(size)
        return web.Response(status=200, headers=headers)


async def _through_origin(
    request: web.Request, node: Node, target: Target, digest: Digest, auth: str | None
) -> web.StreamResponse:
    """A cached blob asked for through a registry not known to hold it: that registry's bytes,
    passed through as they come (the client waits no longer than on a miss), hashed on the way,
    the last batch held back until they are the digest; then the registry is provenance and
    the next request is served from the cache. Bytes that are not the digest abort the
    response, so the client rejects them."""
    started = time.monotonic()
    node.metrics.cache_misses.labels("blob").inc()  # for this registry, a miss
    location = BlobLocation(target.registry, target.repo, digest, auth)
    async with open_blob(node.client, location) as answer:
        size = parse_content_length(answer.headers.get("Content-Length"))
        if size is None:
            raise UpstreamUnavailable(f"the origin sent blob {digest} without a length")
        response = web.StreamResponse(status=200, headers=_headers(digest))
        response.content_length = size
        if not await _started(request, response, digest):
            return response
        hasher, held, sent = digest.hasher(), b"", 0
        try:
            async for batch in batches(answer.response):
                await asyncio.to_thread(hasher.update, batch)
                if held:
                    await response.write(held)
                    sent += len(held)
                held = batch
            good = hasher.hexdigest() == digest.hex and sent + len(held) == size
            if good:
                await response.write(held)
                sent += len(held)
                await response.write_eof()
        except (aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
            if request.transport is None or request.transport.is_closing():
                log.info("client %s went away while %s was being sent", request.remote, digest)
            else:
                log.warning("reading %s from %s failed: %s", digest, target.registry, exc)
                request.transport.abort()
            return response
        finally:
            node.metrics.served("origin", sent)
        if not good:
            log.warning(
                "%s sent bytes that are not %s (asked through %s): aborting the response",
                target.registry,
                digest,
                target.repo,
            )
            if request.transport is not None:
                request.transport.abort()
            return response
    node.guard.record_answer(
        target.registry,
        target.repo,
        digest,
        answer,
        auth,
        verified=True,
    )
    _log_served(request, digest, "origin", size, size, started)
    return response


def _far_range(request: web.Request, node: Node, digest: Digest) -> FarRange | None:
    """The range of a GET to pass through to the origin: far ahead of the blob's fill."""
    if request.method != "GET":
        return None
    return far_range(request.headers.get("Range"), node.fetcher.fills.get(digest))


async def _range_from_origin(
    request: web.Request,
    node: Node,
    target: Target,
    digest: Digest,
    auth: str | None,
    far: FarRange,
) -> web.StreamResponse | None:
    """The origin's answer to ``far``, streamed as it comes, while a fill of the whole blob
    starts in the background; None when the fill is to serve the range instead."""
    started = time.monotonic()
    location = BlobLocation(target.registry, target.repo, digest, auth)
    async with origin_range(node.client, location, far) as answered:
        if answered is None:
            return None
        answer, (start, end, total) = answered
        node.fetcher.fill_in_background(location)
        response = web.StreamResponse(status=206, headers=_headers(digest))
        response.content_length = end - start
        response.headers["Content-Range"] = f"bytes {start}-{end - 1}/{total}"
        if not await _started(request, response, digest):
            return response
        sent = _Sent()
        what = f"{digest} ({far.header}) from {target.registry}"
        try:
            complete = await _relay(request, answer.response, response, sent, what)
        finally:
            node.metrics.served("origin", sent.bytes)
    if complete:
        await response.write_eof()
        _log_served(request, digest, "origin", sent.bytes, total, started)
    return response


async def _relay(
    request: web.Request,
    source: aiohttp.ClientResponse,
    response: web.StreamResponse,
    sent: _Sent,
    what: str,
) -> bool:
    """Write the body of ``source`` to the prepared ``response`` as it arrives, up to its
    length; False, with ``source`` closed, when the client went away or the origin's body broke
    off or ended short (then the client's response is aborted: it sees a truncated body)."""
    length = response.content_length or 0
    try:
        async for chunk in source.content.iter_any():
            chunk = chunk[: length - sent.bytes]
            await response.write(chunk)
            sent.bytes += len(chunk)
            if sent.bytes == length:
                return True
        failure = f"the body ended after {sent.bytes} of {length} bytes"
    except (aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
        failure = f"{exc.__class__.__name__}: {exc}"
    source.close()
    if request.transport is None or request.transport.is_closing():
        log.info("client %s went away while %s was being sent", request.remote, what)
    else:
        log.warning("reading %s failed (%s): aborting the response", what, failure)
        request.transport.abort()
    return False


async def _from_fill(request: web.Request, node: Node, fill: Fill) -> web.StreamResponse:
    fill.hold()  # before the first await: the fill may end, and close its file, meanwhile
    try:
        return await _send_fill(request, node, fill)
    finally:
        fill.release()


async def _send_fill(request: web.Request, node: Node, fill: Fill) -> web.StreamResponse:
    started = time.monotonic()
    if fill.size == 0 and request.method == "GET":
        # No last byte to withhold: the whole (empty) answer waits for the verification.
        try:
            await asyncio.shield(fill.done)
        except FillFailed as exc:
            raise UpstreamUnavailable(f"blob {fill.digest} did not verify: {exc}") from exc
    byte_range = parse_range(request.headers.get("Range"), fill.size)
    start, end = byte_range or (0, fill.size)
    response = web.StreamResponse(status=206 if byte_range else 200, headers=_headers(fill.digest))
    response.content_length = end - start
    if byte_range:
        response.headers["Content-Range"] = f"bytes {start}-{end - 1}/{fill.size}"
    if not await _started(request, response, fill.digest) or request.method == "HEAD":
        return response
    sent = _Sent()
    try:
        await _send_windows(request, fill, start, end, sent)
    except ConnectionError:
        log.info("client %s went away while %s was being sent", request.remote, fill.digest)
        return response
    except FillFailed as exc:
        # Abort: the client sees a truncated body and rejects the blob; nothing was cached.
        log.warning(
            "aborting %s to %s after %d bytes: %s", fill.digest, request.remote, sent.bytes, exc
        )
        if request.transport is not None:
            request.transport.abort()
        return response
    finally:
        node.metrics.served(fill.source, sent.bytes)  # on every path: a client gone too
    await response.write_eof()
    _log_served(request, fill.digest, fill.source, sent.bytes, fill.size, started)
    return response


async def _started(request: web.Request, response: web.StreamResponse, digest: Digest) -> bool:
    """Send the headers of ``response``; False when the client went away first (it may leave
    while the node waits for the origin: no error, as when it leaves mid-body)."""
    try:
        await response.prepare(request)
    except ConnectionError:
        log.info("client %s went away before %s was sent", request.remote, digest)
        return False
    return True


class _Sent:
    """Bytes of a response body handed to the transport so far."""

    def __init__(self) -> None:
        self.bytes = 0


async def _send_windows(
    request: web.Request, fill: Fill, start: int, end: int, sent: _Sent
) -> None:
    """Send ``[start, end)`` of a fill as it lands, with sendfile (no copy through Python).

    Like aiohttp's FileResponse: the response is prepared, then the body goes straight to the
    transport. Counts the bytes sent in ``sent`` as it goes (the file's offset is shared with
    other readers of the fill, so it cannot tell); raises :class:`FillFailed` if the fill is
    abandoned.
    """
    loop = asyncio.get_running_loop()
    with os.fdopen(os.dup(fill.fd), "rb", buffering=0) as file:
        async for offset, limit in fill.windows(start, end):
            for chunk in range(offset, limit, _SENDFILE_CHUNK):
                transport = request.transport
                if transport is None or transport.is_closing():
                    raise ConnectionResetError("client went away")
                count = min(_SENDFILE_CHUNK, limit - chunk)
                await loop.sendfile(transport, file, chunk, count)
                sent.bytes += count


def _log_served(
    request: web.BaseRequest, digest: Digest, source: str, sent: int, size: int, started: float
) -> None:
    seconds = time.monotonic() - started
    if isinstance(request, web.Request):
        if _whole_get(request):  # a HEAD or a few bytes would pull the latencies down
            request.app[NODE].metrics.blob_seconds.labels(source).observe(seconds)
        if request.method == "GET":
            request.app[NODE].recent.add(str(digest), source, sent, seconds)
    log.info(
        "served blob %s source=%s bytes=%d size=%d seconds=%.3f client=%s",
        digest,
        source,
        sent,
        size,
        seconds,
        request.remote,
        extra={"digest": str(digest), "source": source, "bytes": sent, "seconds": seconds},
    )
