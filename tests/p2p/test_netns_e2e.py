"""End to end in network namespaces: two hosts, each with its own containerd and imgaccel node,
a tracker host and an origin host. `ctr images pull` on the first host goes to the origin; on
the second it must come from the first host's node, which the origin's log proves by address.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from imgaccel.bench import Params
from imgaccel.bench.cluster import open_cluster
from imgaccel.bench.deployment import Stage, imgaccel_cluster
from imgaccel.bench.network import new_run_id
from imgaccel.bench.runner import write_hosts_dirs
from imgaccel.testing.procs import is_root, run

pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(not is_root(), reason="creates network namespaces: needs root"),
    pytest.mark.skipif(
        any(shutil.which(p) is None for p in ("containerd", "ctr", "skopeo", "docker-registry")),
        reason="needs containerd, ctr, skopeo and docker-registry",
    ),
]


async def _served_by_peers(netns: str, node_url: str) -> float:
    # The node listens inside its namespace: ask from there.
    out = await run("ip", "netns", "exec", netns, "curl", "-sf", f"{node_url}/metrics")
    for line in out.stdout.decode().splitlines():
        if line.startswith('imgaccel_bytes_served_total{source="peer"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_ctr_pull_on_a_second_host_comes_from_the_first_hosts_node(tmp_path: Path) -> None:
    params = Params(nodes=(2,), image_bytes=12_000_000, scenarios=("imgaccel-cold",))
    async with open_cluster(params, tmp_path, new_run_id(), progress=lambda _: None) as cluster:
        stage = Stage(cluster, cluster.nodes, tmp_path / "stage", lambda _: None)
        stage.workdir.mkdir()
        async with imgaccel_cluster(stage) as mirrors:
            hosts = write_hosts_dirs(tmp_path / "hosts", cluster.origin.address, mirrors)
            first, second = cluster.nodes

            await first.containerd.pull(cluster.ref, hosts_dir=hosts[first.name])
            await cluster.origin.settle()
            before = len(cluster.origin.requests)
            await second.containerd.pull(cluster.ref, hosts_dir=hosts[second.name])
            await cluster.origin.settle()

            layer_bytes = sum(layer.size for layer in cluster.image.layers)
            gets = cluster.origin.blob_gets()
            assert gets and all(g.remote_addr.startswith(f"{first.host.ip}:") for g in gets)
            late = [r for r in cluster.origin.requests[before:] if "/blobs/" in r.uri]
            assert late == []
            second_url = mirrors[second.name]
            assert second_url is not None
            assert await _served_by_peers(second.host.netns, second_url) >= layer_bytes
