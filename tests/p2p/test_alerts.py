"""The alert pump: libtorrent alerts arrive on the loop, per torrent, without polling."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import libtorrent as lt
import pytest

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
