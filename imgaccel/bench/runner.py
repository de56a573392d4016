"""Run the scenarios on one cluster and collect a :class:`~imgaccel.bench.results.Report`.

For every N and scenario, each repeat starts from nothing (containerd content removed, the
scenario's services started with empty caches), lets the scenario warm up, then has the N nodes
run ``ctr images pull`` (unpack included) at the same moment. What the origin sent is read from
its own log over exactly the timed window, once its link has gone quiet.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from imgaccel.bench import cpu
from imgaccel.bench.cluster import Cluster, Node, open_cluster
from imgaccel.bench.network import WORKDIR_PREFIX, new_run_id
from imgaccel.bench.progress import Progress
from imgaccel.bench.results import Params, Repeat, Report, ScenarioResult, bound_seconds
from imgaccel.bench.scenarios import Mirrors, Scenario, Stage, select

#: The origin's link counts as quiet after this long without a transmitted byte.
QUIET_SECONDS = 1.0


def hosts_toml(origin: str, mirror: str | None) -> str:
    """containerd's hosts.toml for ``origin``: through ``mirror`` when given, else direct.

    The direct form names the origin as its own host: containerd 1.6 rejects a hosts.toml that
    has only ``server`` ("invalid `host` tree").
    """
    host = mirror or f"http://{origin}"
    return f'server = "http://{origin}"\n\n[host."{host}"]\n  capabilities = ["pull", "resolve"]\n'


def write_hosts_dirs(root: Path, origin: str, mirrors: Mirrors) -> dict[str, Path]:
    """One hosts directory per node (``root/NODE/ORIGIN/hosts.toml``)."""
    dirs = {}
    for node, mirror in mirrors.items():
        (root / node / origin).mkdir(parents=True, exist_ok=True)
        (root / node / origin / "hosts.toml").write_text(hosts_toml(origin, mirror))
        dirs[node] = root / node
    return dirs


@contextlib.contextmanager
def run_workdir(base: Path | None = None) -> Iterator[tuple[str, Path]]:
    """A fresh work directory named after a new run id, marked with our PID, removed on exit."""
    run_id = new_run_id()
    path = (base or Path(tempfile.gettempdir())) / f"{WORKDIR_PREFIX}{run_id}"
    path.mkdir(parents=True)
    try:
        (path / "owner.pid").write_text(str(os.getpid()))
        yield run_id, path
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def settle(cluster: Cluster, within: float = 300.0) -> None:
    """Wait until the origin has sent nothing for :data:`QUIET_SECONDS`.

    A mirror may still be fetching after its clients are done (distribution's proxy stores a
    blob with a second GET of its own); those bytes belong to the scenario.
    """
    deadline = time.monotonic() + within
    last, quiet_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        sent = await cluster.network.tx_bytes(cluster.origin_host)
        if sent != last:
            last, quiet_since = sent, time.monotonic()
        elif time.monotonic() - quiet_since >= QUIET_SECONDS:
            break
        await asyncio.sleep(0.2)
    await asyncio.sleep(0.2)  # the registry logs a response just after sending its last byte


def _sent(cluster: Cluster, start: int, end: int) -> int:
    """Body bytes the origin sent for requests ``start:end`` of its log.

    HEAD is left out: the registry logs a manifest's size as written for a HEAD, but an HTTP
    server sends no body for it.
    """
    return sum(r.written for r in cluster.origin.requests[start:end] if r.method != "HEAD")


def _bypassed(cluster: Cluster, first: int, mirrored: bool) -> int:
    """Blob GETs that containerd sent to the origin itself although it had a mirror."""
    if not mirrored:
        return 0
    return sum(
        1
        for r in cluster.origin.requests[first:]
        if r.method == "GET" and "/blobs/" in r.uri and "containerd" in r.user_agent
    )


async def pull_all(
    nodes: list[Node],
    ref: str,
    hosts: dict[str, Path],
    progress: Progress,
    label: str,
    pull_timeout: float,
    unpack: bool = True,
) -> dict[str, float]:
    """All nodes pull ``ref`` at once; seconds from the common start to each node's finish."""
    done: dict[str, float] = {}
    start = time.monotonic()

    async def one(node: Node) -> None:
        await node.containerd.pull(
            ref, hosts_dir=hosts[node.name], timeout=pull_timeout, unpack=unpack
        )
        done[node.name] = time.monotonic() - start
        progress.pulls(len(done), len(nodes), label)

    progress.pulls(0, len(nodes), label)
    try:
        async with asyncio.TaskGroup() as group:
            for node in nodes:
                group.create_task(one(node), name=f"pull-{node.name}")
    except* Exception as failed:
        raise failed.exceptions[0] from failed
    return {node.name: done[node.name] for node in nodes}


