"""deploy/systemd: the unit file systemd itself accepts."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "deploy" / "systemd" / "imgaccel-node.service"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
def test_systemd_verifies_the_unit(tmp_path: Path) -> None:
    # The unit names /usr/local/bin/imgaccel; point it at a binary that exists here.
    text = UNIT.read_text().replace("/usr/local/bin/imgaccel node", "/bin/true node")
    assert text != UNIT.read_text()
    unit = tmp_path / UNIT.name
    unit.write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    problems = [line for line in result.stderr.splitlines() if UNIT.name in line]
    assert result.returncode == 0 and not problems, result.stderr


def test_unit_runs_the_node_on_loopback() -> None:
    exec_start = next(x for x in UNIT.read_text().splitlines() if x.startswith("ExecStart="))
    assert exec_start.split()[1:4] == ["node", "--listen", "127.0.0.1:65001"]


def test_the_unit_starts_without_any_settings_file(tmp_path: Path) -> None:
    """Its Environment= lines name no file that a fresh install lacks (a missing config
    file is an error, and Restart= would loop on it)."""
    env = {
        key: value
        for line in UNIT.read_text().splitlines()
        if line.startswith("Environment=")
        for key, _, value in [line.removeprefix("Environment=").partition("=")]
    }
    result = subprocess.run(
        [sys.executable, "-m", "imgaccel", "config", "show"],
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
