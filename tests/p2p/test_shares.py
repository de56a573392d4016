"""Piece shares: the holders send each piece once, the downloaders trade the rest, and nobody
starves on a share that does not come."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import libtorrent as lt
import pytest

from imgaccel.p2p.shares import (
    DEFAULT_PRIORITY,
    JOIN_SECONDS,
    SKIP,
    TOP_PRIORITY,
    Shares,
    holder_priorities,
    owners,
    trading,
)

from .helpers import Blob, SwarmFactory, collect

SEED = int(lt.peer_info.seed)
INFOHASH = "ef" * 20


def test_every_piece_has_one_owner_and_the_shares_are_even() -> None:
    members = ["10.0.0.3", "10.0.0.1", "10.0.0.2"]
    owner_of = owners(members, 100, "ab" * 20)
    counts = Counter(owner_of)
    assert set(counts) == set(members)
    assert max(counts.values()) - min(counts.values()) <= 1


def test_every_host_computes_the_same_owners() -> None:
    members = ["10.0.0.3", "10.0.0.1", "10.0.0.2"]
    assert owners(members, 50, "cd" * 20) == owners(list(reversed(members)), 50, "cd" * 20)
    assert owners(members, 50, "cd" * 20) == owners([*members, "10.0.0.1"], 50, "cd" * 20)


def test_small_blobs_do_not_all_start_with_the_same_member() -> None:
    members = [f"10.0.0.{i}" for i in range(1, 9)]
    firsts = {owners(members, 1, f"{n:040x}")[0] for n in range(40)}
    assert len(firsts) > 1


def test_the_trading_torrent_has_the_same_pieces_and_another_infohash(blob: Blob) -> None:
    trade = trading(blob.metainfo)
    assert (trade.pieces, trade.length, trade.piece_length, trade.ssl_cert) == (
        blob.metainfo.pieces,
        blob.metainfo.length,
        blob.metainfo.piece_length,
        blob.metainfo.ssl_cert,
    )
    assert trade.infohash != blob.metainfo.infohash
    assert trade.announce == blob.metainfo.announce


def test_holders_are_asked_only_for_own_pieces_nobody_trades() -> None:
    have = [True, False, False, False, False]
    offered = [0, 0, 1, 0, 0]  # a trader has piece 2
    own = [True, True, True, False, False]
    assert holder_priorities(have, offered, own, released=False) == [
        SKIP,  # here already
        TOP_PRIORITY,  # own, nobody trades it
        SKIP,  # own, but a trader has it
        SKIP,  # another's share
        SKIP,
    ]
    assert holder_priorities(have, offered, None, released=False) == [
        SKIP,
        TOP_PRIORITY,
        SKIP,
        TOP_PRIORITY,
        TOP_PRIORITY,
    ]
    released = holder_priorities(have, offered, own, released=True)
    assert released == [SKIP] + [DEFAULT_PRIORITY] * 4


# -- Shares.update against stand-ins for libtorrent's torrent handles --------------------------


@dataclass
class _Peer:
    address: str
    flags: int = 0
    me: str = "10.0.0.1"

    @property
    def ip(self) -> tuple[str, int]:
        return (self.address, 6881)

    def local_endpoint(self) -> tuple[str, int]:
        return (self.me, 40000)


@dataclass
class _Status:
    pieces: list[bool]
    is_seeding: bool = False
    is_finished: bool = False

    @property
    def num_pieces(self) -> int:
        return sum(self.pieces)


@dataclass
class _Handle:
    peers: list[_Peer]
    availability: list[int]
    state: _Status
    set_to: list[list[int]] = field(default_factory=list)

    def status(self, flags: Any = None) -> _Status:
        return self.state

    def get_peer_info(self) -> list[_Peer]:
        return self.peers

    def piece_availability(self) -> list[int]:
        return self.availability

    def prioritize_pieces(self, wanted: list[int]) -> None:
        self.set_to.append(list(wanted))


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _pair(
    traders: list[_Peer] | None = None, offered: list[int] | None = None
) -> tuple[_Handle, _Handle]:
    """Me (10.0.0.1) holding nothing of four pieces; one holder; by default one other
    downloader in the trading torrent, which has piece 3."""
    holders = _Handle([_Peer("10.0.0.9", SEED)], [1] * 4, _Status([False] * 4))
    trade_peers = [_Peer("10.0.0.2")] if traders is None else traders
    trade = _Handle(trade_peers, offered or [0, 0, 0, 1], _Status([False] * 4))
    return holders, trade


def _late_shares(clock: _Clock | None = None, **options: Any) -> Shares:
    """Shares whose download started longer than JOIN_SECONDS ago."""
    clock = clock or _Clock()
    shares = Shares(INFOHASH, 4, clock=clock, **options)
    clock.now += JOIN_SECONDS
    return shares


def test_a_downloader_asks_the_holders_for_its_share_only() -> None:
    holders, traders = _pair()
    shares = _late_shares()
    shares.update(holders, traders)
    mine = [owner == "10.0.0.1" for owner in owners(["10.0.0.1", "10.0.0.2"], 4, INFOHASH)]
    assert holders.set_to == [holder_priorities([False] * 4, [0, 0, 0, 1], mine, False)]
    assert SKIP in holders.set_to[0] and TOP_PRIORITY in holders.set_to[0]
    assert holders.set_to[0][3] == SKIP  # the other downloader trades it
    shares.update(holders, traders)
    assert len(holders.set_to) == 1  # unchanged priorities are not set again


def test_alone_or_with_enough_holders_every_missing_piece_is_asked_of_them() -> None:
    alone = _pair(traders=[], offered=[0] * 4)
    lingering = _pair(traders=[_Peer("10.0.0.2", SEED)], offered=[1, 1, 0, 0])
    same_ip = _pair(traders=[_Peer("10.0.0.1")], offered=[0] * 4)  # every node on one host
    two_holders = _pair()
    two_holders[0].peers.append(_Peer("10.0.0.8", SEED))
    for holders, traders in (alone, lingering, same_ip, two_holders):
        _late_shares().update(holders, traders)
    top = [TOP_PRIORITY] * 4
    assert alone[0].set_to == same_ip[0].set_to == [top]
    assert two_holders[0].set_to == [[TOP_PRIORITY] * 3 + [SKIP]]  # piece 3 is traded
    assert lingering[0].set_to == [[SKIP, SKIP, TOP_PRIORITY, TOP_PRIORITY]]


def test_a_new_download_waits_briefly_for_traders_before_asking_for_everything() -> None:
    holders, traders = _pair(traders=[], offered=[0] * 4)
    clock = _Clock()
    shares = Shares(INFOHASH, 4, clock=clock)
    shares.update(holders, traders)
    assert holders.set_to == [[SKIP] * 4]
    clock.now += JOIN_SECONDS
    shares.update(holders, traders)
    assert holders.set_to[-1] == [TOP_PRIORITY] * 4


def test_a_share_nobody_delivers_is_released() -> None:
    holders, traders = _pair()
    clock = _Clock()
    shares = _late_shares(clock, release_seconds=2.0)
    holders.state.is_finished = True  # own share here, the others' not at any downloader
    shares.update(holders, traders)
    clock.now += 1.9
    shares.update(holders, traders)
    assert not shares.released
    clock.now += 0.2
    shares.update(holders, traders)
    assert shares.released
    assert holders.set_to[-1] == [DEFAULT_PRIORITY] * 4
    traders.state.pieces[0] = True
    shares.update(holders, traders)
    assert holders.set_to[-1] == [SKIP] + [DEFAULT_PRIORITY] * 3  # still not what is here


def test_waiting_restarts_when_a_piece_comes_in() -> None:
    holders, traders = _pair()
    clock = _Clock()
    shares = _late_shares(clock, release_seconds=2.0)
    holders.state.is_finished = True
    shares.update(holders, traders)
    clock.now += 1.5
    traders.state.pieces[3] = True  # traded in
    shares.update(holders, traders)
    clock.now += 1.5
    shares.update(holders, traders)
    assert not shares.released


def test_a_download_that_completes_between_two_calls_is_left_alone() -> None:
    holders, traders = _pair()
    traders.availability = []  # what libtorrent answers once the torrent is complete
    _late_shares().update(holders, traders)
    traders.state.is_seeding = True
    _late_shares().update(holders, traders)
    assert holders.set_to == []


async def test_the_swarm_counts_and_logs_a_release(
    make_swarm: SwarmFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A download whose share never comes drops it; the swarm counts that for the metrics."""
    holders, traders = _pair()
    holders.state.is_finished = True  # waiting on a share nobody delivers
    stuck = SimpleNamespace(
        holders=SimpleNamespace(handle=holders),
        traders=SimpleNamespace(handle=traders),
        shares=Shares(INFOHASH, 4, release_seconds=0.3),
        infohash=INFOHASH,
        fail=lambda reason: None,
    )
    caplog.set_level(logging.INFO, logger="imgaccel.p2p.swarm")
    async with make_swarm() as swarm:
        swarm._exchanges[INFOHASH] = stuck  # type: ignore[assignment]  # stands in
        async with asyncio.timeout(5):
            while not stuck.shares.released:  # noqa: ASYNC110 (the stand-in signals nothing)
                await asyncio.sleep(0.05)
        del swarm._exchanges[INFOHASH]
        assert (await swarm.stats()).share_releases == 1
    assert holders.set_to[-1] == [DEFAULT_PRIORITY] * 4
    assert "asking the holders for every missing piece" in caplog.text


