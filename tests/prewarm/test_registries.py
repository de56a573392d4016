"""Background prefetch and the ``registries`` allowlist: hot layers and cluster prewarm images of
a registry the node does not allow are skipped (and logged), and the rest goes on.

One origin answers under two registry names: ``127.0.0.1:PORT`` (refused; the node still has its
upstreams table, so without the allowlist it would fetch from it) and ``localhost:PORT`` (allowed).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest
from click.testing import CliRunner

from imgaccel.cli.prewarm import prewarm
from imgaccel.oci.digest import Digest
from imgaccel.prewarm.jobs import JobsClient
from imgaccel.proxy.prefetch import Prefetcher
from imgaccel.proxy.pulls import PullRecorder
from imgaccel.proxy.state import NODE
from imgaccel.testing.images import Image
from imgaccel.testing.registry import DistributionRegistry
from tests.conftest import NodeServer, needs_registry

pytestmark = [pytest.mark.system, needs_registry]


def allowed_name(origin: DistributionRegistry) -> str:
    return f"localhost:{origin.port}"


async def allowing_localhost(
    node_factory: Callable[..., Any], origin: DistributionRegistry
) -> NodeServer:
    allowed = allowed_name(origin)
    node: NodeServer = await node_factory(
        origin, registries=[allowed], upstreams={allowed: {"url": origin.url}}
    )
    return node


def prefetcher(node: NodeServer, tracker: JobsClient) -> Prefetcher:
    worker = Prefetcher(node.app[NODE], PullRecorder())
    worker.tracker = tracker
    return worker


async def test_hot_layers_of_a_refused_registry_are_skipped_and_the_others_fetched(
    origin: DistributionRegistry,
    pushed: str,
    small_image: Image,
    node_factory: Callable[..., Any],
    jobs_client: JobsClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    node = await allowing_localhost(node_factory, origin)
    refused, allowed = small_image.layers[1].digest, small_image.layers[2].digest
    for registry, digest, reporters in (
        (origin.address, refused, 4),
        (allowed_name(origin), allowed, 3),
    ):
        for n in range(reporters):  # the refused layer is the hotter one: it comes first
            pull = {"image": "test/app:v1", "registry": registry, "repository": "test/app"}
            await jobs_client.report_pulls(f"reporter{n}", [{**pull, "digests": [digest]}])
    worker = prefetcher(node, jobs_client)

    with caplog.at_level(logging.INFO, logger="imgaccel"):
        await worker.hot_pass()
        await worker.hot_pass()

    store = node.app[NODE].store
    assert Digest.parse(refused) not in store
    assert Digest.parse(allowed) in store and store.pinned_until(Digest.parse(allowed))
    await origin.settle()
    assert [r for r in origin.requests if refused in r.uri] == []
    logged = [r.getMessage() for r in caplog.records if "hot-layer list" in r.getMessage()]
    assert len(logged) == 1 and origin.address in logged[0], logged


async def test_a_prewarm_job_skips_images_of_a_refused_registry(
    origin: DistributionRegistry,
    pushed: str,
    small_image: Image,
    node_factory: Callable[..., Any],
    jobs_client: JobsClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    node = await allowing_localhost(node_factory, origin)
    refused = f"{origin.address}/test/app:v1"
    job = await jobs_client.create([refused, f"{allowed_name(origin)}/test/app:v1"])

    with caplog.at_level(logging.INFO, logger="imgaccel.proxy.prefetch"):
        await prefetcher(node, jobs_client).run_job(job)

    status = await jobs_client.job(job["id"])
    (progress,) = status["nodes"].values()
    assert progress["state"] == "done"
    assert "skipped (registry not allowed on this node)" in (progress["error"] or "")
    assert refused in progress["error"]
    assert f"prewarm job {job['id']}: skipping {refused}" in caplog.text
    store = node.app[NODE].store
    assert all(Digest.parse(layer.digest) in store for layer in small_image.layers)


async def test_a_prewarm_job_of_refused_registries_only_fails_without_asking_them(
    origin: DistributionRegistry,
    pushed: str,
    node_factory: Callable[..., Any],
    jobs_client: JobsClient,
) -> None:
    node = await allowing_localhost(node_factory, origin)
    job = await jobs_client.create([f"{origin.address}/test/app:v1"])

    await prefetcher(node, jobs_client).run_job(job)

    status = await jobs_client.job(job["id"])
    (progress,) = status["nodes"].values()
    assert progress["state"] == "failed"
    assert "registry not allowed" in progress["error"]
    await origin.settle()
    assert origin.requests == []


async def test_prewarm_through_a_node_reports_a_refused_image_and_warms_the_others(
    origin: DistributionRegistry,
    pushed: str,
    small_image: Image,
    node_factory: Callable[..., Any],
) -> None:
    node = await allowing_localhost(node_factory, origin)
    refused, allowed = pushed, f"{allowed_name(origin)}/test/app:v1"

    result = await asyncio.to_thread(
        CliRunner().invoke, prewarm, ["--node", node.url, refused, allowed], catch_exceptions=False
    )

    assert result.exit_code == 4, result.output  # denied, as for a registry refusing credentials
    assert f"{refused}: registry {origin.address} is not allowed" in result.stderr
    assert "`registries`" in result.stderr
    assert "--password-stdin" not in result.stderr  # credentials would not help
    assert "warmed 4 blobs" in result.stdout  # the allowed image
    store = node.app[NODE].store
    assert all(Digest.parse(layer.digest) in store for layer in small_image.layers)
