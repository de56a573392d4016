"""Metadata kept beside the blobs, in SQLite (``meta.db`` in the cache dir).

Nouns: manifests by digest (kept for good, with their media type), tag -> digest answers (with the
time they were fetched, for the TTL and for serving stale), which repository holds which digest,
which registries a digest was fetched from and verified against (its provenance, and whether it
came anonymously), and whether a repository is public (the origin served it with no credentials)
or readable with the node's own credentials.
Writes are small and synchronous; WAL mode keeps them cheap and crash-safe.

``meta.db`` shares the cache's disk: when that disk is full (SQLite's "database or disk is
full") or fails (its "disk I/O error"), a query raises :class:`MetaUnwritable` (503 to a
client); any other SQLite error is a bug and is raised as it is.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imgaccel.errors import MetaUnwritable
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
CREATE TABLE IF NOT EXISTS pin_reasons (
    digest TEXT, reason TEXT, until REAL NOT NULL, PRIMARY KEY (digest, reason));
CREATE TABLE IF NOT EXISTS origins (
    digest TEXT, registry TEXT, anonymous INTEGER NOT NULL, PRIMARY KEY (digest, registry));
"""

# repos.public: what the origin last served the repository to.
_CLIENT_ONLY, _PUBLIC, _NODE = 0, 1, 2

