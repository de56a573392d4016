"""Piece shares: downloaders split what only the seeds have, and never starve on it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import libtorrent as lt
import pytest

from imgaccel.p2p.download import Download
from imgaccel.p2p.shares import (
    DEFAULT_PRIORITY,
    FRONT,
    LATER,
    SKIP,
    TOP_PRIORITY,
    Shares,
    owners,
    priorities,
)

from .helpers import Blob, SwarmFactory, collect

SEED = int(lt.peer_info.seed)


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


def test_priorities_put_the_own_share_first_and_skip_what_only_seeds_have() -> None:
    owner_of = ["me", "b", "me", "b"]
    availability = [1, 1, 1, 2]  # one seed; piece 3 is also at a downloader
    assert priorities(owner_of, "me", availability, seeds=1) == [
        TOP_PRIORITY,
        SKIP,
        TOP_PRIORITY,
        DEFAULT_PRIORITY,
    ]


def test_a_window_fetches_the_own_share_front_to_back() -> None:
    owner_of = ["me", "b"] * 4
    availability = [1, 2, 1, 1, 1, 2, 1, 2]  # one seed; b has its pieces 1, 5 and 7
    have = [True, False, False, False, False, False, False, False]
    assert priorities(owner_of, "me", availability, 1, have, window=2) == [
        TOP_PRIORITY,  # landed already
        FRONT,  # b's, before the window's end: ahead of b's later pieces
        TOP_PRIORITY,  # the window: the first two own pieces not landed
        SKIP,  # only the seed has it
        TOP_PRIORITY,
        DEFAULT_PRIORITY,
        LATER,  # own, past the window: asked of the seed only after the window
        DEFAULT_PRIORITY,
    ]
    # The window past the share's end: every own piece is in it, every available piece FRONT.
    assert priorities(owner_of, "me", availability, 1, have, window=9) == [
        TOP_PRIORITY,
        FRONT,
        TOP_PRIORITY,
        SKIP,
        TOP_PRIORITY,
        FRONT,
        TOP_PRIORITY,
        FRONT,
    ]


def test_priorities_the_picker_ranks_keep_the_seeds_on_own_pieces() -> None:
    """libtorrent's picker ranks a piece by priority and availability (piece_pos::priority:
    7 first; 4-6 halve the availability); at the seed connection every own piece must rank
    before every piece of another's share, or the seed sends it a second time."""

    def rank(priority: int, holders: int) -> int:  # libtorrent 2.0, prio_factor 3, 8 levels
        if priority == 7:
            return 0
        if priority >= 4:
            holders, priority = holders // 2, priority - 3
        return holders * 3 + 4 - priority

    own_later = rank(LATER, 0)  # only the seed has it (libtorrent counts seeds apart)
    assert own_later < min(rank(FRONT, 1), rank(DEFAULT_PRIORITY, 1))
    assert rank(FRONT, 1) < rank(DEFAULT_PRIORITY, 1)


# -- Shares.update against a stand-in for libtorrent's torrent_handle --------------------------


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
    is_seeding: bool = False
    is_finished: bool = False
    pieces: list[bool] = field(default_factory=list)


@dataclass
class _Handle:
    peers: list[_Peer]
    availability: list[int]
    state: _Status = field(default_factory=_Status)
    set_to: list[list[int]] = field(default_factory=list)
    sequential: bool = False

    def status(self, flags: int = 0) -> _Status:
        return self.state

    def get_peer_info(self) -> list[_Peer]:
        return self.peers

    def piece_availability(self) -> list[int]:
        return self.availability

    def prioritize_pieces(self, wanted: list[int]) -> None:
        self.set_to.append(list(wanted))

    def set_flags(self, flags: int) -> None:
        assert flags == lt.torrent_flags.sequential_download
        self.sequential = True

    def unset_flags(self, flags: int) -> None:
        assert flags == lt.torrent_flags.sequential_download
        self.sequential = False


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _sharing_handle() -> _Handle:
    """Me (10.0.0.1), one seed and one other downloader; four pieces, piece 3 also at the other."""
    peers = [_Peer("10.0.0.9", SEED), _Peer("10.0.0.2")]
    return _Handle(peers, availability=[1, 1, 1, 2])


