"""Piece shares: each downloader asks the seeds only for its own share of the pieces.

With libtorrent's own piece picking a lone seed sends most pieces two or more times. Every piece
starts with one copy, at the seed; rarest-first sends all downloaders to the seed for the pieces
only it has, each keeps seconds of requests queued there, and they queue the same pieces at once.
With one seed its uplink is the bottleneck, and every second copy is time. Measured with
``scripts/bench-swarm`` (one seed, 3 downloaders, 25 MB/s links): the last downloader finished at
1.96 x S/B_link and the seed sent 1.80 x S. Piece priorities 7 on a shard per downloader changed
nothing (1.95 x, 1.82 x S): libtorrent still queues lower-priority pieces at the seed.

So each downloader here splits the pieces among the downloaders it is connected to (itself and
every peer that is not a seed, by IP address, the same list on every host) and gives the pieces
it does not own priority 0 until some peer other than a seed has them: it does not ask a seed
for a piece of another's share that no downloader has yet, and gets it from that downloader.
Its own share gets the top priority. Same bench: 1.41 x S/B_link, the seed sending 1.28 x S
(7 downloaders: 1.54 x and 1.37 x S, against 2.34 x and 2.22 x S). The seed still sends some
pieces twice: libtorrent requests blocks, and the last blocks of a piece another downloader is
fetching may be asked of the seed too.

**The window** (``p2p.share_window_pieces``, 16 by default; 0 turns the ordering off): a client
is sent a blob in order, so what it can have is the download's in-order prefix, and rarest-first
order leaves that short until the very end (a 138 MB layer reached ``ctr`` 1.3-3.6 s after its
last piece had arrived, ``ctr`` ingesting the whole layer then). With a window each downloader
asks the seeds for its share front to back, a few pieces at a time (the rest of its share after
them, still before any other's piece), and takes the others' pieces near the front before their
later ones; since every downloader does the same, the pieces come free roughly in order
everywhere. Measured in ``scripts/bench --scenarios imgaccel-warm`` (4 nodes): the 138 MB layer
reached ``ctr`` 0-1 s after its last piece instead of 1.3-3.6 s. A downloader alone with the
seeds has no one to share with, and no one to collapse onto the seeds with it: it fetches in
order (libtorrent's sequential download) until another downloader turns up
(``scripts/bench-swarm --downloaders 1``: its client done reading at 1.13 x S/B_link, against
1.60 x in rarest-first order and 1.44 x with the window alone).

A share nobody delivers (its owner is slow, or left and the others have not seen it go) must not
stall the download: when a downloader has nothing left to ask for but is not complete for
``release_seconds``, it drops its shares and takes any piece from anyone, as without them. With
as many seeds as downloaders, or no other downloader, there is nothing to share (and a lone
downloader fetches in order, above).

Hosts that share one IP address (all nodes on loopback) see one member: every piece is theirs,
which is libtorrent's own behaviour. libtorrent must keep connections that have nothing to send
(``close_redundant_connections`` off), or a downloader waiting for a share closes its connection
to the seeds and stops seeing which pieces the others have.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from typing import Any

import libtorrent as lt

TOP_PRIORITY = 7
DEFAULT_PRIORITY = 4
#: Own pieces past the window: picked from the seeds after the window (libtorrent's piece
#: picker ranks priority 3 with one holder before priority 4 with two), never before it.
LATER = 3
#: Another's piece in the part of the blob the window is in: before the others' later pieces
#: (rarest-first alone would take the newest first), after every own piece at the seeds.
FRONT = 5
SKIP = 0
_NOT_YET = lt.peer_info.connecting | lt.peer_info.handshake


def owners(members: Sequence[str], pieces: int, infohash: str) -> list[str]:
    """The member that fetches each piece from the seeds: round-robin over the sorted members,
    starting at a place the infohash picks (so small blobs do not all go to the first one)."""
    ordered = sorted(set(members))
    start = int.from_bytes(hashlib.sha256(infohash.encode()).digest()[:4], "big")
    return [ordered[(start + index) % len(ordered)] for index in range(pieces)]


def priorities(
    owner_of: Sequence[str],
    me: str,
    availability: Sequence[int],
    seeds: int,
    have: Sequence[bool] = (),
    window: int = 0,
) -> list[int]:
    """Piece priorities for ``me``: its own share first; another's share only once a peer other
    than a seed has the piece (``availability`` counts the connected peers holding each piece,
    ``seeds`` of them hold every piece).

    With a ``window`` (0: none), only the first ``window`` own pieces ``me`` does not ``have``
    yet, in index order, get the top priority, the rest of its share :data:`LATER`: every
    downloader then fetches its share front to back, the others' pieces come free in the same
    order, and the blob's in-order prefix (what a client can be sent) grows while it downloads.
    Others' pieces before the window's end (all of them once the window reaches the share's
    end) get :data:`FRONT`.
    """
    ahead = window or len(owner_of)
    front = 0  # the pieces before the window's end
    wanted = []
    for index, (owner, held) in enumerate(zip(owner_of, availability, strict=True)):
        if owner != me:
            wanted.append(DEFAULT_PRIORITY if held > seeds else SKIP)
        elif index < len(have) and have[index]:
            wanted.append(TOP_PRIORITY)  # landed: its priority no longer matters
        elif ahead > 0:
            wanted.append(TOP_PRIORITY)
            ahead -= 1
            front = index + 1
        else:
            wanted.append(LATER)
    if window:
        end = front if ahead == 0 else len(wanted)
        wanted[:end] = [FRONT if w == DEFAULT_PRIORITY else w for w in wanted[:end]]
    return wanted


def _local_ip(peer: Any) -> str:
    """This host's address on a connection (a method in some libtorrent bindings, an attribute
    in others)."""
    endpoint = peer.local_endpoint
    return str((endpoint() if callable(endpoint) else endpoint)[0])


class Shares:
    """The share-keeping of one downloading torrent; :meth:`update` runs a few times a second,
    in a worker thread (its libtorrent calls wait for the network thread), never two at once."""

    def __init__(
        self,
        infohash: str,
        pieces: int,
        release_seconds: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        window: int = 0,
    ) -> None:
        self.infohash = infohash
        self.pieces = pieces
        self.window = window
        self.release_seconds = release_seconds
        self.released = False
        self._clock = clock
        self._members: tuple[str, ...] = ()
        self._owner_of: list[str] = []
        self._applied: list[int] | None = None
        self._idle_since: float | None = None
        self._sequential = False

    def update(self, handle: Any) -> None:
        """Set ``handle``'s piece priorities for the peers it is connected to now."""
        if self.released:
            return
        # Which pieces it has: only the window needs them (a bitfield each call otherwise).
        status = handle.status(lt.status_flags_t.query_pieces if self.window else 0)
        if status.is_seeding:
            return
        peers = [p for p in handle.get_peer_info() if not p.flags & _NOT_YET]
        me = next((_local_ip(p) for p in peers), None)
        downloaders = {p.ip[0] for p in peers if not p.flags & lt.peer_info.seed}
        seeds = sum(1 for p in peers if p.flags & lt.peer_info.seed)
        if me is not None and seeds and not downloaders and self.window:
            # Alone with the seeds, nobody to share with: in order. The window's pieces on top,
            # as libtorrent's sequential cursor can have passed a piece that had priority 0
            # (the seed taken for a downloader before its bitfield came) and not go back to it.
            mine = [me] * self.pieces
            self._apply(
                handle, priorities(mine, me, [0] * self.pieces, 0, status.pieces, self.window)
            )
            self._in_order(handle, True)
            return
        self._in_order(handle, False)
        if me is None or not downloaders - {me} or seeds >= len(downloaders | {me}):
            self._apply(handle, None)  # nothing to share: libtorrent's own picking
            return
        if self._idle(status):
            self.release(handle)
            return
        members = tuple(sorted(downloaders | {me}))
        if members != self._members:
            self._members = members
            self._owner_of = owners(members, self.pieces, self.infohash)
        availability = handle.piece_availability()
        if len(availability) != self.pieces:  # libtorrent lists none once the torrent completed
            return
        wanted = priorities(self._owner_of, me, availability, seeds, status.pieces, self.window)
        self._apply(handle, wanted)

    def _in_order(self, handle: Any, on: bool) -> None:
        """libtorrent's sequential download on or off (set only when it changes)."""
        if on == self._sequential:
            return
        self._sequential = on
        if on:
            handle.set_flags(lt.torrent_flags.sequential_download)
        else:
            handle.unset_flags(lt.torrent_flags.sequential_download)

    def release(self, handle: Any) -> None:
        """Give up the shares for good: any piece from any peer."""
        self.released = True
        self._apply(handle, None)

    def _idle(self, status: Any) -> bool:
        """Nothing left to ask for (libtorrent's "finished") for ``release_seconds``."""
        if not status.is_finished:
            self._idle_since = None
            return False
        now = self._clock()
        if self._idle_since is None:
            self._idle_since = now
        return now - self._idle_since >= self.release_seconds

    def _apply(self, handle: Any, wanted: list[int] | None) -> None:
        if wanted is None:
            if self._applied is None:
                return
            wanted = [DEFAULT_PRIORITY] * self.pieces
            self._applied = None
        elif wanted == self._applied:
            return
        else:
            self._applied = wanted
        handle.prioritize_pieces(wanted)
