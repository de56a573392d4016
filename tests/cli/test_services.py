"""``imgaccel node``, ``seeder`` and ``tracker``: a bad log level or a taken port is a one-line
error, not a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from imgaccel.cli import main
from tests.conftest import free_port


@pytest.mark.parametrize("command", ["node", "seeder", "tracker"])
def test_an_unknown_log_level_flag_is_a_usage_error(command: str) -> None:
    result = CliRunner().invoke(main, [command, "--log-level", "bogus"])
    assert result.exit_code == 2, result.output
    assert "'bogus' is not one of" in result.output


def test_an_unknown_log_level_setting_is_a_usage_error(tmp_path: Path) -> None:
    env = {"IMGACCEL_LOG__LEVEL": "bogus"}
    result = CliRunner().invoke(main, ["node", "--cache-dir", str(tmp_path)], env=env)
    assert result.exit_code == 2, result.output
    assert "unknown log level 'bogus'" in result.output


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


@pytest.mark.parametrize("flag", ["--listen", "--metrics-listen"])
def test_the_tracker_on_a_taken_port_says_so_in_one_line(
    tmp_path: Path, taken_port: int, flag: str
) -> None:
    command = [sys.executable, "-m", "imgaccel", "tracker", "--insecure"]
    command += ["--data-dir", str(tmp_path), "--listen", "127.0.0.1:0"]
    command += [flag, f"127.0.0.1:{taken_port}"]  # a later --listen wins
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: imgaccel tracker could not start"), done.stderr


def test_the_node_serves_its_registry_listeners_too(tmp_path: Path, taken_port: int) -> None:
    """``registry_listen`` opens one more listener each (a port taken: the one-line error)."""
    free = free_port()
    command = [sys.executable, "-m", "imgaccel", "node", "--listen", "127.0.0.1:0"]
    command += ["--cache-dir", str(tmp_path)]
    listen = f'{{"127.0.0.1:{free}": "nvcr.io"}}'
    node = subprocess.Popen(
        command,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "IMGACCEL_REGISTRY_LISTEN": listen},
    )
    try:
        assert node.stderr is not None
        lines: list[str] = []
        while len(lines) < 2 and (line := node.stderr.readline()):  # the log comes first
            if "imgaccel node listening on" in line:
                lines.append(line.strip())
        assert lines[1] == f"imgaccel node listening on http://127.0.0.1:{free}", lines
    finally:
        node.terminate()
        node.communicate(timeout=30)  # reads stderr to its end and closes it

    listen = f'{{"127.0.0.1:{taken_port}": "nvcr.io"}}'
    env = {**os.environ, "IMGACCEL_REGISTRY_LISTEN": listen}
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 1, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: imgaccel node could not start"), done.stderr
