"""Fixtures of the cache tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from imgaccel.cache.store import BlobStore


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    """An opened store with no quota (test_store.py has its own, with a quota and a clock)."""
    opened = BlobStore(tmp_path / "cache")
    opened.open()
    return opened
