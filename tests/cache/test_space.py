"""Room on the cache's disk, without sockets: the floor the store keeps free (a filesystem whose
free space follows the store's blobs), and a fill's preallocation on a real, small tmpfs."""

from __future__ import annotations

import errno
import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from imgaccel.cache import space
from imgaccel.cache.fill import Fill
from imgaccel.cache.space import Usage
from imgaccel.cache.store import BlobStore
from imgaccel.errors import CacheFull, DiskLow, QuotaTooSmall, not_kept_reason
from imgaccel.oci.digest import Digest
from tests.tmpfs import fill_up, free_bytes, tmpfs

PINNED, OLD, NEW = (Digest.parse("sha256:" + c * 64) for c in "abc")
NOW = 1_800_000_000.0


class Disk:
    """A filesystem of ``total`` bytes where ``others`` use some (containerd) and the store's
    blobs the rest: evicting one frees its bytes, as on a real disk."""

    def __init__(self, total: int, others: int) -> None:
        self.total, self.others = total, others
        self.store: BlobStore | None = None
        self.broken = False

    def __call__(self, _path: Path) -> Usage:
        if self.broken:
            raise OSError(errno.EIO, "statvfs failed")
        assert self.store is not None
        cached = sum(entry.size for _, entry in self.store.entries())
        return Usage(self.total, self.total - self.others - cached)


def store_on(tmp_path: Path, disk: Disk, min_free_percent: float = 10) -> BlobStore:
    """A store on ``disk`` keeping ``min_free_percent`` of it free, holding (least recently
    used first) a pinned blob, then OLD and NEW, 1000 bytes each."""
    store = BlobStore(tmp_path, clock=lambda: NOW, min_free_percent=min_free_percent, disk=disk)
    disk.store = store
    store.make_layout()
    for digest in (PINNED, OLD, NEW):
        store.add(digest, 1000)
    store.pin(PINNED, NOW + 3600)
    return store


def test_a_blob_that_would_go_below_the_floor_evicts_the_least_recently_used_first(
    tmp_path: Path,
) -> None:
    # 10 000 bytes, 5000 of others, 3000 cached: 2000 free, 1000 of them the floor (10 %).
    store = store_on(tmp_path, Disk(10_000, 5000))

    store.reserve(1500)  # 500 short: OLD goes, not the older but pinned blob

    assert OLD not in store and PINNED in store and NEW in store
    assert store.reserved_bytes == 1500 and store.evictions == 1


def test_a_blob_the_floor_cannot_take_is_not_kept_and_nothing_is_evicted(
    tmp_path: Path,
) -> None:
    store = store_on(tmp_path, Disk(10_000, 5000))

    with pytest.raises(DiskLow, match="10% of the cache's filesystem"):
        store.reserve(3001)  # 2000 free + 2000 evictable - 1000 floor: 3000 at most

    assert {d for d, _ in store.entries()} == {PINNED, OLD, NEW}
    assert store.reserved_bytes == 0
    store.reserve(3000)  # what fits still fits, evicting both unpinned blobs
    assert {d for d, _ in store.entries()} == {PINNED}


def test_refusal_says_what_reserve_would_raise_and_changes_nothing(tmp_path: Path) -> None:
    """For saying after a fill why its blob was not kept: the quota first, then the disk."""
    store = store_on(tmp_path, Disk(10_000, 5000))

    assert store.refusal(3000) is None
    low = store.refusal(3001)
    assert isinstance(low, DiskLow) and "10% of the cache's filesystem" in str(low)
    store.quota_bytes = 2500  # 1000 pinned: 1500 left for a blob
    full = store.refusal(1501)
    assert type(full) is CacheFull and "quota of 2500 bytes" in str(full)
    assert store.refusal(1500) is None
    too_big = store.refusal(2501)
    assert isinstance(too_big, QuotaTooSmall) and "larger than the cache quota" in str(too_big)
    assert [not_kept_reason(why) for why in (low, full, too_big)] == ["disk", "quota", "too_big"]
    assert len(store) == 3 and store.reserved_bytes == 0 and store.evictions == 0


