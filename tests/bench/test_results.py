"""The physical bound and the ratios the report is built on."""

from __future__ import annotations

import pytest

from imgaccel.bench.results import Repeat, ScenarioResult, bound_seconds


def test_bound_is_one_transfer_over_each_link() -> None:
    # 300 MB at 200 Mbit/s (25 MB/s) is 12 s; at 800 Mbit/s (100 MB/s) 3 s.
    assert bound_seconds(300_000_000, 200, 800) == pytest.approx(15.0)
    assert bound_seconds(0, 200, 800) == 0


def _result(*repeats: Repeat) -> ScenarioResult:
    return ScenarioResult(
        "direct", 2, 100_000_000, bound_seconds(100_000_000, 200, 800), repeats=list(repeats)
    )


def test_ratios_use_median_and_max_over_every_pull_of_every_repeat() -> None:
    result = _result(
        Repeat({"n1": 4.0, "n2": 6.0}, 200_000_000), Repeat({"n1": 5.0, "n2": 10.0}, 220_000_000)
    )
    assert result.bound_seconds == pytest.approx(5.0)
    assert result.median_seconds == pytest.approx(5.5)
    assert result.max_seconds == pytest.approx(10.0)
    assert result.time_ratio == pytest.approx(1.1)
    assert result.max_time_ratio == pytest.approx(2.0)
    assert result.origin_bytes == 210_000_000
    assert result.bytes_ratio == pytest.approx(2.1)


def test_a_scenario_without_repeats_has_no_figures() -> None:
    result = _result()
    assert result.median_seconds is None
    assert result.time_ratio is None
    assert result.bytes_ratio is None
    assert result.as_json()["origin_bytes"] is None
