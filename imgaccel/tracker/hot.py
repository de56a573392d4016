"""Hot layers: which blobs the cluster is pulling now, so nodes can fetch them before asked.

Nodes report each pull a workload made (``POST /v1/pulls``: the image, the blob digests it
fetched and, where the node knew them, their sizes). A blob's popularity counts the distinct
nodes that pulled it within a sliding window, each weighted by how recent its last pull was
(exponential decay with a half-life):

    score(blob) = sum over nodes n that pulled it within WINDOW of 2 ** (-(now - t_n) / HALF_LIFE)

so ten nodes pulling a layer in the last minutes make it hot, and one node pulling it every
second does not. ``GET /v1/hot`` publishes the list, hottest first. Reports live in SQLite
(``hot.sqlite3``) and survive a restart; rows older than the window are dropped as reports come.
Ranking reads the whole window, and every node polls the list: the ranking is kept for
``HOT_CACHE_SECONDS``, so a report shows in the list within that time.

A layer's ``size`` is the latest one reported for it, so a node can tell whether the layer fits
its cache before fetching it. ``sizes`` is optional in a report (nodes before it send none) and
``size`` is null in the list while no report gave one; a size is a non-negative integer below
2**63 (anything else is a 400), and sizes of digests the pull does not list are ignored.

====== ============ ==========================================================================
POST   /v1/pulls    ``{node, pulls: [{image, registry, repository, digests, sizes?: {digest:
                    bytes}}]}`` -> ``{accepted}``
GET    /v1/hot      ``?limit=N&min_score=S`` -> ``{window_seconds, half_life_seconds,
                    layers: [{digest, registry, repository, image, score, nodes, size}]}``
====== ============ ==========================================================================
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from aiohttp import web

from imgaccel.oci.digest import Digest
from imgaccel.tracker.api import ApiError, close_at_cleanup, json_body, node_field, text_field
from imgaccel.tracker.state import STATE
from imgaccel.tracker.store import MAX_INT64

DB_NAME = "hot.sqlite3"
WINDOW_SECONDS = 6 * 3600.0
HALF_LIFE_SECONDS = 1800.0
HOT_CACHE_SECONDS = 5.0
_MAX_REPORT = 1000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pulls (
    node TEXT NOT NULL, digest TEXT NOT NULL, registry TEXT NOT NULL, repository TEXT NOT NULL,
    image TEXT NOT NULL, seen REAL NOT NULL, size INTEGER, PRIMARY KEY (node, digest));
CREATE INDEX IF NOT EXISTS pulls_by_seen ON pulls (seen);
"""
#: Columns added since the first release, for databases made before them (NULL: not reported).
_ADDED_COLUMNS = {"size": "INTEGER"}
_COLUMNS = "node, digest, registry, repository, image, seen, size"


@dataclass(frozen=True)
class Pull:
    """One node's last pull of one blob."""

    node: str
    digest: str
    registry: str
    repository: str
    image: str
    seen: float
    size: int | None = None  # bytes, when the node knew them


@dataclass(frozen=True)
class HotLayer:
    digest: str
    registry: str
    repository: str
    image: str
    score: float
    nodes: int
    size: int | None = None  # bytes, as last reported; None while no report gave it


def rank(
    pulls: Iterable[Pull],
    now: float,
    window: float = WINDOW_SECONDS,
    half_life: float = HALF_LIFE_SECONDS,
) -> list[HotLayer]:
    """Score every blob pulled within ``window`` (see the module docstring), hottest first."""
    scores: dict[str, float] = {}
    nodes: dict[str, int] = {}
    latest: dict[str, Pull] = {}
    sized: dict[str, Pull] = {}  # the latest pull of each blob that reported its size
    for pull in pulls:
        age = now - pull.seen
        if age > window:
            continue
        scores[pull.digest] = scores.get(pull.digest, 0.0) + math.pow(2, -max(age, 0) / half_life)
        nodes[pull.digest] = nodes.get(pull.digest, 0) + 1
        if pull.digest not in latest or latest[pull.digest].seen < pull.seen:
            latest[pull.digest] = pull
        if pull.size is not None and (
            pull.digest not in sized or sized[pull.digest].seen < pull.seen
        ):
            sized[pull.digest] = pull
    layers = [
        HotLayer(
            d,
            latest[d].registry,
            latest[d].repository,
            latest[d].image,
            s,
            nodes[d],
            sized[d].size if d in sized else None,
        )
        for d, s in scores.items()
    ]
    return sorted(layers, key=lambda layer: (-layer.score, layer.digest))


