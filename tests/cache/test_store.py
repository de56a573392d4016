"""BlobStore without sockets: LRU eviction under a quota, what may not be evicted, start-up."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from imgaccel.cache.store import BlobStore
from imgaccel.errors import CacheFull
from imgaccel.oci.digest import Digest


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float = 120.0) -> None:
        self.now += seconds


def put(store: BlobStore, data: bytes) -> Digest:
    """A blob through the store's own path: temp file, commit, index."""
    digest = Digest.of(data)
    temp = store.temp_path()
    temp.write_bytes(data)
    store.commit(temp, digest, len(data))
    store.add(digest, len(data))
    return digest


def blob(n: int, size: int = 100) -> bytes:
    return bytes([n]) * size


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> BlobStore:
    opened = BlobStore(tmp_path / "cache", quota_bytes=250, clock=clock)
    opened.open()
    return opened


def test_least_recently_used_goes_first(store: BlobStore, clock: Clock) -> None:
    evicted: list[Digest] = []
    store.on_evict.append(evicted.append)
    a = put(store, blob(1))
    clock.tick()
    b = put(store, blob(2))
    clock.tick()
    assert store.lookup(a) is not None  # a is now more recent than b
    clock.tick()

    c = put(store, blob(3))

    assert evicted == [b]
    assert a in store and c in store and b not in store
    assert not store.path(b).exists()
    assert store.path(a).read_bytes() == blob(1)
    assert store.used_bytes == 200


def test_a_blob_being_read_is_not_evicted(store: BlobStore, clock: Clock) -> None:
    a = put(store, blob(1))
    clock.tick()
    b = put(store, blob(2))
    store.acquire(a)

    c = put(store, blob(3))

    assert a in store and store.path(a).exists()
    assert b not in store and c in store
    store.release(a)
    clock.tick()
    put(store, blob(4))
    assert a not in store  # released: it is the oldest again


def test_a_pinned_blob_is_not_evicted_until_the_pin_expires(store: BlobStore, clock: Clock) -> None:
    a = put(store, blob(1))
    store.pin(a, until=clock.now + 1000)
    clock.tick()
    b = put(store, blob(2))
    clock.tick()

    put(store, blob(3))
    assert a in store and b not in store

    clock.tick(2000)
    put(store, blob(4))
    assert a not in store


def test_cache_full_when_everything_left_is_busy(store: BlobStore, clock: Clock) -> None:
    a = put(store, blob(1))
    b = put(store, blob(2))
    store.acquire(a)
    store.pin(b, until=clock.now + 1000)

    with pytest.raises(CacheFull):
        store.reserve(100)

    assert a in store and b in store
    assert store.used_bytes == 200  # the failed reservation was given back
    store.reserve(50)  # what fits still fits
    assert store.used_bytes == 250


def test_a_blob_bigger_than_the_quota_is_refused_without_evicting(store: BlobStore) -> None:
    a = put(store, blob(1))
    with pytest.raises(CacheFull):
        store.reserve(251)
    assert a in store


def test_remove_refuses_a_blob_being_read(store: BlobStore) -> None:
    a = put(store, blob(1))
    store.acquire(a)
    assert store.remove(a) is False
    store.release(a)
    assert store.remove(a) is True
    assert not store.path(a).exists()


def test_start_up_indexes_blobs_in_lru_order_and_empties_tmp(tmp_path: Path, clock: Clock) -> None:
    root = tmp_path / "cache"
    first = BlobStore(root, clock=clock)
    first.open()
    old, new = put(first, blob(1)), put(first, blob(2))
    os.utime(first.path(old), (1000, 1000))
    os.utime(first.path(new), (2000, 2000))
    (root / "tmp" / "abc.part").write_bytes(b"half a blob")
    (root / "tmp" / "import-abc").mkdir()  # a snapshot import that crashed while staging
    (root / "tmp" / "import-abc" / "sha256-abc").write_bytes(b"half a blob")
    (root / "blobs" / "sha256" / "not-a-digest").write_bytes(b"junk")

    second = BlobStore(root, quota_bytes=250, clock=clock)
    second.open()

    assert list(os.listdir(root / "tmp")) == []
    assert {d for d, _ in second.entries()} == {old, new}
    assert second.used_bytes == 200
    put(second, blob(3))
    assert old not in second and new in second  # the older mtime went first