def test_a_downloader_asks_the_seed_for_its_share_only() -> None:
    handle = _sharing_handle()
    shares = Shares("ef" * 20, 4)
    shares.update(handle)
    owner_of = owners(["10.0.0.1", "10.0.0.2"], 4, "ef" * 20)
    assert handle.set_to == [priorities(owner_of, "10.0.0.1", [1, 1, 1, 2], 1)]
    assert SKIP in handle.set_to[0] and TOP_PRIORITY in handle.set_to[0]
    shares.update(handle)
    assert len(handle.set_to) == 1  # unchanged priorities are not set again


def test_the_window_moves_on_as_own_pieces_land() -> None:
    handle = _sharing_handle()
    owner_of = owners(["10.0.0.1", "10.0.0.2"], 4, "ef" * 20)
    mine = [index for index, owner in enumerate(owner_of) if owner == "10.0.0.1"]
    shares = Shares("ef" * 20, 4, window=1)
    shares.update(handle)
    assert handle.set_to[-1][mine[0]] == TOP_PRIORITY
    assert handle.set_to[-1][mine[1]] == LATER
    handle.state.pieces = [index == mine[0] for index in range(4)]
    shares.update(handle)
    assert handle.set_to[-1][mine[1]] == TOP_PRIORITY


def test_a_lone_downloader_fetches_in_order_until_another_turns_up() -> None:
    """No other downloader: nothing to share, and nobody to collapse onto the seeds with:
    libtorrent's sequential download, the window's pieces on top (several downloaders behind
    one address keep libtorrent's own picking: in the same order they would all ask the seed
    for the same pieces)."""
    handle = _Handle([_Peer("10.0.0.9", SEED)], availability=[1, 1, 1, 1])
    handle.state.pieces = [False, True, False, False]
    shares = Shares("ef" * 20, 4, window=1)
    shares.update(handle)
    assert handle.sequential
    assert handle.set_to == [[TOP_PRIORITY, TOP_PRIORITY, LATER, LATER]]
    handle.peers.append(_Peer("10.0.0.2"))
    shares.update(handle)
    assert not handle.sequential and SKIP in handle.set_to[-1]  # shares from now on
    same_ip = _Handle([_Peer("10.0.0.9", SEED), _Peer("10.0.0.1")], [1, 1])
    Shares("ef" * 20, 2, window=1).update(same_ip)
    no_window = _Handle([_Peer("10.0.0.9", SEED)], [1, 1])
    Shares("ef" * 20, 2).update(no_window)
    assert not same_ip.sequential and not no_window.sequential
    assert same_ip.set_to == no_window.set_to == []


def test_nothing_is_shared_without_another_downloader_or_with_enough_seeds() -> None:
    alone = _Handle([_Peer("10.0.0.9", SEED)], availability=[1, 1])
    Shares("ef" * 20, 2).update(alone)
    two_seeds = _Handle(
        [_Peer("10.0.0.9", SEED), _Peer("10.0.0.8", SEED), _Peer("10.0.0.2")], [2, 2]
    )
    Shares("ef" * 20, 2).update(two_seeds)
    same_ip = _Handle([_Peer("10.0.0.9", SEED), _Peer("10.0.0.1")], [1, 1])  # all on one host
    Shares("ef" * 20, 2).update(same_ip)
    assert alone.set_to == two_seeds.set_to == same_ip.set_to == []


