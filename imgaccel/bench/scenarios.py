"""The ways a cluster can get an image, each a :class:`Scenario` registered in :data:`SCENARIOS`.

A scenario deploys whatever sits between the nodes and the origin for one repeat (fresh caches
every time) and says, per node, which mirror containerd should use. The runner does the rest:
hosts.toml, the simultaneous pulls, the counting. A scenario whose programs do not exist yet
reports why through :meth:`Scenario.unavailable` and is skipped.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import ClassVar

from imgaccel.bench.cluster import REGISTRY_PORT, Node
from imgaccel.bench.daemons import command_help, imgaccel_argv
from imgaccel.bench.deployment import Mirrors, Stage, imgaccel_cluster, p2p_available
from imgaccel.testing.procs import netns_prefix, run
from imgaccel.testing.registry import DistributionRegistry

__all__ = ["SCENARIOS", "Mirrors", "Scenario", "Stage", "select"]

PREWARM_FLAGS = ("--cluster", "--tracker", "--certs-dir", "--wait")


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


class ImgaccelCold(Scenario):
    name = "imgaccel-cold"
    summary = "an imgaccel node per node, all caches empty (P2P when the tracker exists)"

    def unavailable(self) -> str | None:
        return None if command_help("node") else "skipped: imgaccel node not available"

    def note(self) -> str | None:
        if self.unavailable():
            return None
        if p2p_available():
            return f"{self.name}: P2P on (nodes with --tracker, cluster CA, TLS tracker)"
        return f"{self.name}: P2P off (this checkout has no imgaccel tracker or certs)"

    def deploy(self, stage: Stage) -> contextlib.AbstractAsyncContextManager[Mirrors]:
        return imgaccel_cluster(stage)


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

    def deploy(self, stage: Stage) -> contextlib.AbstractAsyncContextManager[Mirrors]:
        return imgaccel_cluster(stage, seeder=True)

    async def warm_up(self, stage: Stage, pull: Callable[[Node], Awaitable[None]]) -> None:
        # A tracker job every node runs (P2P, one origin fetch per blob); --wait until all are.
        stage.progress("imgaccel prewarm --cluster")
        host = stage.cluster.seeder_host
        await run(
            *netns_prefix(host.netns),
            *imgaccel_argv(
                "prewarm",
                "--cluster",
                "--tracker",
                stage.services["tracker"],
                "--certs-dir",
                str(stage.pki / host.name),
                "--wait",
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
