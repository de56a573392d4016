"""The test cluster: an origin registry, N nodes with their own containerd, and service hosts.

Everything lives under one work directory and one :class:`~imgaccel.bench.network.Network`;
:func:`open_cluster` tears all of it down on the way out, whatever the way out is.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from imgaccel.bench import workload
from imgaccel.bench.network import Host, Network
from imgaccel.bench.results import Params
from imgaccel.testing.containerd import Containerd
from imgaccel.testing.images import Image, push
from imgaccel.testing.registry import DistributionRegistry

#: Inside a namespace of our own every port is free, so services get fixed, readable ones.
REGISTRY_PORT = 5000
ORIGIN_OCTET, PROXY_OCTET, TRACKER_OCTET, SEEDER_OCTET, FIRST_NODE_OCTET = 2, 3, 4, 5, 11
MAX_NODES = 240


@dataclass
class Node:
    host: Host
    containerd: Containerd
    workdir: Path

    @property
    def name(self) -> str:
        return self.host.name.rpartition("-")[2]


@dataclass
class Cluster:
    params: Params
    workdir: Path
    network: Network
    origin_host: Host
    origin: DistributionRegistry
    image: Image
    nodes: list[Node]
    proxy_host: Host
    tracker_host: Host
    seeder_host: Host

    @property
    def ref(self) -> str:
        return f"{self.origin.address}/{workload.REPOSITORY}:{workload.TAG}"


async def _start_nodes(
    stack: contextlib.AsyncExitStack, network: Network, params: Params, workdir: Path, count: int
) -> list[Node]:
    nodes = []
    for i in range(count):
        host = await network.add_host(
            f"n{i + 1}",
            FIRST_NODE_OCTET + i,
            ingress_mbit=params.node_mbit,
            egress_mbit=params.node_mbit,
        )
        root = workdir / "nodes" / f"n{i + 1}"
        containerd = await stack.enter_async_context(
            Containerd(root / "containerd", netns=host.netns)
        )
        nodes.append(Node(host, containerd, root))
    return nodes


@contextlib.asynccontextmanager
async def open_cluster(
    params: Params, workdir: Path, run_id: str, *, progress: Callable[[str], None] = print
) -> AsyncIterator[Cluster]:
    """Build the network, start the origin and push the image to it, start the nodes."""
    count = max(params.nodes)
    if count > MAX_NODES:
        raise ValueError(f"at most {MAX_NODES} nodes fit the subnet")
    async with contextlib.AsyncExitStack() as stack:
        network = Network(run_id)
        stack.push_async_callback(network.close)
        await network.open()
        progress(f"building a {params.image_bytes / 1e6:.0f} MB image")
        image = await workload.build(workdir / "image", params.image_bytes)
        origin_host = await network.add_host("origin", ORIGIN_OCTET, egress_mbit=params.origin_mbit)
        origin = await stack.enter_async_context(
            DistributionRegistry(
                workdir / "origin", host=origin_host.ip, port=REGISTRY_PORT, netns=origin_host.netns
            )
        )
        # The push stays inside the origin's namespace (loopback), untouched by its limit.
        await push(
            image, f"{origin.address}/{workload.REPOSITORY}:{workload.TAG}", netns=origin_host.netns
        )
        proxy_host = await network.add_host(
            "proxy", PROXY_OCTET, ingress_mbit=params.proxy_mbit, egress_mbit=params.proxy_mbit
        )
        tracker_host = await network.add_host("track", TRACKER_OCTET)
        seeder_host = await network.add_host(
            "seed", SEEDER_OCTET, ingress_mbit=params.node_mbit, egress_mbit=params.node_mbit
        )
        progress(f"starting {count} nodes")
        nodes = await _start_nodes(stack, network, params, workdir, count)
        yield Cluster(
            params,
            workdir,
            network,
            origin_host,
            origin,
            image,
            nodes,
            proxy_host,
            tracker_host,
            seeder_host,
        )
