"""``imgaccel docker-config``: dockerd's registry-mirrors, merged in and taken out."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner, Result

from imgaccel.cli.hostconfig import docker_config

MIRROR = "http://127.0.0.1:65001"


def run(path: Path, *args: str) -> Result:
    return CliRunner().invoke(docker_config, ["--daemon-json", str(path), *args])


def test_creates_daemon_json(tmp_path: Path) -> None:
    path = tmp_path / "docker" / "daemon.json"
    assert run(path).exit_code == 0
    assert json.loads(path.read_text()) == {"registry-mirrors": [MIRROR]}


def test_merges_first_and_keeps_every_other_key(tmp_path: Path) -> None:
    path = tmp_path / "daemon.json"
    path.write_text('{"log-driver": "journald", "registry-mirrors": ["https://m.example/"]}')
    assert run(path).exit_code == 0
    assert json.loads(path.read_text()) == {
        "log-driver": "journald",
        "registry-mirrors": [MIRROR, "https://m.example/"],
    }


def test_twice_writes_the_same_bytes(tmp_path: Path) -> None:
    path = tmp_path / "daemon.json"
    path.write_text('{"debug": true}')
    run(path)
    first = path.read_bytes()
    result = run(path)
    assert path.read_bytes() == first
    assert "unchanged" in result.output


def test_remove_takes_back_only_the_mirror(tmp_path: Path) -> None:
    path = tmp_path / "daemon.json"
    path.write_text('{"debug": true, "registry-mirrors": ["https://m.example"]}')
    run(path)
    assert run(path, "--remove").exit_code == 0
    assert json.loads(path.read_text()) == {
        "debug": True,
        "registry-mirrors": ["https://m.example"],
    }


def test_remove_drops_what_we_created(tmp_path: Path) -> None:
    path = tmp_path / "daemon.json"
    path.write_text('{"debug": true}')
    run(path)
    run(path, "--remove")
    assert json.loads(path.read_text()) == {"debug": True}
    created = tmp_path / "new.json"
    run(created)
    run(created, "--remove")
    assert not created.exists()


def test_bad_json_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "daemon.json"
    path.write_text('{"debug": true,\n}')
    result = run(path)
    assert result.exit_code == 1
    assert "not valid JSON (line 2" in result.output
    assert "Traceback" not in result.output
    assert path.read_text() == '{"debug": true,\n}'


def test_mirrors_of_the_wrong_type_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "daemon.json"
    path.write_text('{"registry-mirrors": "http://x"}')
    result = run(path)
    assert result.exit_code == 1
    assert "must be a list" in result.output


def test_help_says_docker_hub_only() -> None:
    result = CliRunner().invoke(docker_config, ["--help"])
    assert "Docker Hub images only" in result.output