class PullLog:
    """Each node's latest pull of each blob, in SQLite."""

    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(data_dir / DB_NAME, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        present = {row[1] for row in self._db.execute("PRAGMA table_info(pulls)")}
        for column, kind in _ADDED_COLUMNS.items():
            if column not in present:
                self._db.execute(f"ALTER TABLE pulls ADD COLUMN {column} {kind}")
        self._ranked: tuple[float, list[HotLayer]] | None = None  # when ranked, the ranking

    def close(self) -> None:
        self._db.close()

    def add(self, pulls: list[Pull]) -> None:
        """Record each pull as its node's latest of its blob; a pull without a size keeps the
        size the node reported for the blob before (a digest's size never changes)."""
        self._db.executemany(
            f"INSERT INTO pulls ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (node, digest) DO UPDATE SET registry = excluded.registry, "
            "repository = excluded.repository, image = excluded.image, seen = excluded.seen, "
            "size = COALESCE(excluded.size, pulls.size)",
            [(p.node, p.digest, p.registry, p.repository, p.image, p.seen, p.size) for p in pulls],
        )

    def since(self, when: float) -> list[Pull]:
        query = f"SELECT {_COLUMNS} FROM pulls WHERE seen > ?"
        return [Pull(*row) for row in self._db.execute(query, (when,)).fetchall()]

    def prune(self, before: float) -> None:
        self._db.execute("DELETE FROM pulls WHERE seen <= ?", (before,))

    def hot(self, now: float) -> list[HotLayer]:
        """Every blob pulled within the window, hottest first (see :func:`rank`): ranked at
        ``now`` or at most ``HOT_CACHE_SECONDS`` before it."""
        if self._ranked is None or not 0 <= now - self._ranked[0] < HOT_CACHE_SECONDS:
            self._ranked = (now, rank(self.since(now - WINDOW_SECONDS), now))
        return self._ranked[1]


PULLS = web.AppKey("pulls", PullLog)


async def handle_report(request: web.Request) -> web.Response:
    state, log = request.app[STATE], request.app[PULLS]
    body = await json_body(request)
    node, now = node_field(body), state.now()
    reports = body.get("pulls")
    if not isinstance(reports, list) or len(reports) > _MAX_REPORT:
        raise ApiError(400, f"'pulls' must be a list of at most {_MAX_REPORT} pulls")
    pulls = [p for report in reports for p in _pulls(node, report, now)]
    log.add(pulls)
    log.prune(now - WINDOW_SECONDS)
    return web.json_response({"accepted": len(pulls)})


def _pulls(node: str, report: object, now: float) -> list[Pull]:
    if not isinstance(report, dict):
        raise ApiError(400, "each pull must be an object")
    image, registry, repository = (
        text_field(report, name) or "" for name in ("image", "registry", "repository")
    )
    digests = report.get("digests")
    if not isinstance(digests, list) or len(digests) > _MAX_REPORT:
        raise ApiError(400, f"'digests' must be a list of at most {_MAX_REPORT} digests")
    sizes = _sizes(report)
    return [
        Pull(node, str(Digest.parse(str(d))), registry, repository, image, now, sizes.get(str(d)))
        for d in digests
    ]


def _sizes(report: dict[str, object]) -> dict[str, int]:
    """The report's optional ``sizes`` (digest -> bytes; absent or null: none), or a 400."""
    sizes = report.get("sizes")
    if sizes is None:
        return {}
    if not isinstance(sizes, dict) or len(sizes) > _MAX_REPORT:
        raise ApiError(400, f"'sizes' must be an object of at most {_MAX_REPORT} digests")
    for size in sizes.values():
        if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= MAX_INT64:
            raise ApiError(400, "'sizes' must map digests to non-negative integers below 2**63")
    return sizes


async def handle_hot(request: web.Request) -> web.Response:
    state, log = request.app[STATE], request.app[PULLS]
    limit = _number(request, "limit", 100.0)
    min_score = _number(request, "min_score", 0.0)
    layers = [layer for layer in log.hot(state.now()) if layer.score >= min_score]
    return web.json_response(
        {
            "window_seconds": WINDOW_SECONDS,
            "half_life_seconds": HALF_LIFE_SECONDS,
            "layers": [asdict(layer) for layer in layers[: int(limit)]],
        }
    )


def _number(request: web.Request, name: str, default: float) -> float:
    try:
        value = float(request.query.get(name, default))
    except ValueError:
        raise ApiError(400, f"{name} must be a number") from None
    if not math.isfinite(value) or value < 0:
        raise ApiError(400, f"{name} must be a non-negative number")
    return value


def add_routes(app: web.Application) -> None:
    """Routes and the pull log (opened now, beside the tracker's database; closed at cleanup)."""
    app[PULLS] = PullLog(app[STATE].settings.data_dir)
    close_at_cleanup(app, app[PULLS])
    app.router.add_post("/v1/pulls", handle_report)
    app.router.add_get("/v1/hot", handle_hot)
