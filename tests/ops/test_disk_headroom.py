"""``imgaccel doctor``'s disk check against the floor the node keeps free, on a real 16 MiB tmpfs
(the node computes that floor from the same ``statvfs``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from imgaccel.cache.space import usage
from imgaccel.ops.check import Status
from imgaccel.ops.disk import disk_headroom
from tests.tmpfs import fill_up, tmpfs

MIB = 1024 * 1024


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path / "disk", "16m") as mounted:
        yield mounted


def test_a_quota_within_the_floor_is_ok(disk: Path) -> None:
    check = disk_headroom(disk, quota=8 * MIB, used=0, min_free_percent=25)
    assert check.status is Status.OK, check


def test_a_quota_past_the_floor_is_cut_short_not_a_full_disk(disk: Path) -> None:
    check = disk_headroom(disk, quota=15 * MIB, used=0, min_free_percent=25)

    assert check.status is Status.WARN
    assert "stops short of its quota" in check.detail and "keeps 25% (4.2 MB)" in check.detail
    assert "at most 12.6 MB" in check.fix  # 16 MiB less the floor


def test_without_a_floor_a_quota_past_the_disk_fails(disk: Path) -> None:
    check = disk_headroom(disk, quota=32 * MIB, used=0, min_free_percent=0)
    assert check.status is Status.FAIL and "the disk fills up" in check.detail


def test_no_quota_is_fine_with_a_floor_and_a_warning_without(disk: Path) -> None:
    assert disk_headroom(disk, quota=0, used=0, min_free_percent=15).status is Status.OK
    bare = disk_headroom(disk, quota=0, used=0, min_free_percent=0)
    assert bare.status is Status.WARN and "until the disk is full" in bare.detail


def test_a_disk_already_below_the_floor_is_a_warning(disk: Path) -> None:
    fill_up(disk, leave=2 * MIB)
    assert usage(disk).free <= 2 * MIB

    check = disk_headroom(disk, quota=0, used=0, min_free_percent=25)

    assert check.status is Status.WARN and "only by evicting" in check.detail
