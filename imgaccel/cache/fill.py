"""A blob being written into the cache while clients read it.

A :class:`Fill` owns one temp file. Writers (an origin stream, several parallel range requests,
or a peer-to-peer download) put bytes at offsets with :meth:`Fill.write_at`; the fill tracks the
contiguous prefix that has landed and a hashing loop reads that prefix back in order, feeding the
blob's hash and any observers (the P2P piece hasher). Readers stream the prefix as it grows.

Writers may be threads (:meth:`Fill.store`, then :meth:`Fill.arrived` on the loop): the hash
state is guarded by a thread lock, so a writer thread hashes the bytes it writes in order in the
same pass, and the hashing loop reads back only what landed out of order.

The last byte of the blob is withheld from every reader until the whole blob has been verified
against its digest. On a mismatch nothing enters the cache and every reader's stream is aborted,
so the runtime never completes a blob that failed verification.

Before anyone reads it, the owner has the fill take the disk blocks of the whole blob
(:meth:`Fill.preallocate`, see :mod:`imgaccel.cache.space`): a full disk then refuses the fill
before its first byte, not halfway through a client's body.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Protocol

from imgaccel.cache import space, writeback
from imgaccel.errors import CacheFull, DigestMismatch, ImgaccelError
from imgaccel.oci.digest import Digest

log = logging.getLogger(__name__)

CHUNK = 1 << 20
IOV_MAX = 1024  # buffers per pwritev (Linux's UIO_MAXIOV)

#: What writers hand over: the buffers as they came off a socket.
Buffer = bytes | bytearray | memoryview

#: Sees every byte of the blob once, in order, during the hashing pass (attach it before the
#: first write; the view is only valid during the call).
Observer = Callable[[memoryview], None]


class Pacer(Protocol):
    """A bandwidth budget a background fill spends as its bytes arrive (a token bucket)."""

    rate: int  # bytes per second; 0: no limit

    async def spend(self, nbytes: int) -> None: ...


class FillFailed(ImgaccelError):
    """The fill was abandoned; readers must abort their responses."""


class Fill:
    """One blob on its way into the cache (see the module docstring)."""

    def __init__(self, digest: Digest, temp: Path, size: int) -> None:
        self.digest = digest
        self.temp = temp
        self.size = size
        self.fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        self.preallocated = False  # set by preallocate: no write of the blob runs out of space
        self.contiguous = 0
        self.verified = False
        self.committed = False  # set by the owner once the file was renamed into the store
        self.not_kept: CacheFull | None = None  # set by the owner: why it will not commit
        self.error: BaseException | None = None
        self.observers: list[Observer] = []
        self.bytes_from: dict[str, int] = {}  # bytes written by source ("origin", "peer")
        self._extents: list[tuple[int, int]] = []  # landed ranges beyond the prefix, sorted
        self._changed = asyncio.Condition()
        # Guards _hashed, _hasher and _unsynced, used by writer and hashing threads.
        self._hash_guard = threading.Lock()
        self._hashed = 0
        self._hasher = digest.hasher()
        self._unsynced = 0  # bytes written since writeback was last started
        self._users = 1  # the writer side; readers add themselves
        self.readers = 0  # streams reading the fill now
        self._starved = 0.0  # see starved_seconds
        self._starving = 0  # readers waiting for bytes now
        self._starved_mark = time.monotonic()
        self.pacer: Pacer | None = None  # set for a background fill (see pacer_now)
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # -- writer side ----------------------------------------------------------------------------

    async def preallocate(self) -> bool:
        """Take the disk blocks of the whole blob before anything is written (in a thread): True
        when taken (or the blob is empty), False when the filesystem cannot preallocate. Raises
        OSError when it can but will not, with an errno of :data:`space.NO_SPACE` on a full disk
        (blocks taken before it failed are freed with the file)."""
        self.preallocated = await asyncio.to_thread(space.preallocate, self.fd, self.size)
        return self.preallocated

    @property
    def unallocated_bytes(self) -> int:
        """Bytes this fill will still add to the disk: none once preallocated, else those of
        the blob that have not landed."""
        if self.preallocated or self.closed:
            return 0
        return sum(end - start for start, end in self.missing())

    async def write_at(self, offset: int, data: Buffer, source: str = "origin") -> None:
        """Store ``data`` at ``offset`` (in a thread) and wake readers if the prefix grew."""
        await self.write_chunks_at(offset, [data], source)

    async def write_chunks_at(
        self, offset: int, chunks: Sequence[Buffer], source: str = "origin"
    ) -> None:
        """Store ``chunks``, one after the other, from ``offset`` (in a thread; see :meth:`store`)
        and wake readers if the prefix grew."""
        length = sum(len(chunk) for chunk in chunks)
        self._check_range(offset, offset + length)
        await asyncio.to_thread(self.store, chunks, offset)
        await self.arrived(offset, offset + length, source)

    async def land(self, start: int, end: int, source: str) -> None:
        """Bytes ``[start, end)`` were written into :attr:`temp` by another writer of the same
        file (libtorrent, which downloads straight into it) and are on disk: take them as if
        written here. The caller says each range once."""
        self._check_range(start, end)
        with self._hash_guard:
            due = self._writeback_due(end - start)
        if due:
            await asyncio.to_thread(writeback.start_writeback, self.fd)
        await self.arrived(start, end, source)

    def _check_range(self, start: int, end: int) -> None:
        if self.error is not None:
            raise FillFailed(str(self.error))
        if not 0 <= start <= end <= self.size:
            raise FillFailed(f"bytes {start}-{end} are outside the blob's {self.size} bytes")

    async def arrived(self, start: int, end: int, source: str) -> None:
        """Count bytes ``[start, end)`` that are now in the file (written with :meth:`store`),
        and wake the readers."""
        self._check_range(start, end)
        self.bytes_from[source] = self.bytes_from.get(source, 0) + end - start
        self._land(start, end)
        async with self._changed:
            self._changed.notify_all()

    def _writeback_due(self, nbytes: int) -> bool:
        """Count ``nbytes`` more in the file; True every :data:`writeback.EVERY` bytes
        (called with the hash guard held)."""
        self._unsynced += nbytes
        if self._unsynced < writeback.EVERY:
            return False
        self._unsynced = 0
        return True

    def _land(self, start: int, end: int) -> None:
        if start > self.contiguous:
            self._extents.append((start, end))
            self._extents.sort()
            return
        self.contiguous = max(self.contiguous, end)
        while self._extents and self._extents[0][0] <= self.contiguous:
            self.contiguous = max(self.contiguous, self._extents.pop(0)[1])

    def missing(self) -> list[tuple[int, int]]:
        """Byte ranges not landed yet (``end`` exclusive), for resuming after an error."""
        gaps, cursor = [], self.contiguous
        for start, end in self._extents:
            if start > cursor:
                gaps.append((cursor, start))
            cursor = max(cursor, end)
        if cursor < self.size:
            gaps.append((cursor, self.size))
        return gaps

    async def verify(self) -> None:
        """Hash the whole blob in order; raise :class:`DigestMismatch` if it is not ``digest``.

        Called by the writer when every byte has landed. Observers see every byte once, in order.
        """
        await self.hash_prefix()
        if self._hashed != self.size or self._hasher.hexdigest() != self.digest.hex:
            raise DigestMismatch(f"blob {self.digest} did not verify; nothing was cached")

    async def hash_prefix(self) -> None:
        """Hash what has landed so far, so that :meth:`verify` has little left to do at the end."""
        # Bytes written in order were hashed on their way to disk: then there is nothing to read
        # back, and no thread hop to make for every MiB that lands (_hash_landed checks again).
        if self.contiguous > self._hashed:
            await asyncio.to_thread(self._hash_landed)

    def _hash_landed(self) -> None:
        """Read back and hash the landed prefix past what the writers hashed (a worker thread;
        :attr:`contiguous` only grows, and what it covers is in the file)."""
        while True:
            with self._hash_guard:  # per chunk: writers wait for one MiB at most
                if self._hashed >= self.contiguous:
                    return
                n = min(CHUNK, self.contiguous - self._hashed)
                data = os.pread(self.fd, n, self._hashed)
                if not data:
                    raise FillFailed("blob file shrank while being hashed")
                self._feed(data)
                self._hashed += len(data)

    def store(self, chunks: Sequence[Buffer], offset: int) -> None:
        """Write ``chunks`` at ``offset`` with one ``pwritev`` (buffers as they came off the
        socket, never joined: a copy of every byte costs CPU the runtime needs too). Bytes that
        continue the hashed prefix, the usual in-order stream, are hashed in the same pass instead
        of being read back. Every few MB their writeback to disk starts, so that the commit's
        fsync has little left to wait for. Blocking, for any thread; the caller then tells the
        loop with :meth:`arrived`.

        Bytes the hash already covers are never written again: a second writer of the same range
        (a widened fetch's range request meeting the head, a peer) would otherwise put bytes in
        the file that the digest was not checked against. The write happens under the hash
        guard, so no writer can hash a range while another is overwriting it."""
        with self._hash_guard:
            if (covered := self._hashed - offset) > 0:
                chunks, offset = _drop_front(chunks, covered), self._hashed
            length = _pwritev_all(self.fd, chunks, offset)
            if offset == self._hashed:
                for chunk in chunks:
                    self._feed(chunk)
                self._hashed += length
            due = self._writeback_due(length)
        if due:
            writeback.start_writeback(self.fd)

    def _feed(self, data: Buffer) -> None:
        """Hash ``data`` and show it to the observers (a worker thread, with the guard held)."""
        self._hasher.update(data)
        view = memoryview(data)
        for observe in self.observers:
            observe(view)

    def pacer_now(self) -> Pacer | None:
        """The budget the writers must keep to now: the fill's pacer while nobody reads it.
        A client that joins a background fill gets the bytes at full speed."""
        if self.pacer is None or self.readers or not self.pacer.rate:
            return None
        return self.pacer

    @property
    def source(self) -> str:
        """Where most of the bytes came from: "origin" or "peer"."""
        return max(self.bytes_from, key=lambda name: self.bytes_from[name], default="origin")

    async def hash_while_filling(self) -> None:
        """Keep hashing the prefix as it grows, until the fill ends (a task of the writer)."""
        while not self.done.done():
            await self.hash_prefix()
            async with self._changed:
                # A writer thread hashes what it writes before the loop hears it landed, so
                # the hash may be ahead of the prefix: nothing to do then either.
                if self.contiguous <= self._hashed and self.error is None and not self.verified:
                    await self._changed.wait()

    async def finish(self, error: BaseException | None = None) -> None:
        """End the writer side: success (after :meth:`verify`) or failure (readers abort)."""
        if error is None:
            self.verified = True
        else:
            self.error = error
        async with self._changed:
            self._changed.notify_all()
        if not self.done.done():
            if error is None:
                self.done.set_result(None)
            else:
                self.done.set_exception(FillFailed(str(error)))
                self.done.exception()  # retrieved: readers get the error through read()
        self._drop_user()

    # -- reader side ----------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """The fill ended and every reader left: its file is closed and :meth:`read` fails."""
        return self.fd < 0

    def hold(self) -> None:
        """Keep the file open until :meth:`release`: for a response that will read the fill
        after awaits of its own (the fill may end and its last reader leave meanwhile). Raises
        :class:`FillFailed` if the file is closed already."""
        if self.closed:
            raise FillFailed("the fill is over and its file closed; read the blob from the store")
        self._users += 1

    def release(self) -> None:
        self._drop_user()

    async def read(self, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """Yield bytes ``[start, end)`` as they land; the blob's last byte only once verified."""
        async for offset, limit in self.windows(start, end):
            while offset < limit:
                n = min(CHUNK, limit - offset)
                data = await asyncio.to_thread(os.pread, self.fd, n, offset)
                if not data:
                    raise FillFailed("blob file shrank while being read")
                offset += len(data)
                yield data

    async def windows(
        self, start: int = 0, end: int | None = None
    ) -> AsyncIterator[tuple[int, int]]:
        """Yield ranges ``[a, b)`` of ``[start, end)`` that may be sent, in order, as they land
        (the blob's last byte only once verified). The file (:attr:`fd`) stays open while the
        iteration runs, so a caller can ``sendfile`` each range from it."""
        end = self.size if end is None else end
        if self.closed:
            raise FillFailed("the fill is over and its file closed; read the blob from the store")
        self._users += 1
        self.readers += 1
        try:
            offset = start
            while offset < end:
                limit = await self._readable(offset, end)
                yield offset, limit
                offset = limit
        finally:
            self.readers -= 1
            self._drop_user()

    async def _readable(self, offset: int, end: int) -> int:
        """Wait until bytes past ``offset`` may be handed to a reader; return how far."""
        async with self._changed:
            while True:
                if self.error is not None:
                    raise FillFailed(str(self.error))
                allowed = self.size if self.verified else min(self.contiguous, self.size - 1)
                if allowed > offset:
                    return min(allowed, end)
                self._count_starved(+1)
                try:
                    await self._changed.wait()
                finally:
                    self._count_starved(-1)

    @property
    def starved_seconds(self) -> float:
        """Seconds readers have spent waiting for bytes that had not landed (summed over the
        readers, waits still going on included): how much the fill is what holds them up."""
        self._count_starved(0)
        return self._starved

    def _count_starved(self, change: int) -> None:
        now = time.monotonic()
        self._starved += self._starving * (now - self._starved_mark)
        self._starved_mark = now
        self._starving += change

    def _drop_user(self) -> None:
        self._users -= 1
        if self._users == 0 and self.fd >= 0:
            # Closed once: a second os.close could close whatever reused the descriptor number.
            os.close(self.fd)
            self.fd = -1
            if not self.committed:
                self.temp.unlink(missing_ok=True)


def _drop_front(chunks: Sequence[Buffer], nbytes: int) -> list[memoryview]:
    """``chunks`` without their first ``nbytes`` bytes (views, no copy)."""
    out: list[memoryview] = []
    for chunk in chunks:
        view = memoryview(chunk)
        if nbytes >= len(view):
            nbytes -= len(view)
            continue
        out.append(view[nbytes:])
        nbytes = 0
    return out


def _pwritev_all(fd: int, chunks: Sequence[Buffer], offset: int) -> int:
    """``pwritev`` every byte of ``chunks`` at ``offset``, continuing after a short write;
    returns how many bytes that was."""
    views = [memoryview(chunk) for chunk in chunks if chunk]
    total = sum(len(view) for view in views)
    while views:
        written = os.pwritev(fd, views[:IOV_MAX], offset)
        if written <= 0:
            raise OSError(f"pwritev wrote {written} bytes")
        offset += written
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if written:
            views[0] = views[0][written:]
    return total