# -- real sessions ---------------------------------------------------------------------------


@pytest.mark.parametrize("share_pieces", [True, False], ids=["shares", "libtorrent-picks"])
async def test_the_holder_sends_each_piece_about_once(
    make_swarm: SwarmFactory, blob: Blob, tmp_path: Path, share_pieces: bool
) -> None:
    """Three downloaders on their own loopback addresses, as hosts of a cluster, and one
    holder with a slow uplink: every downloader gets the whole verified blob, and with the
    shares the holder sends it about once (libtorrent's own picking: more than 1.3 times,
    measured 1.4-1.8)."""
    limit = {"upload_rate_limit": 8_000_000, "share_pieces": share_pieces}
    async with make_swarm(host="127.0.0.2", **limit) as holder:
        holder.seed(blob.metainfo, blob.path)
        async with (
            make_swarm(host="127.0.0.3", **limit) as a,
            make_swarm(host="127.0.0.4", **limit) as b,
            make_swarm(host="127.0.0.5", **limit) as c,
        ):
            infohash = blob.metainfo.infohash
            downloaders = (a, b, c)
            downloads = [
                swarm.download(blob.metainfo, tmp_path / f"dl{i}")
                for i, swarm in enumerate(downloaders)
            ]
            for i, swarm in enumerate(downloaders):
                swarm.add_peer(infohash, "127.0.0.2", holder.port)
                for j, other in enumerate(downloaders[:i]):
                    swarm.add_peer(infohash, f"127.0.0.{3 + j}", other.port)
            results = await asyncio.gather(*(collect(d) for d in downloads))
            assert all(result == blob.data for result in results)
            sent = (await holder.stats()).total_uploaded / len(blob.data)
    if share_pieces:
        assert sent < 1.1
    else:
        assert sent > 1.3
