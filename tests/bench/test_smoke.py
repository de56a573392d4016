"""A tiny real run: the netns cluster, real registries and containerd, the real report.

It checks what the report is for: direct pulls cost the origin one image per node, a central
proxy and imgaccel nodes put themselves between nodes and origin (no containerd GET reaches the
origin), and nothing of the cluster is left afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from imgaccel.bench import Params, run_bench, write_all
from imgaccel.bench.progress import Progress
from imgaccel.bench.scenarios import SCENARIOS
from imgaccel.testing.procs import is_root, run

pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(not is_root(), reason="creates network namespaces: needs root"),
    pytest.mark.skipif(
        any(
            shutil.which(p) is None
            for p in ("containerd", "ctr", "skopeo", "tc", "docker-registry")
        ),
        reason="needs containerd, ctr, skopeo, tc and docker-registry",
    ),
]

N = 2
SIZE = 4_000_000


async def _bench_names() -> set[str]:
    """Our namespaces, links and work directories that exist right now."""
    namespaces = (await run("ip", "netns", "list")).stdout.decode()
    links = (await run("ip", "-o", "link", "show")).stdout.decode()
    names = {word.split("@")[0] for word in (namespaces + links).split()}
    names |= set(os.listdir(tempfile.gettempdir()))
    return {name for name in names if name.startswith(("iab-", "imgaccel-bench-"))}


async def test_tiny_run_reports_what_the_origin_sent(tmp_path: Path) -> None:
    scenarios = ["direct", "proxy"]
    if SCENARIOS["imgaccel-cold"].unavailable() is None:
        scenarios.append("imgaccel-cold")
    before = await _bench_names()
    params = Params(nodes=(N,), image_bytes=SIZE, scenarios=tuple(scenarios))

    report = await run_bench(params, Progress(quiet=True))

    assert await _bench_names() == before
    results = {r.scenario: r for r in report.results}
    assert [r.reason for r in results.values() if r.status != "ok"] == []
    assert {name: r.status for name, r in results.items()} == dict.fromkeys(scenarios, "ok")
    for r in results.values():
        assert len(r.repeats[0].pull_seconds) == N
        assert 0 < r.median_seconds <= r.max_seconds  # type: ignore[operator]
        assert r.repeats[0].bypassed == 0
    # Every node fetched the whole image from the origin, and nothing else.
    assert results["direct"].bytes_ratio == pytest.approx(N, rel=0.02)
    # ... and sent only its requests and acknowledgements: each node's own link is counted.
    sent = results["direct"].repeats[0].node_sent
    assert sent.keys() == results["direct"].repeats[0].pull_seconds.keys()
    assert all(0 < count < SIZE / 10 for count in sent.values()), sent
    # Whose CPU the pull used: containerd ingesting, ctr transferring, the registry serving;
    # through imgaccel its nodes too.
    for r in results.values():
        used = r.repeats[0].cpu_seconds
        assert used["machine"] > 0 and used["containerd"] > 0 and used["ctr"] > 0, used
        assert used["machine"] >= used["containerd"] + used["ctr"], used
    assert results["direct"].repeats[0].cpu_seconds["imgaccel"] == 0
    if "imgaccel-cold" in results:
        assert results["imgaccel-cold"].repeats[0].cpu_seconds["imgaccel"] > 0
    # The proxy fetched at least one copy. Distribution's proxy fetches a missing blob twice
    # (once to serve it, once to store it) and streams every other client that asks meanwhile
    # from the origin too: at most two copies per client.
    assert 1 <= results["proxy"].bytes_ratio <= 2 * N  # type: ignore[operator]
    if "imgaccel-cold" in results:
        assert 1 <= results["imgaccel-cold"].bytes_ratio <= N * 1.02  # type: ignore[operator]

    paths = write_all(report, tmp_path / "out")
    assert json.loads(paths["json"].read_text())["image_bytes"] == report.image_bytes
    assert "| direct | 2 |" in paths["md"].read_text()
