"""One torrent in a swarm: its verified pieces as they land in its file.

libtorrent writes into the cache fill's own file, and :meth:`Download.land` reports a piece once
it has been hash-checked *and* a ``flush_cache`` round trip has put its bytes in the file.
Without the flush, a piece can be reported finished before its bytes reach the file with the
default disk back-end (measured: 18-60 of 256 pieces read wrong right after
``piece_finished_alert``).

The download itself is *not* sequential: the fill hands its contiguous prefix on in order, and
libtorrent fetches by the piece shares of :mod:`imgaccel.p2p.shares`, each downloader its own
share front to back, a window at a time, everything else rarest-first. When every peer fetches
strictly in order they all want the same piece from the same seeder, and sharing collapses
(measured: the seeder uploaded 3.98 of 4.3 GB to 4 sequential downloaders, 2.3 GB
rarest-first). Deadlines on a window of pieces just ahead of the reader have the same flaw on a
smaller scale: in `scripts/bench --scenarios imgaccel-warm` (4 nodes, one of them warm) pulls
took 23-24 s with an 8 MiB window and 20.5-22 s without one. The shares' window orders the
pieces each downloader asks the *seeds* for, which no other downloader asks them for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import libtorrent as lt

from imgaccel.p2p.calls import BlockingCalls
from imgaccel.p2p.errors import NoPeers, SwarmStalled, TorrentFailed
from imgaccel.p2p.metainfo import Metainfo
from imgaccel.p2p.shares import Shares

log = logging.getLogger(__name__)

#: How long a flush or a pause may take libtorrent's disk thread (local disk I/O).
DISK_TIMEOUT = 30.0
#: Payload bytes (a block) that count as progress for the stall check, verified or not: a piece
#: of a blob that shares a slow link with others can take longer than the stall time to complete.
PROGRESS_BYTES = 16 * 1024
#: The longest a landing waits for the tracker's first answer before the no-peers grace runs
#: (until the tracker has said who holds the blob, having no peer says nothing): a tracker
#: busy with a whole cluster's announces at a scale-out answers in seconds, not milliseconds.
ANNOUNCE_WAIT = 15.0
#: The least time between two flushes of a landing download: a flush also closes the torrent's
#: file handles, so one per piece would reopen the file for every write and upload.
FLUSH_INTERVAL = 0.1


class Download:
    """A torrent of a :class:`~imgaccel.p2p.swarm.Swarm`; made by ``Swarm.download``/``seed``."""

    def __init__(
        self,
        handle: Any,
        metainfo: Metainfo,
        path: Path,
        *,
        stall_seconds: float,
        no_peers_grace: float,
        calls: BlockingCalls,
    ) -> None:
        self.metainfo = metainfo
        self.path = path
        self._handle = handle
        self._calls = calls  # the swarm's: its close waits for a poll still in a thread
        self._stall_seconds = stall_seconds
        self._no_peers_grace = min(no_peers_grace, stall_seconds)
        self._tick = min(0.25, stall_seconds / 4)
        self._last_progress = time.monotonic()
        self._changed = asyncio.Event()
        self._finished: list[int] = []  # pieces verified since land() last took them
        self._flushes: list[asyncio.Future[None]] = []  # flush_cache calls, oldest first
        self._paused: asyncio.Future[None] | None = None
        self._answered = metainfo.announce is None  # no tracker: peers come from add_peer
        self._failure: str | None = None
        self.unsubscribe: Callable[[], None] = lambda: None
        self.shares: Shares | None = None  # set by the swarm for a torrent it downloads

    @property
    def infohash(self) -> str:
        return self.metainfo.infohash

    @property
    def handle(self) -> Any:
        """The ``lt.torrent_handle`` (for callers that need what this class does not offer)."""
        return self._handle

    def is_complete(self) -> bool:
        return bool(self._handle.status().is_seeding)

    async def land(self) -> AsyncIterator[list[int]]:
        """Batches of pieces that libtorrent has verified *and written to its file*, until every
        piece has landed: a caller may read them from :attr:`path` (a fill that shares the file).

        A piece reported finished may still sit in the disk back-end's buffers (see the module
        docstring); each batch is yielded after a ``flush_cache`` round trip, which returns once
        the pieces finished before it are in the file (measured: 0 of 3 072 wrong, against
        18-50 of 1 024 read right after ``piece_finished_alert``). Raises
        :class:`SwarmStalled` when less than a block (``PROGRESS_BYTES``) came from peers for
        ``stall_seconds``, verified or not, :class:`NoPeers` when not one peer was connected
        for the grace period once the tracker answered (``ANNOUNCE_WAIT`` at most), and
        :class:`TorrentFailed` when the torrent errs or is removed; what landed before stays
        landed.
        """
        clock = _Clock(time.monotonic())
        landed = [False] * self.metainfo.num_pieces
        remaining = len(landed)
        self._finished = self.pieces_had()  # a torrent added earlier may have some already
        last_flush = 0.0
        while remaining:
            if self._finished and (wait := last_flush + FLUSH_INTERVAL - time.monotonic()) > 0:
                await asyncio.sleep(wait)  # let more pieces finish: one flush for them all
            batch = [index for index in self._take_finished() if not landed[index]]
            if not batch:
                changed = self._changed  # before the check: a piece may finish during it
                await self._check(clock)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._tick):
                        await changed.wait()
                continue
            await self._flush()
            last_flush = time.monotonic()
            for index in batch:
                landed[index] = True
            remaining -= len(batch)
            yield batch

    def _take_finished(self) -> list[int]:
        taken, self._finished = self._finished, []
        return taken

    async def _flush(self) -> None:
        """Return once every piece finished so far is in the file."""
        if self._failure is not None:
            raise TorrentFailed(self._failure)
        flushed = asyncio.get_running_loop().create_future()
        self._flushes.append(flushed)
        try:
            self._handle.flush_cache()
        except RuntimeError as exc:  # libtorrent: the handle went invalid (removed)
            raise TorrentFailed(str(exc)) from exc
        try:
            async with asyncio.timeout(DISK_TIMEOUT):
                await flushed
        except TimeoutError:
            raise TorrentFailed("flushing the torrent's pieces to disk timed out") from None

    async def stop_writing(self) -> None:
        """Pause the torrent and return once libtorrent's disk I/O for it is over and its file
        closed (``torrent_paused_alert``): from then on nothing of libtorrent writes to the
        file, so another writer may fill its gaps, or it may be renamed."""
        if self._failure is not None:
            return
        if self._paused is None:  # the first call asks; later ones wait for the same answer
            self._paused = asyncio.get_running_loop().create_future()
            try:
                self._handle.pause()
            except RuntimeError:  # removed already: nothing writes any more
                return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(DISK_TIMEOUT):
                await self._paused
        if not self._paused.done():
            raise TorrentFailed("libtorrent did not finish its disk I/O for the torrent")

    def pieces_had(self) -> list[int]:
        """The pieces libtorrent has verified, in order (one call into libtorrent)."""
        if self._failure is not None:
            return []
        try:
            have = self._handle.status(lt.status_flags_t.query_pieces).pieces
        except RuntimeError:  # the handle went invalid (removed)
            return []
        return [index for index, had in enumerate(have) if had]

    async def _check(self, clock: _Clock) -> None:
        """Raise if the landing should give up on the swarm (asking libtorrent at most once
        per tick, in a worker thread: the status is a round trip to its network thread)."""
        now = time.monotonic()
        if self._failure is not None:
            raise TorrentFailed(self._failure)
        if now - clock.checked < self._tick:
            return
        clock.checked = now
        try:
            status = await self._calls.run(self._handle.status)
        except RuntimeError:  # libtorrent: the handle went invalid (removed meanwhile)
            status = None
        if status is None or self._failure is not None:  # failed while libtorrent answered
            raise TorrentFailed(self._failure or "torrent removed")
        if not self._answered and now - clock.started < ANNOUNCE_WAIT:
            clock.peer_seen = self._last_progress = now  # who holds it is not known yet
        elif status.num_peers > 0:
            clock.peer_seen = now
        elif now - clock.peer_seen > self._no_peers_grace:
            raise NoPeers(f"{self.infohash}: no peers")
        if (received := int(status.total_payload_download)) - clock.received >= PROGRESS_BYTES:
            clock.received = received
            self._last_progress = now
        if now - max(self._last_progress, clock.started) > self._stall_seconds:
            raise SwarmStalled(f"{self.infohash}: no data from peers for {self._stall_seconds}s")

    def on_alert(self, alert: Any) -> None:
        """The pump's subscriber for this torrent."""
        if isinstance(alert, lt.piece_finished_alert):
            self._last_progress = time.monotonic()
            self._finished.append(int(alert.piece_index))
            self._notify()
        elif isinstance(alert, lt.tracker_reply_alert | lt.tracker_error_alert):
            self._answered = True  # the tracker said who holds it, or that it cannot
        elif isinstance(alert, lt.cache_flushed_alert):
            if self._flushes:
                _resolve(self._flushes.pop(0))
        elif isinstance(alert, lt.torrent_paused_alert):
            if self._paused is not None:
                _resolve(self._paused)
        elif isinstance(alert, lt.torrent_removed_alert):
            # Alerts come by infohash: a torrent of the same blob removed just before this one
            # was added (a stale download replaced) reports its removal late, to this one.
            if alert.handle == self._handle:
                self.fail("torrent removed")
        elif isinstance(alert, lt.torrent_error_alert):
            self.fail(f"torrent error: {alert.message()}")
        elif isinstance(alert, lt.hash_failed_alert):
            log.warning("%s: piece failed its hash check", self.infohash)

    def fail(self, reason: str) -> None:
        """Make the landing raise :class:`TorrentFailed` (removal, shutdown)."""
        self._failure = self._failure or reason
        for flushed in self._flushes:
            _fail(flushed, reason)
        self._flushes.clear()
        if self._paused is not None:
            _resolve(self._paused)  # gone: stop_writing has nothing left to wait for
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _fail(future: asyncio.Future[Any], reason: str) -> None:
    if not future.done():
        future.set_exception(TorrentFailed(reason))
        future.exception()  # retrieved: a future nobody awaits must not warn


class _Clock:
    """When a landing started, last saw a peer and last asked libtorrent, and the payload
    bytes it last counted as progress."""

    __slots__ = ("checked", "peer_seen", "received", "started")

    def __init__(self, now: float) -> None:
        self.started = now
        self.peer_seen = now
        self.checked = float("-inf")
        self.received = 0
