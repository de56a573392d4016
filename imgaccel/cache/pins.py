"""Pins: blobs kept against eviction until a time, in memory (the store) and on disk (meta.db).

The store decides eviction from its in-memory pins; the metadata store keeps them across a
restart. Every pin goes through here so the two agree.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from imgaccel.cache.meta import MetaStore
from imgaccel.cache.store import BlobStore
from imgaccel.oci.digest import Digest


@dataclass(frozen=True)
class PinInfo:
    digest: Digest
    until: float
    reason: str


def load_pins(store: BlobStore, meta: MetaStore, now: float | None = None) -> int:
    """Give the store the pins kept in ``meta`` that have not expired (and forget the rest)."""
    now = time.time() if now is None else now
    loaded = 0
    for digest, until, _ in meta.pins():
        if until > now:
            store.pin(digest, until)
            loaded += 1
        else:
            meta.delete_pin(digest)
    return loaded


def pin(store: BlobStore, meta: MetaStore, digest: Digest, seconds: float, reason: str) -> bool:
    """Pin a cached blob for ``seconds`` (extending, never shortening); False if not cached."""
    if digest not in store:
        return False
    until = time.time() + seconds
    store.pin(digest, until)
    meta.put_pin(digest, store.pinned_until(digest) or until, reason)
    return True


def unpin(store: BlobStore, meta: MetaStore, digest: Digest) -> None:
    store.unpin(digest)
    meta.delete_pin(digest)


def pins(store: BlobStore, meta: MetaStore) -> dict[Digest, PinInfo]:
    """The pins in force, by digest."""
    now = time.time()
    return {
        d: PinInfo(d, until, reason)
        for d, until, reason in meta.pins()
        if until > now and d in store
    }


def collect(store: BlobStore, meta: MetaStore, target_bytes: int) -> list[Digest]:
    """Forget expired pins, then delete least recently used blobs that nobody reads and nothing
    pins until the store holds at most ``target_bytes``; the digests deleted."""
    load_pins(store, meta)
    removed: list[Digest] = []
    used = store.used_bytes
    for digest, entry in store.entries():  # oldest access first
        if used <= target_bytes:
            break
        if store.pinned_until(digest) is None and store.remove(digest):
            removed.append(digest)
            used -= entry.size
    return removed
