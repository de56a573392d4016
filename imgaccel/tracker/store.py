"""The tracker's durable state: one SQLite database (WAL) under the data directory.

Tables: ``metainfo`` (published torrents by blob digest), ``claims`` (who fetches a cold blob, until
when), ``seeders`` (heartbeats), ``work`` (digests a seeder should fetch), ``peers`` and
``swarm_stats`` (a copy of the in-memory swarms, so a restarted tracker answers its first
announces with the peers it knew).

Calls are synchronous on the event loop, on purpose: each is a sub-millisecond indexed statement
on a local file, and keeping read-decide-write sequences free of ``await`` is what makes the claim
election atomic without locks. ``synchronous=NORMAL`` in WAL mode does not fsync each commit; a
power loss may lose the last commits, which nodes repair by re-announcing and re-publishing.
"""

from __future__ import annotations

import ipaddress
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from imgaccel.tracker.swarm import Peer

DB_NAME = "tracker.sqlite3"
#: The largest integer SQLite stores (a signed 64-bit INTEGER); binding a bigger one raises
#: OverflowError, so request handlers check integers against this before they reach a store.
MAX_INT64 = 2**63 - 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS metainfo (
    digest TEXT PRIMARY KEY, info_hash BLOB NOT NULL, torrent BLOB NOT NULL,
    publisher TEXT NOT NULL, published_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS claims (
    digest TEXT PRIMARY KEY, holder TEXT NOT NULL, role TEXT NOT NULL,
    expires_at REAL NOT NULL, registry TEXT, repository TEXT);
CREATE TABLE IF NOT EXISTS seeders (node TEXT PRIMARY KEY, last_seen REAL NOT NULL);
CREATE TABLE IF NOT EXISTS work (
    digest TEXT PRIMARY KEY, seeder TEXT NOT NULL, registry TEXT NOT NULL,
    repository TEXT NOT NULL, created REAL NOT NULL);
CREATE INDEX IF NOT EXISTS work_by_seeder ON work (seeder);
-- Written by earlier versions and never read; it grew by a row per node and blob.
DROP TABLE IF EXISTS holdings;
CREATE TABLE IF NOT EXISTS peers (
    info_hash BLOB NOT NULL, peer_id BLOB NOT NULL, ip TEXT NOT NULL, port INTEGER NOT NULL,
    left_bytes INTEGER NOT NULL, last_seen REAL NOT NULL, PRIMARY KEY (info_hash, peer_id));
CREATE TABLE IF NOT EXISTS swarm_stats (info_hash BLOB PRIMARY KEY, downloaded INTEGER NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class Claim:
    """A lease on fetching one cold blob from the origin."""

    digest: str
    holder: str
    role: str
    expires_at: float
    registry: str | None = None
    repository: str | None = None


@dataclass(frozen=True, slots=True)
class Published:
    """Published metainfo: the .torrent bytes and their v1 info-hash."""

    torrent: bytes
    info_hash: bytes
    publisher: str


@dataclass(frozen=True, slots=True)
class WorkItem:
    """A blob a seeder should fetch from the origin and publish."""

    digest: str
    registry: str
    repository: str


class Store:
    """The SQLite database; open with :meth:`open`, close with :meth:`close`."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    @classmethod
    def open(cls, data_dir: Path) -> Store:
        data_dir.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(data_dir / DB_NAME, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
        return cls(db)

    def close(self) -> None:
        self._db.close()

    # metainfo

    def put_metainfo(self, digest: str, published: Published, now: float) -> Published | None:
        """Store ``published`` unless the digest has metainfo already; return the existing one."""
        existing = self.get_metainfo(digest)
        if existing is None:
            self._db.execute(
                "INSERT INTO metainfo VALUES (?, ?, ?, ?, ?)",
                (digest, published.info_hash, published.torrent, published.publisher, now),
            )
        return existing

    def get_metainfo(self, digest: str) -> Published | None:
        row = self._db.execute(
            "SELECT torrent, info_hash, publisher FROM metainfo WHERE digest = ?", (digest,)
        ).fetchone()
        return None if row is None else Published(row[0], row[1], row[2])

    def known_digests(self, digests: Iterable[str]) -> set[str]:
        wanted, known = list(digests), set[str]()
        for start in range(0, len(wanted), 500):  # SQLite caps the number of parameters
            chunk = wanted[start : start + 500]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT digest FROM metainfo WHERE digest IN ({marks})"
            known.update(row[0] for row in self._db.execute(query, chunk))
        return known

    def metainfo_count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM metainfo").fetchone()[0])

    # claims

    def get_claim(self, digest: str) -> Claim | None:
        row = self._db.execute("SELECT * FROM claims WHERE digest = ?", (digest,)).fetchone()
        return None if row is None else Claim(*row)

    def set_claim(self, claim: Claim) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO claims VALUES (?, ?, ?, ?, ?, ?)",
            (
                claim.digest,
                claim.holder,
                claim.role,
                claim.expires_at,
                claim.registry,
                claim.repository,
            ),
        )

    def delete_claim(self, digest: str) -> None:
        self._db.execute("DELETE FROM claims WHERE digest = ?", (digest,))
        self._db.execute("DELETE FROM work WHERE digest = ?", (digest,))

    def expired_claims(self, now: float) -> list[Claim]:
        rows = self._db.execute("SELECT * FROM claims WHERE expires_at <= ?", (now,)).fetchall()
        return [Claim(*row) for row in rows]

    # seeders and their work

    def seeder_heartbeat(self, node: str, now: float) -> None:
        self._db.execute("INSERT OR REPLACE INTO seeders VALUES (?, ?)", (node, now))

    def alive_seeders(self, since: float) -> list[str]:
        rows = self._db.execute("SELECT node FROM seeders WHERE last_seen > ?", (since,))
        return sorted(row[0] for row in rows)

    def add_work(self, seeder: str, item: WorkItem, now: float) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO work VALUES (?, ?, ?, ?, ?)",
            (item.digest, seeder, item.registry, item.repository, now),
        )

    def take_work(self, seeder: str) -> list[WorkItem]:
        """The seeder's queued items, oldest first; they leave the queue."""
        rows = self._db.execute(
            "DELETE FROM work WHERE seeder = ? RETURNING digest, registry, repository, created",
            (seeder,),
        ).fetchall()
        return [WorkItem(*row[:3]) for row in sorted(rows, key=lambda row: row[3])]

    # peers

    def save_peer(self, info_hash: bytes, peer: Peer) -> None:
        self.save_peers([(info_hash, peer)])

    def save_peers(self, peers: Iterable[tuple[bytes, Peer]]) -> None:
        """Save ``peers`` (info_hash, peer), new or changed, in one transaction."""
        rows = [
            (info_hash, peer.peer_id, str(peer.ip), peer.port, peer.left, peer.last_seen)
            for info_hash, peer in peers
        ]
        if not rows:
            return
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO peers VALUES (?, ?, ?, ?, ?, ?)", rows)

    def touch_peers(self, peers: Iterable[tuple[bytes, Peer]]) -> None:
        """Save the ``last_seen`` of ``peers`` (info_hash, peer), in one transaction."""
        rows = [(peer.last_seen, info_hash, peer.peer_id) for info_hash, peer in peers]
        if not rows:
            return
        with self._db:  # BEGIN ... COMMIT: one WAL write for a node's thousands of blobs
            self._db.execute("BEGIN")
            self._db.executemany(
                "UPDATE peers SET last_seen = ? WHERE info_hash = ? AND peer_id = ?", rows
            )

    def delete_peers(self, keys: Iterable[tuple[bytes, bytes]]) -> None:
        self._db.executemany("DELETE FROM peers WHERE info_hash = ? AND peer_id = ?", keys)

    def load_peers(self) -> Iterator[tuple[bytes, Peer]]:
        for ih, pid, ip, port, left, seen in self._db.execute("SELECT * FROM peers"):
            yield ih, Peer(pid, ipaddress.ip_address(ip), port, left, seen)

    def add_downloaded(self, info_hash: bytes) -> None:
        self._db.execute(
            "INSERT INTO swarm_stats VALUES (?, 1) "
            "ON CONFLICT (info_hash) DO UPDATE SET downloaded = downloaded + 1",
            (info_hash,),
        )

    def load_downloaded(self) -> Iterator[tuple[bytes, int]]:
        yield from self._db.execute("SELECT info_hash, downloaded FROM swarm_stats")
