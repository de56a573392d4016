"""Peer-to-peer layer distribution over libtorrent.

Nouns:
  ``certs``     the cluster CA and node certificates that authenticate peers and the tracker API
  ``metainfo``  a blob's v1 SSL torrent, hashed in the same pass as the blob's digest
  ``alerts``    libtorrent alerts delivered on the asyncio loop (``set_alert_fd`` + ``add_reader``)
  ``calls``     libtorrent calls that wait for its network thread, made in worker threads
  ``shares``    piece shares: each downloader asks the seeds only for its own share
  ``download``  one torrent read as an in-order stream of verified bytes
  ``swarm``     the node's session: seed, download, remove, add peers, stats
  ``errors``    ``P2PError`` and its subclasses

Imports point down this list's reverse: swarm -> download, shares, calls, alerts, metainfo ->
errors (and the core modules ``imgaccel.bencode`` and ``imgaccel.address``).
Core package: imports nothing from the CLI or the web services.
"""

from imgaccel.p2p.certs import KeyPair, NodeIdentity, issue, make_ca
from imgaccel.p2p.download import Download
from imgaccel.p2p.errors import MetainfoInvalid, NoPeers, P2PError, SwarmStalled, TorrentFailed
from imgaccel.p2p.metainfo import Metainfo, PieceHasher, piece_length_for
from imgaccel.p2p.swarm import Swarm, SwarmStats

__all__ = [
    "Download",
    "KeyPair",
    "Metainfo",
    "MetainfoInvalid",
    "NoPeers",
    "NodeIdentity",
    "P2PError",
    "PieceHasher",
    "Swarm",
    "SwarmStalled",
    "SwarmStats",
    "TorrentFailed",
    "issue",
    "make_ca",
    "piece_length_for",
]
