"""What the seeder's cache can keep, decided from the store alone (no sockets)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from imgaccel.cache.space import Usage
from imgaccel.cache.store import BlobStore
from imgaccel.oci.digest import Digest
from imgaccel.seeder.capacity import decline, room

PINNED, OLD = (Digest.parse("sha256:" + c * 64) for c in "ab")


def store_with(tmp_path: Path, quota: int) -> BlobStore:
    """A quota with a pinned 300-byte blob, an unpinned 200-byte one and a fill reserving 100."""
    store = BlobStore(tmp_path, quota, clock=lambda: 1000.0)
    store.make_layout()
    store.add(PINNED, 300)
    store.pin(PINNED, 2000.0)
    store.add(OLD, 200)
    store.reserve(100)
    return store


def test_room_is_the_quota_less_pins_and_fills_in_progress(tmp_path: Path) -> None:
    store = store_with(tmp_path, 1000)
    assert room(store) == 600  # the unpinned blob would be evicted
    assert decline(store, 600) is None
    assert decline(store, None) is None  # size unknown: the fetch goes ahead

    pinned = decline(store, 601)
    assert pinned is not None and pinned.reason == "pinned" and "600 bytes" in pinned.why


def test_a_blob_larger_than_the_quota_is_declined_whatever_the_room(tmp_path: Path) -> None:
    too_big = decline(store_with(tmp_path, 1000), 1001)
    assert too_big is not None and too_big.reason == "quota"


def test_a_cache_full_of_pins_declines_even_a_blob_of_unknown_size(tmp_path: Path) -> None:
    store = store_with(tmp_path, 1000)
    store.pin(OLD, 2000.0)
    store.reserve(400)
    full = decline(store, None)
    assert room(store) == 0 and full is not None and full.reason == "pinned"


def test_without_a_quota_everything_the_disk_takes_fits(tmp_path: Path) -> None:
    store = store_with(tmp_path, 0)
    assert room(store) is None and decline(store, 10**6) is None


def disk(free: int, total: int = 10_000) -> Callable[[Path], Usage]:
    return lambda _: Usage(total, free)


def test_a_blob_the_disk_cannot_keep_above_its_floor_is_declined(tmp_path: Path) -> None:
    """Free 2000 of 10 000, a floor of 10 % (1000): 1000 bytes, plus the 200 of the unpinned
    blob that eviction would free; the pinned one does not count."""
    store = BlobStore(tmp_path, clock=lambda: 1000.0, min_free_percent=10, disk=disk(2000))
    store.add(PINNED, 300)
    store.pin(PINNED, 2000.0)
    store.add(OLD, 200)

    assert decline(store, 1200) is None
    full = decline(store, 1201)
    assert full is not None and full.reason == "disk" and "1200 bytes" in full.why
    assert "10%" in full.why


def test_a_disk_below_its_floor_declines_even_a_blob_of_unknown_size(tmp_path: Path) -> None:
    store = BlobStore(tmp_path, clock=lambda: 1000.0, min_free_percent=10, disk=disk(900))
    full = decline(store, None)
    assert full is not None and full.reason == "disk"
