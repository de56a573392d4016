"""Metainfo: piece sizing, incremental hashing, round trips, and libtorrent's agreement."""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace
from pathlib import Path

import libtorrent as lt
import pytest

from imgaccel import bencode
from imgaccel.p2p.certs import make_ca
from imgaccel.p2p.errors import MetainfoInvalid
from imgaccel.p2p.metainfo import MIB, Metainfo, PieceHasher, piece_length_for


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        (0, 256 * 1024),
        (1, 256 * 1024),
        (100 * MIB, 256 * 1024),
        (1024 * MIB, 1 * MIB),
        (100 * 1024 * MIB, 16 * MIB),
    ],
)
def test_piece_length_for(size: int, expected: int) -> None:
    assert piece_length_for(size) == expected


def test_piece_count_stays_in_band_where_clamps_do_not_bite() -> None:
    for size in (600 * MIB, 3000 * MIB, 20_000 * MIB):
        pieces = -(-size // piece_length_for(size))
        assert 1000 <= pieces <= 2000


def _hash(data: bytes, chunks: list[int], piece: int) -> Metainfo:
    hasher = PieceHasher(len(data), piece)
    pos = 0
    for size in chunks:
        hasher.update(data[pos : pos + size])
        pos += size
    hasher.update(data[pos:])
    return hasher.finish("blob")


def test_hasher_is_independent_of_how_bytes_are_fed() -> None:
    data = os.urandom(5 * 16384 + 123)
    whole = _hash(data, [], 16384)
    odd = _hash(data, [1, 16383, 16385, 7, 40000], 16384)
    expected = b"".join(
        hashlib.sha1(data[i : i + 16384]).digest() for i in range(0, len(data), 16384)
    )
    assert whole.pieces == odd.pieces == expected
    assert whole.num_pieces == 6 and whole.piece_size(5) == 123


def test_hasher_refuses_wrong_length() -> None:
    hasher = PieceHasher(10, 16384)
    hasher.update(b"12345")
    with pytest.raises(MetainfoInvalid):
        hasher.finish("x")
    with pytest.raises(MetainfoInvalid):
        hasher.update(b"123456")


def test_there_is_no_torrent_of_the_empty_blob() -> None:
    # libtorrent refuses one ("invalid length of torrent"): it could be neither seeded nor
    # fetched, and a stored one would stop the node seeding its cache at the next start.
    with pytest.raises(MetainfoInvalid):
        PieceHasher(0).finish("sha256-empty")
    with pytest.raises(MetainfoInvalid):
        info = {b"name": b"x", b"length": 0, b"piece length": 16384, b"pieces": b""}
        Metainfo.from_bytes(bencode.encode({b"info": info}))


def test_a_torrent_libtorrent_refuses_is_invalid() -> None:
    meta = _hash(os.urandom(5000), [], 16384)
    huge = replace(meta, piece_length=1 << 30)  # consistent, but over libtorrent's limit
    with pytest.raises(MetainfoInvalid):
        huge.torrent_info()


def test_round_trip_keeps_infohash() -> None:
    meta = _hash(os.urandom(70000), [], 16384)
    meta = replace(meta, ssl_cert=make_ca().cert_pem)
    again = Metainfo.from_bytes(meta.with_announce("http://t.example/announce").to_bytes())
    assert again.infohash == meta.infohash
    assert again.announce == "http://t.example/announce"
    assert again.ssl_cert == meta.ssl_cert


@pytest.mark.parametrize(
    "data", [b"", b"d4:infoi1ee", b"d4:infod4:name1:xee", b"i1", b"d4:infod4:name1:xeeXX"]
)
def test_from_bytes_rejects_garbage(data: bytes) -> None:
    with pytest.raises(MetainfoInvalid):
        Metainfo.from_bytes(data)


def test_rejects_path_names() -> None:
    with pytest.raises(MetainfoInvalid):
        Metainfo("../etc", 0, 16384, b"")


def test_libtorrent_agrees_with_hand_built_info(tmp_path: Path) -> None:
    data = os.urandom(3 * MIB + 1234)
    name = "sha256-" + hashlib.sha256(data).hexdigest()
    (tmp_path / name).write_bytes(data)
    piece = 256 * 1024
    created = lt.create_torrent(
        lt.list_files(str(tmp_path / name)), piece, lt.create_torrent.v1_only
    )
    lt.set_piece_hashes(created, str(tmp_path))
    theirs = lt.torrent_info(lt.bencode(created.generate()))

    hasher = PieceHasher(len(data), piece)
    hasher.update(data)
    ours = hasher.finish(name)

    assert str(theirs.info_hashes().v1) == ours.infohash
    assert str(ours.torrent_info().info_hashes().v1) == ours.infohash


def test_libtorrent_sees_the_ssl_cert() -> None:
    ca = make_ca().cert_pem
    meta = replace(_hash(b"x" * 20000, [], 16384), ssl_cert=ca)
    info = meta.torrent_info()
    assert info.ssl_cert().encode() == ca
    assert str(info.info_hashes().v1) == meta.infohash


def test_bencode_round_trip() -> None:
    value: bencode.Value = {b"b": [1, -2, b"x"], b"a": {b"": b""}}
    assert bencode.encode(value) == b"d1:ad0:0:e1:bli1ei-2e1:xee"
    assert bencode.decode(bencode.encode(value)) == value
