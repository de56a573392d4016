"""Prewarm jobs: "every node (or the labelled ones, or N percent) fetch these images now".

A job names images (and a platform choice) and which nodes it targets: all of them, those whose
labels match every ``--nodes key=value``, or a percentage (a node is in when a hash of the job id
and its name falls under it, so every node decides the same way without coordination, and a node
that joins later finds out whether it is in). A job is handed out until it expires
(``expires_seconds`` after it was made, by default the tracker's ``job_ttl_seconds``, a day; 0:
never) or is cancelled: a node that joins during the scale-out still runs it, one that joins next
month does not fetch last month's images. A cancelled job also stops on the nodes running it: the
reply to their next progress report (after the blob in flight) says so.

Nodes long-poll ``GET /v1/nodes/jobs?node=ID&label=k=v&wait=S`` (which also registers them and
their labels) and report progress to ``POST /v1/jobs/{id}/progress``. Everything lives in SQLite
(``jobs.sqlite3`` beside the tracker's database), so jobs and their progress survive a restart.

====== ========================== =============================================================
POST   /v1/jobs                   ``{images, platform?, all_platforms?, nodes?: {k: v},
                                  percent?, expires_seconds?}`` -> 201 the job
GET    /v1/jobs                   ``{jobs: [summary]}``, newest first
GET    /v1/jobs/{id}              the summary with per-node progress; 404 unknown
DELETE /v1/jobs/{id}              cancel: no node is handed it any more, running nodes stop;
                                  -> the summary (state ``cancelled``); 404 unknown
GET    /v1/nodes/jobs             ``?node=ID&label=k=v...&wait=S`` -> ``{jobs}`` to run
POST   /v1/jobs/{id}/progress     ``{node, state: running|done|failed, bytes_done,
                                  bytes_total, error?}`` -> ``{ok, cancelled}``
====== ========================== =============================================================
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from imgaccel.tracker.api import (
    ApiError,
    close_at_cleanup,
    count_field,
    json_body,
    node_field,
    text_field,
    utf8,
    wait_param,
)
from imgaccel.tracker.state import STATE

log = logging.getLogger(__name__)

DB_NAME = "jobs.sqlite3"
NOTIFY_KEY = "prewarm-jobs"
NODE_STATES = ("running", "done", "failed")
#: A node not heard from for this long no longer counts towards a job's targets.
NODE_GONE_SECONDS = 600.0
_MAX_IMAGES = 100
#: The longest ``expires_seconds`` a job may ask for: a century (0 is the way to say never).
_MAX_TTL = 100 * 365.25 * 86400

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, images TEXT NOT NULL, platform TEXT, all_platforms INTEGER NOT NULL,
    selector TEXT NOT NULL, percent INTEGER NOT NULL, created REAL NOT NULL, expires REAL,
    cancelled REAL);
CREATE TABLE IF NOT EXISTS job_nodes (
    job TEXT NOT NULL, node TEXT NOT NULL, state TEXT NOT NULL, bytes_done INTEGER NOT NULL,
    bytes_total INTEGER NOT NULL, error TEXT, updated REAL NOT NULL, PRIMARY KEY (job, node));
CREATE TABLE IF NOT EXISTS job_clients (
    node TEXT PRIMARY KEY, labels TEXT NOT NULL, last_seen REAL NOT NULL);
"""
#: Columns added since the first release, for databases made before them (NULL: never).
_ADDED_COLUMNS = {"expires": "REAL", "cancelled": "REAL"}
_COLUMNS = "id, images, platform, all_platforms, selector, percent, created, expires, cancelled"


@dataclass(frozen=True)
class Job:
    id: str
    images: list[str]
    platform: str | None = None
    all_platforms: bool = False
    selector: dict[str, str] = field(default_factory=dict)
    percent: int = 100
    created: float = 0.0
    expires: float | None = None  # when nodes stop being handed the job (None: never)
    cancelled: float | None = None

    def open_at(self, now: float) -> bool:
        """Whether the job is still handed out at ``now`` (not cancelled, not expired)."""
        return self.cancelled is None and (self.expires is None or now < self.expires)

    def targets(self, node: str, labels: dict[str, str]) -> bool:
        """Whether ``node`` (with ``labels``) should run this job."""
        if any(labels.get(k) != v for k, v in self.selector.items()):
            return False
        if self.percent >= 100:
            return True
        bucket = int.from_bytes(hashlib.sha256(f"{self.id}/{node}".encode()).digest()[:4], "big")
        return bucket % 100 < self.percent


@dataclass(frozen=True)
class NodeProgress:
    node: str
    state: str
    bytes_done: int
    bytes_total: int
    error: str | None


