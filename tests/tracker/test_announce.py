"""Announce and scrape against a live tracker, with raw-byte info-hashes and peer ids."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from .conftest import FakeClock, TrackerClient, info_hash, peer_id

# Bytes that UTF-8 decoding, form decoding ('+') or naive splitting ('&', '=', '%') would mangle.
NASTY_HASH = b"\xff\x00+&=%\x80 \xfe" + bytes(range(11))


def _peers(compact: bytes) -> set[tuple[str, int]]:
    out = set()
    for offset in range(0, len(compact), 6):
        ip, port = struct.unpack("!4sH", compact[offset : offset + 6])
        out.add((str(ipaddress.ip_address(ip)), port))
    return out


async def _announce(
    tracker: TrackerClient, ih: bytes, n: int, *, left: int = 100, **extra: object
) -> dict[bytes, object]:
    params = {
        "info_hash": ih,
        "peer_id": peer_id(n),
        "port": 7000 + n,
        "uploaded": 0,
        "downloaded": 0,
        "left": left,
        "compact": 1,
        **extra,
    }
    return await tracker.announce(**params)  # type: ignore[arg-type]


async def test_peers_learn_each_other_from_compact_lists(tracker: TrackerClient) -> None:
    first = await _announce(tracker, NASTY_HASH, 1, event="started", ip="10.0.0.1")
    assert first[b"peers"] == b""
    assert first[b"interval"] == 60 and first[b"min interval"] == 15

    second = await _announce(tracker, NASTY_HASH, 2, event="started", left=0)
    assert _peers(second[b"peers"]) == {("10.0.0.1", 7001)}  # never itself
    assert (second[b"complete"], second[b"incomplete"]) == (1, 1)

    again = await _announce(tracker, NASTY_HASH, 1, ip="10.0.0.1")
    # The second peer gave no ip=: the tracker saw it come from loopback.
    assert _peers(again[b"peers"]) == {("127.0.0.1", 7002)}
    other = await _announce(tracker, info_hash("another"), 3)
    assert other[b"peers"] == b""  # swarms do not mix


async def test_ipv6_peers_come_in_peers6(tracker: TrackerClient) -> None:
    await _announce(tracker, NASTY_HASH, 1, ip="fd00::7")
    reply = await _announce(tracker, NASTY_HASH, 2, ip="10.0.0.2")
    assert reply[b"peers"] == b""
    assert reply[b"peers6"] == ipaddress.ip_address("fd00::7").packed + (7001).to_bytes(2, "big")


async def test_stopped_leaves_and_completed_counts(tracker: TrackerClient) -> None:
    await _announce(tracker, NASTY_HASH, 1, ip="10.0.0.1")
    await _announce(tracker, NASTY_HASH, 2, ip="10.0.0.2")
    await _announce(tracker, NASTY_HASH, 2, ip="10.0.0.2", left=0, event="completed")
    stopped = await _announce(tracker, NASTY_HASH, 1, ip="10.0.0.1", event="stopped")
    assert stopped[b"peers"] == b""  # a leaving peer wants none
    reply = await _announce(tracker, NASTY_HASH, 3, ip="10.0.0.3")
    assert _peers(reply[b"peers"]) == {("10.0.0.2", 7002)}

    scrape = await tracker.bget(
        "/scrape", [("info_hash", NASTY_HASH), ("info_hash", info_hash("unknown"))]
    )
    assert scrape[b"files"][NASTY_HASH] == {b"complete": 1, b"incomplete": 1, b"downloaded": 1}
    assert scrape[b"files"][info_hash("unknown")][b"complete"] == 0


async def test_numwant_and_non_compact_lists(tracker: TrackerClient) -> None:
    for n in range(6):
        await _announce(tracker, NASTY_HASH, n, ip=f"10.0.0.{n + 1}")
    few = await _announce(tracker, NASTY_HASH, 9, ip="10.0.0.9", numwant=2)
    assert len(few[b"peers"]) == 2 * 6
    listed = await _announce(tracker, NASTY_HASH, 9, ip="10.0.0.9", compact=0)
    assert {(p[b"ip"], p[b"port"]) for p in listed[b"peers"]} == {
        (f"10.0.0.{n + 1}".encode(), 7000 + n) for n in range(6)
    }
    assert {p[b"peer id"] for p in listed[b"peers"]} == {peer_id(n) for n in range(6)}


async def test_silent_peers_expire(tracker: TrackerClient, clock: FakeClock) -> None:
    await _announce(tracker, NASTY_HASH, 1, ip="10.0.0.1")
    clock.advance(100)
    await _announce(tracker, NASTY_HASH, 2, ip="10.0.0.2")
    clock.advance(100)  # peer 1 missed its announces: 200 s > peer_ttl 180 s
    reply = await _announce(tracker, NASTY_HASH, 3, ip="10.0.0.3")
    assert _peers(reply[b"peers"]) == {("10.0.0.2", 7002)}
    assert reply[b"incomplete"] == 2
    tracker.sweep()
    assert tracker.state.swarms.peer_count() == 2
    assert tracker.state.store.load_peers().__next__()[1].peer_id != peer_id(1)


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"peer_id": peer_id(1), "port": 1, "left": 0}, b"missing info_hash"),
        ({"info_hash": b"short", "peer_id": peer_id(1), "port": 1, "left": 0}, b"20 bytes"),
        ({"info_hash": NASTY_HASH, "port": 1, "left": 0}, b"missing peer_id"),
        ({"info_hash": NASTY_HASH, "peer_id": peer_id(1), "port": 70000, "left": 0}, b"port"),
        ({"info_hash": NASTY_HASH, "peer_id": peer_id(1), "port": "x", "left": 0}, b"port"),
        ({"info_hash": NASTY_HASH, "peer_id": peer_id(1), "port": 1, "left": -1}, b"left"),
        ({"info_hash": NASTY_HASH, "peer_id": peer_id(1), "port": 1}, b"missing left"),
        (
            {
                "info_hash": NASTY_HASH,
                "peer_id": peer_id(1),
                "port": 1,
                "left": 0,
                "event": "exploded",
            },
            b"unknown event",
        ),
        (
            {
                "info_hash": NASTY_HASH,
                "peer_id": peer_id(1),
                "port": 1,
                "left": 0,
                "ip": b"\xff\xfe",
            },
            b"ip is not",
        ),
    ],
)
async def test_bad_announces_get_a_failure_reason_not_an_error_status(
    tracker: TrackerClient, params: dict[str, object], reason: bytes
) -> None:
    reply = await tracker.announce(**params)  # type: ignore[arg-type]
    assert reason in reply[b"failure reason"]
    assert tracker.state.swarms.peer_count() == 0


async def test_bad_scrape_gets_a_failure_reason(tracker: TrackerClient) -> None:
    reply = await tracker.bget("/scrape", {"info_hash": b"short"})
    assert b"20 bytes" in reply[b"failure reason"]


async def test_metrics_count_swarms_peers_and_announces(tracker: TrackerClient) -> None:
    await _announce(tracker, NASTY_HASH, 1, event="started", ip="10.0.0.1")
    await _announce(tracker, NASTY_HASH, 2, ip="10.0.0.2")
    async with tracker.api("GET", "/metrics") as response:
        text = await response.text()
    assert "imgaccel_tracker_swarms 1.0" in text
    assert "imgaccel_tracker_peers 2.0" in text
    assert 'imgaccel_tracker_announces_total{event="started"} 1.0' in text
    assert "imgaccel_tracker_metainfo 0.0" in text
    async with tracker.api("GET", "/healthz") as response:
        assert response.status == 200


async def test_a_restarted_peer_is_not_handed_its_old_self(tracker: TrackerClient) -> None:
    """libtorrent picks a new peer id each session: the same address with a new id is the
    same listener, restarted, not a second seeder."""
    await _announce(tracker, NASTY_HASH, 1, ip="10.0.0.5", port=6881, left=0)
    restarted = await _announce(tracker, NASTY_HASH, 2, ip="10.0.0.5", port=6881, left=0)

    assert restarted[b"peers"] == b""
    assert (restarted[b"complete"], restarted[b"incomplete"]) == (1, 0)
    assert [p.peer_id for _, p in tracker.state.store.load_peers()] == [peer_id(2)]
