"""Pins with several reasons: dropping one (a cancelled prewarm job) leaves the others."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from imgaccel.cache import pins
from imgaccel.cache.meta import MetaStore
from imgaccel.cache.store import BlobStore
from imgaccel.oci.digest import Digest
from tests.cache.test_store import put


@pytest.fixture
def meta(tmp_path: Path) -> MetaStore:
    return MetaStore(tmp_path / "meta.db")


def test_a_blob_stays_pinned_while_any_of_its_reasons_holds(
    store: BlobStore, meta: MetaStore
) -> None:
    digest = put(store, b"layer")
    assert pins.pin(store, meta, digest, 3600, "prewarm job j1")
    assert pins.pin(store, meta, digest, 60, "hot")
    info = pins.pins(store, meta)[digest]
    assert info.reasons == ("hot", "prewarm job j1")
    assert info.until == pytest.approx(time.time() + 3600, abs=5)

    pins.unpin(store, meta, digest, "prewarm job j1")
    ends = store.pinned_until(digest)
    assert ends is not None and ends == pytest.approx(time.time() + 60, abs=5)  # "hot" left
    assert pins.pins(store, meta)[digest].reasons == ("hot",)

    pins.unpin(store, meta, digest, "hot")
    assert store.pinned_until(digest) is None
    assert pins.pins(store, meta) == {}


def test_unpin_without_a_reason_drops_every_pin(store: BlobStore, meta: MetaStore) -> None:
    digest = put(store, b"layer")
    pins.pin(store, meta, digest, 3600, "manual")
    pins.pin(store, meta, digest, 3600, "hot")
    pins.unpin(store, meta, digest)
    assert store.pinned_until(digest) is None and meta.pins() == []


def test_unpin_reason_drops_only_that_reasons_pins(store: BlobStore, meta: MetaStore) -> None:
    job_only, shared, other = put(store, b"a"), put(store, b"b"), put(store, b"c")
    for digest in (job_only, shared):
        pins.pin(store, meta, digest, 3600, "prewarm job j1")
    pins.pin(store, meta, shared, 3600, "manual")
    pins.pin(store, meta, other, 3600, "prewarm job j2")

    assert set(pins.unpin_reason(store, meta, "prewarm job j1")) == {job_only, shared}

    assert store.pinned_until(job_only) is None
    assert store.pinned_until(shared) is not None  # its operator's pin holds
    assert store.pinned_until(other) is not None  # another job's pin
    assert pins.unpin_reason(store, meta, "prewarm job j1") == []


def test_a_reasons_pin_is_extended_never_shortened(store: BlobStore, meta: MetaStore) -> None:
    digest = put(store, b"layer")
    pins.pin(store, meta, digest, 3600, "hot")
    pins.pin(store, meta, digest, 10, "hot")
    [(_, until, _)] = meta.pins()
    assert until == pytest.approx(time.time() + 3600, abs=5)


def test_reasons_survive_a_restart_and_expired_ones_are_forgotten(
    tmp_path: Path, store: BlobStore, meta: MetaStore
) -> None:
    digest = put(store, b"layer")
    meta.put_pin(digest, time.time() + 3600, "manual")
    meta.put_pin(digest, time.time() - 1, "hot")  # over already
    meta.close()

    reopened, restarted = MetaStore(tmp_path / "meta.db"), BlobStore(tmp_path / "cache")
    restarted.open()
    assert pins.load_pins(restarted, reopened) == 1
    assert restarted.pinned_until(digest) is not None
    assert [reason for _, _, reason in reopened.pins()] == ["manual"]


def test_a_meta_db_from_before_reasons_keeps_its_pins(tmp_path: Path) -> None:
    path = tmp_path / "meta.db"
    digest = Digest.of(b"layer")
    old = sqlite3.connect(path)
    old.execute(
        "CREATE TABLE pins (digest TEXT PRIMARY KEY, until REAL NOT NULL,"
        " reason TEXT NOT NULL DEFAULT '')"
    )
    old.execute("INSERT INTO pins VALUES (?, ?, ?)", (str(digest), 2e9, "prewarm"))
    old.commit()
    old.close()

    meta = MetaStore(path)
    assert meta.pins() == [(digest, 2e9, "prewarm")]
    meta.close()
    assert MetaStore(path).pins() == [(digest, 2e9, "prewarm")]  # migrated once, kept
