"""One copy on disk of a blob that both the cache and containerd hold.

A node pulls a layer through the mirror, and containerd keeps what it pulled in its content
store (``<root>/io.containerd.content.v1.content/blobs/<algorithm>/<hex>``): every layer a node
runs would take its size twice on the disk, a 20 GB image 40 GB. Spegel avoids that by serving
from containerd's store and keeping no cache of its own; Kraken's agent and Dragonfly's dfdaemon
keep the second copy. Here the cache keeps its own (it must hold blobs containerd never asked
for: prewarmed and hot layers, blobs peers fetch, blobs containerd deleted), and when containerd
holds the same blob, the cache's file becomes a hard link to containerd's: one inode, no second
copy, and either side may delete its name without touching the other's.

:class:`ContainerdSharing` does it in rounds (:meth:`ContainerdSharing.sweep`): each blob whose
file is the cache's alone and of which containerd's store has a regular file of the same size
on the same filesystem is linked into the cache's ``tmp/``, the linked file hashed (a thread of
low CPU priority, and only while no fill is in progress, since this is housekeeping), and
renamed over the cache's file only if its digest matches: a byte the cache serves is still one
it verified. Hard links need the same filesystem and, under a container runtime, the same mount
(two hostPath volumes are two mounts even on one disk; ``link`` then fails with EXDEV): the first
such failure turns sharing off with one log line saying why.

Eviction for disk space counts a shared blob as freeing nothing (containerd keeps the inode),
see :meth:`imgaccel.cache.store.BlobStore.frees`; the quota still counts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import logging
import os
import stat
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from imgaccel.cache import libc
from imgaccel.cache.store import BlobStore
from imgaccel.oci.digest import Digest

log = logging.getLogger(__name__)

#: The hashing thread's name in ``top -H``, ``ps -L`` and /proc (at most 15 bytes).
THREAD_NAME = b"imgaccel-share"
#: Bytes read at a time when hashing containerd's file.
READ_CHUNK = 4 << 20
Blobs = list[tuple[Digest, int]]  # digests and sizes

#: ``link`` errors that say sharing cannot work at all here (not just for one blob).
_CANNOT_LINK = {errno.EXDEV, errno.EPERM, errno.EACCES, errno.EROFS}


@dataclass
class Sweep:
    """What one round found and did."""

    shared: int = 0  # blobs linked this round
    shared_bytes: int = 0  # bytes of cached blobs whose file containerd holds too, after it


class ContainerdSharing:
    """Link cached blobs to containerd's copies of them (see the module docstring)."""

    def __init__(
        self,
        store: BlobStore,
        content_dir: Path,
        on_shared: Callable[[Digest], None] | None = None,
    ) -> None:
        self.store = store
        self.content_dir = content_dir
        self.on_shared = on_shared  # the file behind the blob's name changed (libtorrent's)
        #: Why sharing is off for good (a link across mounts, a read-only cache), or None.
        self.off: str | None = None
        self._mismatched: set[Digest] = set()  # containerd's file failed the digest: not again
        self._stopping = threading.Event()
        # Hashing containerd's copies is housekeeping: one thread of its own, at the lowest
        # priority (the shared pool's threads must keep theirs).
        self._hashing = ThreadPoolExecutor(1, "containerd-sharing", initializer=_housekeeping)
        self.shared_bytes = 0

    def theirs(self, digest: Digest) -> Path:
        return self.content_dir / "blobs" / digest.algorithm / digest.hex

    def close(self) -> None:
        """Stop a hash in progress at its next chunk, and the hashing thread after it."""
        self._stopping.set()
        self._hashing.shutdown(wait=False, cancel_futures=True)

    async def sweep(self) -> Sweep:
        """One round over the cache: link every blob that containerd holds too."""
        result = Sweep()
        if self.off is not None:
            return result
        entries = [(d, e.size) for d, e in self.store.entries() if d not in self._mismatched]
        candidates, result.shared_bytes = await asyncio.to_thread(self._candidates, entries)
        for digest, size in candidates:
            # Housekeeping waits while blobs are being fetched: their pulls want the disk.
            if self._stopping.is_set() or self.off is not None or self.store.reserved_bytes:
                break
            loop = asyncio.get_running_loop()
            temp = await loop.run_in_executor(
                self._hashing, self._linked_and_verified, digest, size
            )
            if temp is None:
                continue
            # On the loop, where the store changes: the blob may have been evicted meanwhile.
            if self.store.size_of(digest) == size and self.store.blob_file(digest) is not None:
                os.replace(temp, self.store.path(digest))
                result.shared += 1
                result.shared_bytes += size
                log.debug("%s: one copy on disk with containerd's (%d bytes freed)", digest, size)
                if self.on_shared is not None:
                    self.on_shared(digest)
            else:
                temp.unlink(missing_ok=True)
        self.shared_bytes = result.shared_bytes
        return result

    def _candidates(self, entries: Blobs) -> tuple[Blobs, int]:
        """(blobs containerd holds a copy of that the cache's file is not, bytes already shared);
        two ``stat``s a blob, in a thread."""
        found: Blobs = []
        shared = 0
        for digest, size in entries:
            try:
                ours = os.lstat(self.store.path(digest))
                theirs = os.lstat(self.theirs(digest))
            except OSError:  # not in containerd's store (or no longer in ours)
                continue
            if not stat.S_ISREG(theirs.st_mode) or theirs.st_size != size or size == 0:
                continue
            if (ours.st_dev, ours.st_ino) == (theirs.st_dev, theirs.st_ino):
                shared += size
            elif ours.st_dev == theirs.st_dev:
                found.append((digest, size))
            elif self.off is None:
                self._turn_off(f"{self.content_dir} is on another filesystem than the cache")
        return found, shared

    def _linked_and_verified(self, digest: Digest, size: int) -> Path | None:
        """A hard link in the cache's ``tmp/`` to containerd's file of ``digest``, whose bytes
        were hashed to ``digest`` (the inode linked, so a file replaced meanwhile is no matter);
        None when it cannot be had or does not match. In a thread."""
        temp = self.store.temp_path()
        try:
            os.link(self.theirs(digest), temp, follow_symlinks=False)
        except FileNotFoundError:  # containerd deleted it since
            return None
        except OSError as exc:
            if exc.errno == errno.EXDEV:
                self._turn_off(
                    f"{self.content_dir} and {self.store.root} are on two filesystems or mounts "
                    "(in a container: mount one hostPath that holds both)"
                )
            elif exc.errno in _CANNOT_LINK:
                self._turn_off(f"cannot hard-link {self.content_dir} into {self.store.root}: {exc}")
            else:
                log.warning("%s: not shared with containerd: %s", digest, exc)
            return None
        try:
            if self._matches(temp, digest, size):
                return temp
        except OSError as exc:
            log.warning("%s: not shared with containerd: reading its copy failed: %s", digest, exc)
        temp.unlink(missing_ok=True)
        return None

    def _matches(self, path: Path, digest: Digest, size: int) -> bool:
        hasher = digest.hasher()
        read = 0
        buffer = memoryview(bytearray(READ_CHUNK))
        with open(path, "rb", buffering=0) as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                return False
            while (n := f.readinto(buffer)) and not self._stopping.is_set():
                hasher.update(buffer[:n])
                read += n
        if self._stopping.is_set():
            return False
        if read != size or hasher.hexdigest() != digest.hex:
            self._mismatched.add(digest)
            log.warning(
                "%s: containerd's copy (%s) does not match its digest: the cache keeps its own",
                digest,
                self.theirs(digest),
            )
            return False
        return True

    def _turn_off(self, why: str) -> None:
        self.off = why
        log.info("not sharing blobs with containerd's content store: %s", why)


_prctl = libc.function("prctl", [ctypes.c_int, ctypes.c_char_p])
_PR_SET_NAME = 15


def _housekeeping() -> None:
    """Run the calling thread at the lowest CPU priority (Linux: a thread's own nice value),
    named :data:`THREAD_NAME` for the system's tools."""
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    if _prctl is not None:
        _prctl(_PR_SET_NAME, THREAD_NAME)
