"""The ways a cluster can get an image, each a :class:`Scenario` registered in :data:`SCENARIOS`.

A scenario deploys whatever sits between the nodes and the origin for one repeat (fresh caches
every time) and says, per node, which mirror containerd should use. The runner does the rest:
hosts.toml, the simultaneous pulls, the counting. A scenario whose programs do not exist yet
reports why through :meth:`Scenario.unavailable` and is skipped.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from imgaccel.bench.cluster import REGISTRY_PORT, Cluster, Node
from imgaccel.bench.daemons import Daemon, command_help, imgaccel_argv
from imgaccel.testing.procs import netns_prefix, run
from imgaccel.testing.registry import DistributionRegistry

NODE_PORT, P2P_PORT, TRACKER_PORT, SEEDER_PORT = 7070, 6881, 7080, 7090
PREWARM_FLAGS = ("--cluster", "--tracker", "--seeder")

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


class Scenario(abc.ABC):
    name: ClassVar[str]
    summary: ClassVar[str]

    def unavailable(self) -> str | None:
        """Why this scenario cannot run on this checkout, or None when it can."""
        return None

    def note(self) -> str | None:
        """A line for the report about how this scenario ran (e.g. with or without P2P)."""
        return None

    @abc.abstractmethod
    def deploy(self, stage: Stage) -> contextlib.AbstractAsyncContextManager[Mirrors]:
        """Start this scenario's services with empty caches; stop them on exit."""

    async def warm_up(self, stage: Stage, pull: Callable[[Node], Awaitable[None]]) -> None:
        """Run before the timed pulls (its origin traffic is counted apart); none by default."""
        return None


class Direct(Scenario):
    name = "direct"
    summary = "every node pulls from the origin"

    @contextlib.asynccontextmanager
    async def deploy(self, stage: Stage) -> AsyncIterator[Mirrors]:
        yield {node.name: None for node in stage.nodes}


class Proxy(Scenario):
    name = "proxy"
    summary = "a central distribution registry in proxy (pull-through cache) mode"

    @contextlib.asynccontextmanager
    async def deploy(self, stage: Stage) -> AsyncIterator[Mirrors]:
        cluster = stage.cluster
        async with DistributionRegistry(
            stage.workdir / "proxy",
            host=cluster.proxy_host.ip,
            port=REGISTRY_PORT,
            proxy_remote=cluster.origin.url,
            netns=cluster.proxy_host.netns,
        ) as proxy:
            yield {node.name: proxy.url for node in stage.nodes}


def _p2p_available() -> bool:
    node_help = command_help("node") or ""
    return command_help("tracker") is not None and "--tracker" in node_help


async def _start_all(stack: contextlib.AsyncExitStack, daemons: list[Daemon]) -> None:
    for daemon in daemons:
        stack.push_async_callback(daemon.stop)
    await asyncio.gather(*(d.start() for d in daemons))
    for daemon in daemons:
        if not await daemon.healthy():
            raise RuntimeError(f"{daemon.url}/healthz failed in {daemon.netns}")


async def _tracker(stack: contextlib.AsyncExitStack, stage: Stage) -> str:
    host = stage.cluster.tracker_host
    daemon = Daemon(
        [
            "tracker",
            "--listen",
            f"{host.ip}:{TRACKER_PORT}",
            "--data-dir",
            str(stage.workdir / "tracker"),
            "--insecure",
        ],
        host.netns,
        stage.workdir / "tracker.log",
    )
    await _start_all(stack, [daemon])
    stage.services["tracker"] = daemon.url
    return daemon.url


def _upstream(cluster: Cluster) -> str:
    return f"{cluster.origin.address}={cluster.origin.url}"


async def _nodes(stack: contextlib.AsyncExitStack, stage: Stage, tracker: str | None) -> Mirrors:
    daemons = []
    for node in stage.nodes:
        args = [
            "node",
            "--listen",
            f"{node.host.ip}:{NODE_PORT}",
            "--cache-dir",
            str(stage.workdir / node.name / "cache"),
            "--upstream",
            _upstream(stage.cluster),
        ]
        if tracker:
            args += ["--tracker", tracker, "--p2p-listen", f"{node.host.ip}:{P2P_PORT}"]
        daemons.append(Daemon(args, node.host.netns, stage.workdir / node.name / "node.log"))
    await _start_all(stack, daemons)
    return {node.name: d.url for node, d in zip(stage.nodes, daemons, strict=True)}


