"""The testbed's settings of the imgaccel daemons it starts."""

from __future__ import annotations

import pytest

from imgaccel.bench import deployment


def test_the_simulated_nodes_keep_5_percent_free_unless_told_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """They share one disk with each other (a real node's 25 % is for a disk of its own)."""
    monkeypatch.delenv("IMGACCEL_CACHE__MIN_FREE_PERCENT", raising=False)
    assert deployment._testbed_env() == {"IMGACCEL_CACHE__MIN_FREE_PERCENT": "5"}

    monkeypatch.setenv("IMGACCEL_CACHE__MIN_FREE_PERCENT", "20")
    assert deployment._testbed_env() == {}  # the caller's, which every daemon inherits
