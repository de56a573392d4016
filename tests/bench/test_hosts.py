"""The hosts.toml each node's containerd gets."""

from __future__ import annotations

import tomllib
from pathlib import Path

from imgaccel.bench.runner import hosts_toml, write_hosts_dirs


def test_direct_names_the_origin_as_its_only_host() -> None:
    parsed = tomllib.loads(hosts_toml("10.213.0.2:5000", None))
    assert parsed["server"] == "http://10.213.0.2:5000"
    assert parsed["host"] == {"http://10.213.0.2:5000": {"capabilities": ["pull", "resolve"]}}


def test_a_mirror_is_tried_before_the_origin() -> None:
    parsed = tomllib.loads(hosts_toml("10.213.0.2:5000", "http://10.213.0.11:7070"))
    assert parsed["server"] == "http://10.213.0.2:5000"
    assert parsed["host"] == {"http://10.213.0.11:7070": {"capabilities": ["pull", "resolve"]}}


def test_each_node_gets_its_own_hosts_dir(tmp_path: Path) -> None:
    dirs = write_hosts_dirs(tmp_path, "o:5000", {"n1": "http://a:1", "n2": None})
    assert dirs == {"n1": tmp_path / "n1", "n2": tmp_path / "n2"}
    assert "http://a:1" in (dirs["n1"] / "o:5000" / "hosts.toml").read_text()
    assert "http://a:1" not in (dirs["n2"] / "o:5000" / "hosts.toml").read_text()
