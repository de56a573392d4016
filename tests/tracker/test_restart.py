"""State survives a restart: a new tracker on the same data directory knows what the old one did."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import aiohttp

from imgaccel.tracker import TrackerSettings, running
from imgaccel.tracker.store import DB_NAME, Store

from .conftest import FakeClock, TrackerClient, digest_of, info_hash, peer_id, torrent_for

PUBLISHED, CLAIMED = digest_of("published"), digest_of("claimed")
IH = info_hash("swarm")


async def _before(tracker: TrackerClient) -> None:
    async with tracker.api(
        "PUT", f"/v1/metainfo/{PUBLISHED}?node=n1", data=torrent_for(PUBLISHED)
    ) as response:
        assert response.status == 201
    async with tracker.api("POST", f"/v1/claims/{CLAIMED}", json={"node": "n1"}) as response:
        assert (await response.json())["fetch"] is True
    async with tracker.api("POST", "/v1/seeders", json={"node": "seed-1"}) as response:
        assert response.status == 200
    await tracker.announce(
        info_hash=IH, peer_id=peer_id(1), port=7001, left=0, event="completed", ip="10.0.0.1"
    )


async def test_metainfo_claims_seeders_and_peers_survive(
    settings: TrackerSettings, clock: FakeClock
) -> None:
    async with running(settings, clock=clock) as served, aiohttp.ClientSession() as http:
        await _before(TrackerClient(served.url, http, served.app))
    clock.advance(5)
    async with running(settings, clock=clock) as served, aiohttp.ClientSession() as http:
        tracker = TrackerClient(served.url, http, served.app)
        async with tracker.api("GET", f"/v1/metainfo/{PUBLISHED}") as response:
            assert await response.read() == torrent_for(PUBLISHED)
        async with tracker.api("POST", f"/v1/claims/{CLAIMED}", json={"node": "n2"}) as response:
            assert await response.json() == {"fetch": False, "holder": "n1", "lease_seconds": 25.0}
        assert tracker.state.store.alive_seeders(clock() - 20) == ["seed-1"]
        reply = await tracker.announce(
            info_hash=IH, peer_id=peer_id(2), port=7002, left=5, ip="10.0.0.2"
        )
        assert reply[b"peers"] == bytes([10, 0, 0, 1]) + (7001).to_bytes(2, "big")
        scrape = await tracker.bget("/scrape", {"info_hash": IH})
        assert scrape[b"files"][IH][b"downloaded"] == 1


def test_an_older_database_loses_the_holdings_table_it_never_read(tmp_path: Path) -> None:
    """Earlier trackers wrote a row per node and blob there on every publish and restart."""
    old = sqlite3.connect(tmp_path / DB_NAME)
    old.execute("CREATE TABLE holdings (node TEXT, digest TEXT, seen REAL)")
    old.execute("INSERT INTO holdings VALUES ('n1', 'sha256:' || hex(randomblob(32)), 0)")
    old.commit()
    old.close()

    Store.open(tmp_path).close()

    tables = sqlite3.connect(tmp_path / DB_NAME).execute(
        "SELECT name FROM sqlite_master WHERE type = 'table'"
    )
    names = {row[0] for row in tables}
    assert "holdings" not in names and "metainfo" in names
