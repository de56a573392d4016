"""deploy/grafana: the dashboard charts every metric the node exports, and nothing else."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "imgaccel-dashboard.json"
#: The names the node exports (kept stable by the node's owner); histograms end in _seconds.
METRICS = {
    "imgaccel_bytes_served_total",
    "imgaccel_cache_hits_total",
    "imgaccel_cache_misses_total",
    "imgaccel_cache_bytes",
    "imgaccel_cache_evictions_total",
    "imgaccel_upstream_request_seconds",
    "imgaccel_blob_serve_seconds",
    "imgaccel_p2p_upload_bytes_total",
    "imgaccel_p2p_download_bytes_total",
    "imgaccel_p2p_peers",
    "imgaccel_origin_bytes_saved_total",
    "imgaccel_prefetch_queue",
}
HISTOGRAMS = {"imgaccel_upstream_request_seconds", "imgaccel_blob_serve_seconds"}


def _panels() -> list[dict[str, Any]]:
    panels: list[dict[str, Any]] = json.loads(DASHBOARD.read_text())["panels"]
    return panels


def _exprs() -> list[str]:
    return [t["expr"] for p in _panels() for t in p.get("targets", [])]


def test_every_metric_is_charted_by_its_real_name() -> None:
    used = {m for e in _exprs() for m in re.findall(r"imgaccel_[a-z0-9_]+", e)}
    expected = {f"{m}_bucket" if m in HISTOGRAMS else m for m in METRICS}
    assert used == expected


def test_served_bytes_are_split_by_source() -> None:
    assert any("by (source)" in e and "imgaccel_bytes_served_total" in e for e in _exprs())
    assert any('source="origin"' in e for e in _exprs())


def test_queries_are_well_formed_and_follow_the_node_variable() -> None:
    for expr in _exprs():
        assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}"), expr
        assert 'instance=~"$instance"' in expr, expr


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