class JobStore:
    """Jobs, per-node progress and the nodes that poll, in one SQLite file."""

    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(data_dir / DB_NAME, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        present = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
        for column, kind in _ADDED_COLUMNS.items():
            if column not in present:
                self._db.execute(f"ALTER TABLE jobs ADD COLUMN {column} {kind}")

    def close(self) -> None:
        self._db.close()

    def add(self, job: Job) -> None:
        self._db.execute(
            f"INSERT INTO jobs ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                job.id,
                json.dumps(job.images),
                job.platform,
                int(job.all_platforms),
                json.dumps(job.selector),
                job.percent,
                job.created,
                job.expires,
                job.cancelled,
            ),
        )

    def cancel(self, job_id: str, now: float) -> None:
        self._db.execute(
            "UPDATE jobs SET cancelled = ? WHERE id = ? AND cancelled IS NULL", (now, job_id)
        )

    def jobs(self) -> list[Job]:
        rows = self._db.execute(f"SELECT {_COLUMNS} FROM jobs ORDER BY created DESC").fetchall()
        return [_job(row) for row in rows]

    def job(self, job_id: str) -> Job | None:
        row = self._db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else _job(row)

    def seen(self, node: str, labels: dict[str, str], now: float) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO job_clients VALUES (?, ?, ?)", (node, json.dumps(labels), now)
        )

    def clients(self, since: float) -> dict[str, dict[str, str]]:
        rows = self._db.execute(
            "SELECT node, labels FROM job_clients WHERE last_seen > ?", (since,)
        ).fetchall()
        return {node: json.loads(labels) for node, labels in rows}

    def report(self, job_id: str, progress: NodeProgress, now: float) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO job_nodes VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                job_id,
                progress.node,
                progress.state,
                progress.bytes_done,
                progress.bytes_total,
                progress.error,
                now,
            ),
        )

    def progress(self, job_id: str) -> dict[str, NodeProgress]:
        rows = self._db.execute(
            "SELECT node, state, bytes_done, bytes_total, error FROM job_nodes WHERE job = ?",
            (job_id,),
        ).fetchall()
        return {row[0]: NodeProgress(*row) for row in rows}

    def finished_by(self, node: str) -> set[str]:
        rows = self._db.execute(
            "SELECT job FROM job_nodes WHERE node = ? AND state IN ('done', 'failed')", (node,)
        ).fetchall()
        return {row[0] for row in rows}


def _job(row: tuple[Any, ...]) -> Job:
    images, selector = json.loads(row[1]), json.loads(row[4])
    return Job(row[0], images, row[2], bool(row[3]), selector, row[5], row[6], row[7], row[8])


JOBS = web.AppKey("jobs", JobStore)


class OpenJobs(Collector):
    """``imgaccel_tracker_prewarm_jobs_open``, read from the job store at scrape time."""

    def __init__(self, store: JobStore, now: Callable[[], float]) -> None:
        self._store, self._now = store, now

    def collect(self) -> Iterator[Metric]:
        now = self._now()
        yield GaugeMetricFamily(
            "imgaccel_tracker_prewarm_jobs_open",
            "Prewarm jobs still handed to nodes (neither expired nor cancelled).",
            value=sum(job.open_at(now) for job in self._store.jobs()),
        )


def summary(store: JobStore, job: Job, now: float) -> dict[str, Any]:
    """A job with its progress: nodes targeted / done / failed, bytes, and an overall state
    (pending, running, done, failed, expired before every node was done, or cancelled)."""
    progress = store.progress(job.id)
    clients = store.clients(now - NODE_GONE_SECONDS)
    targeted = {n for n, labels in clients.items() if job.targets(n, labels)} | set(progress)
    counts = {s: sum(1 for p in progress.values() if p.state == s) for s in NODE_STATES}
    finished = counts["done"] + counts["failed"]
    if job.cancelled is not None:
        state = "cancelled"
    elif targeted and finished == len(targeted):
        state = "failed" if counts["failed"] else "done"
    elif not job.open_at(now):
        state = "expired"
    else:
        state = "running" if progress else "pending"
    return {
        **asdict(job),
        "state": state,
        "nodes_total": len(targeted),
        "nodes_done": counts["done"],
        "nodes_failed": counts["failed"],
        "bytes_done": sum(p.bytes_done for p in progress.values()),
        "bytes_total": sum(p.bytes_total for p in progress.values()),
        "nodes": {n: asdict(p) for n, p in sorted(progress.items())},
    }


async def handle_create(request: web.Request) -> web.Response:
    state, store = request.app[STATE], request.app[JOBS]
    job = _parse_job(await json_body(request), state.now(), state.settings.job_ttl_seconds)
    store.add(job)
    state.notifier.notify(NOTIFY_KEY)
    return web.json_response(summary(store, job, state.now()), status=201)