def test_a_reserved_blob_is_counted_once_when_it_is_added(store: BlobStore) -> None:
    """The fill's reservation becomes the entry: counted twice, a blob of over half the quota
    evicted everything else and then itself."""
    a = put(store, blob(1))
    data = blob(2, size=150)
    store.reserve(len(data))  # quota 250: a (100) and the reservation (150) fit
    digest = Digest.of(data)
    temp = store.temp_path()
    temp.write_bytes(data)
    store.commit(temp, digest, len(data))

    store.add(digest, len(data), reserved=True)

    assert digest in store and a in store
    assert store.used_bytes == 250


# -- blobs another process committed (a snapshot import beside the running node) ----------------


def committed_elsewhere(root: Path, data: bytes) -> Digest:
    """``data`` committed into the cache at ``root`` as a snapshot import does: by another
    BlobStore, which the running node's store knows nothing of."""
    other = BlobStore(root)
    other.make_layout()
    digest = Digest.of(data)
    temp = other.temp_path()
    temp.write_bytes(data)
    other.commit(temp, digest, len(data))
    return digest


def junk(store: BlobStore, outside: Path) -> list[Digest]:
    """Entries of ``blobs/`` that are not blob files, named by valid digests; also two files
    with names that are not digests."""
    outside.write_bytes(blob(9))
    link, directory, fifo = Digest.of(blob(9)), Digest.of(blob(10)), Digest.of(blob(11))
    os.symlink(outside, store.path(link))
    store.path(directory).mkdir()
    os.mkfifo(store.path(fifo))
    sha256 = store.root / "blobs" / "sha256"
    (sha256 / Digest.of(blob(12)).hex.upper()).write_bytes(blob(12))
    (sha256 / "not-a-digest").write_bytes(blob(13))
    return [link, directory, fifo, Digest.of(blob(12))]


def test_adopt_indexes_a_blob_another_process_committed_and_evicts_like_add(
    store: BlobStore, clock: Clock
) -> None:
    a = put(store, blob(1))
    clock.tick()
    b = put(store, blob(2))
    clock.tick()
    imported = committed_elsewhere(store.root, blob(3))
    assert imported not in store

    assert store.adopt(imported) is True

    assert imported in store and store.used_bytes == 200  # quota 250
    assert a not in store and not store.path(a).exists()  # least recently used, as add does
    assert b in store
    assert store.adopt(Digest.of(blob(4))) is False  # nothing there: a miss stays a miss


def test_rescan_indexes_only_regular_files_named_by_digests(
    store: BlobStore, tmp_path: Path
) -> None:
    ignored = junk(store, tmp_path / "outside")
    first, busy = committed_elsewhere(store.root, blob(1)), committed_elsewhere(store.root, blob(2))

    indexed = store.rescan(store.on_disk(), busy={busy})

    assert indexed == {first: 100}
    assert busy not in store  # a fill of ours commits it: the fill indexes it
    assert all(digest not in store and not store.adopt(digest) for digest in ignored)
    assert store.used_bytes == 100
    assert store.rescan(store.on_disk()) == {busy: 100}  # the fill gone: taken now


def test_adopt_leaves_a_blob_larger_than_the_quota_alone(store: BlobStore) -> None:
    a = put(store, blob(1))
    big = committed_elsewhere(store.root, blob(2, size=251))

    assert store.adopt(big) is False

    assert big not in store and store.path(big).exists()
    assert a in store and store.used_bytes == 100


def test_start_up_ignores_symlinks_directories_and_fifos_in_blobs(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    first = BlobStore(root)
    first.open()
    kept = put(first, blob(1))
    ignored = junk(first, tmp_path / "outside")

    second = BlobStore(root)
    second.open()

    assert [d for d, _ in second.entries()] == [kept]
    assert all(digest not in second for digest in ignored)
