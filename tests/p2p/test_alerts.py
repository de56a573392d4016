"""The alert pump: libtorrent alerts arrive on the loop, per torrent, without polling."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import libtorrent as lt
import pytest

from imgaccel.p2p import alerts
from imgaccel.p2p.alerts import ALERT_MASK, AlertPump
from imgaccel.p2p.metainfo import PieceHasher


@pytest.fixture
async def pumped() -> AsyncIterator[tuple[AlertPump, Any]]:
    pump = AlertPump(lt.session({"listen_interfaces": "127.0.0.1:0", "alert_mask": ALERT_MASK}))
    pump.start()
    yield pump, pump.session
    pump.stop()


async def _next(queue: asyncio.Queue[Any], kind: type) -> Any:
    async with asyncio.timeout(5):
        while not isinstance(alert := await queue.get(), kind):
            pass
    return alert


async def test_session_alerts_reach_the_loop(pumped: tuple[AlertPump, Any]) -> None:
    pump, session = pumped
    seen: asyncio.Queue[Any] = asyncio.Queue()
    pump.subscribe(None, seen.put_nowait)
    session.post_session_stats()
    alert = await _next(seen, lt.session_stats_alert)
    assert "net.sent_payload_bytes" in alert.values


async def test_torrent_alerts_go_to_their_subscribers(
    pumped: tuple[AlertPump, Any], tmp_path: Any
) -> None:
    pump, session = pumped
    hasher = PieceHasher(5, 16384)
    hasher.update(b"hello")
    meta = hasher.finish("blob")
    mine: asyncio.Queue[Any] = asyncio.Queue()
    others: list[Any] = []
    pump.subscribe(meta.infohash, mine.put_nowait)
    pump.subscribe("0" * 40, others.append)
    unsubscribe = pump.subscribe(meta.infohash, lambda alert: 1 / 0)  # logged, not raised

    params = lt.add_torrent_params()
    params.ti = meta.torrent_info()
    params.save_path = str(tmp_path)
    handle = session.add_torrent(params)
    await _next(mine, lt.add_torrent_alert)
    unsubscribe()
    session.remove_torrent(handle)
    await _next(mine, lt.torrent_removed_alert)
    assert others == []


async def test_nothing_arrives_after_stop(pumped: tuple[AlertPump, Any]) -> None:
    pump, session = pumped
    seen: list[Any] = []
    pump.subscribe(None, seen.append)
    pump.stop()
    session.post_session_stats()
    await asyncio.sleep(0.2)
    assert seen == []


async def test_a_torrent_added_again_after_removal_gets_its_alerts(
    pumped: tuple[AlertPump, Any], tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pump asks libtorrent a torrent's infohash once and forgets it on removal, so two
    torrents one after the other (same handle slot or not) each reach their own subscriber."""
    pump, session = pumped
    asked: list[Any] = []
    real = alerts.alert_infohash
    monkeypatch.setattr(alerts, "alert_infohash", lambda alert: asked.append(alert) or real(alert))
    queues: list[asyncio.Queue[Any]] = []
    for n, data in enumerate((b"first", b"second")):
        hasher = PieceHasher(len(data), 16384)
        hasher.update(data)
        meta = hasher.finish(f"blob{n}")
        queue: asyncio.Queue[Any] = asyncio.Queue()
        queues.append(queue)
        pump.subscribe(meta.infohash, queue.put_nowait)
        params = lt.add_torrent_params()
        params.ti = meta.torrent_info()
        params.save_path = str(tmp_path / str(n))
        handle = session.add_torrent(params)
        await _next(queue, lt.add_torrent_alert)
        asked_before = len(asked)
        handle.save_resume_data()
        await _next(queue, lt.save_resume_data_alert)
        assert len(asked) == asked_before  # remembered: libtorrent was not asked again
        session.remove_torrent(handle)
        await _next(queue, lt.torrent_removed_alert)
    assert queues[0].empty()  # nothing of the second torrent reached the first's subscriber
