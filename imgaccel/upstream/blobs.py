"""Fetch one blob from the origin into a cache :class:`~imgaccel.cache.Fill`.

Big blobs are split into parts fetched with parallel ``Range`` requests when the origin supports
ranges (the first response, already open, feeds part 0). Every part resumes from the byte it
reached when a connection breaks, with backoff, so a flaky origin costs time, not the pull.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp

from imgaccel.cache.fill import CHUNK, Fill
from imgaccel.errors import ImgaccelError, UpstreamError, UpstreamStatus
from imgaccel.oci.digest import Digest
from imgaccel.upstream import socketbody, tlsbody
from imgaccel.upstream.client import UpstreamClient
from imgaccel.upstream.config import UpstreamClientSettings
from imgaccel.upstream.socketbody import OffSocket

log = logging.getLogger(__name__)

#: The share of a widening period the blob's readers must have spent waiting for bytes for the
#: fetch to count as what holds them up (see :meth:`OriginFetch._widen`).
READERS_WAITING = 0.5


@dataclass(frozen=True)
class BlobLocation:
    """Where a blob is fetched from, and as whom."""

    registry: str
    repo: str
    digest: Digest
    client_auth: str | None = None

    @property
    def path(self) -> str:
        return f"blobs/{self.digest}"


#: The most digits a ``Content-Length`` may have: any 18-digit size fits a file offset (int64).
_MAX_LENGTH_DIGITS = 18


def parse_content_length(text: str | None) -> int | None:
    """An origin's ``Content-Length`` as a size; None when absent or not a size.

    Only ASCII digits count: ``"²".isdigit()`` is true but ``int("²")`` raises, while ``int()``
    reads Arabic-Indic digits, signs, spaces and underscores, none of which HTTP allows.
    """
    if text is None or len(text) > _MAX_LENGTH_DIGITS or not (text.isascii() and text.isdigit()):
        return None
    return int(text)


async def batches(response: aiohttp.ClientResponse, size: int = CHUNK) -> AsyncIterator[bytes]:
    """The body in pieces of at least ``size`` bytes (the last may be shorter), for hashing each
    in a thread: one hop per MiB instead of one per network read (16-64 KiB)."""
    pending: list[bytes] = []
    held = 0
    async for chunk in response.content.iter_any():
        pending.append(chunk)
        held += len(chunk)
        if held >= size:
            yield b"".join(pending)
            pending, held = [], 0
    if pending:
        yield b"".join(pending)


def split(start: int, end: int, parts: int) -> list[tuple[int, int]]:
    """``[start, end)`` in ``parts`` nearly equal ranges (CHUNK-aligned where possible)."""
    length = end - start
    per_part = math.ceil(length / parts)
    step = max(CHUNK, math.ceil(per_part / CHUNK) * CHUNK)
    return [(offset, min(offset + step, end)) for offset in range(start, end, step)]


async def copy_body(
    response: aiohttp.ClientResponse,
    fill: Fill,
    offset: int,
    end: int,
    *,
    head: bool = False,
    off_socket: OffSocket | None = None,
) -> int:
    """Write the body into ``fill`` from ``offset`` until ``end``; return where it stopped.

    With ``off_socket``, a big body of a fill that keeps no bandwidth budget is read by a thread
    off a socket (see :mod:`imgaccel.upstream.socketbody`): aiohttp's for plain HTTP, one of
    its own for TLS (:mod:`imgaccel.upstream.tlsbody`). Otherwise aiohttp reads it: one write
    is kept in flight while the next MiB is read from the socket, so the network, the disk and
    the hash overlap. When the connection breaks, the bytes that did arrive are written before
    the error is raised, so the caller can resume after them (see :func:`landed_until`). The
    ``head`` of a widened fetch stops (returning ``end``) once it runs into bytes another range
    already landed: from there on the other ranges own the rest.
    """
    if off_socket is not None and fill.pacer is None:
        taken = socketbody.take_over(response, off_socket.read_timeout, off_socket.min_bytes)
        if taken is None:
            taken = await tlsbody.reopen(response, offset, off_socket)
        if taken is not None:
            return await socketbody.copy(response, taken, fill, offset, end, head=head)
    # The buffers as aiohttp received them, read but not yet written: written together with
    # one pwritev once they add up to CHUNK, never joined (a copy of every byte, measured on the
    # cold pull: copies of the stream cost CPU that the runtime and the registry need too).
    pieces: list[bytes] = []
    held = 0
    writing: asyncio.Task[None] | None = None

    def take() -> tuple[list[bytes], int]:
        nonlocal pieces, held
        taken = pieces, held
        pieces, held = [], 0
        return taken

    try:
        while offset + held < end:
            data = await response.content.readany()
            if not data:
                break
            if len(data) > end - offset - held:  # a body longer than the range asked for
                data = data[: end - offset - held]
            pieces.append(data)
            held += len(data)
            if held >= CHUNK:
                if (pacer := fill.pacer_now()) is not None:
                    await pacer.spend(held)  # a background fill: within its bandwidth budget
                if writing is not None:
                    await writing
                    if head and fill.contiguous > offset:
                        return end
                chunks, length = take()
                writing = asyncio.create_task(fill.write_chunks_at(offset, chunks))
                offset += length
    except (aiohttp.ClientError, TimeoutError):
        if writing is not None:
            await writing
        if pieces:
            await fill.write_chunks_at(offset, take()[0])
        raise
    except BaseException:
        if writing is not None:
            writing.cancel()
        raise
    if writing is not None:
        await writing
    if pieces:
        chunks, length = take()
        await fill.write_chunks_at(offset, chunks)
        offset += length
    return offset


def landed_until(fill: Fill, offset: int, end: int) -> int:
    """The first byte at or after ``offset`` not yet in ``fill`` (``end`` if all of it is)."""
    for gap_start, gap_end in fill.missing():
        if gap_end > offset:
            return min(max(offset, gap_start), end)
    return end


class RangesIgnored(ImgaccelError):
    """The origin answered a range request with the whole blob (a 200): HTTP allows it."""


class OriginFetch:
    """Fill a blob from the origin, given the already-open first response (status 200)."""

    def __init__(
        self,
        client: UpstreamClient,
        location: BlobLocation,
        fill: Fill,
        settings: UpstreamClientSettings,
    ) -> None:
        self.client = client
        self.location = location
        self.fill = fill
        self.settings = settings

    async def run(self, first: aiohttp.ClientResponse | None, ranges_ok: bool) -> None:
        """Fetch every missing byte. ``first`` is a 200 response positioned at byte 0.

        A big blob streams on one connection first, so clients get its bytes in order at full
        speed; only if it is not done after ``parallel_after_seconds`` (a slow link, a far
        origin) do parallel range requests take the rest, while the first connection goes on
        until it reaches bytes they landed.
        """
        gaps = self.fill.missing()
        size = self.fill.size
        parallel = (
            ranges_ok
            and self.settings.parallel_ranges > 1
            and size >= self.settings.parallel_threshold_bytes
            and gaps == [(0, size)]
        )
        try:
            async with asyncio.TaskGroup() as group:
                if parallel:
                    head = group.create_task(
                        self.part(0, size, first, head=True), name="fetch-head"
                    )
                    group.create_task(self._widen(head), name="fetch-widen")
                    return
                # After the swarm stalled, the gaps are those between the pieces peers
                # delivered: however many there are, at most parallel_ranges requests at once.
                slots = asyncio.Semaphore(max(1, self.settings.parallel_ranges))
                for number, (start, end) in enumerate(gaps):
                    opened = first if number == 0 and start == 0 else None
                    group.create_task(self._gap(slots, start, end, opened), name=f"fetch-{start}")
        except* RangesIgnored:
            log.warning(
                "blob %s: the origin ignores Range; fetching the whole blob", self.location.digest
            )
            await self._whole()

    async def _whole(self) -> None:
        """The whole blob on one plain GET, for an origin that ignores Range (no resuming):
        bytes already hashed are not written again (Fill.store), the rest are the same bytes."""
        for attempt in range(self.settings.retries + 1):
            try:
                async with self.client.open(
                    "GET",
                    self.location.registry,
                    self.location.repo,
                    self.location.path,
                    client_auth=self.location.client_auth,
                    kind="blob",
                ) as answer:
                    if answer.status != 200:
                        raise UpstreamStatus(answer.status, "the blob's GET was refused")
                    reached = await copy_body(answer.response, self.fill, 0, self.fill.size)
                if reached == self.fill.size:
                    return
                raise UpstreamError(f"the body ended at byte {reached} of {self.fill.size}")
            except (aiohttp.ClientError, TimeoutError, UpstreamError) as exc:
                if attempt == self.settings.retries:
                    raise UpstreamError(f"fetching {self.location.digest} failed: {exc}") from exc
                await asyncio.sleep(self.settings.backoff_seconds * 2**attempt)

    async def _gap(
        self, slots: asyncio.Semaphore, start: int, end: int, opened: aiohttp.ClientResponse | None
    ) -> None:
        async with slots:
            await self.part(start, end, opened)

    async def _widen(self, head: asyncio.Task[None]) -> None:
        """Fetch the rest of the blob with parallel range requests once the one connection
        has shown itself to be the limit: slower than ``parallel_below_bytes_per_second`` over
        a period of ``parallel_after_seconds``, while the clients reading the blob (if any)
        waited for it.

        A client that reads slower than the one connection brings the bytes (a runtime busy
        writing and hashing what it gets, on a CPU the node shares) would not get them any
        sooner from more connections, which would only take CPU from it (seen in the cold `ctr`
        pull of scripts/bench-node on a busy machine: the two big layers widened while
        containerd read them at a third of the speed the one connection brought them). The check
        repeats each period until the head is done or near the end.
        """
        waited = self.settings.parallel_after_seconds
        landed, starved = 0, self.fill.starved_seconds
        while True:
            await asyncio.wait([head], timeout=waited)
            start = self.fill.contiguous
            if head.done() or self.fill.size - start < self.settings.parallel_threshold_bytes // 2:
                return
            rate = (start - landed) / waited if waited else 0.0
            readers_waited = self.fill.starved_seconds - starved
            # A fast connection stays alone: more would only compete for the same link and CPU.
            if rate < self.settings.parallel_below_bytes_per_second and (
                self.fill.readers == 0 or readers_waited >= READERS_WAITING * waited
            ):
                break
            landed, starved = start, self.fill.starved_seconds
        segments = split(start, self.fill.size, self.settings.parallel_ranges)
        log.info(
            "blob %s: adding %d range requests (one connection brought %.1f MB/s)",
            self.location.digest,
            len(segments) - 1,
            rate / 1e6,
        )
        async with asyncio.TaskGroup() as group:
            for seg_start, seg_end in segments[1:]:
                group.create_task(self.part(seg_start, seg_end, None), name=f"fetch-{seg_start}")

    async def part(
        self, start: int, end: int, opened: aiohttp.ClientResponse | None, *, head: bool = False
    ) -> None:
        offset, failures, delay = start, 0, self.settings.backoff_seconds
        while offset < end:
            try:
                if opened is not None:
                    response, opened = opened, None
                    offset = await copy_body(
                        response, self.fill, offset, end, head=head, off_socket=self._off_socket
                    )
                    response.release()
                else:
                    reached = await self._range(offset, end, head=head)
                    if reached == offset:
                        raise UpstreamError(f"the origin sent no bytes from byte {offset}")
                    offset = reached
                continue
            except (aiohttp.ClientError, TimeoutError, UpstreamError) as exc:
                # copy_body kept what arrived: resume after it, not from where this try began.
                offset = landed_until(self.fill, offset, end)
                failures += 1
                if failures > self.settings.retries:
                    raise UpstreamError(
                        f"fetching {self.location.digest} failed at byte {offset}: {exc}"
                    ) from exc
                log.info(
                    "blob %s: resuming at byte %d after %s",
                    self.location.digest,
                    offset,
                    exc.__class__.__name__,
                )
            await asyncio.sleep(delay)
            delay *= 2

    async def _range(self, offset: int, end: int, *, head: bool = False) -> int:
        headers = {"Range": f"bytes={offset}-{end - 1}"}
        async with self.client.open(
            "GET",
            self.location.registry,
            self.location.repo,
            self.location.path,
            client_auth=self.location.client_auth,
            headers=headers,
            kind="blob-range",
        ) as answer:
            if answer.status == 200:
                raise RangesIgnored(f"the origin answered bytes={offset}- with the whole blob")
            if answer.status != 206:
                raise UpstreamStatus(answer.status, "range request not honoured")
            return await copy_body(
                answer.response, self.fill, offset, end, head=head, off_socket=self._off_socket
            )

    @property
    def _off_socket(self) -> OffSocket | None:
        if not self.settings.socket_bodies:
            return None
        return OffSocket(
            self.settings.read_timeout_seconds,
            self.settings.socket_body_min_bytes,
            self.settings.connect_timeout_seconds,
            self.settings.tls_body_min_bytes,
            functools.partial(self.client.proxy_for, self.location.registry),
        )
