"""`imgaccel config`: the effective settings and the reference the docs are made from."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from imgaccel.cli import main
from imgaccel.cli.config import render_reference

DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_the_configuration_docs_match_the_code() -> None:
    assert DOCS.read_text() == render_reference(), "run: imgaccel config reference > " + str(DOCS)


def test_every_setting_is_documented() -> None:
    text = render_reference()
    for key in ("cache.quota_bytes", "p2p.tracker_url", "prefetch.pin_seconds", "listen"):
        assert f"`{key}`" in text
    assert "|  |" not in text  # no setting without a description


def test_show_prints_the_file_and_environment_merged_with_secrets_masked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "imgaccel.toml"
    config.write_text(
        '[upstreams."registry.local:5000"]\nurl = "http://10.0.0.5:5000"\n'
        'username = "puller"\npassword = "hunter2"\n'
        'proxy = "http://corp%5Cpuller:hunter3@proxy.corp:3128"\n'
    )
    monkeypatch.setenv("IMGACCEL_CACHE__QUOTA_BYTES", "1234")

    result = CliRunner().invoke(main, ["config", "show", "--config", str(config)])

    assert result.exit_code == 0, result.output
    shown = tomllib.loads(result.output)
    assert shown["cache"]["quota_bytes"] == 1234
    assert shown["upstreams"]["registry.local:5000"]["url"] == "http://10.0.0.5:5000"
    assert "hunter2" not in result.output
    proxy = shown["upstreams"]["registry.local:5000"]["proxy"]
    assert proxy == "http://corp%5Cpuller:**********@proxy.corp:3128"
    assert "hunter3" not in result.output


def test_a_misspelled_setting_is_a_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "imgaccel.toml"
    config.write_text("[cache]\nquota = 5\n")

    result = CliRunner().invoke(main, ["config", "show", "--config", str(config)])

    assert result.exit_code == 2
    assert "quota" in result.output and "Traceback" not in result.output


def test_a_variable_may_rely_on_a_setting_from_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The variables are validated with the file, not alone: a tracker URL from the
    environment needs the certificates directory the file names."""
    config = tmp_path / "imgaccel.toml"
    config.write_text(f'[p2p]\ncerts_dir = "{tmp_path}"\n')
    monkeypatch.setenv("IMGACCEL_P2P__TRACKER_URL", "https://tracker:6970")

    result = CliRunner().invoke(main, ["config", "show", "--config", str(config)])

    assert result.exit_code == 0, result.output
    shown = tomllib.loads(result.output)
    assert shown["p2p"] == {**shown["p2p"], "tracker_url": "https://tracker:6970"}
    assert shown["p2p"]["certs_dir"] == str(tmp_path)


@pytest.mark.parametrize(
    ("name", "value"),
    [("IMGACCEL_LISTEN", "bogus"), ("IMGACCEL_UPSTREAMS", "not json")],
)
def test_a_bad_variable_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)

    result = CliRunner().invoke(main, ["config", "show"])

    assert result.exit_code == 2
    assert isinstance(result.exception, SystemExit)  # click's exit, not an exception raised
    assert "Traceback" not in result.output
    assert ("listen" if name == "IMGACCEL_LISTEN" else "upstreams") in result.output


@pytest.mark.parametrize("section", ["cache", "p2p", "prefetch", "log", "upstream_client"])
def test_a_misspelled_key_is_an_error_in_every_section(tmp_path: Path, section: str) -> None:
    config = tmp_path / "imgaccel.toml"
    config.write_text(f"[{section}]\nbandwith = 5\n")

    result = CliRunner().invoke(main, ["config", "show", "--config", str(config)])

    assert result.exit_code == 2 and "bandwith" in result.output, result.output
