"""Prewarm jobs on a live tracker: targeting, long polls, progress, and a restart."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp

from imgaccel.tracker import TrackerSettings, running
from imgaccel.tracker.jobs import DB_NAME, NOTIFY_KEY, Job, JobStore
from tests.conftest import until

from .conftest import FakeClock, TrackerClient


async def _json(tracker: TrackerClient, method: str, path: str, **kwargs: Any) -> Any:
    async with tracker.api(method, path, **kwargs) as response:
        assert response.status < 300, await response.text()
        return await response.json()


async def _poll(tracker: TrackerClient, node: str, *labels: str, wait: float = 0) -> list[str]:
    params = [("node", node), ("wait", str(wait)), *(("label", label) for label in labels)]
    body = await _json(tracker, "GET", "/v1/nodes/jobs", params=params)
    return [job["id"] for job in body["jobs"]]


async def _report(tracker: TrackerClient, job: str, node: str, state: str) -> None:
    payload = {"node": node, "state": state, "bytes_done": 10, "bytes_total": 10}
    await _json(tracker, "POST", f"/v1/jobs/{job}/progress", json=payload)


async def test_a_job_reaches_every_node_until_each_reports_done(tracker: TrackerClient) -> None:
    for node in ("n1", "n2"):
        assert await _poll(tracker, node) == []
    job = await _json(tracker, "POST", "/v1/jobs", json={"images": ["reg:5000/app:v1"]})
    assert job["state"] == "pending" and job["nodes_total"] == 2

    assert await _poll(tracker, "n1") == [job["id"]]
    await _report(tracker, job["id"], "n1", "done")
    assert await _poll(tracker, "n1") == []  # done: not handed out again
    status = await _json(tracker, "GET", f"/v1/jobs/{job['id']}")
    assert (status["state"], status["nodes_done"], status["nodes_total"]) == ("running", 1, 2)

    await _report(tracker, job["id"], "n2", "done")
    status = await _json(tracker, "GET", f"/v1/jobs/{job['id']}")
    assert (status["state"], status["nodes_done"], status["bytes_done"]) == ("done", 2, 20)

    # A node that joins later still gets the job.
    assert await _poll(tracker, "n3") == [job["id"]]


async def test_labels_select_nodes(tracker: TrackerClient) -> None:
    payload = {"images": ["reg/app:v1"], "nodes": {"gpu": "a100"}}
    job = await _json(tracker, "POST", "/v1/jobs", json=payload)
    assert await _poll(tracker, "a", "gpu=a100", "zone=x") == [job["id"]]
    assert await _poll(tracker, "b", "gpu=h100") == []
    assert await _poll(tracker, "c") == []


def test_percent_targets_about_that_share_and_the_same_nodes_every_time() -> None:
    job = Job("j1", ["x"], percent=25)
    nodes = [f"node-{i}" for i in range(400)]
    chosen = [n for n in nodes if job.targets(n, {})]
    assert 60 < len(chosen) < 140
    assert chosen == [n for n in nodes if job.targets(n, {})]


async def test_a_long_poll_wakes_when_a_job_is_created(tracker: TrackerClient) -> None:
    polling = asyncio.create_task(_poll(tracker, "n1", wait=30))
    await until(lambda: tracker.state.notifier.waiting(NOTIFY_KEY) == 1)
    job = await _json(tracker, "POST", "/v1/jobs", json={"images": ["reg/app:v1"]})
    assert await asyncio.wait_for(polling, 5) == [job["id"]]


async def test_bad_requests_are_4xx(tracker: TrackerClient) -> None:
    for payload in ({"images": []}, {"images": ["a"], "percent": 0}, {"images": ["a"], "nodes": 1}):
        async with tracker.api("POST", "/v1/jobs", json=payload) as response:
            assert response.status == 400
    async with tracker.api("GET", "/v1/jobs/nope") as response:
        assert response.status == 404
    async with tracker.api("POST", "/v1/jobs/nope/progress", json={"node": "n"}) as response:
        assert response.status == 404


async def test_jobs_and_progress_survive_a_restart(
    settings: TrackerSettings, clock: FakeClock
) -> None:
    async with running(settings, clock=clock) as served, aiohttp.ClientSession() as http:
        tracker = TrackerClient(served.url, http, served.app)
        await _poll(tracker, "n1")
        job = await _json(tracker, "POST", "/v1/jobs", json={"images": ["reg/app:v1"]})
        await _report(tracker, job["id"], "n1", "done")
    async with running(settings, clock=clock) as served, aiohttp.ClientSession() as http:
        tracker = TrackerClient(served.url, http, served.app)
        status = await _json(tracker, "GET", f"/v1/jobs/{job['id']}")
        assert (status["images"], status["nodes_done"]) == (["reg/app:v1"], 1)
        assert await _poll(tracker, "n1") == []
        assert await _poll(tracker, "n2") == [job["id"]]


async def test_a_cancelled_job_is_handed_out_no_more_and_reports_hear_it(
    tracker: TrackerClient,
) -> None:
    job = await _json(tracker, "POST", "/v1/jobs", json={"images": ["reg/app:v1"]})
    assert await _poll(tracker, "n1") == [job["id"]]

    cancelled = await _json(tracker, "DELETE", f"/v1/jobs/{job['id']}")

    assert cancelled["state"] == "cancelled" and cancelled["cancelled"] is not None
    assert await _poll(tracker, "n1") == [] and await _poll(tracker, "n3") == []
    payload = {"node": "n1", "state": "running", "bytes_done": 5, "bytes_total": 10}
    reply = await _json(tracker, "POST", f"/v1/jobs/{job['id']}/progress", json=payload)
    assert reply == {"ok": True, "cancelled": True}
    listed = await _json(tracker, "GET", "/v1/jobs")
    assert [j["state"] for j in listed["jobs"]] == ["cancelled"]
    async with tracker.api("GET", "/metrics") as response:
        assert "imgaccel_tracker_prewarm_jobs_open 0.0" in await response.text()
    async with tracker.api("DELETE", "/v1/jobs/nope") as response:
        assert response.status == 404


async def test_a_long_poll_wakes_when_a_job_is_cancelled(tracker: TrackerClient) -> None:
    job = await _json(tracker, "POST", "/v1/jobs", json={"images": ["reg/app:v1"]})
    await _report(tracker, job["id"], "n1", "done")
    polling = asyncio.create_task(_poll(tracker, "n1", wait=30))
    await until(lambda: tracker.state.notifier.waiting(NOTIFY_KEY) == 1)
    await _json(tracker, "DELETE", f"/v1/jobs/{job['id']}")
    assert await asyncio.wait_for(polling, 5) == []


async def test_a_job_expires_for_nodes_that_come_later(
    tracker: TrackerClient, clock: FakeClock
) -> None:
    short = await _json(
        tracker, "POST", "/v1/jobs", json={"images": ["reg/a:v1"], "expires_seconds": 60}
    )
    default = await _json(tracker, "POST", "/v1/jobs", json={"images": ["reg/b:v1"]})
    forever = await _json(
        tracker, "POST", "/v1/jobs", json={"images": ["reg/c:v1"], "expires_seconds": 0}
    )
    assert short["expires"] == clock.now + 60
    assert default["expires"] == clock.now + TrackerSettings(insecure=True).job_ttl_seconds
    assert forever["expires"] is None
    assert sorted(await _poll(tracker, "early")) == sorted(
        [short["id"], default["id"], forever["id"]]
    )

    clock.advance(61)
    assert sorted(await _poll(tracker, "later")) == sorted([default["id"], forever["id"]])
    status = await _json(tracker, "GET", f"/v1/jobs/{short['id']}")
    assert status["state"] == "expired"  # "early" never said it was done

    clock.advance(10 * 86400)
    assert await _poll(tracker, "much-later") == [forever["id"]]
    async with tracker.api("GET", "/metrics") as response:
        assert "imgaccel_tracker_prewarm_jobs_open 1.0" in await response.text()


async def test_bad_expiry_is_a_400(tracker: TrackerClient) -> None:
    for expires in (-1, "60", True, None, 1e400):
        payload = {"images": ["reg/a:v1"], "expires_seconds": expires}
        async with tracker.api("POST", "/v1/jobs", json=payload) as response:
            assert response.status == 400, expires
            assert "expires_seconds" in (await response.json())["error"]


def test_a_job_database_from_before_expiry_and_cancel_still_opens(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / DB_NAME)
    db.executescript(
        "CREATE TABLE jobs (id TEXT PRIMARY KEY, images TEXT NOT NULL, platform TEXT, "
        "all_platforms INTEGER NOT NULL, selector TEXT NOT NULL, percent INTEGER NOT NULL, "
        "created REAL NOT NULL);"
        """INSERT INTO jobs VALUES ('old', '["reg/a:v1"]', NULL, 0, '{}', 100, 5.0);"""
    )
    db.close()

    store = JobStore(tmp_path)
    try:
        assert store.job("old") == Job("old", ["reg/a:v1"], created=5.0)
        store.cancel("old", 7.0)
        job = store.job("old")
        assert job is not None and job.cancelled == 7.0 and not job.open_at(8.0)
    finally:
        store.close()