async def run_repeat(
    cluster: Cluster,
    scenario: Scenario,
    nodes: list[Node],
    workdir: Path,
    progress: Progress,
    label: str,
) -> Repeat:
    await asyncio.gather(*(node.containerd.remove_all_images() for node in nodes))
    stage = Stage(cluster, nodes, workdir, progress)
    p = cluster.params
    timeout = 120 + 20 * len(nodes) * bound_seconds(cluster.image.size, p.origin_mbit, p.node_mbit)
    async with scenario.deploy(stage) as mirrors:
        hosts = write_hosts_dirs(workdir / "hosts", cluster.origin.address, mirrors)
        before_warmup = len(cluster.origin.requests)

        async def pull(node: Node) -> None:
            await node.containerd.pull(
                cluster.ref, hosts_dir=hosts[node.name], timeout=timeout, unpack=p.unpack
            )

        warming = time.monotonic()
        await scenario.warm_up(stage, pull)
        warms_up = type(scenario).warm_up is not Scenario.warm_up
        warmup_seconds = time.monotonic() - warming if warms_up else 0.0
        await settle(cluster)
        first = len(cluster.origin.requests)
        sent_before = await _nodes_sent(cluster, nodes)
        cpu_before = cpu.sample(cluster.workdir)
        seconds = await pull_all(nodes, cluster.ref, hosts, progress, label, timeout, p.unpack)
        cpu_seconds = cpu.used(cpu_before, cpu.sample(cluster.workdir))
        await settle(cluster)
        sent_after = await _nodes_sent(cluster, nodes)
        sent = _sent(cluster, first, len(cluster.origin.requests))
        warmup = _sent(cluster, before_warmup, first)
        bypassed = _bypassed(cluster, first, any(m is not None for m in mirrors.values()))
    node_sent = {name: sent_after[name] - sent_before[name] for name in sent_after}
    return Repeat(seconds, sent, warmup, bypassed, warmup_seconds, node_sent, cpu_seconds)


async def _nodes_sent(cluster: Cluster, nodes: list[Node]) -> dict[str, int]:
    """Each node's link transmit counter."""
    counts = await asyncio.gather(*(cluster.network.tx_bytes(node.host) for node in nodes))
    return {node.name: count for node, count in zip(nodes, counts, strict=True)}


async def run_scenario(
    cluster: Cluster, scenario: Scenario, n: int, progress: Progress
) -> ScenarioResult:
    p = cluster.params
    result = ScenarioResult(
        scenario.name,
        n,
        cluster.image.size,
        bound_seconds(cluster.image.size, p.origin_mbit, p.node_mbit),
    )
    if reason := scenario.unavailable():
        progress(f"{scenario.name} N={n}: {reason}")
        result.status, result.reason = "skipped", reason
        return result
    for i in range(p.repeat):
        label = f"{scenario.name} N={n} repeat {i + 1}/{p.repeat}"
        progress(label)
        try:
            repeat = await run_repeat(
                cluster,
                scenario,
                cluster.nodes[:n],
                cluster.workdir / "runs" / f"{scenario.name}-n{n}-r{i}",
                progress,
                label,
            )
        except Exception as e:  # one broken scenario must not cost the others' results
            progress(f"{label} failed: {e}")
            result.status, result.reason = "failed", str(e).strip().splitlines()[-1][:300]
            break
        result.repeats.append(repeat)
        times = sorted(repeat.pull_seconds.values())
        progress(f"{label}: max {times[-1]:.1f} s, origin sent {repeat.origin_bytes / 1e6:.1f} MB")
    return result


def keep_logs(workdir: Path, dest: Path) -> None:
    """Copy every ``*.log`` of the run (containerd, imgaccel daemons) to ``dest``."""
    for log in workdir.rglob("*.log"):
        target = dest / log.relative_to(workdir)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(log, target)


async def run_bench(
    params: Params,
    progress: Progress,
    *,
    base: Path | None = None,
    logs: Path | None = None,
    on_result: Callable[[Report], None] | None = None,
) -> Report:
    """Build the cluster, run every scenario for every N, tear everything down.

    ``logs``, when given, receives the run's log files before its work directory goes.
    """
    scenarios = select(params.scenarios)
    with run_workdir(base) as (run_id, path):
        progress(f"run {run_id}: work directory {path}")
        try:
            async with open_cluster(params, path, run_id, progress=progress) as cluster:
                report = Report(params, cluster.image.size)
                report.notes += [line for s in scenarios if (line := s.note())]
                for n in params.nodes:
                    for scenario in scenarios:
                        report.results.append(await run_scenario(cluster, scenario, n, progress))
                        if on_result is not None:
                            on_result(report)
        finally:
            if logs is not None:
                keep_logs(path, logs)
    return report
