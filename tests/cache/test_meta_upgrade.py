"""A meta.db and torrents from before provenance: what they said stays, within what it meant."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from imgaccel import bencode
from imgaccel.cache.meta import MetaStore
from imgaccel.oci.digest import Digest
from imgaccel.p2p.metainfo import PieceHasher
from imgaccel.proxy.peers import parse_torrent, torrent_bytes


def test_an_old_public_verdict_opens_the_repository_to_this_nodes_clients_only(
    tmp_path: Path,
) -> None:
    """``public = 1`` meant "served without the client's credentials", the node's own
    included: readable here (also offline), but no longer called public (nor shared so)."""
    path = tmp_path / "meta.db"
    old = sqlite3.connect(path)
    old.execute(
        "CREATE TABLE repos (registry TEXT, repo TEXT, public INTEGER NOT NULL,"
        " checked_at REAL NOT NULL, PRIMARY KEY (registry, repo))"
    )
    old.execute("INSERT INTO repos VALUES ('corp.example', 'team/app', 1, 0)")
    old.commit()
    old.close()

    meta = MetaStore(path)

    assert meta.is_public("corp.example", "team/app") is False
    assert meta.open_to_node("corp.example", "team/app")
    meta.set_public("corp.example", "team/app", True)  # an anonymous answer says so again
    meta.close()
    assert MetaStore(path).is_public("corp.example", "team/app")  # the upgrade ran once


def test_an_old_torrents_public_list_is_not_read() -> None:
    data = b"layer bytes" * 1000
    hasher = PieceHasher(len(data))
    hasher.update(data)
    metainfo = hasher.finish("sha256-" + Digest.of(data).hex, ssl_cert=b"ca")
    torrent = bencode.decode(torrent_bytes(metainfo, frozenset()))
    assert isinstance(torrent, dict)
    torrent[b"imgaccel-public"] = [b"corp.example/team/app"]  # an earlier version's key

    _, public_in, _ = parse_torrent(bencode.encode(torrent))

    assert public_in == frozenset()
    fresh = torrent_bytes(metainfo, frozenset({"docker.io/library/ubuntu"}))
    assert parse_torrent(fresh)[1] == frozenset({"docker.io/library/ubuntu"})
