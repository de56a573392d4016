"""The node's histograms: a slow multi-GB layer is still measured, not lumped into +Inf."""

from __future__ import annotations

import pytest

from imgaccel.proxy.metrics import NodeMetrics


@pytest.mark.parametrize(
    ("seconds", "bucket"), [(900, "1200.0"), (1500, "1800.0"), (3000, "3600.0")]
)
def test_a_blob_served_for_up_to_an_hour_lands_in_a_bucket(seconds: float, bucket: str) -> None:
    metrics = NodeMetrics()
    metrics.blob_seconds.labels("origin").observe(seconds)

    def count(le: str) -> float | None:
        labels = {"source": "origin", "le": le}
        return metrics.registry.get_sample_value("imgaccel_blob_serve_seconds_bucket", labels)

    assert count("600.0") == 0
    assert count(bucket) == 1
