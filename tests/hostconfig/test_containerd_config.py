"""``imgaccel containerd-config``: the hosts.toml containerd reads, written and taken back."""

from __future__ import annotations

import os
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


def mode_of(path: Path) -> int:
    return path.stat().st_mode & 0o7777


def owner_of(path: Path) -> tuple[int, int]:
    return path.stat().st_uid, path.stat().st_gid


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


def test_backup_and_restored_file_keep_the_originals_mode_and_owner(tmp_path: Path) -> None:
    # An admin's hosts.toml may carry an Authorization header: it must not become readable
    # by everyone, neither as the backup nor when --remove puts it back.
    path = tmp_path / "docker.io" / "hosts.toml"
    path.parent.mkdir()
    path.write_bytes(FOREIGN)
    path.chmod(0o600)
    owner = (1234, 1234) if os.geteuid() == 0 else (os.getuid(), os.getgid())
    os.chown(path, *owner)
    run("--hosts-dir", str(tmp_path))
    for installed in (path, path.with_name("hosts.toml.imgaccel-orig")):
        assert (mode_of(installed), owner_of(installed)) == (0o600, owner), installed
    run("--hosts-dir", str(tmp_path), "--remove")
    assert path.read_bytes() == FOREIGN
    assert (mode_of(path), owner_of(path)) == (0o600, owner)


def test_restore_of_an_older_backup_takes_the_installed_files_mode(tmp_path: Path) -> None:
    path = tmp_path / "docker.io" / "hosts.toml"
    path.parent.mkdir()
    path.write_bytes(FOREIGN)
    path.chmod(0o600)
    run("--hosts-dir", str(tmp_path))
    path.with_name("hosts.toml.imgaccel-orig").chmod(0o644)  # as imgaccel made them before
    run("--hosts-dir", str(tmp_path), "--remove")
    assert path.read_bytes() == FOREIGN
    assert mode_of(path) == 0o600


def test_a_registry_with_a_port_goes_into_containerds_host_port_directory(tmp_path: Path) -> None:
    # containerd reads <host>_<port>_ when it exists, and then never <host>:<port>.
    path = tmp_path / "127.0.0.1_5123_" / "hosts.toml"
    path.parent.mkdir()
    path.write_bytes(FOREIGN)
    before = snapshot(tmp_path)
    assert run("--hosts-dir", str(tmp_path), "--registry", "127.0.0.1:5123").exit_code == 0
    assert not (tmp_path / "127.0.0.1:5123").exists()
    hosts = list(tomllib.loads(path.read_text())["host"])
    assert hosts == [MIRROR, "https://mirror.example.com"]
    assert (
        "restored"
        in run("--hosts-dir", str(tmp_path), "--registry", "127.0.0.1:5123", "--remove").output
    )
    assert snapshot(tmp_path) == before


def test_an_empty_host_port_directory_gets_the_file_and_stays(tmp_path: Path) -> None:
    (tmp_path / "127.0.0.1_5123_").mkdir()
    run("--hosts-dir", str(tmp_path), "--registry", "127.0.0.1:5123")
    assert sorted(snapshot(tmp_path)) == ["127.0.0.1_5123_", "127.0.0.1_5123_/hosts.toml"]
    run("--hosts-dir", str(tmp_path), "--registry", "127.0.0.1:5123", "--remove")
    assert snapshot(tmp_path) == {"127.0.0.1_5123_": None}


def test_the_origin_is_remembered_when_not_given_again(tmp_path: Path) -> None:
    args = ["--hosts-dir", str(tmp_path), "--registry", "localhost:5000"]
    run(*args, "--origin", "localhost:5000=http://localhost:5000")
    installed = snapshot(tmp_path)
    assert "unchanged" in run(*args).output
    assert snapshot(tmp_path) == installed
    run(*args, "--mirror", "http://127.0.0.1:7000")
    path = tmp_path / "localhost:5000" / "hosts.toml"
    assert tomllib.loads(path.read_text())["server"] == "http://localhost:5000"
    run(*args, "--origin", "localhost:5000=https://localhost:5000")  # given: it changes
    assert tomllib.loads(path.read_text())["server"] == "https://localhost:5000"


def test_a_file_from_before_the_origin_was_recorded_keeps_its_server(tmp_path: Path) -> None:
    path = tmp_path / "localhost:5000" / "hosts.toml"
    path.parent.mkdir()
    path.write_text(
        '# imgaccel-state: {"made_dirs": 1, "merged": false, "mirror": "' + MIRROR + '"}\n'
        f'server = "http://localhost:5000"\n[host."{MIRROR}"]\ncapabilities = ["pull"]\n'
    )
    run("--hosts-dir", str(tmp_path), "--registry", "localhost:5000")
    assert tomllib.loads(path.read_text())["server"] == "http://localhost:5000"
    run("--hosts-dir", str(tmp_path), "--registry", "localhost:5000", "--remove")
    assert snapshot(tmp_path) == {}


def test_edits_to_a_file_imgaccel_created_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "docker.io" / "hosts.toml"
    run("--hosts-dir", str(tmp_path))
    path.write_text(
        path.read_text() + '\n[host."https://added.example"]\ncapabilities = ["pull"]\n'
    )
    run("--hosts-dir", str(tmp_path), "--mirror", "http://127.0.0.1:7000")
    hosts = list(tomllib.loads(path.read_text())["host"])
    assert hosts == ["http://127.0.0.1:7000", "https://added.example"]
    assert (
        "unchanged" in run("--hosts-dir", str(tmp_path), "--mirror", "http://127.0.0.1:7000").output
    )

    result = run("--hosts-dir", str(tmp_path), "--remove")
    assert "kept the edits" in result.output
    assert tomllib.loads(path.read_text()) == {
        "server": "https://registry-1.docker.io",
        "host": {"https://added.example": {"capabilities": ["pull"]}},
    }
    assert "imgaccel-state" not in path.read_text()  # no longer ours: a rerun merges into it
