"""deploy/grafana: the dashboard charts what operators need, by the names the node and the
tracker really export (read from their Prometheus registries, not from a list kept by hand)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import promql_parser
from prometheus_client import CollectorRegistry

from imgaccel.proxy.metrics import NodeMetrics
from imgaccel.seeder.metrics import SeederMetrics
from imgaccel.tracker import TrackerSettings
from imgaccel.tracker import make_app as make_tracker_app
from imgaccel.tracker.state import STATE

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "imgaccel-dashboard.json"
#: What an operator must see: bytes by source, origin bytes saved, latencies, the cache and
#: its disk (free against the floor, blobs not kept, fills refused, kept once with containerd),
#: P2P traffic and peers (and nodes cut off from the tracker), the
#: tracker's peers and swarms (issue 5), cold blobs the seeders declined (the nodes then fetch
#: them from the origin), certificates' time left, and origins the nodes fail to reach (the
#: runtime then pulls around the mirror, unseen).
CHARTED = {
    "imgaccel_bytes_served_total",
    "imgaccel_origin_bytes_saved_total",
    "imgaccel_cache_hits_total",
    "imgaccel_cache_misses_total",
    "imgaccel_cache_bytes",
    "imgaccel_cache_evictions_total",
    "imgaccel_cache_disk_free_bytes",
    "imgaccel_cache_disk_min_free_bytes",
    "imgaccel_fills_not_kept_total",
    "imgaccel_fills_disk_full_total",
    "imgaccel_upstream_request_seconds_bucket",
    "imgaccel_blob_serve_seconds_bucket",
    "imgaccel_p2p_upload_bytes_total",
    "imgaccel_p2p_download_bytes_total",
    "imgaccel_p2p_peers",
    "imgaccel_p2p_tracker_up",
    "imgaccel_cache_shared_bytes",
    "imgaccel_tracker_peers",
    "imgaccel_tracker_swarms",
    "imgaccel_seeder_declined_total",
    "imgaccel_certificate_expiry_timestamp_seconds",
    "imgaccel_upstream_failures_total",
    "imgaccel_upstream_up",
}
#: Cluster-wide series (one tracker, a few seeders), which the per-node variable does not filter.
CLUSTER_WIDE = ("imgaccel_tracker_", "imgaccel_seeder_")


def _sample_names(registry: CollectorRegistry) -> set[str]:
    """The series names a scrape of ``registry`` can show (``_total``, ``_bucket``, ...)."""
    names = set()
    for family in registry.collect():
        suffixes = {
            "counter": ("_total",),
            "histogram": ("_bucket", "_count", "_sum"),
            "gauge": ("",),
        }[family.type]
        names |= {family.name + suffix for suffix in suffixes}
    return names


def exported(tmp_path: Path) -> set[str]:
    """Every series name the node (NodeMetrics), the seeder (SeederMetrics) and the tracker (its
    app's registry) export."""
    tracker = make_tracker_app(TrackerSettings(data_dir=tmp_path, insecure=True))
    try:
        return (
            _sample_names(NodeMetrics().registry)
            | _sample_names(SeederMetrics().registry)
            | _sample_names(tracker[STATE].registry)
        )
    finally:
        tracker[STATE].store.close()


def _panels() -> list[dict[str, Any]]:
    panels: list[dict[str, Any]] = json.loads(DASHBOARD.read_text())["panels"]
    return panels


def _exprs() -> list[str]:
    return [t["expr"] for p in _panels() for t in p.get("targets", [])]


def test_every_charted_metric_is_one_the_node_or_tracker_exports(tmp_path: Path) -> None:
    used = {m for e in _exprs() for m in re.findall(r"imgaccel_[a-z0-9_]+", e)}
    assert used <= exported(tmp_path), used - exported(tmp_path)
    assert used == CHARTED


def test_served_bytes_are_split_by_source() -> None:
    assert any("by (source)" in e and "imgaccel_bytes_served_total" in e for e in _exprs())
    assert any('source="origin"' in e for e in _exprs())


def test_the_cache_disk_is_charted_against_its_floor_with_what_it_cost() -> None:
    """Free bytes and the floor in one panel (below the floor, blobs are not kept); blobs not
    kept by reason, and fills refused by when (``midway`` failed pulls)."""
    by_panel = [[t["expr"] for t in p.get("targets", [])] for p in _panels()]
    assert any(
        any("imgaccel_cache_disk_free_bytes" in e for e in exprs)
        and any("imgaccel_cache_disk_min_free_bytes" in e for e in exprs)
        for exprs in by_panel
    )
    assert any("by (reason)" in e and "imgaccel_fills_not_kept_total" in e for e in _exprs())
    assert any("by (when)" in e and "imgaccel_fills_disk_full_total" in e for e in _exprs())


def test_panels_do_not_overlap() -> None:
    taken: set[tuple[int, int]] = set()
    for panel in _panels():
        grid = panel["gridPos"]
        cells = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & taken, panel["title"]
        taken |= cells


def test_queries_are_well_formed_and_follow_the_node_variable() -> None:
    for expr in _exprs():
        assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}"), expr
        assert any(m in expr for m in CLUSTER_WIDE) or 'instance=~"$instance"' in expr, expr


def test_panels_have_unique_ids_and_the_datasource_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in _panels()]
    assert len(ids) == len(set(ids))
    names = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "instance"} <= names
    for panel in _panels():
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]


def test_every_panel_query_is_valid_promql() -> None:
    """With Grafana's variables given values, as Grafana does before it asks Prometheus."""
    values = {"$__rate_interval": "1m", "$__range": "1h", "$instance": ".*"}
    for expr in _exprs():
        for variable, value in values.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, expr
        promql_parser.parse(expr)  # raises on a syntax error
