"""``imgaccel prewarm --cluster --wait`` against a real mTLS tracker: it ends when the job cannot.

No node daemons: a node is the tracker's once it asks for jobs, which the test does for it.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from imgaccel.cli.prewarm import prewarm
from imgaccel.prewarm.jobs import JobsClient


async def cli(*args: str) -> Result:
    return await asyncio.to_thread(CliRunner().invoke, prewarm, list(args), catch_exceptions=False)


async def test_wait_fails_when_no_node_matches_and_the_job_stays_open(
    tracker: str, client_certs: Path, jobs_client: JobsClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("imgaccel.cli.prewarm.NO_NODE_GRACE", 0.0)
    await jobs_client.poll("cpu-node", {"gpu": "none"})  # a node the job does not target
    common = ["--tracker", tracker, "--certs-dir", str(client_certs)]
    # Before the fix --wait followed "pending: 0/0 nodes" until the job expired.
    result = await cli(
        "--cluster", "--nodes", "gpu=h100", "--expires-seconds", "5", "--wait", *common, "r/a:1"
    )

    assert result.exit_code == 7, result.output
    assert "targets no node" in result.stderr
    job = (await jobs_client.jobs())[0]
    assert job["state"] == "pending" and job["nodes_total"] == 0  # still open for later nodes


async def test_wait_gives_up_after_timeout_while_the_job_goes_on(
    tracker: str, client_certs: Path, jobs_client: JobsClient
) -> None:
    await jobs_client.poll("slow-node", {})  # targeted, and never reports
    common = ["--tracker", tracker, "--certs-dir", str(client_certs)]
    created = await cli("--cluster", "--json", *common, "r/a:1")
    job = json.loads(created.stdout)
    assert job["nodes_total"] == 1

    result = await cli("status", job["id"], "--wait", "--timeout", "0.5", *common)

    assert result.exit_code == 8, result.output
    assert f"job {job['id']} did not end within --timeout 0.5s" in result.stderr
    assert (await jobs_client.job(job["id"]))["state"] == "pending"
    created = await cli("--cluster", "--wait", "--timeout", "0.5", *common, "r/b:1")
    assert created.exit_code == 8, created.output
