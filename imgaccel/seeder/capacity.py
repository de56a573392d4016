"""Whether the seeder's cache can keep a blob, decided before any of it is fetched.

A fill the quota cannot hold is still streamed and verified, but not kept (see
:mod:`imgaccel.proxy.fetcher`): right for a client waiting for the blob, egress for nothing for
a seeder, which seeds only what it keeps. So the seeder learns the blob's size from a ``HEAD``
(no body) and gives back what could not be kept: a blob larger than the quota, or than the room
eviction can make, which is the quota less the pinned blobs and what fills in progress reserved.
A blob being read counts as room: the read ends, and in the rare case it has not by the time the
fill reserves, the fill streams without keeping, as before. The disk declines too: a blob the
cache's filesystem could not take and still leave ``cache.min_free_percent`` free, counting every
blob not pinned as room (the fill would evict them, and then not keep it anyway).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from imgaccel.cache.store import BlobStore
from imgaccel.errors import ImgaccelError
from imgaccel.upstream.blobs import BlobLocation, parse_content_length
from imgaccel.upstream.client import UpstreamClient

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Decline:
    """Why the cache cannot keep a blob. ``reason`` is the metric's label: ``quota`` (larger
    than the whole quota), ``pinned`` (larger than the room pins and fills leave) or ``disk``
    (larger than its filesystem can give and keep ``cache.min_free_percent`` free)."""

    reason: str
    why: str


def room(store: BlobStore) -> int | None:
    """The bytes eviction could free for a new blob (may be negative); None without a quota."""
    if not store.quota_bytes:
        return None
    return store.quota_bytes - store.reserved_bytes - store.pinned_bytes()


def decline(store: BlobStore, size: int | None) -> Decline | None:
    """Why a blob of ``size`` bytes cannot be kept, or None when it can. With ``size`` None
    (not known) only a cache with no room at all declines."""
    return _quota_declines(store, size) or _disk_declines(store, size)


def _fits(size: int | None, free: int) -> bool:
    return free > 0 if size is None else size <= free


def _disk_declines(store: BlobStore, size: int | None) -> Decline | None:
    free = store.disk_room()
    if free is None or _fits(size, free):
        return None
    what = "nothing fits" if size is None else f"its {size} bytes do not fit"
    return Decline(
        "disk",
        f"{what} in the {max(free, 0)} bytes the cache's disk can give it and still keep "
        f"{store.min_free_percent:g}% of it free (cache.min_free_percent), evicting every blob "
        "not pinned",
    )


def _quota_declines(store: BlobStore, size: int | None) -> Decline | None:
    quota, free = store.quota_bytes, room(store)
    if free is None:
        return None
    if size is not None and size > quota:
        return Decline("quota", f"its {size} bytes exceed the cache quota of {quota}")
    if _fits(size, free):
        return None
    what = "nothing fits" if size is None else f"its {size} bytes do not fit"
    return Decline(
        "pinned",
        f"{what} in the {max(free, 0)} bytes that pinned blobs and fills in progress leave of "
        f"the cache quota of {quota}",
    )


async def origin_size(client: UpstreamClient, location: BlobLocation) -> int | None:
    """The blob's size from the origin's answer to a ``HEAD`` (which sends no body); None when
    the origin would not tell (the fetch then goes ahead and meets whatever it says)."""
    try:
        async with client.open(
            "HEAD", location.registry, location.repo, location.path, kind="blob-head"
        ) as answer:
            if answer.status != 200:
                return None
            return parse_content_length(answer.headers.get("Content-Length"))
    except ImgaccelError as exc:
        log.info("seeder: no size for %s from %s: %s", location.digest, location.registry, exc)
        return None
