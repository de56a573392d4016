"""BitTorrent v1 metainfo for one blob, built in the same pass that digests the blob.

A blob's torrent is single-file and **v1 only**: hybrid v1+v2 torrents announce twice and v2's
per-file merkle trees buy nothing for one immutable, digest-verified file. The file is named by
the blob digest (``sha256-<hex>`` or the bare hex).

SSL torrents: when ``ssl_cert`` is set, the info dict carries the cluster CA's PEM under
``ssl-cert``. libtorrent then speaks only TLS for this torrent and accepts only peers whose
certificate that CA signed (and whose name is the torrent's name or ``*``). Because the CA is
inside the info dict, the infohash is a function of (blob, cluster): two clusters sharing a tracker
never mix swarms, and a node cannot strip the CA without changing the infohash.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any, TypeVar

import libtorrent as lt

from imgaccel import bencode
from imgaccel.p2p.errors import MetainfoInvalid

KIB, MIB = 1024, 1024 * 1024
MIN_PIECE, MAX_PIECE = 256 * KIB, 16 * MIB
MAX_PIECES = 2000

_T = TypeVar("_T")


def piece_length_for(size: int) -> int:
    """The smallest power of two in 256 KiB..16 MiB that keeps ``size`` to at most 2000 pieces.

    So a blob gets 1000-2000 pieces unless the clamps bite: small blobs get fewer 256 KiB
    pieces (keeping a piece a useful request unit), huge ones more 16 MiB pieces.
    """
    length = MIN_PIECE
    while length < MAX_PIECE and length * MAX_PIECES < size:
        length *= 2
    return length


@dataclass(frozen=True)
class Metainfo:
    """A v1 single-file torrent: the info dict plus an optional tracker URL."""

    name: str
    length: int
    piece_length: int
    pieces: bytes
    ssl_cert: bytes | None = None
    announce: str | None = None

    def __post_init__(self) -> None:
        if self.length <= 0:  # libtorrent refuses a torrent of no bytes ("invalid length")
            raise MetainfoInvalid(f"{self.name}: a torrent needs at least one byte")
        pieces = -(-self.length // self.piece_length) if self.piece_length > 0 else 0
        if self.piece_length <= 0 or len(self.pieces) != 20 * pieces:
            raise MetainfoInvalid(f"{self.name}: pieces do not match length and piece length")
        if not self.name or "/" in self.name or self.name in (".", ".."):
            raise MetainfoInvalid(f"unsafe torrent name {self.name!r}")

    @property
    def num_pieces(self) -> int:
        return len(self.pieces) // 20

    def piece_size(self, index: int) -> int:
        """The byte length of piece ``index`` (the last one may be short)."""
        return min(self.piece_length, self.length - index * self.piece_length)

    def info(self) -> dict[bytes, bencode.Value]:
        info: dict[bytes, bencode.Value] = {
            b"name": self.name.encode(),
            b"length": self.length,
            b"piece length": self.piece_length,
            b"pieces": self.pieces,
        }
        if self.ssl_cert is not None:
            info[b"ssl-cert"] = self.ssl_cert
        return info

    @cached_property
    def info_bytes(self) -> bytes:
        """The bencoded info dict, whose SHA-1 is the infohash."""
        return bencode.encode(self.info())

    @cached_property
    def infohash(self) -> str:
        """The v1 infohash, lowercase hex."""
        return hashlib.sha1(self.info_bytes).hexdigest()

    def to_bytes(self) -> bytes:
        """The whole .torrent file."""
        torrent: dict[bytes, bencode.Value] = {b"info": self.info()}
        if self.announce is not None:
            torrent[b"announce"] = self.announce.encode()
        return bencode.encode(torrent)

    @classmethod
    def from_bytes(cls, data: bytes) -> Metainfo:
        """Parse a .torrent (``MetainfoInvalid`` if it is not a v1 single-file torrent)."""
        try:
            torrent = bencode.decode(data)
        except bencode.BencodeError as exc:
            raise MetainfoInvalid(f"malformed bencoding: {exc}") from exc
        if not isinstance(torrent, dict) or not isinstance(torrent.get(b"info"), dict):
            raise MetainfoInvalid("not a .torrent: no info dict")
        info = torrent[b"info"]
        assert isinstance(info, dict)
        announce = torrent.get(b"announce")
        ssl_cert = info.get(b"ssl-cert")
        return cls(
            name=_field(info, b"name", bytes).decode(),
            length=_field(info, b"length", int),
            piece_length=_field(info, b"piece length", int),
            pieces=_field(info, b"pieces", bytes),
            ssl_cert=ssl_cert if isinstance(ssl_cert, bytes) else None,
            announce=announce.decode() if isinstance(announce, bytes) else None,
        )

    def with_announce(self, url: str | None) -> Metainfo:
        """The same torrent (same infohash) announcing to ``url``."""
        return replace(self, announce=url)

    def torrent_info(self) -> Any:
        """A fresh ``lt.torrent_info`` for adding this torrent to a session
        (``MetainfoInvalid`` if libtorrent refuses it, e.g. for its piece length)."""
        try:
            return lt.torrent_info(self.to_bytes())
        except RuntimeError as exc:
            raise MetainfoInvalid(f"{self.name}: libtorrent refuses the torrent: {exc}") from exc


def _field(info: dict[bytes, bencode.Value], key: bytes, kind: type[_T]) -> _T:
    value = info.get(key)
    if not isinstance(value, kind):
        raise MetainfoInvalid(f"info dict: {key.decode()} missing or not {kind.__name__}")
    return value


class PieceHasher:
    """SHA-1 piece hashes of a blob fed in order, in pieces of any size, holding no blob bytes."""

    def __init__(self, total_size: int, piece_length: int | None = None) -> None:
        self.total_size = total_size
        self.piece_length = piece_length or piece_length_for(total_size)
        self._hashes: list[bytes] = []
        self._current = hashlib.sha1()
        self._in_piece = 0
        self._seen = 0

    def update(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        self._seen += len(view)
        if self._seen > self.total_size:
            raise MetainfoInvalid(f"fed {self._seen} bytes to a {self.total_size}-byte hasher")
        while view:
            take = min(len(view), self.piece_length - self._in_piece)
            self._current.update(view[:take])
            self._in_piece += take
            view = view[take:]
            if self._in_piece == self.piece_length:
                self._close_piece()

    def _close_piece(self) -> None:
        self._hashes.append(self._current.digest())
        self._current = hashlib.sha1()
        self._in_piece = 0

    def finish(
        self, name: str, *, ssl_cert: bytes | None = None, announce: str | None = None
    ) -> Metainfo:
        """The metainfo, once exactly ``total_size`` bytes were fed (``MetainfoInvalid`` for
        an empty blob: there is no torrent of no bytes, and nothing to share)."""
        if self._seen != self.total_size:
            raise MetainfoInvalid(f"fed {self._seen} of {self.total_size} bytes")
        if self._in_piece:
            self._close_piece()
        return Metainfo(
            name=name,
            length=self.total_size,
            piece_length=self.piece_length,
            pieces=b"".join(self._hashes),
            ssl_cert=ssl_cert,
            announce=announce,
        )
