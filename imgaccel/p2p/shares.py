"""Piece shares: a blob's holders send each piece once; its downloaders trade the rest.

With libtorrent's own piece picking a lone seed sends most pieces two or more times. Every piece
starts with one copy, at the seed; rarest-first sends all downloaders to the seed for the pieces
only it has, each keeps seconds of requests queued there, and they queue the same pieces at once.
With one seed its uplink is the bottleneck, and every second copy is time. Measured with
``scripts/bench-swarm`` (one seed, 3 downloaders, 25 MB/s links): the last downloader finished at
1.96 x S/B_link and the seed sent 1.80 x S.

Piece priorities cannot say "this piece, but not from that peer": libtorrent has no per-peer
piece filter, and a downloader whose own pieces are all requested from the seed fills its queue
there with pieces another downloader already has (traced with ``picker_log_alert``). An earlier
version split the pieces by priority within one torrent and got to 1.41 x, the seed still
sending 1.28 x S. So every blob now has **two torrents** over the same file:

- the *holders' torrent*, the one the tracker publishes, seeded by every node whose cache holds
  the verified blob;
- the *trading torrent* (:func:`trading`: the same pieces under another name, hence another
  infohash), joined only by the nodes downloading the blob, and for a while by those that have
  just finished it (:meth:`imgaccel.p2p.swarm.Swarm.linger`).

A downloader joins both, libtorrent writing into one file. It splits the pieces among the
downloaders it sees in the trading torrent (itself and every peer there that is not a seed, by
IP address, sorted: the same split on every host) and asks the holders only for the pieces of
its own share that no trader offers; in the trading torrent it takes any piece. A piece that
comes from the holders is handed to the trading torrent (``add_piece``,
:class:`imgaccel.p2p.exchange.Exchange`), where the others take it. Same bench: the seed sends
1.00 x S.

A share nobody delivers (its owner is slow, or left and the others have not seen it go) must not
stall the download: when a downloader has nothing to ask of the holders and its trading torrent
made no progress for ``release_seconds``, it drops its shares and asks the holders for every
piece it lacks. With as many seeds as downloaders, or no other downloader, every piece is its
own (libtorrent's picking among the holders).

Hosts that share one IP address (all nodes on loopback) see one member each: every piece is
theirs. libtorrent must keep connections that have nothing to send (``close_redundant_connections``
off), or a downloader that owns nothing the holders have left would close its connections to them.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import libtorrent as lt

from imgaccel.p2p.metainfo import Metainfo

TOP_PRIORITY = 7
DEFAULT_PRIORITY = 4
SKIP = 0
#: The name suffix that makes a blob's trading torrent (another infohash, the same pieces).
TRADE_SUFFIX = ".trade"
#: How long a new download waits for its first trading peer before it takes itself for the only
#: downloader and asks the holders for everything (requests queued at a holder in that time
#: would be sent twice if other downloaders turn up).
JOIN_SECONDS = 0.5
_NOT_YET = lt.peer_info.connecting | lt.peer_info.handshake


def trading(metainfo: Metainfo) -> Metainfo:
    """The trading torrent of the blob ``metainfo`` publishes (no announce URL of its own: the
    caller sets the tracker's)."""
    return replace(metainfo, name=metainfo.name + TRADE_SUFFIX)


def owners(members: Sequence[str], pieces: int, infohash: str) -> list[str]:
    """The member that fetches each piece from the holders: round-robin over the sorted
    members, starting at a place the infohash picks (so small blobs do not all go to the first
    one)."""
    ordered = sorted(set(members))
    start = int.from_bytes(hashlib.sha256(infohash.encode()).digest()[:4], "big")
    return [ordered[(start + index) % len(ordered)] for index in range(pieces)]


def holder_priorities(
    have: Sequence[bool], offered: Sequence[int], own: Sequence[bool] | None, released: bool
) -> list[int]:
    """Priorities in the holders' torrent: a piece already here, or offered by a trader (the
    trading torrent's ``piece_availability``), is not asked of the holders; of the rest, only
    the own share (``own`` None: every piece). Released: every piece not here yet."""
    return [
        SKIP
        if had
        else DEFAULT_PRIORITY
        if released
        else SKIP
        if traded
        else TOP_PRIORITY
        if own is None or own[index]
        else SKIP
        for index, (had, traded) in enumerate(zip(have, offered, strict=True))
    ]


def _local_ip(peer: Any) -> str:
    """This host's address on a connection (a method in some libtorrent bindings, an attribute
    in others)."""
    endpoint = peer.local_endpoint
    return str((endpoint() if callable(endpoint) else endpoint)[0])


def _connected(handle: Any) -> list[Any]:
    return [p for p in handle.get_peer_info() if not p.flags & _NOT_YET]


class Shares:
    """The share-keeping of one download; :meth:`update` runs a few times a second."""

    def __init__(
        self,
        infohash: str,
        pieces: int,
        release_seconds: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.infohash = infohash
        self.pieces = pieces
        self.release_seconds = release_seconds
        self.released = False
        self._clock = clock
        self._started = clock()
        self._members: tuple[str, ...] = ()
        self._owner_of: list[str] = []
        self._applied: list[int] | None = None
        self._progress = (-1, clock())  # the trading torrent's piece count, and since when

    def update(self, holders: Any, traders: Any) -> None:
        """Set the priorities of ``holders`` (the holders' torrent's handle) for the peers
        ``traders`` (the trading torrent's) is connected to now."""
        status = traders.status(lt.status_flags_t.query_pieces)
        if status.is_seeding:
            return
        have = list(status.pieces)
        offered = traders.piece_availability()
        if len(have) != self.pieces or len(offered) != self.pieces:
            return  # libtorrent lists none once the torrent completed
        trade_peers = _connected(traders)
        hold_peers = _connected(holders)
        if not self.released and self._idle(status.num_pieces, holders.status().is_finished):
            self.released = True
        me = next((_local_ip(p) for p in (*trade_peers, *hold_peers)), None)
        downloaders = {p.ip[0] for p in trade_peers if not p.flags & lt.peer_info.seed}
        seeds = sum(1 for p in hold_peers if p.flags & lt.peer_info.seed)
        own: list[bool] | None = None
        if me is None or not downloaders - {me}:
            if not trade_peers and self._clock() - self._started < JOIN_SECONDS:
                own = [False] * self.pieces  # others may be about to show up
        elif seeds < len(downloaders | {me}):
            members = tuple(sorted(downloaders | {me}))
            if members != self._members:
                self._members = members
                self._owner_of = owners(members, self.pieces, self.infohash)
            own = [owner == me for owner in self._owner_of]
        self._apply(holders, holder_priorities(have, offered, own, self.released))

    def release(self, holders: Any) -> None:
        """Give up the shares for good: ask the holders for any piece."""
        self.released = True
        self._apply(holders, [DEFAULT_PRIORITY] * self.pieces)

    def _idle(self, traded: int, holders_done: bool) -> bool:
        """Nothing to ask of the holders, and no piece came in for ``release_seconds``."""
        now = self._clock()
        if traded != self._progress[0] or not holders_done:
            self._progress = (traded, now)
            return False
        return now - self._progress[1] >= self.release_seconds

    def _apply(self, holders: Any, wanted: list[int]) -> None:
        if wanted != self._applied:
            self._applied = wanted
            holders.prioritize_pieces(wanted)
