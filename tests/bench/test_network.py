"""Naming, limits and leftover detection of the benchmark network (no namespaces created)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from imgaccel.bench.network import Network, _link_names, _owner_alive, _run_id_of, tbf_args


def test_tbf_rate_and_a_burst_that_fits_a_gso_packet() -> None:
    args = tbf_args(800)
    assert args[:3] == ["tbf", "rate", "800000kbit"]
    assert int(args[args.index("burst") + 1]) == 1_000_000  # 10 ms at 100 MB/s
    assert int(tbf_args(1)[tbf_args(1).index("burst") + 1]) == 64 * 1024


def test_names_carry_the_prefix_and_fit_an_interface_name() -> None:
    net = Network("ab12")
    assert net.bridge == "iab-ab12-br"
    assert net.host_name("origin") == "iab-ab12-origin"
    with pytest.raises(ValueError, match="too long"):
        net.host_name("origin-registry")


def test_link_names_from_ip_o_link() -> None:
    out = (
        "1: lo: <LOOPBACK,UP> mtu 65536\n"
        "7: iab-ab12-n1@if6: <BROADCAST> mtu 1500 master iab-ab12-br\n"
    )
    assert _link_names(out) == ["lo", "iab-ab12-n1"]


def test_a_run_is_a_leftover_only_once_its_owner_is_gone(tmp_path: Path) -> None:
    assert not _owner_alive(tmp_path)
    (tmp_path / "owner.pid").write_text(str(os.getpid()))
    assert _owner_alive(tmp_path)
    (tmp_path / "owner.pid").write_text("999999999")
    assert not _owner_alive(tmp_path)


def test_only_our_exact_names_count_as_ours() -> None:
    assert _run_id_of("iab-ab12-n1") == "ab12"
    assert _run_id_of("imgaccel-bench-ab12") == "ab12"
    assert _run_id_of("imgaccel-bench-node-ib2x4n5m") is None  # someone else's temp dir
    assert _run_id_of("iab-xyz") is None
    assert _run_id_of("eth0") is None
