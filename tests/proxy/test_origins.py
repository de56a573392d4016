"""What the node last heard from each origin (imgaccel/proxy/origins.py): the bookkeeping
without sockets, then a real registry stopped and started again under a real node, seen in
``GET /_imgaccel/status``, ``imgaccel status`` and ``/metrics``.

A mirror that cannot reach its origin fails no pull (containerd goes around it), so these are
the only places an operator learns of it; ``imgaccel doctor``'s check is in
tests/ops/test_doctor.py.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from click.testing import CliRunner
from prometheus_client import generate_latest

from imgaccel.cli import main
from imgaccel.proxy.metrics import NodeMetrics
from imgaccel.proxy.origins import MAX_REGISTRIES, OriginHealth
from imgaccel.testing.images import Image
from imgaccel.testing.registry import DistributionRegistry
from tests.conftest import NodeServer, needs_registry
from tests.ops.conftest import get


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        self.now += 1
        return self.now


def sample(metrics: NodeMetrics, name: str, registry: str) -> float | None:
    return metrics.registry.get_sample_value(name, {"registry": registry})


def test_an_origin_is_up_while_its_latest_request_was_answered() -> None:
    metrics = NodeMetrics()
    health = OriginHealth(metrics, ["docker.io"], clock=Clock())

    health.report("docker.io", None)
    health.report("docker.io", "GET https://registry-1.docker.io/v2/ failed: timed out")
    state = health.as_json()["docker.io"]
    assert state["up"] is False and state["failures"] == 1
    assert state["failure"] == "GET https://registry-1.docker.io/v2/ failed: timed out"
    assert state["last_answer"] == 1001.0 and state["last_failure"] == 1002.0
    assert sample(metrics, "imgaccel_upstream_up", "docker.io") == 0
    assert sample(metrics, "imgaccel_upstream_failures_total", "docker.io") == 1

    health.report("docker.io", None)
    state = health.as_json()["docker.io"]
    assert state["up"] is True and state["failures"] == 1  # the failure stays on record
    assert sample(metrics, "imgaccel_upstream_up", "docker.io") == 1


def test_registries_clients_name_share_one_label_and_the_oldest_are_forgotten() -> None:
    """With ``registries = []`` any ``?ns=`` is fetched: neither the metrics' label values nor
    the registries kept may grow with what clients send."""
    metrics = NodeMetrics()
    health = OriginHealth(metrics, ["docker.io"], clock=Clock())
    health.report("docker.io", "refused")
    for number in range(MAX_REGISTRIES + 10):
        health.report(f"r{number}.example", "refused")

    kept = list(health.as_json())
    assert len(kept) == MAX_REGISTRIES
    assert kept[-1] == f"r{MAX_REGISTRIES + 9}.example" and "docker.io" not in kept
    exposed = generate_latest(metrics.registry).decode()
    assert 'imgaccel_upstream_failures_total{registry="other"} 74.0' in exposed
    assert 'imgaccel_upstream_failures_total{registry="docker.io"} 1.0' in exposed
    assert "r1.example" not in exposed


@pytest.mark.system
@needs_registry
async def test_a_stopped_origin_shows_as_failing_with_why_until_it_answers_again(
    origin: DistributionRegistry, pushed: str, node: NodeServer, small_image: Image
) -> None:
    first, second = small_image.layers[0], small_image.layers[1]
    blob = f"{node.url}/v2/test/app/blobs/{{}}?ns={origin.address}"
    assert (await get(blob.format(first.digest)))[0] == 200
    await origin.stop()

    status, _ = await get(blob.format(second.digest))  # not cached: needs the origin

    assert status == 503
    document = json.loads((await get(f"{node.url}/_imgaccel/status"))[1])
    state = document["origins"][origin.address]
    assert state["up"] is False and state["failures"] == 1
    assert f"GET {origin.url}/v2/test/app/blobs/{second.digest} failed" in state["failure"]
    assert "Connect call failed" in state["failure"] or "Cannot connect" in state["failure"]
    shown = await asyncio.to_thread(CliRunner().invoke, main, ["status", "--node", node.url])
    [line] = [line for line in shown.output.splitlines() if origin.address in line]
    assert "FAILING since" in line and f"blobs/{second.digest} failed" in line
    metrics = (await get(f"{node.url}/metrics"))[1].decode()
    assert origin.address in node.settings.upstreams  # a configured upstream: its own label
    assert f'imgaccel_upstream_up{{registry="{origin.address}"}} 0.0' in metrics

    await origin.start()  # the same port and data
    assert (await get(blob.format(second.digest)))[0] == 200

    state = json.loads((await get(f"{node.url}/_imgaccel/status"))[1])["origins"][origin.address]
    assert state["up"] is True and state["failures"] == 1
    shown = await asyncio.to_thread(CliRunner().invoke, main, ["status", "--node", node.url])
    [line] = [line for line in shown.output.splitlines() if origin.address in line]
    assert "answered" in line and "(1 failed, the last at" in line
