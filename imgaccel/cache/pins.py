"""Pins: blobs kept against eviction until a time, in memory (the store) and on disk (meta.db).

A blob may be pinned for several reasons at once (a prewarm job, a hot layer, an operator),
each with its own end: dropping one reason (a cancelled job) leaves the others in force. The
store decides eviction from its in-memory pins, the latest end of each blob's reasons; the
metadata store keeps every reason across a restart. Every pin goes through here so the two agree.
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
    until: float  # the latest end of its reasons' pins
    reasons: tuple[str, ...]

    @property
    def reason(self) -> str:
        return ", ".join(self.reasons)


def load_pins(store: BlobStore, meta: MetaStore, now: float | None = None) -> int:
    """Give the store the pins kept in ``meta`` that have not expired (and forget the rest);
    returns how many blobs are pinned."""
    now = time.time() if now is None else now
    loaded: set[Digest] = set()
    for digest, until, reason in meta.pins():
        if until > now:
            store.pin(digest, until)
            loaded.add(digest)
        else:
            meta.delete_pin(digest, reason)
    return len(loaded)


def pin(store: BlobStore, meta: MetaStore, digest: Digest, seconds: float, reason: str) -> bool:
    """Pin a cached blob for ``seconds`` for ``reason`` (extending that reason's pin, never
    shortening it); False if not cached."""
    if digest not in store:
        return False
    until = time.time() + seconds
    store.pin(digest, until)
    meta.put_pin(digest, until, reason)
    return True


def unpin(store: BlobStore, meta: MetaStore, digest: Digest, reason: str | None = None) -> None:
    """Drop ``reason``'s pin of ``digest`` (every pin of it when None); the blob stays pinned
    as long as its other reasons say."""
    meta.delete_pin(digest, reason)
    store.unpin(digest)
    now = time.time()
    if ends := [until for until in meta.pin_ends(digest) if until > now]:
        store.pin(digest, max(ends))


def unpin_reason(store: BlobStore, meta: MetaStore, reason: str) -> list[Digest]:
    """Drop every pin made for ``reason``; the digests it had pinned."""
    digests = meta.pinned_for(reason)
    for digest in digests:
        unpin(store, meta, digest, reason)
    return digests


def pins(store: BlobStore, meta: MetaStore) -> dict[Digest, PinInfo]:
    """The pins in force, by digest."""
    now = time.time()
    found: dict[Digest, PinInfo] = {}
    for digest, until, reason in sorted(meta.pins(), key=lambda row: row[2]):
        if until <= now or digest not in store:
            continue
        known = found.get(digest)
        if known is None:
            found[digest] = PinInfo(digest, until, (reason,))
        else:
            found[digest] = PinInfo(digest, max(until, known.until), (*known.reasons, reason))
    return found


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
