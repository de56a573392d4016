"""Swarms: who announced which info-hash, from where, and when; peer expiry; compact peer lists.

Pure bookkeeping without sockets or clocks: callers pass ``now`` (seconds), so expiry is exact
in tests. The SQLite copy of peers (for restarts) is the store's business, not this module's.
"""

from __future__ import annotations

import hashlib
import ipaddress
import random
from collections.abc import Container, Iterable, Iterator
from dataclasses import dataclass, field

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(slots=True)
class Peer:
    """One peer in one swarm, as it last announced."""

    peer_id: bytes
    ip: IPAddress
    port: int
    left: int
    last_seen: float

    @property
    def seeding(self) -> bool:
        return self.left == 0


Address = tuple[IPAddress, int]


@dataclass(slots=True)
class Swarm:
    """The peers of one info-hash, and how many finished downloading in it."""

    peers: dict[bytes, Peer] = field(default_factory=dict)
    downloaded: int = 0
    #: Which peer listens at an address (one per address: see :meth:`Swarms.update`).
    addresses: dict[Address, bytes] = field(default_factory=dict)

    def counts(self, since: float) -> tuple[int, int]:
        """(complete, incomplete): seeders and leechers heard from after ``since``."""
        live = [peer for peer in self.peers.values() if peer.last_seen > since]
        complete = sum(1 for peer in live if peer.seeding)
        return complete, len(live) - complete


@dataclass(slots=True)
class Refresh:
    """What :meth:`Swarms.refresh` did: peers refreshed, seeding peers that joined, and the
    info-hashes in which the node has no peer (it should announce those)."""

    refreshed: list[tuple[bytes, Peer]] = field(default_factory=list)
    joined: list[tuple[bytes, Peer]] = field(default_factory=list)
    unknown: list[bytes] = field(default_factory=list)


def alive_peer_id(address: Address) -> bytes:
    """The peer id of a peer that joined a swarm by ``/v1/alive``, not by an announce: one per
    address, and never a BitTorrent client's (a prefix of its own). Compact peer lists, which
    libtorrent asks for, carry no peer ids; a later announce from the address replaces it."""
    ip, port = address
    return b"-IA-" + hashlib.sha1(f"{ip}|{port}".encode()).digest()[:16]


