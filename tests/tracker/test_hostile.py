"""Hostile input against a live tracker: a 4xx in the API's own format (a bencoded failure
reason on announce), never a 500 or a logged traceback, and no state half-written."""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

import pytest

from imgaccel.tracker.jobs import DB_NAME as JOBS_DB
from imgaccel.tracker.store import DB_NAME

from .conftest import TrackerClient, digest_of, info_hash, peer_id

DIGEST = digest_of("hostile layer")
JSON = {"Content-Type": "application/json"}
DEEP = b"[" * 100_000 + b"]" * 100_000
SURROGATE = b'"\\ud800"'  # JSON for a lone surrogate: a str that SQLite cannot encode
HUGE_INT = b"i" + b"7" * 5000 + b"e"  # more digits than Python's int() reads from a string
HUGE_LENGTH = b"d" + b"9" * 5000 + b":x" + b"e"

#: (id, method, path ({job} is a live job's id), body, extra headers)
API_CASES: list[tuple[str, str, str, bytes, dict[str, str]]] = [
    ("deep-json", "POST", "/v1/seeders", DEEP, JSON),
    (
        "bogus-charset",
        "POST",
        "/v1/seeders",
        b'{"node": "n"}',
        {"Content-Type": "application/json; charset=bogus"},
    ),
    ("node-surrogate", "POST", "/v1/seeders", b'{"node": ' + SURROGATE + b"}", JSON),
    ("role-list", "POST", f"/v1/claims/{DIGEST}", b'{"node": "n", "role": []}', JSON),
    ("role-dict", "POST", f"/v1/claims/{DIGEST}", b'{"node": "n", "role": {}}', JSON),
    (
        "registry-surrogate",
        "POST",
        f"/v1/claims/{DIGEST}",
        b'{"node": "n", "registry": ' + SURROGATE + b"}",
        JSON,
    ),
    ("renew-deep", "POST", f"/v1/claims/{DIGEST}/renew", DEEP, JSON),
    ("holdings-deep", "POST", "/v1/holdings", DEEP, JSON),
    ("torrent-huge-int", "PUT", f"/v1/metainfo/{DIGEST}", HUGE_INT, {}),
    ("torrent-huge-length", "PUT", f"/v1/metainfo/{DIGEST}", HUGE_LENGTH, {}),
    (
        "job-ttl-huge-int",
        "POST",
        "/v1/jobs",
        b'{"images": ["a"], "expires_seconds": 1' + b"0" * 400 + b"}",
        JSON,
    ),
    (
        "job-ttl-huge-float",
        "POST",
        "/v1/jobs",
        b'{"images": ["a"], "expires_seconds": 1e300}',
        JSON,
    ),
    ("job-percent-bool", "POST", "/v1/jobs", b'{"images": ["a"], "percent": true}', JSON),
    (
        "job-platform-surrogate",
        "POST",
        "/v1/jobs",
        b'{"images": ["a"], "platform": ' + SURROGATE + b"}",
        JSON,
    ),
    ("job-image-surrogate", "POST", "/v1/jobs", b'{"images": [' + SURROGATE + b"]}", JSON),
    (
        "progress-2**63",
        "POST",
        "/v1/jobs/{job}/progress",
        b'{"node": "n", "state": "running", "bytes_done": 9223372036854775808}',
        JSON,
    ),
    (
        "progress-total-huge",
        "POST",
        "/v1/jobs/{job}/progress",
        b'{"node": "n", "state": "running", "bytes_total": 1' + b"0" * 30 + b"}",
        JSON,
    ),
    (
        "progress-bool",
        "POST",
        "/v1/jobs/{job}/progress",
        b'{"node": "n", "state": "running", "bytes_done": true}',
        JSON,
    ),
    (
        "progress-error-surrogate",
        "POST",
        "/v1/jobs/{job}/progress",
        b'{"node": "n", "state": "failed", "error": ' + SURROGATE + b"}",
        JSON,
    ),
    ("progress-deep", "POST", "/v1/jobs/{job}/progress", DEEP, JSON),
]


async def test_hostile_api_bodies(tracker: TrackerClient, caplog: pytest.LogCaptureFixture) -> None:
    """Each bad body is a 400 ``{"error": ...}``; nothing logged at ERROR; nothing stored."""
    caplog.set_level(logging.INFO)
    job = await _json(tracker, "POST", "/v1/jobs", 201, json={"images": ["reg/app:v1"]})
    failures = []
    for case_id, method, path, body, headers in API_CASES:
        url = path.replace("{job}", job["id"])
        async with tracker.api(method, url, data=body, headers=headers) as response:
            text = await response.text()
            if response.status != 400:
                failures.append(f"{case_id}: {response.status} {text[:200]!r}")
            elif not isinstance((await response.json()).get("error"), str):
                failures.append(f"{case_id}: not the API's error JSON: {text[:200]!r}")
    assert not failures, "\n".join(failures)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    # Nothing half-stored: no claim, no seeder, no metainfo, one job without progress.
    assert tracker.state.store.get_claim(DIGEST) is None
    assert tracker.state.store.alive_seeders(0) == []
    assert tracker.state.store.get_metainfo(DIGEST) is None
    with sqlite3.connect(tracker.state.settings.data_dir / JOBS_DB) as db:
        assert db.execute("SELECT count(*) FROM jobs").fetchone()[0] == 1
        assert db.execute("SELECT count(*) FROM job_nodes").fetchone()[0] == 0
    # And the tracker still answers good requests.
    await _json(tracker, "POST", "/v1/seeders", 200, json={"node": "seed-1"})
    claim = {"node": "n", "role": "node"}
    assert (await _json(tracker, "POST", f"/v1/claims/{DIGEST}", 200, json=claim))["fetch"]
    progress = {"node": "n", "state": "running", "bytes_done": 2**63 - 1, "bytes_total": 2**63 - 1}
    await _json(tracker, "POST", f"/v1/jobs/{job['id']}/progress", 200, json=progress)


#: Announce parameters out of range: a failure reason, and no peer in memory or in SQLite.
BAD_COUNTERS = [
    ("left", 99999999999999999999),
    ("left", 2**63),
    ("uploaded", 2**63),
    ("downloaded", 99999999999999999999),
    ("numwant", 2**63),
]


async def test_hostile_announce_params(
    tracker: TrackerClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    ih = info_hash("hostile")
    failures = []
    for name, value in BAD_COUNTERS:
        params: dict[str, Any] = {"info_hash": ih, "peer_id": peer_id(1), "port": 7001, "left": 0}
        reply = await tracker.announce(**(params | {name: value}))
        reason = reply.get(b"failure reason", b"")
        if b"non-negative integer" not in reason:
            failures.append(f"{name}={value}: {reply!r}")
    assert not failures, "\n".join(failures)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert tracker.state.swarms.peer_count() == 0
    with sqlite3.connect(tracker.state.settings.data_dir / DB_NAME) as db:
        assert db.execute("SELECT count(*) FROM peers").fetchone()[0] == 0
    # The largest value SQLite holds is fine, and the tracker still answers.
    reply = await tracker.announce(info_hash=ih, peer_id=peer_id(1), port=7001, left=2**63 - 1)
    assert b"failure reason" not in reply and tracker.state.swarms.peer_count() == 1


async def _json(tracker: TrackerClient, method: str, path: str, status: int, **kw: Any) -> Any:
    async with tracker.api(method, path, **kw) as response:
        assert response.status == status, await response.text()
        return await response.json()
