"""Sizes in the hot list: reported with pulls where the node knew them, kept, published; reports
and databases from before sizes still work."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from imgaccel.tracker.hot import DB_NAME, HOT_CACHE_SECONDS, Pull, PullLog, rank

from .conftest import FakeClock, TrackerClient, digest_of

A, B = digest_of("a"), digest_of("b")
PULL = {"image": "reg/team/app:v1", "registry": "reg", "repository": "team/app"}


async def _report(tracker: TrackerClient, node: str, pull: dict[str, Any]) -> int:
    payload = {"node": node, "pulls": [{**PULL, **pull}]}
    async with tracker.api("POST", "/v1/pulls", json=payload) as response:
        status: int = response.status
        return status


async def _sizes(tracker: TrackerClient) -> dict[str, Any]:
    async with tracker.api("GET", "/v1/hot") as response:
        assert response.status == 200
        return {layer["digest"]: layer["size"] for layer in (await response.json())["layers"]}


async def test_reported_sizes_are_in_the_hot_list(tracker: TrackerClient) -> None:
    assert await _report(tracker, "n1", {"digests": [A, B], "sizes": {A: 7_000_000_000}}) == 200
    assert await _sizes(tracker) == {A: 7_000_000_000, B: None}  # B: the node did not know


async def test_a_report_without_sizes_from_an_older_node_keeps_the_size_known(
    tracker: TrackerClient, clock: FakeClock
) -> None:
    assert await _report(tracker, "old", {"digests": [A]}) == 200
    assert await _sizes(tracker) == {A: None}

    await _report(tracker, "new", {"digests": [A], "sizes": {A: 1234}})
    clock.advance(HOT_CACHE_SECONDS)
    await _report(tracker, "old", {"digests": [A]})  # later, still without a size
    await _report(tracker, "new", {"digests": [A]})  # the same node, this time without one
    clock.advance(HOT_CACHE_SECONDS)
    assert await _sizes(tracker) == {A: 1234}


@pytest.mark.parametrize(
    "sizes",
    [
        {A: -1},
        {A: 2**63},
        {A: 1.5},
        {A: "10"},
        {A: True},
        {A: None},
        {A: [1]},
        [1234],
        "1234",
        {f"sha256:{n:064x}": 1 for n in range(1001)},
    ],
)
async def test_bad_sizes_are_a_400(tracker: TrackerClient, sizes: Any) -> None:
    assert await _report(tracker, "n1", {"digests": [A], "sizes": sizes}) == 400
    assert await _sizes(tracker) == {}  # nothing of the report was taken


async def test_the_largest_size_sqlite_holds_is_accepted(tracker: TrackerClient) -> None:
    assert await _report(tracker, "n1", {"digests": [A], "sizes": {A: 2**63 - 1}}) == 200
    assert await _sizes(tracker) == {A: 2**63 - 1}


def test_the_latest_reported_size_wins() -> None:
    def pull(node: str, seen: float, size: int | None) -> Pull:
        return Pull(node, A, "reg", "team/app", "reg/team/app:v1", seen, size)

    pulls = [pull("n1", 100, 10), pull("n2", 200, 20), pull("n3", 300, None)]
    assert [layer.size for layer in rank(pulls, now=300)] == [20]


def test_a_pull_log_from_before_sizes_still_opens_and_ranks(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / DB_NAME)
    db.executescript(
        "CREATE TABLE pulls (node TEXT NOT NULL, digest TEXT NOT NULL, registry TEXT NOT NULL,"
        " repository TEXT NOT NULL, image TEXT NOT NULL, seen REAL NOT NULL,"
        " PRIMARY KEY (node, digest));"
        f"INSERT INTO pulls VALUES ('n1', '{A}', 'reg', 'team/app', 'reg/team/app:v1', 100.0);"
    )
    db.close()

    log = PullLog(tmp_path)
    try:
        assert [(layer.digest, layer.nodes, layer.size) for layer in log.hot(100.0)] == [
            (A, 1, None)
        ]
        log.add([Pull("n2", A, "reg", "team/app", "reg/team/app:v1", 101.0, 42)])
        assert [(layer.nodes, layer.size) for layer in log.hot(101.0 + HOT_CACHE_SECONDS)] == [
            (2, 42)
        ]
    finally:
        log.close()
