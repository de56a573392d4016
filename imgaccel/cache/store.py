"""The content-addressed blob store: verified blobs on disk, an LRU index and a byte quota.

Layout under the cache dir::

    blobs/<algorithm>/<hex>      verified blobs, named by their digest (nothing else is there)
    tmp/                         blobs being written, a snapshot import's import-<id>/ dir;
                                 emptied at start-up (crashes leave these)

A blob becomes visible only through :meth:`BlobStore.commit`: fsync, rename into ``blobs/``, fsync
the directory. So every regular file in ``blobs/`` named by a digest was verified before it got
there: the node's own fills, and blobs another process committed (``imgaccel snapshot import``,
beside a running node). The owning node indexes those at start, and a running one when it misses
one (:meth:`BlobStore.adopt`) or is told to look (:meth:`BlobStore.rescan`); anything else in
``blobs/`` (a symlink, a directory, another name) is never indexed, so never served.

The quota counts the bytes of imgaccel's own blobs (and of fills in progress), not the
filesystem's; eviction takes the least recently used blob that nobody reads, writes or pinned.
The filesystem is shared (containerd's content and snapshots live there too), so a blob is kept
only if the filesystem still has ``min_free_percent`` of its size free afterwards, counting the
bytes fills in progress have yet to write; eviction makes that room the same way (only the
cache's own blobs are its to free), and a blob it cannot make room for is not kept.
Every path is built from a validated :class:`Digest` (fixed-length lowercase hex), never from a
name or a header, so no request can reach outside the cache dir.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Container, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from imgaccel.cache import space
from imgaccel.cache.space import Usage
from imgaccel.errors import CacheFull, DigestInvalid, DiskLow, QuotaTooSmall
from imgaccel.oci.digest import Digest

log = logging.getLogger(__name__)

_TOUCH_EVERY_SECONDS = 60.0
_ALGORITHMS = ("sha256", "sha512")


@dataclass
class Entry:
    """One verified blob in the store."""

    size: int
    last_access: float


class BlobStore:
    """Verified blobs on disk with LRU eviction under a byte quota (0: no quota) and above a
    floor of free space on the filesystem (``min_free_percent``; 0: only what a blob needs)."""

    def __init__(
        self,
        root: Path,
        quota_bytes: int = 0,
        clock: Callable[[], float] = time.time,
        *,
        min_free_percent: float = 0.0,
        disk: Callable[[Path], Usage] = space.usage,
    ) -> None:
        self.root = root
        self.quota_bytes = quota_bytes
        self.min_free_percent = min_free_percent
        self._clock = clock
        self._disk = disk
        self._disk_warned = False
        self._entries: OrderedDict[Digest, Entry] = OrderedDict()  # oldest access first
        self._readers: dict[Digest, int] = {}
        self._pinned: dict[Digest, float] = {}  # digest -> pinned until (epoch seconds)
        self._reserved = 0
        self.evictions = 0
        self.on_evict: list[Callable[[Digest], None]] = []

    # -- start-up -------------------------------------------------------------------------------

    def open(self) -> None:
        """Create the layout, delete what a crash left in ``tmp/`` and index the blobs.

        Only for the process that owns the cache (the node, at start): every file in ``tmp/``
        is taken for a crash's leftover, so a second process must use :meth:`make_layout`."""
        self.make_layout()
        for stale in self.tmp_dir.iterdir():
            log.info("removing unfinished blob %s left by an earlier run", stale.name)
            if stale.is_dir() and not stale.is_symlink():  # a snapshot import's staging dir
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)
        found: list[tuple[float, Digest, int]] = []
        for digest in self.on_disk():
            if (blob := self.blob_file(digest)) is not None:
                found.append((blob.st_mtime, digest, blob.st_size))
        for mtime, digest, size in sorted(found, key=lambda item: item[0]):
            self._entries[digest] = Entry(size, mtime)
        log.info("cache at %s: %d blobs, %d bytes", self.root, len(self._entries), self.used_bytes)

    def make_layout(self) -> None:
        """Create ``tmp/`` and ``blobs/<algorithm>/`` if missing, touching nothing in them: safe
        beside a running node (a snapshot import writes into its cache this way)."""
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        for algorithm in _ALGORITHMS:
            (self.root / "blobs" / algorithm).mkdir(parents=True, exist_ok=True)

    def on_disk(self) -> list[Digest]:
        """The digests that name entries of ``blobs/<algorithm>/``, by name alone (what each is,
        :meth:`adopt` checks). Blocking (a directory listing): off the event loop when the node
        runs. Other names are logged and skipped."""
        found: list[Digest] = []
        for algorithm in _ALGORITHMS:
            with os.scandir(self.root / "blobs" / algorithm) as entries:
                for entry in entries:
                    try:
                        found.append(Digest.parse(f"{algorithm}:{entry.name}"))
                    except DigestInvalid:
                        log.warning("ignoring %s: not a blob name", entry.path)
        return found

    def blob_file(self, digest: Digest) -> os.stat_result | None:
        """The file of ``digest`` if it is one the store may serve: a regular file (not a
        symlink, which could point anywhere, nor a directory or a FIFO); None if missing."""
        path = self.path(digest)
        try:
            found = os.lstat(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("ignoring %s: %s", path, exc)
            return None
        if not stat.S_ISREG(found.st_mode):
            log.warning("ignoring %s: not a regular file", path)
            return None
        return found

    # -- paths ----------------------------------------------------------------------------------

    @property
    def tmp_dir(self) -> Path:
        return self.root / "tmp"

    def path(self, digest: Digest) -> Path:
        return self.root / "blobs" / digest.algorithm / digest.hex

    def temp_path(self) -> Path:
        return self.tmp_dir / f"{uuid.uuid4().hex}.part"

    # -- queries --------------------------------------------------------------------------------

    @property
    def used_bytes(self) -> int:
        """Bytes of verified blobs plus bytes reserved by fills in progress."""
        return sum(e.size for e in self._entries.values()) + self._reserved

    @property
    def reserved_bytes(self) -> int:
        """Bytes reserved by fills in progress."""
        return self._reserved

    def pinned_bytes(self) -> int:
        """Bytes of the blobs pinned now: what eviction cannot free."""
        return sum(e.size for d, e in self._entries.items() if self.pinned_until(d))

    def disk_usage(self) -> Usage | None:
        """The size and free bytes of the cache's filesystem; None when it cannot be asked."""
        try:
            found = self._disk(self.root)
        except OSError as exc:
            if not self._disk_warned:
                log.warning("cannot read the free space of %s: %s", self.root, exc)
            self._disk_warned = True
            return None
        self._disk_warned = False
        return found

    def disk_room(self, unwritten: int = 0) -> int | None:
        """Bytes a new blob could take on the filesystem and still leave ``min_free_percent``
        free, with the ``unwritten`` bytes fills in progress will still add, counting every blob
        not pinned as room (eviction frees it; one being read frees when its read ends, as the
        quota's room counts it); None when the filesystem cannot be asked."""
        found = self.disk_usage()
        if found is None:
            return None
        evictable = sum(e.size for d, e in self._entries.items() if not self.pinned_until(d))
        return found.free - unwritten - found.floor(self.min_free_percent) + evictable

    def __contains__(self, digest: Digest) -> bool:
        return digest in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def entries(self) -> list[tuple[Digest, Entry]]:
        return list(self._entries.items())

    def size_of(self, digest: Digest) -> int | None:
        """The size of the indexed blob ``digest``, or None; unlike :meth:`lookup`, not a use
        (the LRU order stays as it is)."""
        entry = self._entries.get(digest)
        return None if entry is None else entry.size

    def lookup(self, digest: Digest) -> Entry | None:
        """The entry for ``digest`` (marking it recently used), or None."""
        entry = self._entries.get(digest)
        if entry is None:
            return None
        now = self._clock()
        if now - entry.last_access > _TOUCH_EVERY_SECONDS:
            # The file's mtime carries the LRU order across restarts.
            try:
                os.utime(self.path(digest), (now, now))
            except FileNotFoundError:
                self._entries.pop(digest, None)
                return None
        entry.last_access = now
        self._entries.move_to_end(digest)
        return entry

    # -- readers, pins, reservations ----------------------------------------------------------

    def acquire(self, digest: Digest) -> None:
        """Mark ``digest`` as being read: it will not be evicted until :meth:`release`."""
        self._readers[digest] = self._readers.get(digest, 0) + 1

    def release(self, digest: Digest) -> None:
        left = self._readers.get(digest, 0) - 1
        if left > 0:
            self._readers[digest] = left
        else:
            self._readers.pop(digest, None)

    def pin(self, digest: Digest, until: float) -> None:
        self._pinned[digest] = max(until, self._pinned.get(digest, 0.0))

    def unpin(self, digest: Digest) -> None:
        self._pinned.pop(digest, None)

    def pinned_until(self, digest: Digest) -> float | None:
        until = self._pinned.get(digest)
        return until if until is not None and until > self._clock() else None

    def reserve(self, size: int, unwritten: int = 0) -> None:
        """Make room to keep a fill of ``size`` bytes, evicting if needed: under the quota, and
        leaving ``min_free_percent`` of the filesystem free once it and the ``unwritten`` bytes
        of the fills in progress are written (see :meth:`make_disk_room`). :class:`CacheFull`
        if the quota cannot hold it, :class:`DiskLow` if the disk cannot (the caller then
        streams without caching)."""
        if self.quota_bytes and size > self.quota_bytes:
            raise self._too_big(size)
        self._reserved += size
        try:
            self._make_room()
            if not self.make_disk_room(size, unwritten=unwritten):
                raise self._disk_low(size)
        except CacheFull:
            self._reserved -= size
            raise

    def refusal(self, size: int) -> CacheFull | None:
        """What :meth:`reserve` would raise for a blob of ``size`` bytes now (:class:`DiskLow`
        when the disk's floor decides), or None when it could keep it; reserves and evicts
        nothing. For telling after the fact why a blob was not kept: pins, fills and the disk
        may have moved since its fill reserved (and the bytes fills on a filesystem that cannot
        preallocate have yet to write are not counted), so this is what the cache says now."""
        quota = self.quota_bytes
        if quota and size > quota:
            return self._too_big(size)
        evictable = sum(entry_size for _, entry_size in self._evictable())
        if quota and self.used_bytes - evictable + size > quota:
            return self._quota_full()
        if self._disk_victims(size, 0, keep_floor=True) is None:
            return self._disk_low(size)
        return None

    def _too_big(self, size: int) -> QuotaTooSmall:
        return QuotaTooSmall(f"a blob of {size} bytes is larger than the cache quota")

    def _quota_full(self) -> CacheFull:
        return CacheFull(f"cache quota of {self.quota_bytes} bytes is full of pinned or busy blobs")

    def _disk_low(self, size: int) -> DiskLow:
        return DiskLow(
            f"keeping its {size} bytes would leave less than {self.min_free_percent:g}% "
            "of the cache's filesystem free, even after evicting every blob that may go "
            f"(cache.min_free_percent; {self._free_now()})"
        )

    def make_disk_room(self, size: int, *, unwritten: int = 0, keep_floor: bool = True) -> bool:
        """Make the filesystem able to take ``size`` more bytes on top of the ``unwritten``
        bytes fills in progress will still add, and still have ``min_free_percent`` free
        (``keep_floor``; else only the bytes), evicting least recently used blobs that nobody
        reads or pinned. False when evicting all of those would not be enough, and then none is
        evicted; True also when the filesystem cannot be asked (a fill's preallocation decides).
        """
        victims = self._disk_victims(size, unwritten, keep_floor)
        if victims is None:
            return False
        for digest in victims:
            self._evict(digest, "to leave room on the cache's disk")
        return True

    def keep_floor(self) -> tuple[int, int]:
        """While the filesystem has less than ``min_free_percent`` free (something else filled
        it: containerd's pulls), evict least recently used blobs nobody reads or pinned, as far
        as they go: the number of blobs and the bytes evicted."""
        found = self.disk_usage()
        if found is None or not self.min_free_percent:
            return 0, 0
        short = found.floor(self.min_free_percent) - found.free
        count = freed = 0
        for digest, size in self._evictable():
            if short <= 0:
                break
            frees = self.frees(digest, size)
            why = "to bring the cache's disk back above min_free_percent"
            if frees and self._evict(digest, why):
                short -= frees
                count += 1
                freed += frees
        return count, freed

    def _disk_victims(self, size: int, unwritten: int, keep_floor: bool) -> list[Digest] | None:
        """The blobs :meth:`make_disk_room` would evict, least recently used first (none when
        the disk has the room, or cannot be asked); None when evicting all it may is not enough."""
        found = self.disk_usage()
        if found is None:
            return []
        floor = found.floor(self.min_free_percent) if keep_floor else 0
        short = size + unwritten + floor - found.free
        victims: list[Digest] = []
        for digest, entry_size in self._evictable():
            if short <= 0:
                break
            if frees := self.frees(digest, entry_size):
                victims.append(digest)
                short -= frees
        return victims if short <= 0 else None

    def frees(self, digest: Digest, size: int) -> int:
        """The bytes deleting the blob's file would give back to the filesystem: none when its
        inode has another name (containerd's copy, see :mod:`imgaccel.cache.containerd`). A file
        that cannot be looked at counts as its size (the index is cleaned of it as before)."""
        try:
            return size if os.lstat(self.path(digest)).st_nlink <= 1 else 0
        except OSError:
            return size

    def _free_now(self) -> str:
        found = self.disk_usage()
        if found is None:
            return "free space unknown"
        return f"{found.free} of {found.total} bytes free"

    def unreserve(self, size: int) -> None:
        self._reserved = max(0, self._reserved - size)

    # -- writing --------------------------------------------------------------------------------

    def commit(self, temp: Path, digest: Digest, size: int) -> Path:
        """Make a verified temp file visible as ``digest``. Blocking (fsync): run in a thread."""
        final = self.path(digest)
        with open(temp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(temp, final)
        try:
            dir_fd = os.open(final.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError:
            final.unlink(missing_ok=True)  # not known to be durable: not committed at all
            raise
        return final

    def add(self, digest: Digest, size: int, *, reserved: bool = False) -> None:
        """Index a committed blob (on the event loop, after :meth:`commit`). ``reserved``: its
        room was taken with :meth:`reserve`, and that reservation becomes the entry (counted
        twice, it evicted other blobs, and a blob of over half the quota itself)."""
        if reserved:
            self.unreserve(size)
        self._entries[digest] = Entry(size, self._clock())
        self._entries.move_to_end(digest)
        try:
            self._make_room()
        except CacheFull:
            log.warning(
                "cache is over its quota of %d bytes: everything left is pinned or in use",
                self.quota_bytes,
            )

    def adopt(self, digest: Digest) -> bool:
        """Index the file of ``digest`` in ``blobs/`` if the index lacks it: a blob another
        process committed there (a snapshot import), verified as every file there is. Only a
        regular file counts, at its size on disk; room is made for it as :meth:`add` makes it
        (a blob larger than the whole quota is left out, as :meth:`reserve` refuses one). One
        ``lstat`` when there is no such file. True when ``digest`` is in the index now.

        Not for a digest a fill of this process is committing: its file is renamed into place
        before :meth:`add` turns the fill's reservation into the entry (the caller checks)."""
        if digest in self._entries:
            return True
        found = self.blob_file(digest)
        if found is None:
            return False
        if self.quota_bytes and found.st_size > self.quota_bytes:
            log.warning(
                "not indexing %s: its %d bytes are more than the cache quota of %d",
                digest,
                found.st_size,
                self.quota_bytes,
            )
            return False
        log.info("indexing %s (%d bytes), committed by another process", digest, found.st_size)
        self.add(digest, found.st_size)
        return digest in self._entries

    def rescan(self, found: Iterable[Digest], busy: Container[Digest] = ()) -> dict[Digest, int]:
        """:meth:`adopt` each of ``found`` (from :meth:`on_disk`) the index lacks, except those
        ``busy`` names (being filled by this process); the size of each blob indexed that the
        quota kept (adding some may have evicted others, or each other)."""
        added = [d for d in found if d not in self._entries and d not in busy and self.adopt(d)]
        return {d: self._entries[d].size for d in added if d in self._entries}

    def remove(self, digest: Digest) -> bool:
        """Delete a blob unless it is being read; True when it is gone."""
        if self._readers.get(digest):
            return False
        if self._entries.pop(digest, None) is None:
            return False
        self.path(digest).unlink(missing_ok=True)
        self._pinned.pop(digest, None)
        for callback in self.on_evict:
            callback(digest)
        return True

    def _evictable(self) -> Iterator[tuple[Digest, int]]:
        """What eviction may take, least recently used first: blobs nobody reads or pinned (a
        blob being written is a reservation, not an entry)."""
        for digest, entry in list(self._entries.items()):
            if not self._readers.get(digest) and not self.pinned_until(digest):
                yield digest, entry.size

    def _evict(self, digest: Digest, why: str) -> bool:
        entry = self._entries.get(digest)
        if entry is None or not self.remove(digest):
            return False
        self.evictions += 1
        log.info("evicted %s (%d bytes) %s", digest, entry.size, why)
        return True

    def _make_room(self) -> None:
        if not self.quota_bytes:
            return
        used = self.used_bytes
        for digest, size in self._evictable():
            if used <= self.quota_bytes:
                return
            if self._evict(digest, "to stay under the quota"):
                used -= size
        if used > self.quota_bytes:
            raise self._quota_full()
