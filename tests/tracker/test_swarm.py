"""Swarm bookkeeping without sockets: liveness, expiry, selection, compact lists."""

from __future__ import annotations

import ipaddress

from imgaccel.tracker.swarm import Peer, Swarms, compact, normalize_ip

IH = b"\x01" * 20


def _peer(n: int, seen: float, left: int = 1, ip: str = "10.0.0.1") -> Peer:
    return Peer(bytes([n]) * 20, ipaddress.ip_address(ip), 6881 + n, left, seen)


def test_peers_past_ttl_are_not_handed_out_and_expire() -> None:
    swarms = Swarms(ttl=180)
    swarms.update(IH, _peer(1, seen=0))
    swarms.update(IH, _peer(2, seen=100, left=0))
    assert {p.port for p in swarms.select(IH, b"", 50, now=179)} == {6882, 6883}
    assert swarms.stats(IH, now=200) == (1, 0, 0)  # peer 1 is gone, peer 2 seeds
    assert swarms.expire(now=200) == [(IH, bytes([1]) * 20)]
    assert swarms.peer_count() == 1
    swarms.expire(now=1000)
    assert swarms.swarm_count() == 0


def test_select_excludes_the_asker_and_honours_numwant() -> None:
    swarms = Swarms(ttl=180)
    for n in range(10):
        swarms.update(IH, _peer(n, seen=0))
    assert len(swarms.select(IH, bytes([3]) * 20, 50, now=1)) == 9
    assert len(swarms.select(IH, b"", 4, now=1)) == 4
    assert swarms.select(b"\x02" * 20, b"", 4, now=1) == []


def test_compact_splits_v4_and_v6() -> None:
    v4, v6 = compact([_peer(1, 0, ip="10.1.2.3"), _peer(2, 0, ip="fd00::1")])
    assert v4 == bytes([10, 1, 2, 3]) + (6882).to_bytes(2, "big")
    assert v6 == ipaddress.ip_address("fd00::1").packed + (6883).to_bytes(2, "big")


def test_v4_mapped_v6_is_plain_v4() -> None:
    assert normalize_ip(ipaddress.ip_address("::ffff:10.0.0.9")) == ipaddress.ip_address("10.0.0.9")