class Swarms:
    """Every swarm the tracker knows; peers older than ``ttl`` seconds are gone."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._swarms: dict[bytes, Swarm] = {}
        #: When each node (by its peers' address) last said what it holds (:meth:`refresh`).
        self._holders: dict[Address, float] = {}

    def update(self, info_hash: bytes, peer: Peer) -> list[bytes]:
        """Add or refresh ``peer`` in the swarm of ``info_hash``; drop, and return, the peer ids
        that had its address: the same listener restarted (libtorrent picks a new peer id per
        session), which would otherwise be handed the restarted node as a peer of its own, and
        counted as another seeder, until it expired."""
        swarm = self._swarms.setdefault(info_hash, Swarm())
        address = (peer.ip, peer.port)
        old = swarm.peers.get(peer.peer_id)
        if old is not None and (old.ip, old.port) != address:
            swarm.addresses.pop((old.ip, old.port), None)  # the same peer id moved
        replaced = []
        if (other := swarm.addresses.get(address)) is not None and other != peer.peer_id:
            del swarm.peers[other]
            replaced.append(other)
        swarm.peers[peer.peer_id] = peer
        swarm.addresses[address] = peer.peer_id
        return replaced

    def remove(self, info_hash: bytes, peer_id: bytes) -> None:
        swarm = self._swarms.get(info_hash)
        if swarm is not None and (peer := swarm.peers.pop(peer_id, None)) is not None:
            swarm.addresses.pop((peer.ip, peer.port), None)

    def refresh(
        self,
        address: Address,
        info_hashes: Iterable[bytes],
        now: float,
        *,
        seeds: Container[bytes] = (),
    ) -> Refresh:
        """The node whose peers listen at ``address`` still holds ``info_hashes``: its peers in
        those swarms are heard from ``now``, as if each had announced. Where it has no peer
        here, one of ``seeds`` (it holds the whole blob) joins the swarm as a seeding peer,
        as if it had announced; the others are returned unknown (announce those again)."""
        self._holders[address] = now
        done = Refresh()
        for info_hash in info_hashes:
            swarm = self._swarms.get(info_hash)
            peer_id = swarm.addresses.get(address) if swarm is not None else None
            if peer_id is not None:
                assert swarm is not None
                peer = swarm.peers[peer_id]
                peer.last_seen = now
                done.refreshed.append((info_hash, peer))
            elif info_hash in seeds:
                peer = Peer(alive_peer_id(address), address[0], address[1], 0, now)
                self.update(info_hash, peer)
                done.joined.append((info_hash, peer))
            else:
                done.unknown.append(info_hash)
        return done

    def leave(
        self, address: Address, info_hashes: Iterable[bytes], *, stopping: bool = True
    ) -> list[tuple[bytes, bytes]]:
        """Remove the peers of the node at ``address`` from the swarms of ``info_hashes``; the
        (info_hash, peer_id)s removed. ``stopping``: the node stops, and no longer refreshes
        its peers (else it evicted those blobs and goes on)."""
        if stopping:
            self._holders.pop(address, None)
        gone = []
        for info_hash in info_hashes:
            swarm = self._swarms.get(info_hash)
            if swarm is not None and (peer_id := swarm.addresses.get(address)) is not None:
                self.remove(info_hash, peer_id)
                gone.append((info_hash, peer_id))
        return gone

    def refreshes(self, address: Address, now: float) -> bool:
        """Whether the node at ``address`` keeps its peers alive with :meth:`refresh` (it did
        within the ttl), so that its seeds need announce only rarely."""
        return self._holders.get(address, -self.ttl) > now - self.ttl

    def completed(self, info_hash: bytes, count: int = 1) -> None:
        """Count a finished download (``event=completed``) for the scrape's ``downloaded``."""
        self._swarms.setdefault(info_hash, Swarm()).downloaded += count

    def stats(self, info_hash: bytes, now: float) -> tuple[int, int, int]:
        """(complete, incomplete, downloaded) of a swarm, counting live peers only."""
        swarm = self._swarms.get(info_hash)
        if swarm is None:
            return 0, 0, 0
        return (*swarm.counts(now - self.ttl), swarm.downloaded)

    def select(self, info_hash: bytes, exclude: bytes, numwant: int, now: float) -> list[Peer]:
        """Up to ``numwant`` live peers other than ``exclude``, a random choice when more."""
        swarm = self._swarms.get(info_hash)
        if swarm is None:
            return []
        live = [p for p in swarm.peers.values() if p.peer_id != exclude and self._alive(p, now)]
        return live if len(live) <= numwant else random.sample(live, numwant)

    def expire(self, now: float) -> list[tuple[bytes, bytes]]:
        """Drop peers not heard from for ``ttl`` (and empty swarms); the (info_hash, peer_id)s."""
        gone = [(ih, p.peer_id) for ih, p in self._peers() if not self._alive(p, now)]
        for info_hash, peer_id in gone:
            self.remove(info_hash, peer_id)
        for info_hash in [ih for ih, s in self._swarms.items() if not s.peers and not s.downloaded]:
            del self._swarms[info_hash]
        for address in [a for a, seen in self._holders.items() if seen <= now - self.ttl]:
            del self._holders[address]
        return gone

    def swarm_count(self) -> int:
        return sum(1 for swarm in self._swarms.values() if swarm.peers)

    def peer_count(self) -> int:
        return sum(len(swarm.peers) for swarm in self._swarms.values())

    def _alive(self, peer: Peer, now: float) -> bool:
        return peer.last_seen > now - self.ttl

    def _peers(self) -> Iterator[tuple[bytes, Peer]]:
        for info_hash, swarm in self._swarms.items():
            for peer in swarm.peers.values():
                yield info_hash, peer


def compact(peers: Iterable[Peer]) -> tuple[bytes, bytes]:
    """BEP 23 / BEP 7 compact lists: (IPv4 6-byte entries, IPv6 18-byte entries)."""
    v4: list[bytes] = []
    v6: list[bytes] = []
    for peer in peers:
        entry = peer.ip.packed + peer.port.to_bytes(2, "big")
        (v4 if peer.ip.version == 4 else v6).append(entry)
    return b"".join(v4), b"".join(v6)


def normalize_ip(ip: IPAddress) -> IPAddress:
    """IPv4-mapped IPv6 (``::ffff:a.b.c.d``, a dual-stack socket's view) as plain IPv4."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip
