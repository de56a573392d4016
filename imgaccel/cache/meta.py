"""Metadata kept beside the blobs, in SQLite (``meta.db`` in the cache dir).

Nouns: manifests by digest (kept for good, with their media type), tag -> digest answers (with the
time they were fetched, for the TTL and for serving stale), which repository holds which digest,
and whether a repository is public (the origin served it without the client's credentials).
Writes are small and synchronous; WAL mode keeps them cheap and crash-safe.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from imgaccel.oci.digest import Digest

_SCHEMA = """
CREATE TABLE IF NOT EXISTS manifests (
    digest TEXT PRIMARY KEY, media_type TEXT NOT NULL, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS tags (
    registry TEXT, repo TEXT, tag TEXT, digest TEXT NOT NULL, fetched_at REAL NOT NULL,
    PRIMARY KEY (registry, repo, tag));
CREATE TABLE IF NOT EXISTS repo_content (
    registry TEXT, repo TEXT, digest TEXT, PRIMARY KEY (registry, repo, digest));
CREATE TABLE IF NOT EXISTS repos (
    registry TEXT, repo TEXT, public INTEGER NOT NULL, checked_at REAL NOT NULL,
    PRIMARY KEY (registry, repo));
CREATE TABLE IF NOT EXISTS torrents (
    digest TEXT PRIMARY KEY, torrent BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS pins (
    digest TEXT PRIMARY KEY, until REAL NOT NULL, reason TEXT NOT NULL DEFAULT '');
"""


@dataclass(frozen=True)
class Manifest:
    digest: Digest
    media_type: str
    body: bytes


@dataclass(frozen=True)
class TagEntry:
    digest: Digest
    fetched_at: float


class MetaStore:
    """Manifests, tags, repository contents and visibility (see the module docstring)."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    # -- manifests ------------------------------------------------------------------------------

    def put_manifest(self, manifest: Manifest) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO manifests VALUES (?, ?, ?)",
            (str(manifest.digest), manifest.media_type, manifest.body),
        )

    def manifest(self, digest: Digest) -> Manifest | None:
        row = self._db.execute(
            "SELECT media_type, body FROM manifests WHERE digest = ?", (str(digest),)
        ).fetchone()
        return Manifest(digest, row[0], bytes(row[1])) if row else None

    # -- tags -----------------------------------------------------------------------------------

    def put_tag(self, registry: str, repo: str, tag: str, digest: Digest) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO tags VALUES (?, ?, ?, ?, ?)",
            (registry, repo, tag, str(digest), self._clock()),
        )

    def tag(self, registry: str, repo: str, tag: str) -> TagEntry | None:
        row = self._db.execute(
            "SELECT digest, fetched_at FROM tags WHERE registry = ? AND repo = ? AND tag = ?",
            (registry, repo, tag),
        ).fetchone()
        return TagEntry(Digest.parse(row[0]), row[1]) if row else None

    # -- which repository holds what, and who may see it --------------------------------------

    def add_content(self, registry: str, repo: str, digest: Digest) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO repo_content VALUES (?, ?, ?)", (registry, repo, str(digest))
        )

    def has_content(self, registry: str, repo: str, digest: Digest) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM repo_content WHERE registry = ? AND repo = ? AND digest = ?",
            (registry, repo, str(digest)),
        ).fetchone()
        return row is not None

    def set_public(self, registry: str, repo: str, public: bool) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO repos VALUES (?, ?, ?, ?)",
            (registry, repo, int(public), self._clock()),
        )

    def is_public(self, registry: str, repo: str) -> bool | None:
        """True/False as last seen at the origin; None if never seen."""
        row = self._db.execute(
            "SELECT public FROM repos WHERE registry = ? AND repo = ?", (registry, repo)
        ).fetchone()
        return bool(row[0]) if row else None

    # -- pins -----------------------------------------------------------------------------------

    def put_pin(self, digest: Digest, until: float, reason: str) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO pins VALUES (?, ?, ?)", (str(digest), until, reason)
        )

    def delete_pin(self, digest: Digest) -> None:
        self._db.execute("DELETE FROM pins WHERE digest = ?", (str(digest),))

    def pins(self) -> list[tuple[Digest, float, str]]:
        rows = self._db.execute("SELECT digest, until, reason FROM pins").fetchall()
        return [(Digest.parse(d), until, reason) for d, until, reason in rows]

    # -- torrents (peer-to-peer metainfo of cached blobs) -------------------------------------

    def put_torrent(self, digest: Digest, torrent: bytes) -> None:
        self._db.execute("INSERT OR REPLACE INTO torrents VALUES (?, ?)", (str(digest), torrent))

    def torrent(self, digest: Digest) -> bytes | None:
        row = self._db.execute(
            "SELECT torrent FROM torrents WHERE digest = ?", (str(digest),)
        ).fetchone()
        return bytes(row[0]) if row else None

    def delete_torrent(self, digest: Digest) -> None:
        self._db.execute("DELETE FROM torrents WHERE digest = ?", (str(digest),))