def test_a_share_nobody_delivers_is_released() -> None:
    handle = _sharing_handle()
    clock = _Clock()
    shares = Shares("ef" * 20, 4, release_seconds=2.0, clock=clock)
    shares.update(handle)
    handle.state.is_finished = True  # own share done, the others' not at any downloader
    shares.update(handle)
    clock.now += 1.9
    shares.update(handle)
    assert not shares.released
    clock.now += 0.2
    shares.update(handle)
    assert shares.released
    assert handle.set_to[-1] == [DEFAULT_PRIORITY] * 4
    shares.update(handle)
    assert len(handle.set_to) == 2  # for good


def test_waiting_restarts_when_a_piece_turns_up() -> None:
    handle = _sharing_handle()
    clock = _Clock()
    shares = Shares("ef" * 20, 4, release_seconds=2.0, clock=clock)
    handle.state.is_finished = True
    shares.update(handle)
    clock.now += 1.5
    handle.state.is_finished = False  # another downloader got a piece: something to ask for
    shares.update(handle)
    handle.state.is_finished = True
    clock.now += 1.5
    shares.update(handle)
    assert not shares.released


def test_a_torrent_that_completes_between_two_calls_is_left_alone() -> None:
    handle = _sharing_handle()
    handle.availability = []  # what libtorrent answers once the torrent is complete
    Shares("ef" * 20, 4).update(handle)
    assert handle.set_to == []


