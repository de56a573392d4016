"""``imgaccel prewarm --cluster``: a job on a real mTLS tracker, run by real P2P nodes.

Where bytes came from is read from the origin's own request log and the nodes' metrics.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from click.testing import CliRunner, Result

from imgaccel.cli.prewarm import prewarm
from imgaccel.oci.digest import Digest
from imgaccel.p2p.certs import CA_CERT, NODE_CERT, NODE_KEY
from imgaccel.prewarm.jobs import JobsClient
from imgaccel.proxy.prefetch import Prefetcher
from imgaccel.proxy.pulls import PullRecorder
from imgaccel.proxy.state import NODE
from imgaccel.testing.containerd import Containerd
from imgaccel.testing.images import Image, build_image, push
from imgaccel.testing.registry import DistributionRegistry
from imgaccel.tracker.auth import client_context
from tests.conftest import NodeServer, needs_containerd, needs_registry, until, write_hosts

pytestmark = [pytest.mark.system, needs_registry]


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    return build_image(tmp_path_factory.mktemp("cluster-image"), [8_000_000, 500_000], seed=11)


@pytest.fixture
async def ref(origin: DistributionRegistry, image: Image) -> str:
    ref = f"{origin.address}/test/warm:v1"
    await push(image, ref)
    origin.requests.clear()
    return ref


def blobs(image: Image) -> list[str]:
    return [image.config.digest, *(layer.digest for layer in image.layers)]


def holds_all(node: NodeServer, image: Image) -> bool:
    return all(Digest.parse(d) in node.app[NODE].store for d in blobs(image))


async def cli(*args: str) -> Result:
    return await asyncio.to_thread(CliRunner().invoke, prewarm, list(args), catch_exceptions=False)


async def metric(node: NodeServer, line_start: str) -> float:
    async with aiohttp.ClientSession() as session, session.get(f"{node.url}/metrics") as resp:
        for line in (await resp.text()).splitlines():
            if line.startswith(line_start):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_a_cluster_job_warms_every_node_with_one_origin_fetch_per_blob(
    origin: DistributionRegistry,
    ref: str,
    image: Image,
    tracker: str,
    client_certs: Path,
    p2p_node: Callable[..., Any],
) -> None:
    nodes = [await p2p_node(f"w{i}") for i in range(4)]
    common = ["--tracker", tracker, "--certs-dir", str(client_certs), "--json"]

    created = await cli("--cluster", *common, ref)
    assert created.exit_code == 0, created.output
    job = json.loads(created.stdout)["id"]
    waited = await cli("status", job, "--wait", *common)

    assert waited.exit_code == 0, waited.output
    final = json.loads(waited.stdout.splitlines()[-1])
    assert (final["state"], final["nodes_done"], final["nodes_total"]) == ("done", 4, 4)
    assert all(holds_all(node, image) for node in nodes)
    for digest in blobs(image):
        assert len(origin.blob_gets(digest)) == 1, digest

    # A node that joins later runs the job too, from its peers.
    origin.requests.clear()
    late = await p2p_node("w-late")
    await until(lambda: holds_all(late, image), seconds=30)
    assert origin.blob_gets() == []
    # The node reports to the tracker after its last blob lands: give the report a moment.
    async with asyncio.timeout(15):
        while json.loads((await cli("status", job, *common)).stdout)["nodes_done"] != 5:  # noqa: ASYNC110
            await asyncio.sleep(0.2)


async def test_label_selected_jobs_skip_other_nodes(
    origin: DistributionRegistry,
    ref: str,
    image: Image,
    tracker: str,
    client_certs: Path,
    p2p_node: Callable[..., Any],
) -> None:
    gpu = await p2p_node("gpu1", labels={"pool": "gpu"})
    cpu = await p2p_node("cpu1", labels={"pool": "cpu"})
    common = ["--tracker", tracker, "--certs-dir", str(client_certs)]
    created = await cli("--cluster", "--nodes", "pool=gpu", "--wait", *common, ref)
    assert created.exit_code == 0, created.output
    assert holds_all(gpu, image)
    assert not any(Digest.parse(d) in cpu.app[NODE].store for d in blobs(image))


@needs_containerd
async def test_after_a_prewarm_a_ctr_pull_touches_neither_origin_nor_peers(
    origin: DistributionRegistry,
    ref: str,
    image: Image,
    tracker: str,
    client_certs: Path,
    p2p_node: Callable[..., Any],
    containerd: Containerd,
    tmp_path: Path,
) -> None:
    node = await p2p_node("c1")
    common = ["--tracker", tracker, "--certs-dir", str(client_certs)]
    assert (await cli("--cluster", "--wait", *common, ref)).exit_code == 0
    origin.requests.clear()

    await containerd.pull(ref, hosts_dir=write_hosts(tmp_path / "hosts", origin.address, node.url))

    assert origin.blob_gets() == []
    assert await metric(node, 'imgaccel_bytes_served_total{source="origin"}') == 0
    assert await metric(node, 'imgaccel_bytes_served_total{source="peer"}') == 0
    assert await metric(node, 'imgaccel_bytes_served_total{source="cache"}') >= image.size


async def test_a_job_cancelled_while_a_node_runs_it_stops_after_the_blob_in_flight(
    origin: DistributionRegistry,
    ref: str,
    image: Image,
    tracker: str,
    client_certs: Path,
    node: NodeServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    second = build_image(tmp_path / "second", [300_000], seed=12)
    second_ref = f"{origin.address}/test/second:v1"
    await push(second, second_ref)
    origin.requests.clear()

    reports: list[tuple[str, int]] = []

    class CancelsAfterTheFirstBlob(JobsClient):
        """The real tracker client; the operator cancels the job once a blob is reported."""

        async def progress(self, job_id: str, node: str, state: str, done: int, *a: Any) -> bool:
            reports.append((state, done))
            if done > 0 and len(reports) == 2:
                await self.cancel(job_id)
            return await super().progress(job_id, node, state, done, *a)

    ssl_context = client_context(*(client_certs / n for n in (CA_CERT, NODE_CERT, NODE_KEY)))
    async with aiohttp.ClientSession() as http:
        client = CancelsAfterTheFirstBlob(tracker, http, ssl_context)
        job = await client.create([ref, second_ref])
        worker = Prefetcher(node.app[NODE], PullRecorder())
        worker.tracker = client
        with caplog.at_level(logging.INFO, logger="imgaccel.proxy.prefetch"):
            await worker.run_job(job)
        status = await client.job(job["id"])

    # The first image's blobs were in flight together; the second image was never started.
    assert origin.blob_gets(second.layers[0].digest) == []
    assert origin.blob_gets(second.config.digest) == []
    assert all(state == "running" for state, _ in reports)  # never "done"
    assert status["state"] == "cancelled"
    assert f"prewarm job {job['id']} was cancelled" in caplog.text
    # What it fetched stays cached, but the cancelled job no longer pins it against eviction.
    store = node.app[NODE].store
    fetched = [d for d in map(Digest.parse, blobs(image)) if d in store]
    assert fetched, "the first blob was reported, so it is cached"
    assert [d for d in fetched if store.pinned_until(d)] == []
    assert re.search(r"was cancelled: .*; [1-9]\d* blobs unpinned", caplog.text), caplog.text


async def test_the_cli_sets_a_jobs_expiry_and_cancels_it(tracker: str, client_certs: Path) -> None:
    common = ["--tracker", tracker, "--certs-dir", str(client_certs)]
    created = await cli("--cluster", "--expires-seconds", "0", "--json", *common, "reg/a:v1")
    assert created.exit_code == 0, created.output
    job = json.loads(created.stdout)
    assert job["expires"] is None and job["state"] == "pending"

    cancelled = await cli("cancel", job["id"], *common)
    assert cancelled.exit_code == 0, cancelled.output
    assert cancelled.stdout.startswith(f"job {job['id']}: cancelled")
    status = await cli("status", job["id"], "--wait", *common)
    assert status.exit_code == 7 and "cancelled" in status.stdout

    unknown = await cli("cancel", "nope", *common)
    assert unknown.exit_code == 1 and "not found" in unknown.stderr
    assert (await cli("cancel", *common)).exit_code == 2
    local = await cli("--expires-seconds", "60", "reg/a:v1")
    assert local.exit_code == 2 and "--cluster" in local.output