#: SQLite's primary result codes for a disk that is full or failing (extended codes such as
#: SQLITE_IOERR_WRITE keep the primary one in their low byte).
_DISK_ERRORS = frozenset({sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR})


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
        self.path = path
        self._clock = clock
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._execute("PRAGMA journal_mode=WAL")
        self._execute("PRAGMA synchronous=NORMAL")
        had_origins = self._has_table("origins")
        self._db.executescript(_SCHEMA)
        self._migrate_pins()
        if not had_origins:
            self._migrate_origins()

    def close(self) -> None:
        self._db.close()

    def _execute(self, sql: str, parameters: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        """Run one statement; :class:`MetaUnwritable` when the disk is full or failing."""
        try:
            return self._db.execute(sql, parameters)
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorcode", 0) & 0xFF not in _DISK_ERRORS:
                raise
            raise MetaUnwritable(
                f"the mirror cannot use its cache's metadata (meta.db): {exc}"
            ) from exc

    def _has_table(self, name: str) -> bool:
        found = self._execute("SELECT 1 FROM sqlite_master WHERE name = ?", (name,))
        return found.fetchone() is not None

    def _migrate_origins(self) -> None:
        """A meta.db from before provenance was kept: a tag's digest was always computed from the
        body its registry sent, so ``tags`` is provenance for manifests. ``repo_content`` is not
        (an origin's unverified ``HEAD`` answer added rows to it): blobs cached then earn their
        provenance on their next request through each registry.

        ``repos.public`` was 1 for "served without the client's credentials", which took in the
        node's own: such a repository is readable by this node's clients, not public, until
        an origin serves it with no credentials at all again."""
        self._execute("INSERT OR IGNORE INTO origins SELECT DISTINCT digest, registry, 0 FROM tags")
        self._execute("UPDATE repos SET public = ? WHERE public = ?", (_NODE, _PUBLIC))

    def _migrate_pins(self) -> None:
        """A meta.db from before pins kept one row per reason had a ``pins`` table keyed by
        digest alone: move its rows over, once."""
        if self._execute("SELECT 1 FROM sqlite_master WHERE name = 'pins'").fetchone():
            self._db.executescript(
                "BEGIN; INSERT OR IGNORE INTO pin_reasons SELECT digest, reason, until FROM pins;"
                " DROP TABLE pins; COMMIT;"
            )

    # -- manifests ------------------------------------------------------------------------------

    def put_manifest(self, manifest: Manifest) -> None:
        self._execute(
            "INSERT OR REPLACE INTO manifests VALUES (?, ?, ?)",
            (str(manifest.digest), manifest.media_type, manifest.body),
        )

    def manifest(self, digest: Digest) -> Manifest | None:
        row = self._execute(
            "SELECT media_type, body FROM manifests WHERE digest = ?", (str(digest),)
        ).fetchone()
        return Manifest(digest, row[0], bytes(row[1])) if row else None

    # -- tags -----------------------------------------------------------------------------------

    def put_tag(self, registry: str, repo: str, tag: str, digest: Digest) -> None:
        self._execute(
            "INSERT OR REPLACE INTO tags VALUES (?, ?, ?, ?, ?)",
            (registry, repo, tag, str(digest), self._clock()),
        )

    def tag(self, registry: str, repo: str, tag: str) -> TagEntry | None:
        row = self._execute(
            "SELECT digest, fetched_at FROM tags WHERE registry = ? AND repo = ? AND tag = ?",
            (registry, repo, tag),
        ).fetchone()
        return TagEntry(Digest.parse(row[0]), row[1]) if row else None

    # -- which repository holds what, and who may see it --------------------------------------

    def add_content(
        self, registry: str, repo: str, digest: Digest, *, verified: bool = True
    ) -> None:
        """``repo`` holds ``digest``. ``verified``: and its bytes were checked, so ``registry``
        is provenance too (see :meth:`add_origin`; not known anonymous). The default suits a
        snapshot: verified, and named by the operator; an origin's word alone is not."""
        self._execute(
            "INSERT OR IGNORE INTO repo_content VALUES (?, ?, ?)", (registry, repo, str(digest))
        )
        if verified:
            self.add_origin(registry, digest, anonymous=False)

    def has_content(self, registry: str, repo: str, digest: Digest) -> bool:
        row = self._execute(
            "SELECT 1 FROM repo_content WHERE registry = ? AND repo = ? AND digest = ?",
            (registry, repo, str(digest)),
        ).fetchone()
        return row is not None

    def set_public(
        self, registry: str, repo: str, public: bool, *, node_credentials: bool = False
    ) -> None:
        """``public``: served with no credentials. Else ``node_credentials``: served to the node's
        own configured credentials (every client of this node may read it, nobody else)."""
        seen = _PUBLIC if public else _NODE if node_credentials else _CLIENT_ONLY
        self._execute(
            "INSERT OR REPLACE INTO repos VALUES (?, ?, ?, ?)",
            (registry, repo, seen, self._clock()),
        )

    def is_public(self, registry: str, repo: str) -> bool | None:
        """True/False as last seen at the origin; None if never seen."""
        row = self._execute(
            "SELECT public FROM repos WHERE registry = ? AND repo = ?", (registry, repo)
        ).fetchone()
        return row[0] == _PUBLIC if row else None

    def open_to_node(self, registry: str, repo: str) -> bool:
        """Whether the origin last served ``repo`` without the client's credentials: with none
        (public) or with the node's own."""
        row = self._execute(
            "SELECT public FROM repos WHERE registry = ? AND repo = ?", (registry, repo)
        ).fetchone()
        return row is not None and row[0] in (_PUBLIC, _NODE)

    # -- provenance: which registries are known to hold a digest's bytes ------------------------

    def add_origin(self, registry: str, digest: Digest, anonymous: bool) -> None:
        """``registry`` served bytes that verified as ``digest`` (``anonymous``: to no
        credentials). Once seen anonymous, a digest stays public: its bytes are out."""
        self._execute(
            "INSERT INTO origins VALUES (?, ?, ?) ON CONFLICT (digest, registry)"
            " DO UPDATE SET anonymous = max(anonymous, excluded.anonymous)",
            (str(digest), registry, int(anonymous)),
        )

    def fetched_from(self, registry: str, digest: Digest) -> bool:
        row = self._execute(
            "SELECT 1 FROM origins WHERE digest = ? AND registry = ?", (str(digest), registry)
        ).fetchone()
        return row is not None

    def origins_of(self, digest: Digest) -> frozenset[str]:
        rows = self._execute("SELECT registry FROM origins WHERE digest = ?", (str(digest),))
        return frozenset(row[0] for row in rows)

    def known_public(self, digest: Digest) -> bool:
        """Whether some registry served ``digest`` verified and with no credentials."""
        row = self._execute(
            "SELECT 1 FROM origins WHERE digest = ? AND anonymous = 1", (str(digest),)
        ).fetchone()
        return row is not None

    # -- pins -----------------------------------------------------------------------------------

    def put_pin(self, digest: Digest, until: float, reason: str) -> None:
        """Pin ``digest`` for ``reason`` until ``until``, or later if that reason's pin already
        lasts longer."""
        self._execute(
            "INSERT INTO pin_reasons VALUES (?, ?, ?) ON CONFLICT (digest, reason)"
            " DO UPDATE SET until = max(until, excluded.until)",
            (str(digest), reason, until),
        )

    def delete_pin(self, digest: Digest, reason: str | None = None) -> None:
        """Drop ``reason``'s pin of ``digest``, or every pin of it when ``reason`` is None."""
        if reason is None:
            self._execute("DELETE FROM pin_reasons WHERE digest = ?", (str(digest),))
        else:
            self._execute(
                "DELETE FROM pin_reasons WHERE digest = ? AND reason = ?", (str(digest), reason)
            )

    def pins(self) -> list[tuple[Digest, float, str]]:
        """(digest, until, reason) of every pin, a row per reason a blob is pinned for."""
        rows = self._execute("SELECT digest, until, reason FROM pin_reasons").fetchall()
        return [(Digest.parse(d), until, reason) for d, until, reason in rows]

    def pin_ends(self, digest: Digest) -> list[float]:
        """When each of ``digest``'s pins ends."""
        rows = self._execute("SELECT until FROM pin_reasons WHERE digest = ?", (str(digest),))
        return [until for (until,) in rows.fetchall()]

    def pinned_for(self, reason: str) -> list[Digest]:
        """The digests pinned for ``reason``."""
        rows = self._execute("SELECT digest FROM pin_reasons WHERE reason = ?", (reason,))
        return [Digest.parse(d) for (d,) in rows.fetchall()]

    # -- torrents (peer-to-peer metainfo of cached blobs) -------------------------------------

    def put_torrent(self, digest: Digest, torrent: bytes) -> None:
        self._execute("INSERT OR REPLACE INTO torrents VALUES (?, ?)", (str(digest), torrent))

    def torrent(self, digest: Digest) -> bytes | None:
        row = self._execute(
            "SELECT torrent FROM torrents WHERE digest = ?", (str(digest),)
        ).fetchone()
        return bytes(row[0]) if row else None

    def delete_torrent(self, digest: Digest) -> None:
        self._execute("DELETE FROM torrents WHERE digest = ?", (str(digest),))
