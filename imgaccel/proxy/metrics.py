"""The node's Prometheus metrics, in a registry of its own (one per app, no globals)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from imgaccel.cache.space import Usage
from imgaccel.p2p.certs import Validity

#: Up to an hour: a multi-GB layer over a slow WAN takes tens of minutes, and must not land in +Inf.
# fmt: off
_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600,
    1200, 1800, 3600,
)
# fmt: on


class TrackerCalls(Protocol):
    """How the node's calls to its tracker go (:class:`imgaccel.proxy.peers.PeerNetwork`)."""

    tracker_answered: float | None
    tracker_failing: tuple[float, str] | None


class NodeMetrics:
    """Counters an operator charts: bytes by source, hits, misses, cache size, latencies."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.bytes_served = Counter(
            "imgaccel_bytes_served",
            "Blob and manifest bytes sent to clients, by source.",
            ["source"],
            registry=r,
        )
        self.origin_bytes_saved = Counter(
            "imgaccel_origin_bytes_saved",
            "Bytes sent to clients that did not come from the origin (cache or peers).",
            registry=r,
        )
        self.cache_hits = Counter(
            "imgaccel_cache_hits", "Requests answered from the cache.", ["kind"], registry=r
        )
        self.cache_misses = Counter(
            "imgaccel_cache_misses",
            "Requests that needed peers or the origin.",
            ["kind"],
            registry=r,
        )
        self.cache_evictions = Counter(
            "imgaccel_cache_evictions",
            "Blobs evicted to stay under the quota, or to leave room on the disk.",
            registry=r,
        )
        self.cache_bytes = Gauge(
            "imgaccel_cache_bytes", "Bytes of verified blobs in the cache.", registry=r
        )
        self.cache_blobs = Gauge("imgaccel_cache_blobs", "Verified blobs in the cache.", registry=r)
        self.cache_shared_bytes = Gauge(
            "imgaccel_cache_shared_bytes",
            "Bytes of cached blobs kept once on disk with containerd's copy (a hard link), as of "
            "the last look (cache.containerd_content_dir).",
            registry=r,
        )
        self.upstream_seconds = Histogram(
            "imgaccel_upstream_request_seconds",
            "Time to the origin's response headers, by request kind.",
            ["kind"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.blob_seconds = Histogram(
            "imgaccel_blob_serve_seconds",
            "Time to serve a whole blob, by source.",
            ["source"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.manifest_seconds = Histogram(
            "imgaccel_manifest_serve_seconds",
            "Time to answer a manifest request.",
            buckets=_BUCKETS,
            registry=r,
        )
        self.fills_active = Gauge(
            "imgaccel_fills_active", "Blobs being fetched into the cache right now.", registry=r
        )
        self.fills_not_kept = Counter(
            "imgaccel_fills_not_kept",
            "Blobs streamed to clients but not kept: reason=quota (the quota is full of pinned "
            "or busy blobs), reason=too_big (larger than the whole quota), reason=disk (keeping "
            "it would leave less than cache.min_free_percent of the filesystem free).",
            ["reason"],
            registry=r,
        )
        self.fills_disk_full = Counter(
            "imgaccel_fills_disk_full",
            "Fills the cache's disk had no room for: when=start, refused before the first byte "
            "(every client waiting got 503 and pulled from the origin); when=midway, failed "
            "halfway (bodies aborted: a filesystem that cannot preallocate).",
            ["when"],
            registry=r,
        )
        self.disk_free = Gauge(
            "imgaccel_cache_disk_free_bytes",
            "Bytes free on the cache's filesystem (what is not the root reserve).",
            registry=r,
        )
        self.disk_min_free = Gauge(
            "imgaccel_cache_disk_min_free_bytes",
            "Bytes cache.min_free_percent keeps free on the cache's filesystem: below it, new "
            "blobs are not kept.",
            registry=r,
        )
        self.verify_failures = Counter(
            "imgaccel_verify_failures",
            "Blobs rejected because they did not match their digest.",
            ["source"],
            registry=r,
        )
        self.p2p_upload = Counter(
            "imgaccel_p2p_upload_bytes", "Blob bytes this node sent to peers.", registry=r
        )
        self.p2p_download = Counter(
            "imgaccel_p2p_download_bytes", "Blob bytes this node received from peers.", registry=r
        )
        self.p2p_peers = Gauge("imgaccel_p2p_peers", "Peers connected right now.", registry=r)
        self.p2p_tracker_up = Gauge(
            "imgaccel_p2p_tracker_up",
            "1 if the tracker took this node's last once-a-minute call, 0 if it failed (3 "
            "minutes on, the tracker sends no peer to this node and this node finds none); NaN "
            "until the first call.",
            registry=r,
        )
        self.p2p_share_releases = Counter(
            "imgaccel_p2p_share_releases",
            "Downloads that dropped their piece shares: nothing to fetch while incomplete (an "
            "owner slow or gone); they then take any piece from any peer.",
            registry=r,
        )
        self.stale_served = Counter(
            "imgaccel_stale_tags_served",
            "Tag answers served stale because the origin was down.",
            registry=r,
        )
        self.upstream_failures = Counter(
            "imgaccel_upstream_failures",
            "Origin requests that got no answer (connection, TLS, proxy, timeout) or a 5xx or "
            "429 past the retries, by registry (configured upstreams; others: other). The "
            "runtime then pulls around the mirror, unseen.",
            ["registry"],
            registry=r,
        )
        self.upstream_up = Gauge(
            "imgaccel_upstream_up",
            "1 if the latest origin request to the registry was answered (any status under 500 "
            "but 429), 0 if it failed; by registry, as imgaccel_upstream_failures.",
            ["registry"],
            registry=r,
        )
        self.certificate_expiry = Gauge(
            "imgaccel_certificate_expiry_timestamp_seconds",
            "When a cluster certificate loaded at start ends (notAfter, Unix time): cert=node "
            "is the one presented to peers and the tracker, cert=ca the CA trusted.",
            ["cert"],
            registry=r,
        )

    def served(self, source: str, nbytes: int) -> None:
        self.bytes_served.labels(source).inc(nbytes)
        if source != "origin":
            self.origin_bytes_saved.inc(nbytes)

    def observe_upstream(self, kind: str, seconds: float) -> None:
        self.upstream_seconds.labels(kind).observe(seconds)

    def track_certificates(self, validity: Mapping[str, Validity]) -> None:
        for cert, found in validity.items():
            self.certificate_expiry.labels(cert).set(found.not_after.timestamp())

    def track_tracker(self, peers: TrackerCalls) -> None:
        """Read at each scrape whether the tracker took the node's last call (NaN: no call yet)."""

        def up() -> float:
            if peers.tracker_failing is not None:
                return 0.0
            return float("nan") if peers.tracker_answered is None else 1.0

        self.p2p_tracker_up.set_function(up)

    def track_cache(self, used: Callable[[], int], count: Callable[[], int]) -> None:
        self.cache_bytes.set_function(lambda: float(used()))
        self.cache_blobs.set_function(lambda: float(count()))

    def track_disk(self, usage: Callable[[], Usage | None], min_free_percent: float) -> None:
        """Read the cache's filesystem at each scrape (NaN when it cannot be asked)."""

        def free() -> float:
            found = usage()
            return float("nan") if found is None else float(found.free)

        def floor() -> float:
            found = usage()
            return float("nan") if found is None else float(found.floor(min_free_percent))

        self.disk_free.set_function(free)
        self.disk_min_free.set_function(floor)
