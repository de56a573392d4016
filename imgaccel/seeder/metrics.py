"""The seeder's own Prometheus metrics, in the node's registry (served on the seeder's
``/metrics`` with the node's)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter


class SeederMetrics:
    """What the work loop did with the tracker's work beyond the node's own fetch metrics."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.declined = Counter(
            "imgaccel_seeder_declined",
            "Cold blobs given back to the tracker unfetched because the seeder's cache could "
            "not keep them: larger than its quota (reason=quota), than the room pinned blobs "
            "and fills in progress leave in it (reason=pinned), or than its disk can give and "
            "keep cache.min_free_percent free (reason=disk). The nodes fetch them instead.",
            ["reason"],
            registry=self.registry,
        )
