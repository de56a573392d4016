"""Downloading one blob through its holders' torrent and its trading torrent at once.

Both torrents write into the same file (see :mod:`imgaccel.p2p.shares` for why there are two).
The trading torrent is the one that ends with every piece: a piece that comes from the holders
is read back from the file once it has landed there and handed to the trading torrent with
``add_piece`` (libtorrent checks its hash again and announces it to the other traders). So only
the holders' share of the blob, 1/K of it with K downloaders, is written twice; the rest comes
straight from the traders.

To its caller an :class:`Exchange` is a :class:`~imgaccel.p2p.download.Download`: the pieces
the trading torrent verified and wrote, as they land, with the same stall and no-peers checks
(the holders' peers count as peers).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from imgaccel.p2p.download import Download
from imgaccel.p2p.errors import P2PError
from imgaccel.p2p.metainfo import Metainfo
from imgaccel.p2p.shares import Shares

log = logging.getLogger(__name__)


class Exchange:
    """One download as a pair of torrents; made by ``Swarm.download_to``."""

    def __init__(self, holders: Download, traders: Download, shares: Shares) -> None:
        self.holders = holders
        self.traders = traders
        self.shares: Shares | None = shares
        traders.partner = holders
        self._feeding: asyncio.Task[None] | None = asyncio.create_task(
            self._feed(), name=f"feed-{holders.infohash}"
        )

    @property
    def metainfo(self) -> Metainfo:
        """The blob's published metainfo (the holders' torrent)."""
        return self.holders.metainfo

    @property
    def infohash(self) -> str:
        return self.holders.infohash

    @property
    def path(self) -> Path:
        return self.traders.path

    def is_complete(self) -> bool:
        return self.traders.is_complete()

    def set_download_limit(self, limit: int) -> None:
        """Bytes/s for both torrents together (0: none), half each."""
        each = -(-limit // 2)
        self.holders.set_download_limit(each)
        self.traders.set_download_limit(each)

    async def land(self, *, watch: bool = True) -> AsyncIterator[list[int]]:
        """What :meth:`Download.land` yields, for the blob as a whole."""
        async for batch in self.traders.land(watch=watch):
            yield batch

    async def _feed(self) -> None:
        """Hand every piece the holders' torrent lands to the trading torrent."""
        metainfo = self.metainfo
        try:
            async for batch in self.holders.land(watch=False):
                with self.path.open("rb") as file:  # libtorrent creates it with the first piece
                    for index in batch:
                        file.seek(index * metainfo.piece_length)
                        data = file.read(metainfo.piece_size(index))
                        self.traders.handle.add_piece(index, data, 0)
        except (P2PError, RuntimeError, OSError) as exc:  # removed, failed: traders go on alone
            log.debug("%s: no more pieces from the holders' torrent: %s", self.infohash, exc)

    async def _stop_feeding(self) -> None:
        feeding, self._feeding = self._feeding, None
        if feeding is not None:
            feeding.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feeding

    async def stop_writing(self) -> None:
        """:meth:`Download.stop_writing` for both torrents."""
        await self._stop_feeding()
        await asyncio.gather(self.holders.stop_writing(), self.traders.stop_writing())

    def pieces_had(self) -> list[int]:
        """The pieces either torrent has verified (both wrote them to the file)."""
        return sorted(set(self.holders.pieces_had()) | set(self.traders.pieces_had()))

    def fail(self, reason: str) -> None:
        """Stop feeding; :meth:`land` raises ``TorrentFailed`` (removal, shutdown)."""
        if self._feeding is not None:
            self._feeding.cancel()
            self._feeding = None
        self.holders.fail(reason)
        self.traders.fail(reason)