def test_a_blob_being_read_is_not_evicted_for_the_disk(tmp_path: Path) -> None:
    store = store_on(tmp_path, Disk(10_000, 5000))
    store.acquire(OLD)

    store.reserve(1500)

    assert OLD in store and NEW not in store


def test_the_bytes_fills_in_progress_will_write_count_as_taken(tmp_path: Path) -> None:
    store = store_on(tmp_path, Disk(10_000, 5000))
    assert store.make_disk_room(1000)  # fits above the floor as it is

    assert store.make_disk_room(1000, unwritten=800)  # 800 short: OLD goes
    assert OLD not in store and NEW in store
    assert not store.make_disk_room(1000, unwritten=2801)


def test_without_the_floor_only_the_bytes_must_fit(tmp_path: Path) -> None:
    store = store_on(tmp_path, Disk(10_000, 5000), min_free_percent=50)  # floor above free

    assert store.disk_room() == 2000 + 2000 - 5000
    assert store.make_disk_room(2000, keep_floor=False)
    assert {d for d, _ in store.entries()} == {PINNED, OLD, NEW}
    with pytest.raises(DiskLow):
        store.reserve(1)


def test_a_filesystem_that_cannot_be_asked_leaves_the_decision_to_the_fill(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    disk = Disk(10_000, 5000)
    store = store_on(tmp_path, disk)
    disk.broken = True

    with caplog.at_level(logging.WARNING, logger="imgaccel.cache.store"):
        store.reserve(10**9)
        store.reserve(10**9)

    assert store.disk_room() is None and len(store) == 3
    assert caplog.text.count("cannot read the free space") == 1  # said once


def test_no_space_is_found_inside_groups_and_causes() -> None:
    full = OSError(errno.ENOSPC, "No space left on device")
    try:
        raise RuntimeError("write failed") from full
    except RuntimeError as wrapped:
        group = ExceptionGroup("fetch", [ValueError("other"), wrapped])
    assert space.no_space(group) is full
    assert space.no_space(OSError(errno.EIO, "I/O error")) is None


# -- preallocation on a real filesystem -------------------------------------------------------

DATA = hashlib.sha512(b"blob").digest() * (2 * 1024 * 1024 // 64)  # 2 MiB


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path / "disk", "4m") as mounted:
        yield mounted


async def test_a_preallocated_fill_is_written_to_its_last_byte_on_a_full_disk(
    small_disk: Path,
) -> None:
    fill = Fill(Digest.of(DATA), small_disk / "blob.part", len(DATA))
    assert await fill.preallocate()
    assert fill.temp.stat().st_size == 0  # libtorrent sees an empty file to download into
    assert fill.unallocated_bytes == 0

    fill_up(small_disk, leave=0)  # another process takes every byte left
    assert free_bytes(small_disk) == 0
    with pytest.raises(OSError) as outside:
        (small_disk / "more").write_bytes(b"x")
    assert outside.value.errno == errno.ENOSPC

    await fill.write_at(0, DATA)  # into the blocks taken: no ENOSPC
    await fill.verify()
    await fill.finish()
    assert fill.closed


async def test_a_blob_larger_than_the_disk_fails_to_preallocate_and_leaves_nothing(
    small_disk: Path,
) -> None:
    free = free_bytes(small_disk)
    big = Fill(Digest.of(b"big"), small_disk / "big.part", 8 * 1024 * 1024)
    assert big.unallocated_bytes == big.size  # until preallocated, all of it is to come

    with pytest.raises(OSError) as refused:
        await big.preallocate()
    await big.finish(refused.value)

    assert refused.value.errno in space.NO_SPACE
    assert not big.temp.exists() and free_bytes(small_disk) == free


async def test_an_unpreallocated_fill_counts_the_bytes_it_has_not_written(
    small_disk: Path,
) -> None:
    fill = Fill(Digest.of(DATA), small_disk / "blob.part", len(DATA))
    await fill.write_at(1000, DATA[1000:5000])
    assert fill.unallocated_bytes == len(DATA) - 4000
    await fill.finish(RuntimeError("test over"))
    assert fill.unallocated_bytes == 0  # closed: its file is gone
