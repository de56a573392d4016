"""imgaccel deployed on a stage: a cluster CA, a tracker, a seeder, a node daemon per node.

Everything is started through imgaccel's command line (``python -m imgaccel``) inside the hosts'
namespaces, exactly as an operator would: ``certs init``/``certs issue`` for the cluster PKI, the
tracker over TLS with client certificates, nodes with ``--tracker`` and their certificates.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

from imgaccel.bench.cluster import Cluster, Node
from imgaccel.bench.daemons import Daemon, command_help, imgaccel_argv
from imgaccel.bench.network import Host
from imgaccel.testing.procs import run

NODE_PORT, P2P_PORT, TRACKER_PORT, SEEDER_PORT = 7070, 6881, 7080, 7090

#: Node name -> mirror URL containerd goes through (None: straight to the origin).
Mirrors = dict[str, str | None]


@dataclass
class Stage:
    """What a scenario works with during one repeat."""

    cluster: Cluster
    nodes: list[Node]
    workdir: Path
    progress: Callable[[str], None]
    #: URLs of the services a scenario started (``tracker``, ``seeder``), for its warm-up.
    services: dict[str, str] = field(default_factory=dict)

    @property
    def pki(self) -> Path:
        return self.workdir / "pki"


def p2p_available() -> bool:
    """Nodes take ``--tracker``, and the tracker and the cluster CA tooling exist."""
    node_help = command_help("node") or ""
    return "--tracker" in node_help and all(
        command_help(c) is not None for c in ("tracker", "certs")
    )


async def init_pki(stage: Stage, hosts: list[Host]) -> None:
    """A fresh cluster CA and a certificate (with its IP) for each of ``hosts``."""
    ca = stage.pki / "ca"
    await run(*imgaccel_argv("certs", "init", "--dir", str(ca), "--cluster", "bench"))
    await asyncio.gather(
        *(
            run(
                *imgaccel_argv(
                    "certs",
                    "issue",
                    "--ca-dir",
                    str(ca),
                    "--out",
                    str(stage.pki / h.name),
                    "--ip",
                    h.ip,
                )
            )
            for h in hosts
        )
    )


#: The share of the disk the simulated nodes and the seeder keep free (cache.min_free_percent),
#: unless the environment sets one. A real node's default (25 %) leaves room for kubelet on a
#: disk of its own; here every simulated host shares the machine's one disk with the others'
#: caches and containerds, the registries and whatever else is on it (this VM's had 30 % free),
#: and the default refused blobs a real node would have kept (a prewarm job failed on one node
#: at N = 8 for a 604 KB blob). 5: as the seeder StatefulSet keeps on its own volume.
TESTBED_MIN_FREE_PERCENT = "5"


def _testbed_env() -> dict[str, str]:
    """Settings of every imgaccel node and seeder of the testbed (see above)."""
    if "IMGACCEL_CACHE__MIN_FREE_PERCENT" in os.environ:  # the caller's, as for any setting
        return {}
    return {"IMGACCEL_CACHE__MIN_FREE_PERCENT": TESTBED_MIN_FREE_PERCENT}


def _certs_env(stage: Stage, host: Host) -> dict[str, str]:
    return {"IMGACCEL_P2P__CERTS_DIR": str(stage.pki / host.name)}


async def start_all(
    stack: contextlib.AsyncExitStack, daemons: list[Daemon], *, probe: bool = True
) -> None:
    """Start ``daemons`` at once; they stop when ``stack`` closes. ``probe``: check /healthz."""
    for daemon in daemons:
        stack.push_async_callback(daemon.stop)
    await asyncio.gather(*(d.start() for d in daemons))
    for daemon in daemons if probe else ():
        if not await daemon.healthy():
            raise RuntimeError(f"{daemon.url}/healthz failed in {daemon.netns}")


async def start_tracker(stack: contextlib.AsyncExitStack, stage: Stage) -> str:
    host = stage.cluster.tracker_host
    certs = stage.pki / host.name
    args = [
        "tracker",
        "--listen",
        f"{host.ip}:{TRACKER_PORT}",
        "--data-dir",
        str(stage.workdir / "tracker"),
        "--ca-cert",
        str(certs / "ca.crt"),
        "--cert",
        str(certs / "node.crt"),
        "--key",
        str(certs / "node.key"),
    ]
    daemon = Daemon(args, host.netns, stage.workdir / "tracker.log")
    await start_all(stack, [daemon], probe=False)  # it serves TLS to cluster members only
    stage.services["tracker"] = daemon.url
    return daemon.url


def upstream(cluster: Cluster) -> str:
    return f"{cluster.origin.address}={cluster.origin.url}"


async def start_nodes(
    stack: contextlib.AsyncExitStack, stage: Stage, tracker: str | None
) -> Mirrors:
    """An ``imgaccel node`` per node with an empty cache; with P2P when ``tracker`` is given."""
    daemons = []
    for node in stage.nodes:
        args = [
            "node",
            "--listen",
            f"{node.host.ip}:{NODE_PORT}",
            "--cache-dir",
            str(stage.workdir / node.name / "cache"),
            "--upstream",
            upstream(stage.cluster),
        ]
        env = _testbed_env()
        if tracker:
            args += ["--tracker", tracker, "--p2p-listen", f"{node.host.ip}:{P2P_PORT}"]
            env |= _certs_env(stage, node.host) | {"IMGACCEL_P2P__NODE_ID": node.name}
        log = stage.workdir / node.name / "node.log"
        daemons.append(Daemon(args, node.host.netns, log, env=env))
    await start_all(stack, daemons)
    return {node.name: d.url for node, d in zip(stage.nodes, daemons, strict=True)}


async def start_seeder(stack: contextlib.AsyncExitStack, stage: Stage, tracker: str) -> str:
    host = stage.cluster.seeder_host
    args = [
        "seeder",
        "--listen",
        f"{host.ip}:{SEEDER_PORT}",
        "--cache-dir",
        str(stage.workdir / "seeder"),
        "--tracker",
        tracker,
        "--upstream",
        upstream(stage.cluster),
    ]
    env = _testbed_env() | _certs_env(stage, host)
    daemon = Daemon(args, host.netns, stage.workdir / "seeder.log", env=env)
    await start_all(stack, [daemon], probe=False)
    stage.services["seeder"] = daemon.url
    return daemon.url


@contextlib.asynccontextmanager
async def imgaccel_cluster(stage: Stage, *, seeder: bool = False) -> AsyncIterator[Mirrors]:
    """Nodes (and tracker, PKI, optionally a seeder, when P2P is available) for one repeat."""
    async with contextlib.AsyncExitStack() as stack:
        tracker = None
        if p2p_available() or seeder:
            c = stage.cluster
            await init_pki(stage, [c.tracker_host, c.seeder_host, *(n.host for n in stage.nodes)])
            tracker = await start_tracker(stack, stage)
        if seeder:
            assert tracker is not None
            await start_seeder(stack, stage, tracker)
        yield await start_nodes(stack, stage, tracker)
