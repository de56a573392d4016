"""Peer-to-peer layer distribution over libtorrent.

Nouns:
  ``certs``     the cluster CA and node certificates that authenticate peers and the tracker API
  ``metainfo``  a blob's v1 SSL torrent, hashed in the same pass as the blob's digest
  ``alerts``    libtorrent alerts delivered on the asyncio loop (``set_alert_fd`` + ``add_reader``)
  ``download``  one torrent: its verified pieces as they land in its file
  ``shares``    which pieces a downloader asks of the blob's holders, and the trading torrent
  ``exchange``  one download as the pair of the holders' and the trading torrent
  ``swarm``     the node's session: seed, download, remove, add peers, stats
  ``errors``    ``P2PError`` and its subclasses

Imports point down this list's reverse: swarm -> exchange -> download, shares, alerts,
metainfo -> errors (and the core modules ``imgaccel.bencode`` and ``imgaccel.address``).
Core package: imports nothing from the CLI or the web services.
"""

from imgaccel.p2p.certs import KeyPair, NodeIdentity, issue, make_ca
from imgaccel.p2p.download import Download
from imgaccel.p2p.errors import MetainfoInvalid, NoPeers, P2PError, SwarmStalled, TorrentFailed
from imgaccel.p2p.exchange import Exchange
from imgaccel.p2p.metainfo import Metainfo, PieceHasher, piece_length_for
from imgaccel.p2p.swarm import Swarm, SwarmStats

__all__ = [
    "Download",
    "Exchange",
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
