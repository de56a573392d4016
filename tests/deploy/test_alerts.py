"""deploy/kubernetes/monitoring/prometheusrule.yaml: alerts in valid PromQL, on the series the
node, the seeder and the tracker really export, covering what docs/operations.md says is worth
an alert."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import promql_parser
import pytest

from .manifests import KUBERNETES, documents
from .test_grafana import exported

RULES = KUBERNETES / "monitoring" / "prometheusrule.yaml"
#: The series docs/operations.md names as worth an alert, each with the alert on it.
WORTH_AN_ALERT = {
    "imgaccel_upstream_up": "ImgaccelOriginUnreachable",
    "imgaccel_p2p_tracker_up": "ImgaccelTrackerUnreachable",
    "imgaccel_verify_failures_total": "ImgaccelBlobFailedVerification",
    "imgaccel_fills_disk_full_total": "ImgaccelFillsFailedMidway",
    "imgaccel_tracker_seeders": "ImgaccelNoSeeder",
    "imgaccel_certificate_expiry_timestamp_seconds": "ImgaccelCertificateExpiresSoon",
}


def _rules() -> list[dict[str, Any]]:
    [rule] = documents(RULES)
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


@pytest.mark.parametrize("rule", _rules(), ids=lambda r: str(r["alert"]))
def test_each_alert_is_valid_promql_with_a_severity_and_a_summary(rule: dict[str, Any]) -> None:
    promql_parser.parse(rule["expr"])  # raises on a syntax error
    assert rule["labels"]["severity"] in {"info", "warning", "critical"}
    assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_a_broken_expression_would_be_caught() -> None:
    with pytest.raises(ValueError, match="parenthesis"):
        promql_parser.parse("max(imgaccel_tracker_seeders == 0")


def test_alerts_use_only_series_that_are_exported(tmp_path: Path) -> None:
    used = {m for r in _rules() for m in re.findall(r"imgaccel_[a-z0-9_]+", r["expr"])}
    assert used <= exported(tmp_path), used - exported(tmp_path)


def test_what_the_docs_call_worth_an_alert_has_one() -> None:
    by_name = {r["alert"]: r["expr"] for r in _rules()}
    assert len(by_name) == len(_rules())  # no two alerts of one name
    for series, alert in WORTH_AN_ALERT.items():
        assert series in by_name[alert], alert
    operations = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    assert "prometheusrule.yaml" in operations
