"""Hot layers: which blobs the cluster is pulling now, so nodes can fetch them before asked.

Nodes report each pull a workload made (``POST /v1/pulls``: the image and the blob digests it
fetched). A blob's popularity counts the distinct nodes that pulled it within a sliding window,
each weighted by how recent its last pull was (exponential decay with a half-life):

    score(blob) = sum over nodes n that pulled it within WINDOW of 2 ** (-(now - t_n) / HALF_LIFE)

so ten nodes pulling a layer in the last minutes make it hot, and one node pulling it every
second does not. ``GET /v1/hot`` publishes the list, hottest first. Reports live in SQLite
(``hot.sqlite3``) and survive a restart; rows older than the window are dropped as reports come.
Ranking reads the whole window, and every node polls the list: the ranking is kept for
``HOT_CACHE_SECONDS``, so a report shows in the list within that time.

====== ============ ==========================================================================
POST   /v1/pulls    ``{node, pulls: [{image, registry, repository, digests}]}`` -> ``{accepted}``
GET    /v1/hot      ``?limit=N&min_score=S`` -> ``{window_seconds, half_life_seconds,
                    layers: [{digest, registry, repository, image, score, nodes}]}``
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

DB_NAME = "hot.sqlite3"
WINDOW_SECONDS = 6 * 3600.0
HALF_LIFE_SECONDS = 1800.0
HOT_CACHE_SECONDS = 5.0
_MAX_REPORT = 1000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pulls (
    node TEXT NOT NULL, digest TEXT NOT NULL, registry TEXT NOT NULL, repository TEXT NOT NULL,
    image TEXT NOT NULL, seen REAL NOT NULL, PRIMARY KEY (node, digest));
CREATE INDEX IF NOT EXISTS pulls_by_seen ON pulls (seen);
"""


@dataclass(frozen=True)
class Pull:
    """One node's last pull of one blob."""

    node: str
    digest: str
    registry: str
    repository: str
    image: str
    seen: float


@dataclass(frozen=True)
class HotLayer:
    digest: str
    registry: str
    repository: str
    image: str
    score: float
    nodes: int


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
    for pull in pulls:
        age = now - pull.seen
        if age > window:
            continue
        scores[pull.digest] = scores.get(pull.digest, 0.0) + math.pow(2, -max(age, 0) / half_life)
        nodes[pull.digest] = nodes.get(pull.digest, 0) + 1
        if pull.digest not in latest or latest[pull.digest].seen < pull.seen:
            latest[pull.digest] = pull
    layers = [
        HotLayer(d, latest[d].registry, latest[d].repository, latest[d].image, s, nodes[d])
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
        self._ranked: tuple[float, list[HotLayer]] | None = None  # when ranked, the ranking

    def close(self) -> None:
        self._db.close()

    def add(self, pulls: list[Pull]) -> None:
        self._db.executemany(
            "INSERT OR REPLACE INTO pulls VALUES (?, ?, ?, ?, ?, ?)",
            [(p.node, p.digest, p.registry, p.repository, p.image, p.seen) for p in pulls],
        )

    def since(self, when: float) -> list[Pull]:
        rows = self._db.execute("SELECT * FROM pulls WHERE seen > ?", (when,)).fetchall()
        return [Pull(*row) for row in rows]

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
    return [
        Pull(node, str(Digest.parse(str(d))), registry, repository, image, now) for d in digests
    ]


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
