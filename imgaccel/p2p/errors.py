"""Errors of the peer-to-peer layer (they extend the tree in :mod:`imgaccel.errors`).

    ImgaccelError
    └── P2PError                      peers could not deliver; fetch from the origin instead
        ├── MetainfoInvalid           a .torrent or info dict that is malformed (also a ValueError)
        ├── SwarmStalled              no data from peers for stall_seconds
        │   └── NoPeers               not one peer connected within the grace period
        └── TorrentFailed             libtorrent reported an error (disk, removal) for the torrent

What a :class:`~imgaccel.p2p.download.Download` landed before it raised stays landed: the
caller continues from the origin with the gaps only.
"""

from __future__ import annotations

from imgaccel.errors import ImgaccelError


class P2PError(ImgaccelError):
    """Peers could not deliver what was asked."""


class MetainfoInvalid(P2PError, ValueError):
    """A .torrent or info dict that cannot be used."""


class SwarmStalled(P2PError):
    """Less than a block of data came from peers in ``stall_seconds``."""


class NoPeers(SwarmStalled):
    """Not one peer was connected within the grace period."""


class TorrentFailed(P2PError):
    """libtorrent reported an error for the torrent, or it was removed while being read."""
