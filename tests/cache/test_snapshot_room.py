"""``imgaccel snapshot import`` and the room the node keeps: a real 16 MiB tmpfs as the cache's
disk, ``cache.min_free_percent`` (25 by default) of it left free for containerd, the quota
beside the pinned blobs. A bundle that does not fit is refused before anything is written.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from imgaccel.cache.meta import MetaStore
from imgaccel.cache.snapshot import import_bundle
from imgaccel.cache.store import BlobStore
from imgaccel.cli.snapshot import snapshot
from imgaccel.oci.digest import Digest
from tests.cache.test_snapshot import CONFIG, LAYER, _bundle, _index, _member
from tests.tmpfs import fill_up, tmpfs

MIB = 1024 * 1024


@pytest.fixture
def cache_disk(tmp_path: Path) -> Iterator[Path]:
    """The cache dir, on its own 16 MiB filesystem (the bundles stay outside it)."""
    with tmpfs(tmp_path / "cache", "16m") as mounted:
        yield mounted


def blob(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)  # incompressible: the bundle is as big


def bundle_of(path: Path, *blobs: bytes) -> Path:
    return _bundle(path, [(_member(data), data) for data in blobs], _index(*blobs))


def import_cli(*args: str) -> Any:
    # catch_exceptions=False: a crash fails the test instead of passing as exit code 1.
    return CliRunner().invoke(snapshot, ["import", *args], catch_exceptions=False)


def state(cache_dir: Path) -> list[tuple[str, int]]:
    """Every file of the cache's ``blobs/`` and ``tmp/``, with its size."""
    return sorted(
        (str(path.relative_to(cache_dir)), path.stat().st_size)
        for area in ("blobs", "tmp")
        for path in (cache_dir / area).rglob("*")
        if path.is_file()
    )


def cached(cache_dir: Path, data: bytes) -> bool:
    path = BlobStore(cache_dir).path(Digest.of(data))
    return path.is_file() and path.read_bytes() == data


def test_a_bundle_that_does_not_fit_above_the_floor_is_refused_and_changes_nothing(
    cache_disk: Path, tmp_path: Path
) -> None:
    held = blob(1_000_000, 1)
    import_bundle(bundle_of(tmp_path / "held.tar.zst", held), cache_disk)
    fill_up(cache_disk, leave=8 * MIB)  # containerd's content, say
    before = state(cache_disk)
    big = blob(6 * MIB, 2)  # fits in the 8 MiB free, not above the floor of 4 MiB

    result = import_cli(
        str(bundle_of(tmp_path / "big.tar.zst", held, big)), "--cache-dir", str(cache_disk)
    )

    assert result.exit_code == 1
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert "not imported, the cache is unchanged" in result.output
    assert "cache.min_free_percent" in result.output and f"{6 * MIB} bytes" in result.output
    assert state(cache_disk) == before
    assert not cached(cache_disk, big)


def test_a_bundle_that_fits_is_imported_and_blobs_held_already_take_no_room_again(
    cache_disk: Path, tmp_path: Path
) -> None:
    held = blob(5 * MIB, 3)
    import_bundle(bundle_of(tmp_path / "held.tar.zst", held), cache_disk)
    fill_up(cache_disk, leave=8 * MIB)
    new = blob(3 * MIB, 4)  # 3 MiB above the floor's 4: fits; with `held` again it would not

    result = import_cli(
        str(bundle_of(tmp_path / "both.tar.zst", held, new)), "--cache-dir", str(cache_disk)
    )

    assert result.exit_code == 0, result.output
    assert "imported 0 manifests and 2 blobs" in result.output
    assert cached(cache_disk, held) and cached(cache_disk, new)
    assert list((cache_disk / "tmp").iterdir()) == []


def test_a_disk_that_runs_out_while_staging_ends_the_import_cleanly(
    cache_disk: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A filesystem whose free space cannot be read: nothing to check before, ENOSPC decides.
    monkeypatch.setattr(BlobStore, "disk_usage", lambda self: None)
    import_bundle(bundle_of(tmp_path / "held.tar.zst", LAYER), cache_disk)
    fill_up(cache_disk, leave=4 * MIB)
    before = state(cache_disk)
    small, big = blob(100_000, 5), blob(6 * MIB, 6)

    result = import_cli(
        str(bundle_of(tmp_path / "big.tar.zst", small, big)), "--cache-dir", str(cache_disk)
    )

    assert result.exit_code == 1
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert "the cache's disk ran out of space while staging the bundle" in result.output
    assert state(cache_disk) == before  # the staging dir removed, not even `small` committed


def test_a_bundle_the_quota_cannot_hold_beside_the_pinned_blobs_is_refused(
    tmp_path: Path,
) -> None:
    cache_dir = tmp_path / "cache"
    pinned = b"p" * 3000
    import_bundle(bundle_of(tmp_path / "pinned.tar.zst", pinned), cache_dir)
    meta = MetaStore(cache_dir / "meta.db")
    meta.put_pin(Digest.of(pinned), time.time() + 600, "manual")
    config = tmp_path / "node.toml"
    config.write_text("[cache]\nquota_bytes = 6000\n")
    bundle = bundle_of(tmp_path / "app.tar.zst", CONFIG, LAYER)  # 5025 bytes: 3000 + 5025 > 6000
    args = [str(bundle), "--cache-dir", str(cache_dir), "--config", str(config)]
    before = state(cache_dir)

    refused = import_cli(*args)

    assert refused.exit_code == 1
    assert len(refused.output.strip().splitlines()) == 1
    assert "quota of 6000 bytes" in refused.output and "3000 bytes pinned" in refused.output
    assert state(cache_dir) == before
    meta.delete_pin(Digest.of(pinned))  # unpinned, it may be evicted: the bundle fits
    imported = import_cli(*args)
    assert imported.exit_code == 0, imported.output
    assert cached(cache_dir, CONFIG) and cached(cache_dir, LAYER)
