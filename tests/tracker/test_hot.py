"""The hot list: distinct nodes in a sliding window, decayed; reported and published over HTTP."""

from __future__ import annotations

from typing import Any

import pytest

from imgaccel.tracker.hot import (
    HALF_LIFE_SECONDS,
    HOT_CACHE_SECONDS,
    PULLS,
    WINDOW_SECONDS,
    Pull,
    PullLog,
    rank,
)

from .conftest import FakeClock, TrackerClient, digest_of

A, B, C = digest_of("a"), digest_of("b"), digest_of("c")


def _pull(node: str, digest: str, seen: float) -> Pull:
    return Pull(node, digest, "reg", "team/app", "reg/team/app:v1", seen)


def test_distinct_nodes_count_not_repeat_pulls() -> None:
    pulls = [_pull("n1", A, 100), _pull("n2", A, 100), _pull("n3", A, 100), _pull("n1", B, 100)]
    ranked = rank(pulls, now=100)
    assert [(layer.digest, layer.nodes, layer.score) for layer in ranked] == [
        (A, 3, 3.0),
        (B, 1, 1.0),
    ]


def test_old_pulls_decay_and_leave_the_window() -> None:
    now = 1_000_000.0
    pulls = [_pull("n1", A, now - HALF_LIFE_SECONDS), _pull("n1", B, now - WINDOW_SECONDS - 1)]
    ranked = rank(pulls, now)
    assert [(layer.digest, layer.score) for layer in ranked] == [(A, 0.5)]


async def _report(tracker: TrackerClient, node: str, digests: list[str]) -> Any:
    pull = {"image": "reg/team/app:v1", "registry": "reg", "repository": "team/app"}
    payload = {"node": node, "pulls": [{**pull, "digests": digests}]}
    async with tracker.api("POST", "/v1/pulls", json=payload) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def _hot(tracker: TrackerClient, **params: str) -> list[tuple[str, int]]:
    async with tracker.api("GET", "/v1/hot", params=params) as response:
        assert response.status == 200
        return [(layer["digest"], layer["nodes"]) for layer in (await response.json())["layers"]]


async def test_reports_make_layers_hot(tracker: TrackerClient, clock: FakeClock) -> None:
    assert await _report(tracker, "n1", [A, B]) == {"accepted": 2}
    await _report(tracker, "n2", [A])
    await _report(tracker, "n2", [A])  # the same node again: still two nodes
    assert await _hot(tracker) == [(A, 2), (B, 1)]
    assert await _hot(tracker, min_score="1.5") == [(A, 2)]

    clock.advance(WINDOW_SECONDS + 1)
    await _report(tracker, "n3", [C])
    assert await _hot(tracker) == [(C, 1)]


async def test_the_ranking_is_reused_for_a_few_seconds(
    tracker: TrackerClient, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    pulls = tracker.app[PULLS]
    scans: list[float] = []

    def since(when: float) -> list[Pull]:
        scans.append(when)
        return PullLog.since(pulls, when)

    monkeypatch.setattr(pulls, "since", since)
    await _report(tracker, "n1", [A])
    await _report(tracker, "n2", [A])
    assert await _hot(tracker) == [(A, 2)]
    await _report(tracker, "n3", [B])
    clock.advance(HOT_CACHE_SECONDS / 2)
    assert await _hot(tracker, min_score="1.5") == [(A, 2)]
    assert await _hot(tracker) == [(A, 2)]  # B not yet: the ranking is kept
    assert len(scans) == 1

    clock.advance(HOT_CACHE_SECONDS / 2)
    assert await _hot(tracker) == [(A, 2), (B, 1)]
    assert len(scans) == 2


async def test_bad_reports_are_rejected(tracker: TrackerClient) -> None:
    bad = {
        "node": "n1",
        "pulls": [{"image": "x", "registry": "r", "repository": "p", "digests": ["nope"]}],
    }
    async with tracker.api("POST", "/v1/pulls", json=bad) as response:
        assert response.status == 400