class ImgaccelCold(Scenario):
    name = "imgaccel-cold"
    summary = "an imgaccel node per node, all caches empty (P2P when the tracker exists)"

    def unavailable(self) -> str | None:
        return None if command_help("node") else "skipped: imgaccel node not available"

    def note(self) -> str | None:
        if self.unavailable():
            return None
        if _p2p_available():
            return f"{self.name}: nodes start with --tracker/--p2p-listen (a tracker of their own)"
        return f"{self.name}: nodes run without P2P (no imgaccel tracker in this checkout)"

    @contextlib.asynccontextmanager
    async def deploy(self, stage: Stage) -> AsyncIterator[Mirrors]:
        async with contextlib.AsyncExitStack() as stack:
            tracker = await _tracker(stack, stage) if _p2p_available() else None
            yield await _nodes(stack, stage, tracker)


class ImgaccelWarm(ImgaccelCold):
    name = "imgaccel-warm"
    summary = "as imgaccel-cold, after the first node pulled the image alone"

    async def warm_up(self, stage: Stage, pull: Callable[[Node], Awaitable[None]]) -> None:
        first = stage.nodes[0]
        stage.progress(f"warm-up pull on {first.name}")
        await pull(first)
        # Its imgaccel cache stays warm; its containerd pulls again with the others.
        await first.containerd.remove_all_images()


class ImgaccelPrewarm(ImgaccelCold):
    name = "imgaccel-prewarm"
    summary = "after `imgaccel prewarm --cluster` seeded the image (tracker + seeder)"

    def unavailable(self) -> str | None:
        prewarm = command_help("prewarm")
        if prewarm is None:
            return "skipped: imgaccel prewarm not available"
        if not all(flag in prewarm for flag in PREWARM_FLAGS) or command_help("seeder") is None:
            return (
                "skipped: imgaccel prewarm lacks "
                + "/".join(PREWARM_FLAGS)
                + " or imgaccel seeder is missing"
            )
        return super().unavailable()

    @contextlib.asynccontextmanager
    async def deploy(self, stage: Stage) -> AsyncIterator[Mirrors]:
        async with contextlib.AsyncExitStack() as stack:
            tracker = await _tracker(stack, stage)
            host = stage.cluster.seeder_host
            seeder = Daemon(
                [
                    "seeder",
                    "--listen",
                    f"{host.ip}:{SEEDER_PORT}",
                    "--cache-dir",
                    str(stage.workdir / "seeder"),
                    "--tracker",
                    tracker,
                    "--upstream",
                    _upstream(stage.cluster),
                ],
                host.netns,
                stage.workdir / "seeder.log",
            )
            await _start_all(stack, [seeder])
            stage.services["seeder"] = seeder.url
            yield await _nodes(stack, stage, tracker)

    async def warm_up(self, stage: Stage, pull: Callable[[Node], Awaitable[None]]) -> None:
        # The flags are the benchmark's expectation of the command; unavailable() checks them.
        stage.progress("imgaccel prewarm --cluster")
        await run(
            *netns_prefix(stage.cluster.seeder_host.netns),
            *imgaccel_argv(
                "prewarm",
                "--cluster",
                "--tracker",
                stage.services["tracker"],
                "--seeder",
                stage.services["seeder"],
                stage.cluster.ref,
            ),
            timeout=3600,
        )


SCENARIOS: dict[str, Scenario] = {
    s.name: s for s in (Direct(), Proxy(), ImgaccelCold(), ImgaccelWarm(), ImgaccelPrewarm())
}
DEFAULT_SCENARIOS = tuple(SCENARIOS)


def select(names: tuple[str, ...]) -> list[Scenario]:
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise ValueError(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    return [SCENARIOS[n] for n in names or DEFAULT_SCENARIOS]