async def test_the_swarm_counts_and_logs_a_release(
    make_swarm: SwarmFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A download whose share never comes drops it; the swarm counts that for the metrics."""
    handle = _sharing_handle()
    handle.state.is_finished = True  # waiting on a share nobody delivers
    stuck = SimpleNamespace(
        handle=handle, shares=Shares("ef" * 20, 4, release_seconds=0.3), infohash="ef" * 20
    )
    caplog.set_level(logging.INFO, logger="imgaccel.p2p.swarm")
    async with make_swarm() as swarm:
        swarm._torrents["ef" * 20] = stuck  # type: ignore[assignment]  # stands in for a Download
        async with asyncio.timeout(5):
            while not stuck.shares.released:  # noqa: ASYNC110 (the stand-in signals nothing)
                await asyncio.sleep(0.05)
        del swarm._torrents["ef" * 20]
        assert (await swarm.stats()).share_releases == 1
    assert handle.set_to[-1] == [DEFAULT_PRIORITY] * 4
    assert "piece shares dropped" in caplog.text


@dataclass
class _SlowHandle(_Handle):
    """A handle whose ``status()`` waits for :attr:`answer`, as libtorrent's does for its busy
    network thread, noting the thread it was called in."""

    asked: threading.Event = field(default_factory=threading.Event)
    answer: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    timed_out: bool = False

    def status(self, flags: int = 0) -> _Status:
        self.threads.append(threading.current_thread())
        self.asked.set()
        # Bounded: called on the loop thread, it would wait for an answer nobody can give.
        self.timed_out |= not self.answer.wait(2.0)
        return self.state


def _slow_download() -> SimpleNamespace:
    handle = _SlowHandle(_sharing_handle().peers, availability=[1, 1, 1, 2])
    return SimpleNamespace(
        handle=handle,
        shares=Shares("ef" * 20, 4),
        infohash="ef" * 20,
        fail=lambda reason: None,
        metainfo=SimpleNamespace(announce=None),  # no tracker to leave when the swarm closes
    )


async def test_the_share_tick_waits_for_libtorrent_off_the_loop(make_swarm: SwarmFactory) -> None:
    """While libtorrent is slow to answer a share update, the loop goes on serving."""
    slow = _slow_download()
    async with make_swarm() as swarm:
        swarm._torrents["ef" * 20] = slow  # type: ignore[assignment]  # stands in for a Download
        try:
            await asyncio.to_thread(slow.handle.asked.wait, 5)
            await swarm.stats()  # a round trip through the loop while the update waits
        finally:
            slow.handle.answer.set()
        async with asyncio.timeout(5):
            while not slow.handle.set_to:  # noqa: ASYNC110 (the stand-in signals nothing)
                await asyncio.sleep(0.01)
        del swarm._torrents["ef" * 20]
    assert threading.current_thread() not in slow.handle.threads
    assert not slow.handle.timed_out


async def test_closing_waits_for_a_share_update_in_flight(make_swarm: SwarmFactory) -> None:
    """The session outlives every update still asking libtorrent: destroying it under a call
    in flight is undefined behaviour in libtorrent."""
    slow = _slow_download()
    manager = make_swarm()
    swarm = await manager.__aenter__()
    swarm._torrents["ef" * 20] = slow  # type: ignore[assignment]  # stands in for a Download
    try:
        await asyncio.to_thread(slow.handle.asked.wait, 5)
        closing = asyncio.create_task(manager.__aexit__(None, None, None))
        await asyncio.sleep(0.2)  # ample for a close that does not wait to destroy the session
        assert not closing.done()
        assert swarm._session is not None
    finally:
        slow.handle.answer.set()
    async with asyncio.timeout(10):
        await closing
    assert slow.handle.set_to  # the update went to its end before the session went
    assert swarm._session is None


async def test_a_torrent_removed_during_its_share_update_is_skipped(
    make_swarm: SwarmFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """libtorrent raises RuntimeError for a handle whose torrent is gone: not a bug to log."""
    handle = _sharing_handle()
    calls = []

    def gone() -> list[_Peer]:
        calls.append(1)
        raise RuntimeError("invalid torrent handle used")

    handle.get_peer_info = gone  # type: ignore[method-assign]
    removed = SimpleNamespace(handle=handle, shares=Shares("ef" * 20, 4), infohash="ef" * 20)
    async with make_swarm() as swarm:
        swarm._torrents["ef" * 20] = removed  # type: ignore[assignment]
        async with asyncio.timeout(5):
            while len(calls) < 2:  # noqa: ASYNC110 (the stand-in signals nothing)
                await asyncio.sleep(0.01)
        del swarm._torrents["ef" * 20]
    assert removed.shares is not None
    assert "piece shares failed" not in caplog.text


async def test_failing_shares_leave_the_picking_to_libtorrent(
    make_swarm: SwarmFactory, caplog: pytest.LogCaptureFixture
) -> None:
    handle = _sharing_handle()
    download = SimpleNamespace(handle=handle, shares=Shares("ef" * 20, 4), infohash="ef" * 20)
    download.shares.update(handle)  # shares applied
    handle.availability = None  # type: ignore[assignment]  # a bug: update raises TypeError
    async with make_swarm() as swarm:
        swarm._torrents["ef" * 20] = download  # type: ignore[assignment]
        async with asyncio.timeout(5):
            while download.shares is not None:  # noqa: ASYNC110 (the stand-in signals nothing)
                await asyncio.sleep(0.01)
        del swarm._torrents["ef" * 20]
    assert handle.set_to[-1] == [DEFAULT_PRIORITY] * 4
    assert "piece shares failed; libtorrent picks" in caplog.text


# -- real sessions ---------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _seed_and_two_downloaders(
    make_swarm: SwarmFactory, blob: Blob, tmp_path: Path, **options: Any
) -> AsyncIterator[list[Download]]:
    """A seed of ``blob`` and two downloads of it, each session on its own loopback address as
    hosts of a cluster, every upload at 8 MB/s (the download takes seconds: time to look);
    ``options`` go to the downloaders' swarms."""
    limit = {"upload_rate_limit": 8_000_000}
    async with make_swarm(host="127.0.0.2", **limit) as seeder:
        seeder.seed(blob.metainfo, blob.path)
        async with (
            make_swarm(host="127.0.0.3", **limit, **options) as a,
            make_swarm(host="127.0.0.4", **limit, **options) as b,
        ):
            infohash = blob.metainfo.infohash
            downloads = [
                swarm.download(blob.metainfo, tmp_path / f"dl{i}") for i, swarm in enumerate((a, b))
            ]
            for swarm in (a, b):
                swarm.add_peer(infohash, "127.0.0.2", seeder.port)
            b.add_peer(infohash, "127.0.0.3", a.port)
            yield downloads


async def test_downloaders_on_their_own_addresses_share_and_complete(
    make_swarm: SwarmFactory, blob: Blob, tmp_path: Path
) -> None:
    """The shares are in force during the download (own pieces first, pieces only the seed has
    skipped) and every downloader still gets the whole verified blob."""
    async with _seed_and_two_downloaders(make_swarm, blob, tmp_path) as downloads:
        seen: set[int] = set()

        async def watch() -> None:
            while not all(d.is_complete() for d in downloads):
                for download in downloads:
                    seen.update(download.handle.get_piece_priorities())
                await asyncio.sleep(0.05)

        watching = asyncio.create_task(watch())
        results = await asyncio.gather(*(collect(d) for d in downloads))
        await watching
        assert all(result == blob.data for result in results)
        assert {TOP_PRIORITY, SKIP} <= seen


def _prefix(had: list[int]) -> int:
    """How many pieces from the first are all there (``had`` sorted)."""
    count = 0
    for expected, index in enumerate(had):
        if index != expected:
            break
        count = index + 1
    return count


async def _prefix_shares(downloads: list[Download]) -> list[float]:
    """Sample, until every download completes, each one's in-order prefix as a share of the
    pieces it holds (from a quarter of the pieces on); every download is landed and checked."""
    pieces = downloads[0].metainfo.num_pieces
    shares: list[float] = []

    async def watch() -> None:
        while not all(d.is_complete() for d in downloads):
            for download in downloads:
                had = download.pieces_had()
                if pieces // 4 <= len(had) < pieces:
                    shares.append(_prefix(had) / len(had))
            await asyncio.sleep(0.05)

    watching = asyncio.create_task(watch())
    results = await asyncio.gather(*(collect(d) for d in downloads))
    await watching
    assert all(result == downloads[0].path.read_bytes() for result in results)
    assert len(shares) > 10
    return shares


async def test_a_window_grows_the_in_order_prefix_while_downloading(
    make_swarm: SwarmFactory, blob: Blob, tmp_path: Path
) -> None:
    """What a client can be sent is the in-order prefix: with a window, a good part of the
    pieces each downloader holds are in it during the download, where rarest-first order leaves
    the prefix short until the end. Measured, the prefix's mean share of the pieces held: 0.27-0.36
    with this window, 0.02-0.07 with none (share_window 0)."""
    window = 4  # pieces of 256 KiB
    async with _seed_and_two_downloaders(
        make_swarm, blob, tmp_path, share_window=window
    ) as downloads:
        shares = await _prefix_shares(downloads)
        assert downloads[0].path.read_bytes() == blob.data
        assert sum(shares) / len(shares) > 0.15, shares


async def test_a_lone_downloader_streams_in_order(
    make_swarm: SwarmFactory, blob: Blob, tmp_path: Path
) -> None:
    """One downloader and a seed: the prefix is (nearly) all it holds during the download.
    Measured: a mean share of 0.99-1.0 in order, 0.03 rarest-first (share_window 0)."""
    async with make_swarm(host="127.0.0.2", upload_rate_limit=8_000_000) as seeder:
        seeder.seed(blob.metainfo, blob.path)
        async with make_swarm(host="127.0.0.3", share_window=4) as alone:
            download = alone.download(blob.metainfo, tmp_path / "dl")
            alone.add_peer(blob.metainfo.infohash, "127.0.0.2", seeder.port)
            shares = await _prefix_shares([download])
            assert download.path.read_bytes() == blob.data
            assert sum(shares) / len(shares) > 0.6, shares
