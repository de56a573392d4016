"""``POST /v1/alive``: one call a minute keeps a node's peers in all its swarms, so that its
seeds may announce rarely (libtorrent announces a torrent every 5 minutes at the most, and the
tracker forgets a peer after 3)."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import FakeClock, TrackerClient, info_hash, peer_id

HELD = [info_hash(f"blob-{n}") for n in range(3)]


async def _announce(tracker: TrackerClient, ih: bytes, n: int, left: int) -> dict[bytes, Any]:
    return await tracker.announce(
        info_hash=ih, peer_id=peer_id(n), port=7000 + n, left=left, ip=f"10.0.0.{n}", compact=1
    )


async def _alive(tracker: TrackerClient, body: dict[str, Any]) -> tuple[int, Any]:
    async with tracker.api("POST", "/v1/alive", json=body) as response:
        return response.status, await response.json()


def _node(n: int, hashes: list[bytes]) -> dict[str, Any]:
    return {
        "node": f"n{n}",
        "port": 7000 + n,
        "ip": f"10.0.0.{n}",
        "info_hashes": [h.hex() for h in hashes],
    }


async def test_a_node_that_says_what_it_holds_stays_a_peer_past_the_ttl(
    tracker: TrackerClient, clock: FakeClock
) -> None:
    for ih in HELD:
        await _announce(tracker, ih, 1, left=0)
    await _announce(tracker, HELD[0], 2, left=0)  # a node that only announces
    for _ in range(4):  # 400 s: past the ttl (180 s) of the announces
        clock.advance(100)
        status, reply = await _alive(tracker, _node(1, HELD[:2]))
        assert status == 200
        assert reply == {"interval": 60, "unknown": []}
    tracker.sweep()
    scrape = await tracker.bget("/scrape", [("info_hash", ih) for ih in HELD])
    assert [scrape[b"files"][ih][b"complete"] for ih in HELD] == [1, 1, 0]  # not blob-2: unnamed
    assert {(ih, p.peer_id, p.last_seen) for ih, p in tracker.state.store.load_peers()} == {
        (ih, peer_id(1), clock.now) for ih in HELD[:2]
    }  # saved: a restarted tracker has them alive too


async def test_swarms_without_a_peer_of_the_node_are_named_to_announce_again(
    tracker: TrackerClient,
) -> None:
    await _announce(tracker, HELD[0], 1, left=0)
    await _announce(tracker, HELD[1], 2, left=0)  # another node's peer
    status, reply = await _alive(tracker, _node(1, HELD))
    assert status == 200
    assert reply["unknown"] == [HELD[1].hex(), HELD[2].hex()]


async def test_a_node_that_names_its_downloads_joins_the_swarms_of_the_rest_as_a_seed(
    tracker: TrackerClient, clock: FakeClock
) -> None:
    """A node restarted on its cache seeds every blob without announcing each: one call puts
    it in their swarms, where other peers are handed its address."""
    await _announce(tracker, HELD[0], 1, left=0)  # one it announced itself
    status, reply = await _alive(tracker, _node(1, HELD) | {"downloading": [HELD[2].hex()]})
    assert status == 200
    assert reply["unknown"] == [HELD[2].hex()]  # a download announces for itself

    asked = await _announce(tracker, HELD[1], 2, left=100)
    assert asked[b"peers"] == bytes([10, 0, 0, 1]) + (7001).to_bytes(2, "big")
    assert (asked[b"complete"], asked[b"incomplete"]) == (1, 1)
    assert (await _announce(tracker, HELD[2], 3, left=100))[b"peers"] == b""
    joined = {ih for ih, p in tracker.state.store.load_peers() if p.port == 7001}
    assert joined == set(HELD[:2])  # saved: a restarted tracker has it too
    # Kept alive by the next calls, and replaced by an announce of its own from the address.
    clock.advance(150)
    assert (await _alive(tracker, _node(1, HELD[:2]) | {"downloading": []}))[1]["unknown"] == []
    clock.advance(150)
    await _announce(tracker, HELD[1], 1, left=0)
    tracker.sweep()
    peers = [(ih, p.peer_id) for ih, p in tracker.state.store.load_peers() if p.port == 7001]
    assert sorted(peers) == sorted([(HELD[0], peer_id(1)), (HELD[1], peer_id(1))])


async def test_without_downloading_nothing_joins(tracker: TrackerClient) -> None:
    """A node that does not say which it downloads (before this call took ``downloading``):
    it announces what the tracker does not know, as before."""
    status, reply = await _alive(tracker, _node(1, HELD))
    assert status == 200
    assert reply["unknown"] == [h.hex() for h in HELD]
    assert tracker.state.swarms.peer_count() == 0


async def test_the_callers_address_is_used_without_ip(tracker: TrackerClient) -> None:
    await tracker.announce(info_hash=HELD[0], peer_id=peer_id(1), port=7001, left=0)  # loopback
    body = _node(1, HELD[:1])
    del body["ip"]
    assert (await _alive(tracker, body))[1]["unknown"] == []
    body["port"] = 7002
    assert (await _alive(tracker, body))[1]["unknown"] == [HELD[0].hex()]


async def test_seeds_of_a_node_that_says_what_it_holds_announce_rarely(
    tracker: TrackerClient, clock: FakeClock
) -> None:
    assert (await _announce(tracker, HELD[0], 1, left=0))[b"interval"] == 60
    await _alive(tracker, _node(1, HELD[:1]))
    assert (await _announce(tracker, HELD[0], 1, left=0))[b"interval"] == 3600
    assert (await _announce(tracker, HELD[1], 1, left=10))[b"interval"] == 60  # downloading
    assert (await _announce(tracker, HELD[0], 2, left=0))[b"interval"] == 60  # another node
    clock.advance(181)  # it stopped calling: its announces keep it again
    assert (await _announce(tracker, HELD[0], 1, left=0))[b"interval"] == 60


async def test_a_node_that_leaves_is_out_of_the_swarms_it_names_at_once(
    tracker: TrackerClient, clock: FakeClock
) -> None:
    for ih in HELD:
        await _announce(tracker, ih, 1, left=0)
        await _announce(tracker, ih, 2, left=0)
    await _alive(tracker, _node(1, HELD))
    async with tracker.api("POST", "/v1/left", json=_node(1, HELD[:2])) as response:
        assert response.status == 200
        assert await response.json() == {"removed": 2}
    scrape = await tracker.bget("/scrape", [("info_hash", ih) for ih in HELD])
    assert [scrape[b"files"][ih][b"complete"] for ih in HELD] == [1, 1, 2]  # the other stays
    assert sorted((ih, p.peer_id) for ih, p in tracker.state.store.load_peers()) == sorted(
        [(ih, peer_id(2)) for ih in HELD] + [(HELD[2], peer_id(1))]
    )
    # It no longer keeps its peers alive: its seeds announce at the usual interval again.
    assert (await _announce(tracker, HELD[2], 1, left=0))[b"interval"] == 60


async def test_a_node_that_evicted_blobs_leaves_their_swarms_and_keeps_the_rest_alive(
    tracker: TrackerClient, clock: FakeClock
) -> None:
    for ih in HELD:
        await _announce(tracker, ih, 1, left=0)
    await _alive(tracker, _node(1, HELD))
    body = _node(1, HELD[:1]) | {"stopping": False}
    async with tracker.api("POST", "/v1/left", json=body) as response:
        assert response.status == 200
        assert await response.json() == {"removed": 1}
    scrape = await tracker.bget("/scrape", [("info_hash", ih) for ih in HELD])
    assert [scrape[b"files"][ih][b"complete"] for ih in HELD] == [0, 1, 1]
    # It still keeps its other peers alive: their seeds still announce rarely.
    assert (await _announce(tracker, HELD[2], 1, left=0))[b"interval"] == 3600


@pytest.mark.parametrize("stopping", ["false", 0, None, [False]])
async def test_a_left_call_whose_stopping_is_not_a_boolean_gets_a_400(
    tracker: TrackerClient, stopping: object
) -> None:
    await _announce(tracker, HELD[0], 1, left=0)
    body = _node(1, HELD[:1]) | {"stopping": stopping}
    async with tracker.api("POST", "/v1/left", json=body) as response:
        assert response.status == 400
        assert "'stopping'" in (await response.json())["error"]
    assert tracker.state.swarms.peer_count() == 1


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"port": 0}, "'port'"),
        ({"port": 70000}, "'port'"),
        ({"port": True}, "'port'"),
        ({"port": "7001"}, "'port'"),
        ({"ip": "not-an-ip"}, "'ip'"),
        ({"ip": 7}, "'ip'"),
        ({"ip": "\ud800"}, "'ip'"),
        ({"info_hashes": "00" * 20}, "'info_hashes'"),
        ({"info_hashes": ["00" * 19]}, "'info_hashes'"),
        ({"info_hashes": ["zz" * 20]}, "'info_hashes'"),
        ({"info_hashes": [None]}, "'info_hashes'"),
        ({"node": ""}, "'node'"),
        ({"downloading": None}, "'downloading'"),
        ({"downloading": ["zz" * 20]}, "'downloading'"),
        ({"downloading": [info_hash("elsewhere").hex()]}, "'downloading' must name only"),
    ],
)
async def test_bad_calls_get_a_400_that_says_which_field(
    tracker: TrackerClient, change: dict[str, Any], error: str
) -> None:
    status, reply = await _alive(tracker, _node(1, HELD) | change)
    assert status == 400
    assert error in reply["error"]
    assert tracker.state.swarms.peer_count() == 0