def _parse_job(body: dict[str, Any], now: float, default_ttl: float) -> Job:
    images = body.get("images")
    if not isinstance(images, list) or not images or len(images) > _MAX_IMAGES:
        raise ApiError(400, f"'images' must be a list of 1 to {_MAX_IMAGES} image references")
    for image in images:
        text_field({"image": image}, "image")
    selector = body.get("nodes") or {}
    if not isinstance(selector, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in selector.items()
    ):
        raise ApiError(400, "'nodes' must map label names to values")
    percent = body.get("percent", 100)
    if isinstance(percent, bool) or not isinstance(percent, int) or not 1 <= percent <= 100:
        raise ApiError(400, "'percent' must be an integer from 1 to 100")
    platform = text_field(body, "platform", required=False)
    ttl = _ttl(body["expires_seconds"]) if "expires_seconds" in body else default_ttl
    return Job(
        secrets.token_hex(8),
        images,
        platform,
        bool(body.get("all_platforms")),
        selector,
        percent,
        now,
        now + ttl if ttl else None,
    )


def _ttl(value: object) -> float:
    """``expires_seconds``: 0 (never) up to a century. A bigger int (``10**400``) could not
    even be added to a float time."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= _MAX_TTL:
        raise ApiError(
            400, f"'expires_seconds' must be a number of seconds up to {_MAX_TTL:.0f} (0: never)"
        )
    return float(value)


async def handle_list(request: web.Request) -> web.Response:
    state, store = request.app[STATE], request.app[JOBS]
    now = state.now()
    return web.json_response({"jobs": [summary(store, job, now) for job in store.jobs()]})


async def handle_get(request: web.Request) -> web.Response:
    state, store = request.app[STATE], request.app[JOBS]
    job = store.job(request.match_info["id"])
    if job is None:
        raise ApiError(404, "no such job")
    return web.json_response(summary(store, job, state.now()))


async def handle_cancel(request: web.Request) -> web.Response:
    state, store = request.app[STATE], request.app[JOBS]
    job_id = request.match_info["id"]
    if store.job(job_id) is None:
        raise ApiError(404, "no such job")
    store.cancel(job_id, state.now())
    log.info("prewarm job %s cancelled", job_id)
    state.notifier.notify(NOTIFY_KEY)
    job = store.job(job_id)
    assert job is not None
    return web.json_response(summary(store, job, state.now()))


async def handle_poll(request: web.Request) -> web.Response:
    """The jobs ``?node=`` should run and has not finished; long-polls with ``?wait=``."""
    state, store = request.app[STATE], request.app[JOBS]
    node = text_field(dict(request.query), "node")
    assert node is not None
    labels = _labels(request.query.getall("label", []))
    wait = wait_param(request, state.settings.max_wait_seconds)
    store.seen(node, labels, state.now())
    found = _open_for(store, node, labels, state.now())
    if not found and wait > 0:
        await state.notifier.wait(NOTIFY_KEY, wait)
        found = _open_for(store, node, labels, state.now())
    return web.json_response({"jobs": [asdict(job) for job in found]})


def _open_for(store: JobStore, node: str, labels: dict[str, str], now: float) -> list[Job]:
    finished = store.finished_by(node)
    jobs = [
        j
        for j in store.jobs()
        if j.open_at(now) and j.id not in finished and j.targets(node, labels)
    ]
    return sorted(jobs, key=lambda j: j.created)


def _labels(pairs: list[str]) -> dict[str, str]:
    labels = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key or len(pair) > 256:
            raise ApiError(400, f"label must be KEY=VALUE, got {pair[:300]!r}")
        labels[key] = value
    return labels


async def handle_progress(request: web.Request) -> web.Response:
    state, store = request.app[STATE], request.app[JOBS]
    job = store.job(request.match_info["id"])
    if job is None:
        raise ApiError(404, "no such job")
    body = await json_body(request)
    report = NodeProgress(
        node_field(body),
        _choice(body.get("state"), NODE_STATES, "state"),
        count_field(body, "bytes_done"),
        count_field(body, "bytes_total"),
        _error(body.get("error")),
    )
    store.report(job.id, report, state.now())
    return web.json_response({"ok": True, "cancelled": job.cancelled is not None})


def _choice(value: object, allowed: tuple[str, ...], name: str) -> str:
    if value not in allowed:
        raise ApiError(400, f"{name!r} must be one of {', '.join(allowed)}")
    return str(value)


def _error(value: object) -> str | None:
    if not value:
        return None
    text = str(value)[:1000]
    if not utf8(text):
        raise ApiError(400, "'error' must be text")
    return text


def add_routes(app: web.Application) -> None:
    """Routes and the job store (opened now, beside the tracker's database; closed at cleanup)."""
    state = app[STATE]
    app[JOBS] = JobStore(state.settings.data_dir)
    close_at_cleanup(app, app[JOBS])
    state.registry.register(OpenJobs(app[JOBS], state.now))
    app.router.add_post("/v1/jobs", handle_create)
    app.router.add_get("/v1/jobs", handle_list)
    app.router.add_get("/v1/jobs/{id}", handle_get)
    app.router.add_delete("/v1/jobs/{id}", handle_cancel)
    app.router.add_post("/v1/jobs/{id}/progress", handle_progress)
    app.router.add_get("/v1/nodes/jobs", handle_poll)
