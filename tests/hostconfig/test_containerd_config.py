"""``imgaccel containerd-config``: the hosts.toml containerd reads, written and taken back."""

from __future__ import annotations

import tomllib
from pathlib import Path

from click.testing import CliRunner, Result

from imgaccel.cli.hostconfig import containerd_config

MIRROR = "http://127.0.0.1:65001"

FOREIGN = b"""\
# the team's own mirror; do not lose this comment
server = "https://registry-1.docker.io"
skip_verify = false

[host."https://mirror.example.com"]
capabilities = ["pull"]
"""


def run(*args: str) -> Result:
    result = CliRunner().invoke(containerd_config, list(args), catch_exceptions=False)
    return result


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with its bytes (None for a directory)."""
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


def test_writes_mirror_first_and_origin_as_fallback(tmp_path: Path) -> None:
    hosts = tmp_path / "certs.d"
    result = run("--hosts-dir", str(hosts))
    assert result.exit_code == 0, result.output
    text = (hosts / "docker.io" / "hosts.toml").read_text()
    assert text.startswith("# Written by `imgaccel containerd-config`")
    assert tomllib.loads(text) == {
        "server": "https://registry-1.docker.io",
        "host": {MIRROR: {"capabilities": ["pull", "resolve"]}},
    }
    assert f'[host."{MIRROR}"]' in text  # the table header containerd looks for


def test_other_registry_and_plain_http_origin(tmp_path: Path) -> None:
    args = ["--hosts-dir", str(tmp_path), "--registry", "ghcr.io", "--registry", "localhost:5000"]
    args += ["--origin", "localhost:5000=http://localhost:5000", "--mirror", "http://10.0.0.1:1/"]
    assert run(*args).exit_code == 0
    ghcr = tomllib.loads((tmp_path / "ghcr.io" / "hosts.toml").read_text())
    local = tomllib.loads((tmp_path / "localhost:5000" / "hosts.toml").read_text())
    assert ghcr["server"] == "https://ghcr.io"
    assert local["server"] == "http://localhost:5000"
    assert list(local["host"]) == ["http://10.0.0.1:1"]


def test_twice_writes_the_same_bytes(tmp_path: Path) -> None:
    run("--hosts-dir", str(tmp_path), "--registry", "docker.io", "--registry", "quay.io")
    first = snapshot(tmp_path)
    result = run("--hosts-dir", str(tmp_path), "--registry", "docker.io", "--registry", "quay.io")
    assert snapshot(tmp_path) == first
    assert result.output.count("unchanged") == 2


def test_remove_leaves_the_directory_as_before(tmp_path: Path) -> None:
    hosts = tmp_path / "certs.d"
    (tmp_path / "other").write_text("untouched")
    before = snapshot(tmp_path)
    args = ["--hosts-dir", str(hosts), "--registry", "docker.io", "--registry", "ghcr.io"]
    run(*args)
    assert run(*args, "--remove").exit_code == 0
    assert snapshot(tmp_path) == before  # certs.d itself was ours too, so it is gone
    assert "absent" in run(*args, "--remove").output


def test_foreign_file_keeps_server_and_tables_mirror_first(tmp_path: Path) -> None:
    path = tmp_path / "docker.io" / "hosts.toml"
    path.parent.mkdir()
    path.write_bytes(FOREIGN)
    assert run("--hosts-dir", str(tmp_path)).exit_code == 0
    data = tomllib.loads(path.read_text())
    assert data["server"] == "https://registry-1.docker.io"
    assert data["skip_verify"] is False
    assert list(data["host"]) == [MIRROR, "https://mirror.example.com"]  # containerd's try order
    assert data["host"]["https://mirror.example.com"] == {"capabilities": ["pull"]}


def test_foreign_file_idempotent_and_restored_byte_for_byte(tmp_path: Path) -> None:
    path = tmp_path / "docker.io" / "hosts.toml"
    path.parent.mkdir()
    path.write_bytes(FOREIGN)
    before = snapshot(tmp_path)
    run("--hosts-dir", str(tmp_path))
    installed = snapshot(tmp_path)
    run("--hosts-dir", str(tmp_path))
    assert snapshot(tmp_path) == installed
    assert "restored" in run("--hosts-dir", str(tmp_path), "--remove").output
    assert snapshot(tmp_path) == before


def test_foreign_file_edited_after_install_keeps_edits_on_remove(tmp_path: Path) -> None:
    path = tmp_path / "docker.io" / "hosts.toml"
    path.parent.mkdir()
    path.write_bytes(FOREIGN)
    run("--hosts-dir", str(tmp_path))
    path.write_text(
        path.read_text() + '\n[host."https://added.example"]\ncapabilities = ["pull"]\n'
    )
    run("--hosts-dir", str(tmp_path), "--remove")
    data = tomllib.loads(path.read_text())
    assert list(data["host"]) == ["https://mirror.example.com", "https://added.example"]
    assert [p.name for p in path.parent.iterdir()] == ["hosts.toml"]


def test_changing_the_mirror_replaces_ours_only(tmp_path: Path) -> None:
    path = tmp_path / "docker.io" / "hosts.toml"
    path.parent.mkdir()
    path.write_bytes(FOREIGN)
    run("--hosts-dir", str(tmp_path))
    run("--hosts-dir", str(tmp_path), "--mirror", "http://127.0.0.1:7000")
    hosts = list(tomllib.loads(path.read_text())["host"])
    assert hosts == ["http://127.0.0.1:7000", "https://mirror.example.com"]
    run("--hosts-dir", str(tmp_path), "--remove")
    assert path.read_bytes() == FOREIGN


def test_remove_leaves_a_file_imgaccel_did_not_write(tmp_path: Path) -> None:
    path = tmp_path / "docker.io" / "hosts.toml"
    path.parent.mkdir()
    path.write_bytes(FOREIGN)
    result = run("--hosts-dir", str(tmp_path), "--remove")
    assert result.exit_code == 0
    assert "left alone" in result.output
    assert path.read_bytes() == FOREIGN


def test_invalid_foreign_toml_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "docker.io" / "hosts.toml"
    path.parent.mkdir()
    path.write_text("server = \n")
    result = CliRunner().invoke(containerd_config, ["--hosts-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "not valid TOML" in result.output
    assert "Traceback" not in result.output
    assert path.read_text() == "server = \n"


def test_bad_flags_are_usage_errors(tmp_path: Path) -> None:
    for args in (
        ["--registry", "../etc"],
        ["--mirror", "127.0.0.1:65001"],
        ["--origin", "ghcr.io=https://ghcr.io"],  # not among --registry
        ["--origin", "docker.io"],
    ):
        result = CliRunner().invoke(containerd_config, ["--hosts-dir", str(tmp_path), *args])
        assert result.exit_code != 0, args
        assert "Traceback" not in result.output
    assert snapshot(tmp_path) == {}
