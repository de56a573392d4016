"""The command line, without building a cluster."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from imgaccel.bench.cli import main, parse_size
from imgaccel.bench.scenarios import SCENARIOS


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("300MB", 300_000_000),
        ("1.5GB", 1_500_000_000),
        ("64MiB", 64 * 2**20),
        ("4096", 4096),
    ],
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


def test_a_bad_size_is_a_usage_error() -> None:
    with pytest.raises(click.BadParameter):
        parse_size("300 parsecs")


def test_list_names_every_scenario_and_says_why_one_is_skipped() -> None:
    result = CliRunner().invoke(main, ["list"])
    assert result.exit_code == 0
    for name in SCENARIOS:
        assert name in result.output
    for name, scenario in SCENARIOS.items():
        if reason := scenario.unavailable():
            assert reason in result.output, name


def test_unknown_scenarios_are_refused_before_anything_is_built() -> None:
    result = CliRunner().invoke(main, ["run", "--scenarios", "direct,teleport"])
    assert result.exit_code == 2
    assert "teleport" in result.output
