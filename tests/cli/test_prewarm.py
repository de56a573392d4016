"""``imgaccel prewarm``'s command line: flags it would ignore, URLs and certificates it cannot
use are usage errors (exit 2) before anything is asked of a node or tracker."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from imgaccel.cli.prewarm import prewarm

TRACKER = ["--tracker", "http://tracker.invalid:6970"]


def run(*args: str, **env: str) -> Result:
    return CliRunner().invoke(prewarm, list(args), env=env, catch_exceptions=False)


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["--cluster", *TRACKER, "--username", "u", "--password-stdin"], "--username"),
        (["--cluster", *TRACKER, "--pin-seconds", "60"], "--pin-seconds"),
        (["--cluster", *TRACKER, "--node", "http://127.0.0.1:65001"], "--node"),
        (["--percent", "10"], "--percent"),
        (["--nodes", "gpu=h100"], "--nodes"),
        (["--wait"], "--wait"),
        (TRACKER, "--tracker"),
    ],
)
def test_a_flag_the_mode_would_ignore_is_a_usage_error(args: list[str], flag: str) -> None:
    result = run(*args, "x.io/app:v1")
    assert result.exit_code == 2, result.output
    assert f"{flag} is for" in result.output


def test_status_and_cancel_refuse_flags_of_a_prewarm() -> None:
    assert "--node is not for status" in run("status", "--node", "http://n:1", *TRACKER).output
    assert "--wait is not for cancel" in run("cancel", "j1", "--wait", *TRACKER).output
    assert run("--cluster", "--timeout", "5", *TRACKER, "x.io/app:v1").exit_code == 2


def test_an_image_named_like_a_mode_is_an_image() -> None:
    result = run("--percent", "5", "cluster")  # docker.io/library/cluster, warmed locally
    assert result.exit_code == 2 and "--percent is for --cluster jobs" in result.output


def test_a_node_url_from_the_environment_is_no_mistake_with_cluster() -> None:
    result = run("--cluster", "x.io/app:v1", IMGACCEL_NODE="http://127.0.0.1:65001")
    assert result.exit_code == 2
    assert "need --tracker" in result.output  # not "--node is for ..."


@pytest.mark.parametrize(
    "args",
    [
        ["--node", "localhost:65001", "x.io/app:v1"],
        ["--node", "http://", "x.io/app:v1"],
        ["--cluster", "--tracker", "127.0.0.1:6970", "x.io/app:v1"],
        ["status", "--tracker", "tracker:6970"],
    ],
)
def test_a_url_without_http_is_a_usage_error(args: list[str]) -> None:
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert "is not an http:// or https:// URL" in result.output


def test_missing_certificates_are_a_usage_error(tmp_path: Path) -> None:
    args = ["--tracker", "https://tracker.invalid:6970", "--certs-dir", str(tmp_path / "none")]
    result = run("--cluster", *args, "x.io/app:v1")
    assert result.exit_code == 2, result.output
    assert "cannot load ca.crt, node.crt and node.key" in result.output


def test_help_says_whose_platform_an_index_narrows_to() -> None:
    help_text = " ".join(run("--help").output.split())
    assert "the platform of the machine running this command" in help_text
    assert "8 --wait timed out" in help_text
